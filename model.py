"""
model.py -- the one small GPT that every nanoalign script shares.

A decoder-only transformer written from scratch in plain PyTorch:
  * pre-norm blocks (LayerNorm -> attention -> residual, LayerNorm -> MLP -> residual);
  * rotary position embeddings (see `rope` below for why rotary);
  * an option for attention-only models (no MLP) and for "smeared keys", both used by
    induction.py (Olsson et al. 2022, "In-context Learning and Induction Heads");
  * two attention paths: the fast path through F.scaled_dot_product_attention (fused
    kernels on CPU and GPU) and an explicit path that also returns every head's
    attention pattern, for interpretability; tests check they agree to 1e-5;
  * an optional scalar head (one number per position) for preference models, PPO value
    functions and P(IK) heads;
  * batched KV-cached sampling with left-padded prompts (`generate`);
  * checkpoints written atomically and read with torch.load(weights_only=True);
  * AdamW set-up, the learning-rate schedule, a guarded optimiser step, an MFU estimate.

Read top to bottom: config, layers, the model, sampling, checkpoints, training helpers.
The last section, "Shared by the scripts", is not part of the model: it is the one place
where the scripts' common plumbing lives (config flags, output folders, figures, ...).
"""

import argparse
import inspect
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


@dataclass
class GPTConfig:
    # embedding rows (padded to a multiple of 64 for GPU speed)
    vocab_size: int = 4096
    # real tokens (0: all rows); logits exist only for these, so padding rows are never sampled
    vocab_valid: int = 0
    # longest context the model is trained on
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # no MLPs: the induction-heads models (Olsson et al. 2022, Sec. 2)
    attn_only: bool = False
    # keys mix in the previous token's key (Olsson et al. 2022, Argument 2)
    smeared_key: bool = False
    # one number per position: PM reward, PPO value, P(IK)
    scalar_head: bool = False
    # unembedding = embedding^T; the attention-only induction models untie it
    tie_embeddings: bool = True
    rope_base: float = 10000.0


# -----------------------------------------------------------------------------
# Positions. We use rotary embeddings (Su et al. 2021) rather than a learned absolute
# table because (1) attention scores then depend only on the distance between tokens,
# so a previous-token head -- half of an induction circuit -- works identically at every
# offset, which the random-offset repeats in induction.py require; (2) nothing positional
# is added to the residual stream, so the OV-circuit copying analysis (W_U W_O W_V W_E)
# sees only token content; (3) left padding cannot change the result, since shifting all
# positions by the same amount leaves every score unchanged; (4) no parameters spent on
# a position table in tiny models. We still pass correct position ids for clarity.


def rope(pos, head_dim, base):
    """Rotations for integer positions pos (B, T) as unit complex numbers (B, T, 1, 1, head_dim/2):
    each pair of channels (2i, 2i+1) of a query or key is one complex number, turned by the
    angle pos * base^(-2i/head_dim). Computed once per forward pass, shared by all layers."""
    i = torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32)
    ang = pos.to(torch.float32)[..., None] * (1.0 / base ** (i / head_dim))  # (B, T, hd/2)
    return torch.polar(torch.ones_like(ang), ang)[:, :, None, None]


def apply_rope(x, rot):
    """Rotate x (..., head_dim) by rot: one complex multiply, in fp32. (The split-half
    form, cat([x1 cos - x2 sin, x1 sin + x2 cos]), is the same rotation on another pairing
    of the channels, at the price of a cat and four products.)"""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


def norm(x, weight):
    # LayerNorm without bias: it has a fused CPU kernel, which RMSNorm (the speedruns' choice)
    # lacks; see the docs page docs/speedrun.md.
    return F.layer_norm(x, (x.size(-1),), weight)


# -----------------------------------------------------------------------------
# Layers


class KVCache:
    """Pre-allocated keys and values for all layers: (n_layer, B, H, T_max, hd).
    Decoding writes one slot per step and attends over the whole buffer with a mask, so
    every step has the same tensor shapes (no new kernel plans on GPU)."""

    def __init__(self, cfg, batch, t_max, device, dtype):
        hd = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch, cfg.n_head, t_max, hd)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        # smeared keys need the previous position's un-smeared key
        self.prev_k = torch.zeros(shape[:3] + (1, hd), device=device, dtype=dtype)


class Attention(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.n_head, self.hd = cfg.n_head, cfg.n_embd // cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        if cfg.smeared_key:
            # per-head mixing logit; weight on the previous key is sigmoid(smear). Starts at
            # 1/2, an even mix, from which each head learns how much to smear (induction.py
            # starts it at 1% and trains it at 30x the learning rate: see its build()).
            self.smear = nn.Parameter(torch.zeros(cfg.n_head))

    def forward(self, x, rot, mask, prev_valid, cache=None, start=0, explicit=False):
        B, T, C = x.shape
        qk, v = self.qkv(x).view(B, T, 3, self.n_head, self.hd).split([2, 1], dim=2)
        q, k = apply_rope(qk, rot).unbind(2)  # queries and keys rotated in one go
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2)
        if self.cfg.smeared_key:
            # key_j <- (1 - w) key_j + w key_{j-1}, w = sigmoid(smear) per head. The previous
            # key is zero before the first real token (a pad or the start of the sequence).
            if cache is not None and start > 0:
                first = cache.prev_k[self.layer]
            else:
                first = torch.zeros_like(k[:, :, :1])
            prev = torch.cat([first, k[:, :, :-1]], dim=2) * prev_valid[:, None, :, None]
            if cache is not None:
                cache.prev_k[self.layer] = k[:, :, -1:]
            w = torch.sigmoid(self.smear).view(1, -1, 1, 1).to(k.dtype)
            k = (1 - w) * k + w * prev
        if cache is not None:
            cache.k[self.layer, :, :, start : start + T] = k
            cache.v[self.layer, :, :, start : start + T] = v
            k, v = cache.k[self.layer], cache.v[self.layer]
        att = None
        if explicit:
            # the slow, obvious computation; also returns the attention pattern
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd)
            S = k.size(2)  # keys: T, or the whole cache
            causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            att = scores.masked_fill(~(causal if mask is None else mask), float("-inf")).softmax(-1)
            y = att @ v
        else:
            drop = self.cfg.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=drop
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.proj(y), self.cfg.dropout, self.training), att


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.Parameter(torch.ones(cfg.n_embd))
        self.attn = Attention(cfg, layer)
        if not cfg.attn_only:
            self.ln2 = nn.Parameter(torch.ones(cfg.n_embd))
            self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
            self.fc_out = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, rot, mask, prev_valid, cache, start, explicit):
        a, att = self.attn(norm(x, self.ln1), rot, mask, prev_valid, cache, start, explicit)
        x = x + a
        if not self.cfg.attn_only:
            h = self.fc_out(F.gelu(self.fc(norm(x, self.ln2))))
            x = x + F.dropout(h, self.cfg.dropout, self.training)
        return x, att


# -----------------------------------------------------------------------------
# The model


def padding_mask_to_attn(pad_mask):
    """(B, T) bool, True = real token -> (B, 1, T, T) bool attention mask, True = attend.
    Causal, never attends to pads. A pad query may attend to itself so that its softmax
    row is not empty (its output is never used, but NaNs would poison the batch)."""
    T = pad_mask.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=pad_mask.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=pad_mask.device)
    return ((causal[None] & pad_mask[:, None, :]) | eye)[:, None]


def positions_from_mask(pad_mask):
    """Left padding: the first real token gets position 0."""
    return (pad_mask.long().cumsum(-1) - 1).clamp(min=0)


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0 and (cfg.n_embd // cfg.n_head) % 2 == 0
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_f = nn.Parameter(torch.ones(cfg.n_embd))
        # lm head tied to the embedding by default (Press & Wolf 2017): fewer parameters in
        # tiny models. The attention-only induction models untie it: with W_U = W_E^T the
        # direct path votes for the current token (logit |e_t|^2); Elhage et al. 2021 and
        # Olsson et al. 2022 use separate W_E and W_U (the docs page docs/induction_heads.md).
        self.lm_head = None
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.scalar = nn.Linear(cfg.n_embd, 1) if cfg.scalar_head else None
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("fc_out.weight"):
                # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def hidden(self, idx, pad_mask=None, explicit=False, cache=None, start=0, pos=None, mask=None):
        """Final normed hidden states (B, T, C), and the list of per-layer attention
        patterns (B, H, T, T_keys) when explicit=True.

        idx: (B, T) token ids. pad_mask: (B, T) bool, True for real tokens (left padding).
        With no pad_mask the fused causal kernel is used. cache/start/pos/mask are for
        `generate`, which supplies its own positions and a mask over the whole cache."""
        B, T = idx.shape
        if pos is None and pad_mask is None:
            pos = torch.arange(T, device=idx.device).expand(B, T)
        elif pos is None:
            pos = positions_from_mask(pad_mask)
        if mask is None and pad_mask is not None:
            mask = padding_mask_to_attn(pad_mask)
        prev_valid = None
        if self.cfg.smeared_key:  # may each position see the previous one (a real token of its
            # document)? Only then does it mix in that key (pads, document_mask)
            first = torch.full((B, 1), start > 0, dtype=torch.bool, device=idx.device)
            seen = torch.ones_like(idx[:, 1:], dtype=torch.bool)
            if mask is not None:
                seen = mask[:, 0, 1:, start : start + T - 1].diagonal(dim1=1, dim2=2)
            prev_valid = torch.cat([first, seen], dim=1).to(self.wte.weight.dtype)
        rot = rope(pos, self.cfg.n_embd // self.cfg.n_head, self.cfg.rope_base)
        x = F.dropout(self.wte(idx), self.cfg.dropout, self.training)
        atts = []
        for blk in self.blocks:
            x, att = blk(x, rot, mask, prev_valid, cache, start, explicit)
            atts.append(att)
        return norm(x, self.ln_f), (atts if explicit else None)

    def unembedding(self):
        """W_U^T as a (vocab, n_embd) matrix: the embedding when tied."""
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    def lm_logits(self, h):
        w, n = self.unembedding(), self.cfg.vocab_valid
        return F.linear(h, w[:n] if n and n < w.size(0) else w)

    def forward(self, idx, targets=None, pad_mask=None, explicit=False, mask=None):
        """Language-model logits (B, T, V) and, with targets, mean cross-entropy over the
        positions where targets != -1 (SFT masks non-assistant tokens with -1). mask: an
        attention mask (B, 1, T, T) instead of the causal one (data.prepare.document_mask)."""
        h, _ = self.hidden(idx, pad_mask, explicit, mask=mask)
        logits = self.lm_logits(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss

    def score(self, idx, pad_mask=None):
        """Scalar head at every position (B, T), in fp32."""
        assert self.scalar is not None, "model was built without scalar_head=True"
        h, _ = self.hidden(idx, pad_mask)
        return self.scalar(h).squeeze(-1).float()

    def attention_patterns(self, idx):
        """Per-layer (B, H, T, T) attention patterns from the explicit path."""
        return self.hidden(idx, explicit=True)[1]


def token_logprobs(logits, tokens, temperature=1.0):
    """log p(tokens[t] | ...) from logits (B, T, V) aligned with tokens (B, T), in fp32.
    PPO recomputes these at the sampling temperature so that the first epoch's ratio is 1."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


# -----------------------------------------------------------------------------
# Sampling


def left_pad(prompts, pad_id, device):
    """list of token lists -> (idx (B, T), pad_mask (B, T)), left padded."""
    T = max(len(p) for p in prompts)
    if empty := [i for i, p in enumerate(prompts) if len(p) == 0]:
        raise ValueError(f"prompt {empty[0]} is empty")
    idx = torch.tensor([[pad_id] * (T - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[False] * (T - len(p)) + [True] * len(p) for p in prompts])
    return idx.to(device), mask.to(device)


def filter_logits(logits, temperature, top_k=None, top_p=None):
    """Temperature, then top-k, then nucleus (top-p) filtering. Returns fp32 logits whose
    softmax is the distribution we sample from."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set with mass >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def generate(
    model,
    prompts,
    max_new_tokens,
    temperature=1.0,
    top_k=None,
    top_p=None,
    eot_id=None,
    pad_id=0,
    generator=None,
    use_cache=True,
):
    """Sample continuations of a batch of prompts of different lengths.

    prompts: list of token-id lists. temperature 0 means greedy.
    Returns a dict of (B, T_prompt + n) tensors:
      tokens   -- left-padded prompt followed by the sample (eot_id after a sequence ends),
      logprobs -- log-prob of each sampled token under the sampling distribution (0 elsewhere),
      gen_mask -- True on generated tokens, up to and including the end token,
      pad_mask -- True on real tokens (prompt and generated part).
    use_cache=False recomputes the whole context every step: the slow reference."""
    model.eval()
    device = model.wte.weight.device
    idx, pmask = left_pad(prompts, pad_id, device)
    B, Tp = idx.shape
    T_max = Tp + max_new_tokens
    if T_max > model.cfg.block_size:
        raise ValueError(
            f"prompt ({Tp}) + max_new_tokens ({max_new_tokens}) "
            f"exceeds block_size {model.cfg.block_size}"
        )
    fill = pad_id if eot_id is None else eot_id
    sampled = torch.full((B, max_new_tokens), fill, dtype=torch.long, device=device)
    tokens = torch.cat([idx, sampled], 1)
    valid = torch.cat([pmask, torch.zeros((B, max_new_tokens), dtype=torch.bool, device=device)], 1)
    logprobs = torch.zeros((B, T_max), device=device)
    gen_mask = torch.zeros((B, T_max), dtype=torch.bool, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    pos_all = positions_from_mask(valid | (torch.arange(T_max, device=device) >= Tp))
    causal = torch.ones(T_max, T_max, dtype=torch.bool, device=device).tril()
    cache = None
    if use_cache:
        cache = KVCache(model.cfg, B, T_max, device, model.wte.weight.dtype)
        # prefill: prompt queries against the whole (still empty beyond Tp) cache
        mask = (causal[:Tp][None] & valid[:, None, :]) | torch.eye(
            Tp, T_max, dtype=torch.bool, device=device
        )
        h, _ = model.hidden(
            idx, pmask, cache=cache, start=0, pos=pos_all[:, :Tp], mask=mask[:, None]
        )
    end = Tp  # the prompt and the tokens sampled so far
    for t in range(Tp, T_max):
        if not use_cache:
            h, _ = model.hidden(tokens[:, :t], valid[:, :t])
        logits = model.lm_logits(h[:, -1])
        if temperature == 0:
            nxt = logits.argmax(-1)
            lp = torch.zeros(B, device=device)
        else:
            flt = filter_logits(logits, temperature, top_k, top_p)
            nxt = torch.multinomial(flt.softmax(-1), 1, generator=generator).squeeze(-1)
            lp = F.log_softmax(flt, -1).gather(-1, nxt[:, None]).squeeze(-1)
        live = ~done
        nxt = torch.where(live, nxt, tokens[:, t])
        tokens[:, t] = nxt
        logprobs[:, t] = torch.where(live, lp, torch.zeros_like(lp))
        gen_mask[:, t] = live
        valid[:, t] = True  # finished rows keep attending to their (masked-out) end tokens
        end = t + 1
        if eot_id is not None:
            done = done | (nxt == eot_id)
            if bool(done.all()):
                break
        if use_cache and t + 1 < T_max:
            # (B, 1, 1, T_max): the same shape every step
            mask = (causal[t][None] & valid)[:, None, None, :]
            h, _ = model.hidden(
                nxt[:, None], None, cache=cache, start=t, pos=pos_all[:, t : t + 1], mask=mask
            )
    return {
        "tokens": tokens[:, :end],
        "logprobs": logprobs[:, :end],
        "gen_mask": gen_mask[:, :end],
        "pad_mask": valid[:, :end],
    }


@torch.no_grad()
def score_sequences(model, seqs, batch_size=64):
    """Scalar-head value at the last token of each token list (left padded, so the last
    column is every row's last token): the PM reward read at the end-of-context token."""
    model.eval()
    device = model.wte.weight.device
    starts = range(0, len(seqs), batch_size)
    batches = [left_pad(seqs[i : i + batch_size], 0, device) for i in starts]
    with autocast(device.type):
        return torch.cat([model.score(idx, pad)[:, -1] for idx, pad in batches])


@torch.no_grad()
def next_token_logits(model, enc, texts, token_ids, batch_size=64):
    """Logits of token_ids right after each text (left padded in batches; a long text keeps
    its end) -> (len(texts), len(token_ids)), fp32 on the CPU. How an answer letter is read:
    a softmax over the choices' letters normalises over the choices."""
    model.eval()
    device = model.wte.weight.device
    out = []
    for i in range(0, len(texts), batch_size):
        toks = [enc.encode_ordinary(t)[-model.cfg.block_size :] for t in texts[i : i + batch_size]]
        idx, pad = left_pad(toks, 0, device)
        with autocast(device.type):
            out.append(model(idx, pad_mask=pad)[0][:, -1, token_ids].float().cpu())
    return torch.cat(out)


# -----------------------------------------------------------------------------
# Checkpoints: weights + config + tokenizer name, written atomically.


def save_checkpoint(path, model, tokenizer_name, **extra):
    """Write to a temp file in the same directory, then rename: a crash mid-write never
    leaves a truncated checkpoint behind, and non-finite weights are never written (a run
    that diverged keeps its last good checkpoint). extra: optimizer state, step, RNG..."""
    raw = model.module if hasattr(model, "module") else model
    raw = getattr(raw, "_orig_mod", raw)  # torch.compile wrapper
    state = raw.state_dict()
    if not all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point()):
        raise SystemExit(
            f"{path}: refusing to save non-finite weights; the previous checkpoint is unchanged"
        )
    obj = {"model": state, "config": asdict(raw.cfg), "tokenizer": tokenizer_name, **extra}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    LAST_SAVED.append((path, extra.get("step")))


LAST_SAVED = []  # (path, step) of every checkpoint written, for the Ctrl-C message (cli)


def load_checkpoint(path, device="cpu", expect=None, tokenizer_name=None, **overrides):
    """Load a checkpoint written by save_checkpoint -> (model, ckpt dict).

    expect: dict of GPTConfig fields the caller requires (e.g. from its command line).
    overrides: fields that may legitimately change on load (dropout; scalar_head: an LM
    initialising a PM). Every problem -- missing, unreadable, another config -- stops the
    script with one line that names the file and says what to do."""
    if os.path.isdir(path):
        raise SystemExit(f"{path}: a folder; give the checkpoint file in it (a .pt)")
    if not os.path.exists(path):
        raise SystemExit(
            f"{path}: no such checkpoint; run the script that writes it first (see the README)"
        )
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, corrupted or not a torch file: torch's errors vary
        msg = (str(e).strip().splitlines() or [""])[0][:80]
        raise SystemExit(
            f"{path}: cannot read it as a checkpoint ({type(e).__name__}: {msg}); "
            f"if it is one of ours, it is truncated: delete it and rebuild it"
        ) from None
    if not isinstance(ck, dict) or any(k not in ck for k in ("model", "config", "tokenizer")):
        raise SystemExit(f"{path}: not a nanoalign checkpoint (no model, config and tokenizer)")
    cfg = dict(ck["config"])
    bad = [
        f"{k}: checkpoint has {cfg.get(k)!r}, requested {v!r}"
        for k, v in (expect or {}).items()
        if cfg.get(k) != v
    ]
    if tokenizer_name is not None and ck["tokenizer"] != tokenizer_name:
        bad.append(f"tokenizer: checkpoint has {ck['tokenizer']!r}, requested {tokenizer_name!r}")
    if bad:
        raise SystemExit(
            f"{path}: checkpoint and requested config disagree ({'; '.join(bad)}); "
            f"drop the conflicting flags or use another checkpoint"
        )
    cfg.update(overrides)
    if unknown := set(cfg) - {f.name for f in fields(GPTConfig)}:
        raise SystemExit(
            f"{path}: unknown model config fields {sorted(unknown)}; written by a newer nanoalign?"
        )
    model = GPT(GPTConfig(**cfg)).to(device)
    # a scalar head is dropped when not wanted, and fresh when the checkpoint has none (an LM
    # initialising a PM, value or P(IK) model); every other weight must match exactly
    own = model.state_dict()
    state = {k: v for k, v in ck["model"].items() if k in own or not k.startswith("scalar.")}
    model.load_state_dict({**{k: v for k, v in own.items() if k.startswith("scalar.")}, **state})
    return model, ck


# -----------------------------------------------------------------------------
# Training helpers


def configure_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu"):
    """AdamW; weight decay only on matrices of linear layers, not on norms, biases or the
    (tied) embedding, following nanoGPT / GPT-3 practice."""
    params = [
        (p.dim() >= 2 and "wte" not in name, p)
        for name, p in model.named_parameters()
        if p.requires_grad
    ]
    groups = [
        {"params": [p for decay, p in params if decay], "weight_decay": weight_decay},
        {"params": [p for decay, p in params if not decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")


def lr_at(step, total, lr, warmup, min_lr=0.0, warmdown=0.0):
    """The one learning-rate schedule: linear warm-up over `warmup` steps, then cosine
    decay to min_lr at `total` (min_lr = lr gives a constant rate after warm-up); or, with
    warmdown > 0, constant and then a linear decay to min_lr over that last fraction of the
    steps (the "trapezoid" of the nanoGPT speedruns)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if warmdown > 0:
        return min_lr + (lr - min_lr) * min(1.0, (total - step) / (warmdown * total))
    r = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


def optimizer_step(opt, model, loss, grad_clip, step, lr=None):
    """Clip the gradient norm (grad_clip 0: no clipping) and step -- unless the loss or the
    gradient is not finite: then stop the script with one line saying so and where. Nothing
    is stepped or saved after that, so the last good checkpoint stays as it was. Returns the
    gradient norm."""
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    loss = loss.item() if torch.is_tensor(loss) else float(loss)
    if not (math.isfinite(loss) and math.isfinite(gnorm)):
        what = "gradient" if math.isfinite(loss) else "loss"
        raise SystemExit(
            f"stopped: non-finite {what} (loss {loss}, gradient norm {gnorm}) at step {step}; "
            f"nothing was saved after the last checkpoint (lower --lr?)"
        )
    if lr is not None:
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)  # a group may run at a multiple of the schedule
    opt.step()
    opt.zero_grad(set_to_none=True)
    return gnorm


PRECISION = {}  # device type -> "bf16" or "fp32", set once at start-up by set_precision


def set_precision(name, device):
    """--precision: "auto" is bf16 autocast on a GPU with bf16 and on a CPU with native bf16
    instructions (AVX-512 BF16 or AMX; a CPU without them runs bf16 slower than fp32), fp32
    elsewhere; or "bf16" / "fp32" forced. One switch for every path through autocast."""
    if name == "auto":
        cpu_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bf16" if gpu_bf16 or (device.type == "cpu" and cpu_bf16) else "fp32"
    if name not in ("bf16", "fp32"):
        raise SystemExit(f"--precision {name}: choose from auto, bf16, fp32")
    PRECISION[device.type] = name
    return name


def autocast(device_type):
    """bf16 autocast where set_precision chose it; unset, bf16 on CUDA and fp32 on a CPU
    (tests that do not go through a command line: exact results for fast-vs-slow checks)."""
    bf16 = PRECISION.get(device_type, "bf16" if device_type == "cuda" else "fp32") == "bf16"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)


# Dense bf16 tensor-core peak FLOP/s from vendor spec sheets (no sparsity). MFU is
# reported against these; "n/a" where the device is unknown or a CPU.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


def device_peak_flops(device):
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_FLOPS.items() if key in name), None)


def flops_per_token(cfg, n_params_non_embedding):
    """Training FLOPs per token: 6N for the weights plus 12 * L * T * d for attention
    (PaLM appendix B; as in nanoGPT). The tied output layer counts as a matmul."""
    n = n_params_non_embedding + cfg.vocab_size * cfg.n_embd
    return 6 * n + 12 * cfg.n_layer * cfg.block_size * cfg.n_embd


def mfu(cfg, n_params_non_embedding, tokens_per_sec, device, peak=None):
    """Model FLOPs utilisation as a fraction of peak (default: the GPU's spec sheet), or
    None (a CPU without a measured peak, an unknown GPU)."""
    peak = peak or device_peak_flops(device)
    return flops_per_token(cfg, n_params_non_embedding) * tokens_per_sec / peak if peak else None


# =============================================================================
# Shared by the scripts: one way of doing each common thing. Every script reads its
# config from the command line (parse_config), picks a device (get_device), writes into
# its own run folder (run_dir: metrics.jsonl, results.json, figures), samples replies to
# HH prompts (sample_replies) and builds a missing checkpoint by running the script that
# makes it (handoff, ensure_checkpoint). The model above does not depend on anything below.


def parse_config(config_cls, presets, doc, argv=None):
    """A script's dataclass config from the command line. Order: the dataclass defaults,
    then --preset NAME (combine with '+', e.g. gpu+tiny), then presets keyed 'field=value'
    that apply whenever that field has that value (train_lm.py's 'mode=sft'), then every
    flag given explicitly. The comment lines above each field of the dataclass are its --help.
    The Config's `preset` field records the preset, so that it can name the run's folder."""
    helps = config_help(config_cls)
    for name, over in presets.items():
        settings = ", ".join(f"{k}={v}" for k, v in over.items()) or "the defaults"
        helps["preset"] = helps.get("preset", "") + f"; {name}: {settings}"
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.error = lambda msg: sys.exit(f"{ap.prog}: {msg} (see --help)")  # one line, no usage
    for f in fields(config_cls):
        text = helps.get(f.name, "")
        if f.default not in ("", None):
            text += f" (default {f.default!r})"
        text = text.replace("%", "%%")  # argparse %-formats help
        if isinstance(f.default, bool):
            ap.add_argument(
                f"--{f.name}", default=None, help=text, action=argparse.BooleanOptionalAction
            )
        else:
            ap.add_argument(f"--{f.name}", default=None, help=text, type=type(f.default))
    args = ap.parse_args(argv)
    cfg = config_cls()
    given = {
        f.name: getattr(args, f.name) for f in fields(cfg) if getattr(args, f.name) is not None
    }
    for name in given.get("preset", cfg.preset).split("+"):
        if name not in presets or "=" in name:
            choices = ", ".join(k for k in presets if "=" not in k)
            ap.error(f"unknown preset {name!r}: choose from {choices}")
        cfg = replace(cfg, **presets[name])
    for key, over in presets.items():  # 'field=value' presets follow the field's final value
        field, _, value = key.partition("=")
        if value and str(given.get(field, getattr(cfg, field))) == value:
            cfg = replace(cfg, **over)
    cfg = replace(cfg, **given)
    for f in fields(cfg):  # a number is >= 0 (unless its default is < 0), and > 0 unless its
        value = getattr(cfg, f.name)  # help says what 0 means ("0: ...") or it is a seed
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            ap.error(f"--{f.name} {value}: must be a finite number")
        if f.default < 0:
            continue
        zero_ok = f.default == 0 or "seed" in f.name or re.search(r"\b0:", helps.get(f.name, ""))
        if value < 0 or (value == 0 and not zero_ok):
            ap.error(f"--{f.name} {value}: must be {'at least 0' if zero_ok else 'positive'}")
    return cfg


def config_help(config_cls):
    """{field: help text} from the '# ...' comment lines just above each field."""
    helps, comment = {}, []
    for line in inspect.getsource(config_cls).splitlines():
        text = line.strip()
        field = re.match(r"(\w+): [^=]+=", text)
        if text.startswith("#"):
            comment.append(text.lstrip("# "))
        elif field and comment:
            helps[field.group(1)] = " ".join(comment)
        if not text.startswith("#"):
            comment = []
    return helps


def get_device(name="auto"):
    """The --device flag, checked before any work: one line if it is not available here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    ok = name == "cpu" or (name.startswith("cuda") and torch.cuda.is_available())
    if not (ok or (name == "mps" and torch.backends.mps.is_available())):
        raise SystemExit(f"--device {name}: not available on this machine (try --device cpu)")
    return torch.device(name)


def run_path(root, *parts):
    """The folder of one run: root, then one level per way the run differs from the
    default -- its data, its preset, its mode -- e.g. run_path("out/train_lm", "hh-rlhf",
    "gpu", "sft") -> out/train_lm/hh-rlhf/gpu/sft. The defaults ("" for the default data,
    preset "cpu") add no level, so each kind of run has its own folder and none overwrites
    another's results."""
    return os.path.join(root, *[p for p in parts if p not in ("", "cpu")])


def run_dir(root, *parts, resume=None):
    """run_path, created if missing, with a new metrics.jsonl; or, resuming, the one a
    checkpoint saw: resume is its metrics_bytes (what came after the checkpoint is redone)."""
    path = run_path(root, *parts)
    os.makedirs(path, exist_ok=True)
    metrics = os.path.join(path, "metrics.jsonl")
    with open(metrics, "a" if resume is not None else "w") as f:
        f.truncate(min(resume or 0, f.seek(0, os.SEEK_END)))
    return path


def metrics_bytes(out_dir):
    """How much of metrics.jsonl a checkpoint written now has seen (for run_dir's resume)."""
    path = os.path.join(out_dir, "metrics.jsonl")
    return os.path.getsize(path) if os.path.exists(path) else 0


def log_metrics(out_dir, record):
    """Append one JSON object (one logged step) to out_dir/metrics.jsonl."""
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def write_json(path, obj):
    """results.json and friends, written atomically."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def printer(quiet):
    """A script's log function: print, flushed at once, or nothing when quiet."""
    return (lambda *args: None) if quiet else partial(print, flush=True)


def progress(items=None, desc="", quiet=False, total=None, initial=0, leave=True):
    """The one progress bar: tqdm on a terminal; elsewhere (a log file, CI) a plain line at
    the start, every 30 s and at the end instead of redraws, and an inner bar (leave=False)
    only if it lasts 30 s. Iterating a sized `items` also times its first steps (timed)."""
    # off a terminal tqdm writes to a "file" that prints each of its lines as a plain line
    lines = SimpleNamespace(flush=lambda: None, write=lambda s: s.strip() and eprint(s.strip()))
    plain = {"file": lines, "mininterval": 30, "maxinterval": 30, "delay": 0 if leave else 30}
    if hasattr(items, "__len__"):
        total = len(items) if total is None else total
        items = timed(items, desc)
    style = {} if sys.stderr.isatty() else plain
    return tqdm(items, desc, total=total, leave=leave, initial=initial, disable=quiet, **style)


def eprint(*args):
    print(*args, file=sys.stderr, flush=True)


def timed(items, desc):
    """Yield items; once the second step is timed (the first warms up and compiles), say
    how long the rest will take if that is over ten minutes (a gpu preset on a CPU, say).
    The user asked for the run, so it goes on."""
    for i, item in enumerate(items):
        if i == 1:
            second_started = time.time()
        if i == 2 and (left := (time.time() - second_started) * (len(items) - 2)) > 600:
            tqdm.write(f"{desc}: about {left / 3600:.1f} h to go at this speed; Ctrl-C stops it")
        yield item


def cli(main, parse):
    """A script's entry point: parse(argv) -> config, one line with what differs from the
    defaults (beyond its preset's settings), then main(config). Ctrl-C ends with one line:
    the last checkpoint written and the command that continues from it."""
    cfg, default = parse(None), parse([])
    if cfg.preset != default.preset:  # the preset's own settings are implied by its name
        default = replace(parse(["--preset", cfg.preset]), preset=default.preset)
    changed = [f"{k}={v}" for k, v in asdict(cfg).items() if v != getattr(default, k)]
    if not getattr(cfg, "quiet", False):
        print(f"config: {' '.join(changed) or 'the defaults'}", flush=True)
    device = get_device(cfg.device)  # checked here, before any work
    if hasattr(cfg, "precision"):
        chosen = set_precision(cfg.precision, device)
        if not cfg.quiet:
            print(f"precision: {chosen} (--precision {cfg.precision})", flush=True)
    if "gpu" in cfg.preset.split("+") and device.type == "cpu":
        eprint("--preset gpu on a CPU: sized for a GPU, it takes hours here (Ctrl-C stops it)")
    try:
        main(cfg)
    except KeyboardInterrupt:
        cmd = shlex.join(["python", *sys.argv] + ([] if "--resume" in sys.argv else ["--resume"]))
        if LAST_SAVED and hasattr(cfg, "resume"):
            path = LAST_SAVED[-1][0]  # the step on disk: a Ctrl-C may fall between save and record
            step = torch.load(path, map_location="cpu", weights_only=True).get("step")
            eprint(f"\ninterrupted: last checkpoint {path} (step {step}); continue with `{cmd}`")
        else:
            eprint("\ninterrupted: run the same command again (finished checkpoints are reused)")
        sys.exit(130)


def pyplot(figures):
    """matplotlib.pyplot with a file-only backend, or None when matplotlib (optional) is
    not installed: scripts then skip their figures, and this says which."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        print(f"matplotlib is not installed: skipped {figures} (`pip install matplotlib`)")
        return None


def save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    sys.modules["matplotlib.pyplot"].close(fig)  # loaded by pyplot()
    return path


def run_script(argv, announce, quiet=False):
    """Run one of the project's scripts as from the command line, saying why first; stop
    if it fails. argv: the script and its flags, e.g. ["train_lm.py", "--mode", "sft"].
    quiet: pass --quiet and keep its output back (shown only if it fails)."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), argv[0])]
    cmd += argv[1:]
    print(f"\n>>> {announce} with `python {' '.join(argv)}`", flush=True)
    t0 = time.time()
    try:
        r = subprocess.run(cmd + (["--quiet"] if quiet else []), capture_output=quiet, text=True)
    except KeyboardInterrupt:  # Ctrl-C reaches the script too: its own line says what to do
        sys.exit(130)
    if r.returncode != 0:
        print((r.stdout or "")[-2000:] + (r.stderr or "")[-4000:], flush=True)
        raise SystemExit(f"`python {' '.join(argv)}` failed (exit {r.returncode}); fix that first")
    print(f">>> done in {time.time() - t0:.0f}s\n", flush=True)


def ensure_checkpoint(ckpt, argv, what, quiet=False):
    """Build a missing checkpoint by running the script that makes it with its defaults,
    telling the user what is happening (ppo.py -> train_pm.py -> train_lm.py on a fresh
    clone), or resuming one that an interrupted run left unfinished. quiet: the run is
    quiet too (its output shown only if it fails)."""
    if os.path.exists(ckpt) and not finished(ckpt):
        run_script(argv + ["--resume"], f"{ckpt} is unfinished: resuming {what}", quiet)
    if not os.path.exists(ckpt):
        run_script(argv, f"{ckpt} not found: building {what}", quiet)
        if not os.path.exists(ckpt):
            raise SystemExit(f"`python {' '.join(argv)}` did not write {ckpt}")
    return ckpt


def finished(ckpt):
    """False for a checkpoint written mid-run (its step short of its run's steps)."""
    try:
        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
        return ck.get("step", 0) >= ck.get("train_config", {}).get("steps", 0)
    except Exception:  # not readable: load_checkpoint will say so in one line
        return True


def handoff(stage, preset="cpu"):
    """Where the world run of a stage leaves its checkpoint, for a preset: the hand-offs
    between the scripts, and the command that builds it (for ensure_checkpoint)."""
    script, sub, name, flags = {
        "pretrain": ("train_lm", "", "pretrain.pt", ""),
        "sft": ("train_lm", "sft_hh", "sft.pt", "--mode sft"),
        "sft_helpful": ("train_lm", "sft_helpful", "sft.pt", "--mode sft --sft_mix helpful"),
        "pm": ("train_pm", "", "pm.pt", ""),
    }[stage]
    ckpt = os.path.join(run_path(f"out/{script}", preset, sub), name)
    return ckpt, [f"{script}.py", "--preset", preset, *flags.split()]


def sample_replies(
    model, enc, prompts, max_new_tokens, temperature=1.0, generator=None, top_k=None
):
    """Sample one reply to each HH prompt string (ending in 'Assistant:') -> (replies,
    generate's dict plus 'ended'). Long prompts keep their end; a reply ends at the end
    token or where the model starts a new 'Human:' turn."""
    eot = enc.eot_token
    toks = [enc.encode_ordinary(p)[-(model.cfg.block_size - max_new_tokens) :] for p in prompts]
    with autocast(model.wte.weight.device.type):
        out = generate(
            model, toks, max_new_tokens, temperature, top_k=top_k, eot_id=eot, generator=generator
        )
    out["ended"] = ((out["tokens"] == eot) & out["gen_mask"]).any(1)
    replies = []
    for row, gm in zip(out["tokens"].tolist(), out["gen_mask"].tolist(), strict=True):
        text = enc.decode([t for t, g in zip(row, gm, strict=True) if g and t < eot])
        replies.append(text.split("\n\nHuman:")[0].strip())
    return replies, out


# -----------------------------------------------------------------------------
# Talk to a checkpoint: python model.py out/ppo/policy.pt


def chat(argv=None):
    """Sample replies from a language-model checkpoint (pretrained, SFT, PPO or CAI; world or
    HH-RLHF) in the HH "Human: / Assistant:" format: one --prompt, or an interactive chat
    (an empty line or Ctrl-D ends it). A reply to a request of the assistant world is
    followed by the world's gold reading of it: [gold: category, helpfulness, harmlessness]."""
    ap = argparse.ArgumentParser(prog="model.py", description=chat.__doc__)
    ap.add_argument("checkpoint", help="a .pt written by train_lm.py, ppo.py or critique_revise.py")
    ap.add_argument("--prompt", default="", help="answer this one request and stop")
    ap.add_argument("--temperature", type=float, default=0.7, help="0: greedy (default 0.7)")
    ap.add_argument("--max_new_tokens", type=int, default=64, help="longest reply (default 64)")
    ap.error = lambda msg: sys.exit(f"model.py: {msg} (see --help)")
    args = ap.parse_args(argv)
    if not 0 <= args.temperature < math.inf:  # also NaN
        ap.error(f"--temperature {args.temperature}: must be a finite number, at least 0")
    if args.max_new_tokens < 1:
        ap.error(f"--max_new_tokens {args.max_new_tokens}: must be positive")
    from data import world  # late: the world is built only for a chat
    from data.tokenizer import get_tokenizer

    device = get_device()
    set_precision("auto", device)  # as the scripts sample
    model, ck = load_checkpoint(args.checkpoint, device)
    if model.scalar is not None or ck["tokenizer"] == "synthetic":
        raise SystemExit(
            f"{args.checkpoint}: not a language model of text (a PM, value, P(IK) "
            "or induction.py model); give one written by train_lm.py or ppo.py"
        )
    enc, gen = get_tokenizer(ck["tokenizer"]), torch.Generator(device).manual_seed(0)
    new_tokens = min(args.max_new_tokens, model.cfg.block_size // 2)  # room for the request
    context = ""
    while request := args.prompt or typed("Human: "):
        context += f"\n\nHuman: {request}\n\nAssistant:"
        replies, _ = sample_replies(model, enc, [context], new_tokens, args.temperature, gen)
        category, helpful, harmless = world.judge(request, replies[0])[:3]
        gold = f"  [gold: {category}, {helpful}, {harmless}]" if category else ""
        print(f"Assistant: {replies[0]}{gold}", flush=True)
        if args.prompt:
            break
        context += " " + replies[0]


def typed(prompt):
    """A line from the user, '' at the end of input or on Ctrl-C."""
    try:
        return input(prompt).strip()
    except (EOFError, KeyboardInterrupt):
        print()
        return ""


if __name__ == "__main__":
    chat()
