"""
induction.py -- induction heads and the in-context-learning phase change (Olsson et al. 2022,
"In-context Learning and Induction Heads"), argued the paper's way: its six lines of evidence,
each measured on small models trained from scratch.

  1. Co-occurrence (Argument 1): the phase-change window is the 10%-90% rise of the best
     head's prefix-matching score; how much of the in-context-learning (ICL) score's change,
     and of the loss's fall, happens inside it, in each seed of the 2-layer model.
  2. Shifting the phase change (Argument 2): a 1-layer "smeared key" model, whose keys can mix
     in the previous token's key, against the 2-layer model. The smear starts near zero
     (--smear_init), so that the model has no previous-token mechanism at initialisation.
  3. Ablation (Argument 3): at every snapshot each head's output is zeroed in turn, and all
     induction heads (and all previous-token heads) together.
  4. Behaviour on examples (Argument 4): the induction head's attention on one repeated
     random sequence, and the loss on its first and second copy.
  5. Mechanism (Argument 5): previous-token heads in layer 0, their K-composition into the
     induction heads against its value at initialisation, and the OV circuit's copying
     statistic (Elhage et al. 2021's eigenvalue score).
  6. Models with MLPs (Argument 6): the same co-occurrence on `mlp2`.
The measured numbers, natural text and the GPU preset: the docs page docs/induction_heads.md.

Run:
    python induction.py                  # CPU: attn1, attn2 x 3 seeds, smear1 x 3 seeds, mlp2
    python induction.py --preset text    # natural text: tinyshakespeare from ../shared/data/text
                                         # (or --data PATH)
    python induction.py --preset gpu     # context 512, width 256, 3,000 steps
    python induction.py --analyze out/train_lm/pretrain.pt   # per-head scores of any checkpoint
                                                             # (-> pretrain.heads.json)
What to look at: the tables printed at the end (phase change, window, the share of the ICL
change inside it, the ablation, K-composition), phase_change.png (loss, ICL score and prefix
matching on shared steps, window shaded: the paper's Fig. 1/5/6), ablation.png (each head's
ablation effect over training: the Argument 3 figure), prefix_matching.png, attention.png (the
induction stripe). Writes results.json (models: layers, smeared_key, attn_only,
phase_change_step, pm_window, icl_change_in_window, ablation, prev_token_max,
k_composition_max/_init, max_prefix_matching, final_icl_score, runs per seed; seeds; targets;
example; config: every setting; seconds), metrics.jsonl, the figures and each model's
checkpoint.
"""

import functools
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data.prepare import (
    copy_spans,
    data_name,
    default_tokenizer,
    load_split,
    prepare,
    synthetic_batch,
)
from model import (
    GPT,
    GPTConfig,
    cli,
    configure_optimizer,
    get_device,
    load_checkpoint,
    log_metrics,
    lr_at,
    optimizer_step,
    parse_config,
    printer,
    progress,
    pyplot,
    run_dir,
    save_checkpoint,
    save_figure,
    write_json,
)


@dataclass
class Config:
    # settings for a scale, combined with '+' (each non-cpu preset has its own run folder)
    preset: str = "cpu"
    # comma-separated: attnN N-layer attention-only, smearN smeared keys, mlpN with MLPs
    models: str = "attn1,attn2,smear1,mlp2"
    # seeds for the models in --seed_models (the phase change's spread); others run seed --seed
    seeds: int = 3
    # models trained with --seeds seeds
    seed_models: str = "attn2,smear1"
    # "synthetic" (repeated random segments), "world", or a text / HH file
    data: str = "synthetic"
    # training steps per attention-only model
    steps: int = 1000
    # training steps per mlpN model
    mlp_steps: int = 2500
    # sequences per step
    batch_size: int = 32
    # context length in tokens
    block_size: int = 64
    # synthetic vocabulary size (other data: the tokenizer's)
    vocab: int = 64
    # synthetic: share of chunks that copy an earlier stretch
    p_repeat: float = 0.7
    # text: share of windows in which an earlier span of the window is copied later
    repeat_frac: float = 0.0
    # residual stream width
    n_embd: int = 64
    # attention heads per layer
    n_head: int = 4
    # learning rate (constant after warm-up)
    lr: float = 1e-3
    # steps of linear warm-up (0: none)
    warmup: int = 20
    # clip the gradient norm to this (0: no clipping)
    grad_clip: float = 0.0
    # smeared keys: initial weight on the previous token's key (0.01: no previous-token mechanism)
    smear_init: float = 0.01
    # smeared keys: learning-rate multiple for the smear logits (see the note in build())
    smear_lr_mult: float = 30.0
    # measurements every this many steps: resolves the phase change in time
    snap_every: int = 25
    # best prefix-matching score a model must reach to count as having an induction head
    threshold: float = 0.3
    # print the per-head scores of this checkpoint and exit
    analyze: str = ""
    # --analyze: probe with token ids below this, the ones the model was trained on (0: all)
    probe_vocab: int = 0
    # root folder; a run goes to <out_dir>[/<data name>][/<preset>]
    out_dir: str = "out/induction"
    # random seed (initialisation, data) of the first (or only) run of each model
    seed: int = 0
    # "auto" (cuda if available), "cpu", "cuda", ...
    device: str = "auto"
    # no progress bar or messages
    quiet: bool = False


SHAKESPEARE = "../shared/data/text/tinyshakespeare.txt"
PRESETS = {
    "cpu": {},
    "text": {
        "data": SHAKESPEARE,
        "block_size": 256,
        "steps": 800,
        "repeat_frac": 0.5,
        "models": "attn1,attn2",
        "seeds": 1,
        "snap_every": 50,
    },
    # seconds, for tests
    "tiny": {"steps": 20, "mlp_steps": 20, "snap_every": 10, "block_size": 32, "seeds": 1},
    "gpu": {
        "block_size": 512,
        "steps": 3000,
        "mlp_steps": 3000,
        "batch_size": 64,
        "n_embd": 256,
        "n_head": 8,
        "snap_every": 50,
    },
}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, __doc__, argv)


# -----------------------------------------------------------------------------
# Data


def repeated_random(batch, n, vocab, gen, T=None):
    """The probe for prefix matching: random tokens repeated twice (Olsson et al. 2022,
    Sec. 2, 'repeated sequences of random tokens'). With T, each sequence draws its own
    period from T/8..n and random tokens fill it up to T, so that a head attending at one
    fixed offset cannot score -> (tokens (B, 2n or T), periods (B,))."""
    if T is None:
        r = torch.randint(0, vocab, (batch, n), generator=gen)
        return torch.cat([r, r], 1), torch.full((batch,), n)
    periods = torch.randint(max(2, T // 8), n + 1, (batch,), generator=gen)
    x = torch.randint(0, vocab, (batch, T), generator=gen)
    for b, p in enumerate(periods.tolist()):
        x[b, p : 2 * p] = x[b, :p]
    return x, periods


def probe_batch(vocab, T, device):
    """The prefix-matching probe every measurement uses: 16 sequences of random tokens, each
    repeated once with its own period (T/8..T/2), fixed seed -> (tokens, periods) on device."""
    tokens, periods = repeated_random(16, T // 2, vocab, torch.Generator().manual_seed(1), T)
    return tokens.to(device), periods.to(device)


def training_data(cfg):
    """Natural text as a token array, with our BPE (world / any text) -> (ids, vocab,
    tokenizer); (None, --vocab, "synthetic") for synthetic data."""
    if cfg.data == "synthetic":
        return None, cfg.vocab, "synthetic"
    if cfg.data != "world" and not os.path.exists(cfg.data):
        raise SystemExit(f"{cfg.data}: no such file (give a plain-text file with --data PATH)")
    tok = default_tokenizer(cfg.data)
    d, meta = prepare(cfg.data, tok, verbose=not cfg.quiet)
    ids = np.asarray(load_split(d, "train", meta)[0], dtype=np.int64)
    return ids, meta["vocab"], tok


def text_batch(ids, batch, T, gen, repeat_frac):
    """Random windows of the text; in a share repeat_frac of them an earlier natural span
    is copied to a later place in the same window (data.prepare.copy_spans)."""
    ix = torch.randint(len(ids) - T - 1, (batch,), generator=gen).tolist()
    windows = torch.from_numpy(np.stack([ids[i : i + T + 1] for i in ix]))
    x = copy_spans(windows, repeat_frac, gen)
    return x[:, :-1], x[:, 1:]


# -----------------------------------------------------------------------------
# Measurements (Olsson et al. 2022, Sec. 2 "Key concepts", Sec. 4-9 the six arguments)


def icl_score(loss_per_pos):
    """In-context learning score: mean loss at a late token minus mean loss at an early one.
    The paper uses token 500 minus token 50 (context 512+). For shorter contexts we scale
    both positions with the context length (50/512 and 500/512 of T) and average over a
    small window around each (+-2 tokens) to reduce noise. Negative = later tokens are
    easier = the model learns in context."""
    T = loss_per_pos.shape[-1]
    early = max(1, round(50 / 512 * T))
    late = min(T - 3, round(500 / 512 * T))  # keep the +-2 window inside

    def around(c):
        return loss_per_pos[..., max(0, c - 2) : c + 3].mean()

    return float(around(late) - around(early))


def prefix_matching(atts, tokens, n):
    """Per-head prefix-matching score: on random tokens repeated once (period n, an int or
    one per sequence), the attention from each token of the second copy to the tokens that
    *followed earlier occurrences of the current token* (Olsson et al. 2022, Sec. 2) --
    above all position i - n + 1, but also after chance duplicates. A perfect induction head
    scores 1; a previous-token head ~0. atts: list over layers of (B, H, T, T); tokens: (B, T)."""
    B, T = tokens.shape
    pos = torch.arange(T, device=tokens.device)
    n = torch.as_tensor(n, device=tokens.device).expand(B)[:, None]
    query = ((pos >= n) & (pos < 2 * n)).to(atts[0].dtype)  # (B, T): the second copy
    # the token before each key (-1 before the first)
    prev = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], 1)
    causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    target = (prev[:, None, :] == tokens[:, :, None]) & causal  # (B, query, key)
    scores = []
    for a in atts:  # per layer: the attention on target keys (B, H, T), averaged over queries
        on_target = (a * target[:, None].to(a.dtype)).sum(-1)
        scores.append((on_target * query[:, None]).sum((0, 2)) / query.sum())
    return torch.stack(scores)  # (layers, heads)


def prev_token_scores(atts):
    """Per-head mean attention from each token to the one just before it (Argument 5's
    previous-token heads) -> (layers, heads)."""
    return torch.stack([a.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, 2)) for a in atts])


def head_scores(model, tokens, periods):
    """Per-head prefix-matching and previous-token scores on a probe, on the CPU."""
    atts = model.attention_patterns(tokens)
    return prefix_matching(atts, tokens, periods).cpu(), prev_token_scores(atts).cpu()


def zero_columns(_, args, cols):
    """Forward pre-hook of an output projection: its input with the given columns zeroed."""
    return (args[0].index_fill(-1, cols.to(args[0].device), 0),)


@contextmanager
def ablated(model, heads):
    """Inside the with block, the given (layer, head)s have their outputs zeroed -- their
    slices of the input to the attention output projection (Argument 3)."""
    hd = model.cfg.n_embd // model.cfg.n_head
    handles = []
    for layer in sorted({layer for layer, _ in heads}):
        cols = [c for lay, h in heads if lay == layer for c in range(h * hd, (h + 1) * hd)]
        hook = functools.partial(zero_columns, cols=torch.tensor(cols))
        handles.append(model.blocks[layer].attn.proj.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def circuits(model, layer):
    """Per head of a layer, W_QK (key side -> query side) and W_OV (input -> output) as
    d x d matrices in the residual basis, with the pre-attention norm's gain folded in; the
    norm's scaling and the rotary rotation (position-dependent) are left out, as usual."""
    C, H = model.cfg.n_embd, model.cfg.n_head
    hd = C // H
    blk = model.blocks[layer]
    Wq, Wk, Wv = (blk.attn.qkv.weight.detach().float() * blk.ln1.detach().float()).split(C)
    Wo = blk.attn.proj.weight.detach().float()
    heads = [slice(h * hd, (h + 1) * hd) for h in range(H)]
    return [Wq[s].T @ Wk[s] for s in heads], [Wo[:, s] @ Wv[s] for s in heads]


def k_composition(model):
    """K-composition of each layer-0 head into each layer-1 head (Elhage et al. 2021):
    |W_QK W_OV|_F / (|W_QK|_F |W_OV|_F), how much of the layer-1 head's key side reads what
    the layer-0 head writes. (layer-0 heads, layer-1 heads), or None with one layer. Random
    matrices compose too: compare with the value at initialisation."""
    if model.cfg.n_layer < 2:
        return None
    ov, qk = circuits(model, 0)[1], circuits(model, 1)[0]  # what layer 0 writes, layer 1 reads
    kc = torch.zeros(len(ov), len(qk))
    for i, o in enumerate(ov):
        for j, q in enumerate(qk):
            norms = torch.linalg.norm(q) * torch.linalg.norm(o)
            kc[i, j] = torch.linalg.norm(q @ o) / norms.clamp(min=1e-12)
    return kc


def copying_scores(model, top=5):
    """Per-head copying score: Elhage et al. 2021's eigenvalue statistic sum(Re lambda) /
    sum(|lambda|) of the OV circuit W_U W_OV W_E (1: the head raises the logit of every token
    it attends to, -1: it lowers it; Olsson et al. use the positive share of the eigenvalues).
    Also a logit check: the share of tokens t whose own logit is in the top-`top` of the OV
    output when the head attends to t. A layer-1 head's OV reads the embedding directly here
    (composition through layer 0 ignored, as in the paper's per-head measure)."""
    V = model.cfg.vocab_valid or model.cfg.vocab_size
    W_E = model.wte.weight[:V].detach().float()  # (V, d)
    # (V, d), with the final norm's gain
    W_U = model.unembedding()[:V].detach().float() * model.ln_f.detach().float()
    eig, logit = [], []
    for layer in range(model.cfg.n_layer):
        for ov in circuits(model, layer)[1]:
            # (d, d): the non-zero eigenvalues of W_U W_OV W_E^T
            lam = torch.linalg.eigvals(ov @ W_E.T @ W_U)
            eig.append(float(lam.real.sum() / lam.abs().sum().clamp(min=1e-12)))
            out = W_E @ ov.T @ W_U.T  # (V, V): row t = logits when the head attends to token t
            logit.append(float(((out > out.diagonal()[:, None]).sum(1) < top).float().mean()))
    L, H = model.cfg.n_layer, model.cfg.n_head
    return torch.tensor(eig).view(L, H), torch.tensor(logit).view(L, H)


def measure(model, eval_batch, probe, threshold):
    """Snapshot: per-head prefix-matching and previous-token scores on the probe; the ICL
    score and loss on held-out data, intact, with each head zeroed in turn, and with all the
    induction heads (prefix matching >= threshold) or all the previous-token heads
    (previous-token score >= threshold) zeroed together."""
    model.eval()
    x, y = eval_batch
    L, H = model.cfg.n_layer, model.cfg.n_head

    def icl():
        logits = model(x)[0].float()
        lpp = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0).cpu()
        return icl_score(lpp), float(lpp.mean())

    with torch.no_grad():
        prefix, prev = head_scores(model, *probe)
        score, loss = icl()
        out = {"icl_score": score, "eval_loss": loss, "prefix_matching": prefix, "prev_token": prev}
        out["ablated_icl"] = torch.zeros(L, H)
        for layer in range(L):
            for head in range(H):
                with ablated(model, [(layer, head)]):
                    out["ablated_icl"][layer, head] = icl()[0]
        for kind, scores in (("induction_heads", prefix), ("prev_token_heads", prev)):
            heads = [(i, h) for i in range(L) for h in range(H) if scores[i, h] >= threshold]
            with ablated(model, heads):
                out[f"icl_{kind}_ablated"] = icl()[0] if heads else None
            out[kind] = [f"{i}.{h}" for i, h in heads]
    model.train()
    return out


PHASE_KEYS = ("phase_change_step", "pm_window", "icl_change_in_window", "loss_change_in_window")


def phase_change(snaps, threshold):
    """The phase change read off the best head's prefix-matching curve: none unless it
    reaches `threshold`; otherwise its rise from the first snapshot's value to its maximum.
    The window runs from the last snapshot before the curve first passes 10% of the rise
    to the first at 90% of it; the phase-change step is the first snapshot at half of it.
    Also the share of the ICL score's change (first to last snapshot) and of the loss's
    that happens inside the window (Argument 1: do they change at the same time?)."""
    pm = [s["max_prefix_matching"] for s in snaps]
    if max(pm) < threshold:
        return dict.fromkeys(PHASE_KEYS)
    base, top = pm[0], max(pm)

    def first(f):  # the first snapshot at a share f of the rise
        return next(i for i, p in enumerate(pm) if p >= base + f * (top - base))

    a, b = max(first(0.1) - 1, 0), first(0.9)

    def share(key):
        total = snaps[-1][key] - snaps[0][key]
        return (snaps[b][key] - snaps[a][key]) / total if total else None

    return {
        "phase_change_step": snaps[first(0.5)]["step"],
        "pm_window": {"start": snaps[a]["step"], "end": snaps[b]["step"]},
        "icl_change_in_window": share("icl_score"),
        "loss_change_in_window": share("eval_loss"),
    }


# -----------------------------------------------------------------------------
# Training


def build(name, cfg, vocab):
    """The model a name stands for: attnN (N layers, attention only), smearN (the same with
    smeared keys) or mlpN (with MLPs), embeddings untied."""
    match = re.fullmatch(r"(attn|smear|mlp)(\d+)", name)
    if match is None or int(match[2]) < 1:
        raise SystemExit(f"unknown model {name!r}: use attnN, smearN or mlpN")
    kind = match[1]
    config = GPTConfig(
        vocab_size=vocab,
        block_size=cfg.block_size,
        n_layer=int(match[2]),
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        attn_only=kind != "mlp",
        smeared_key=kind == "smear",
        tie_embeddings=False,
    )
    model = GPT(config)
    if config.smeared_key:
        # Argument 2 without the confound: the smear starts near zero, so the model has no
        # previous-token mechanism at initialisation and must learn to smear. Adam moves a
        # parameter by about lr per step, so at lr 1e-3 a logit of -4.6 needs thousands of
        # steps to reach 0: the smear logits train at smear_lr_mult x lr instead
        # (make_optimizer).
        with torch.no_grad():
            for blk in model.blocks:
                blk.attn.smear.fill_(math.log(cfg.smear_init / (1 - cfg.smear_init)))
    return model


def make_optimizer(model, cfg, device):
    """AdamW without weight decay (model.configure_optimizer); the smear logits move to a
    group of their own at smear_lr_mult x lr (model.optimizer_step reads lr_mult)."""
    opt = configure_optimizer(model, cfg.lr, 0.0, device_type=device.type)
    if model.cfg.smeared_key:
        smear = [blk.attn.smear for blk in model.blocks]
        for g in opt.param_groups:
            g["params"] = [p for p in g["params"] if all(p is not s for s in smear)]
        opt.add_param_group({"params": smear, "weight_decay": 0.0, "lr_mult": cfg.smear_lr_mult})
    return opt


def train_one(name, cfg, device, text, vocab, seed):
    """Train one model from seed (synthetic data, or windows of text), measuring every
    snap_every steps -> (model, snapshots, K-composition at initialisation)."""
    torch.manual_seed(seed)
    model = build(name, cfg, vocab).to(device)
    steps = cfg.steps if model.cfg.attn_only else cfg.mlp_steps
    k_init = k_composition(model)
    opt = make_optimizer(model, cfg, device)

    def batch(gen, n):
        if text is None:
            return synthetic_batch(n, cfg.block_size, vocab, gen, cfg.p_repeat)
        return text_batch(text, n, cfg.block_size, gen, cfg.repeat_frac)

    gen = torch.Generator().manual_seed(seed)
    ex, ey = batch(torch.Generator().manual_seed(999), 64)
    eval_batch = (ex.to(device), ey.to(device))
    probe = probe_batch(vocab, cfg.block_size, device)
    snaps, losses = [], []
    bar = progress(range(steps + 1), f"{name} seed {seed}", cfg.quiet, leave=False)
    for step in bar:
        if step % cfg.snap_every == 0:
            snap = {"model": name, "seed": seed, "step": step}
            snap["tokens"] = step * cfg.batch_size * cfg.block_size
            snap["train_loss"] = float(np.mean(losses[-cfg.snap_every :])) if losses else None
            for k, v in measure(model, eval_batch, probe, cfg.threshold).items():
                snap[k] = v.tolist() if torch.is_tensor(v) else v
            snap["max_prefix_matching"] = float(np.max(snap["prefix_matching"]))
            if model.cfg.smeared_key:
                snap["smear_weight"] = [torch.sigmoid(b.attn.smear).tolist() for b in model.blocks]
            snaps.append(snap)
            bar.set_postfix(
                loss=snap["eval_loss"],
                icl=snap["icl_score"],
                prefix=snap["max_prefix_matching"],
                refresh=False,
            )
        if step == steps:
            break
        x, y = batch(gen, cfg.batch_size)
        _, loss = model(x.to(device), y.to(device))
        loss.backward()
        lr = lr_at(step, steps, cfg.lr, cfg.warmup, cfg.lr)
        optimizer_step(opt, model, loss, cfg.grad_clip, step + 1, lr)
        losses.append(loss.item())
    model.eval()
    return model, snaps, k_init


def summarize(model, snaps, k_init, cfg):
    """One run's numbers: the phase change (Argument 1), the ablation at the end
    (Argument 3: the top induction head and its previous-token partner), previous-token
    scores and K-composition against initialisation (Argument 5)."""
    last = snaps[-1]
    prefix = np.array(last["prefix_matching"])
    abl = np.array(last["ablated_icl"])
    prev = np.array(last["prev_token"])
    layer, head = np.unravel_index(prefix.argmax(), prefix.shape)
    worst = np.unravel_index(abl.argmax(), abl.shape)
    kc = k_composition(model)
    ablation = {
        "icl_score_intact": last["icl_score"],
        "icl_score_top_head_ablated": float(abl[layer, head]),
        "top_head": f"{layer}.{head}",
        "most_damaging_head": f"{worst[0]}.{worst[1]}",
        "icl_score_most_damaging_ablated": float(abl.max()),
        "induction_heads": last["induction_heads"],
        "prev_token_heads": last["prev_token_heads"],
        "icl_score_induction_heads_ablated": last["icl_induction_heads_ablated"],
        "icl_score_prev_token_heads_ablated": last["icl_prev_token_heads_ablated"],
    }
    out = {
        "layers": model.cfg.n_layer,
        "smeared_key": model.cfg.smeared_key,
        "attn_only": model.cfg.attn_only,
        **phase_change(snaps, cfg.threshold),
        "max_prefix_matching": max(s["max_prefix_matching"] for s in snaps),
        "final_prefix_matching": last["max_prefix_matching"],
        "final_icl_score": last["icl_score"],
        "final_loss": last["eval_loss"],
        "ablation": ablation,
        "prev_token_max": float(prev.max()),
        "k_composition_max": None if kc is None else float(kc.max()),
        "k_composition_init": None if kc is None else float(k_init.max()),
    }
    if kc is not None:
        p = int(prev[0].argmax())  # the layer-0 head most like a previous-token head
        out["k_composition_mean_init"] = float(k_init.mean())
        out["prev_token_head"] = f"0.{p}"
        if layer >= 1:  # the induction head's partner: ablated, and its K-composition into it
            ablation["icl_score_prev_token_head_ablated"] = float(abl[0, p])
            out["k_composition_pair"] = float(kc[p, head])
            out["k_composition_pair_init"] = float(k_init[p, head])
        # who composes with whom: each layer-0 head into the layer-1 induction heads (into
        # all layer-1 heads when there are none)
        ind = [int(x.split(".")[1]) for x in last["induction_heads"] if x.startswith("1.")]
        if not ind:
            ind = list(range(kc.size(1)))
        out["layer0_heads"] = [
            {
                "head": f"0.{i}",
                "prev_token": float(prev[0, i]),
                "k_composition_into_induction_heads": float(kc[i, ind].mean()),
                "k_composition_init": float(k_init[i, ind].mean()),
            }
            for i in range(kc.size(0))
        ]
    if model.cfg.smeared_key:
        out["smear_weight_init"] = cfg.smear_init
        out["smear_weight_final"] = last["smear_weight"]
    return out


def head_table(model, vocab, T=64):
    """Per-head (layer.head, prefix matching, previous-token score, copying eigen-score,
    copying logit check), sorted by prefix matching."""
    tokens, periods = probe_batch(vocab, min(T, model.cfg.block_size), model.wte.weight.device)
    with torch.no_grad():
        prefix, prev = head_scores(model, tokens, periods)
    eig, logit = copying_scores(model)
    rows = [
        {
            "head": f"{layer}.{h}",
            "prefix_matching": float(prefix[layer, h]),
            "prev_token": float(prev[layer, h]),
            "copying": float(eig[layer, h]),
            "copying_logit": float(logit[layer, h]),
        }
        for layer in range(prefix.size(0))
        for h in range(prefix.size(1))
    ]
    return sorted(rows, key=lambda r: -r["prefix_matching"])


def example(model, head, vocab, n=12):
    """Argument 4 on one case: random tokens repeated once; for each token of the second
    copy, where the head attends most, whether that is the token after the same token's
    first occurrence, and the model's loss on the first vs the second copy."""
    layer, h = map(int, head.split("."))
    x = repeated_random(1, n, vocab, torch.Generator().manual_seed(3))[0]
    x = x.to(model.wte.weight.device)
    with torch.no_grad():
        att = model.attention_patterns(x)[layer][0, h].cpu()
        logits = model(x[:, :-1])[0][0].float()
        loss = F.cross_entropy(logits, x[0, 1:], reduction="none").cpu()
    top = att[n:].argmax(-1)
    on_next = (top == torch.arange(n, 2 * n) - n + 1).float().mean()
    return {
        "head": head,
        "tokens": x[0].tolist(),
        "attended": top.tolist(),
        "attention": att.tolist(),
        "share_on_next_after_first_copy": float(on_next),
        "loss_first_copy": float(loss[: n - 1].mean()),
        "loss_second_copy": float(loss[n:].mean()),
    }


def fmt(v, spec=".3f"):
    """A table cell: text as it is, a number as spec says, None as '-'."""
    if v is None:
        return "-"
    return v if isinstance(v, str) else format(v, spec)


def table(log, rows):
    """Log rows (dicts from column title to cell, the same titles in each; cells through
    fmt) as a table: each column two wider than its longest entry, the first left-aligned."""
    titles = list(rows[0])
    body = [[fmt(v) for v in row.values()] for row in rows]
    widths = [2 + max(len(t), *(len(row[i]) for row in body)) for i, t in enumerate(titles)]
    for cells in [titles, *body]:
        line = cells[0].ljust(widths[0])
        for cell, width in zip(cells[1:], widths[1:], strict=True):
            line += cell.rjust(width)
        log(line)


def analyze(path, device, probe_vocab=0):
    """Per-head scores of any checkpoint: printed, and written next to it as .heads.json
    (read by train_lm.py's repeated-data sweep)."""
    model, ck = load_checkpoint(path, device)
    model.eval()
    vocab = min(model.cfg.vocab_valid or model.cfg.vocab_size, probe_vocab or 10**9)
    rows = head_table(model, vocab)
    layers, heads = model.cfg.n_layer, model.cfg.n_head
    print(f"{path}: {layers} layers x {heads} heads (tokenizer {ck['tokenizer']})")
    table(print, rows)
    write_json(os.path.splitext(path)[0] + ".heads.json", rows)
    return rows


# -----------------------------------------------------------------------------
# Figures


def figures(runs, summary, ex, out_dir):
    """The figures (none without matplotlib): one panel per model, over training -> paths."""
    plt = pyplot("phase_change.png, ablation.png, prefix_matching.png")
    if plt is None:
        return []
    paths, names = [], list(runs)
    n = len(names)
    # Argument 1: loss, ICL score and prefix matching on shared steps, every seed, windows shaded
    fig, axes = plt.subplots(3, n, figsize=(3.4 * n, 7), squeeze=False, sharex="col")
    for j, name in enumerate(names):
        axes[0, j].set_title(name, fontsize=9)
        axes[2, j].set_xlabel("training step")
        for k, (seed, snaps) in enumerate(runs[name]):
            steps = [s["step"] for s in snaps]
            for i, key in enumerate(("eval_loss", "icl_score", "max_prefix_matching")):
                values = [s[key] for s in snaps]
                axes[i, j].plot(steps, values, color=f"C{k}", lw=1, label=f"seed {seed}")
            w = summary[name]["runs"][k]["pm_window"]
            if w:
                for ax in axes[:, j]:
                    ax.axvspan(w["start"], w["end"], color=f"C{k}", alpha=0.12, lw=0)
    for i, label in enumerate(("held-out loss", "ICL score", "best prefix matching")):
        axes[i, 0].set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    title = "Argument 1: loss, ICL score and prefix matching; shaded: each seed's 10-90% "
    fig.suptitle(title + "prefix-matching rise", fontsize=9)
    paths.append(save_figure(fig, os.path.join(out_dir, "phase_change.png")))

    def head_curves(value, ylabel, dash_early_layers=False):
        """A curve per head of value(snapshot) (L, H) over training, each model's first seed."""
        fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3), squeeze=False, sharey=True)
        for j, name in enumerate(names):
            axes[0, j].set_title(name, fontsize=9)
            axes[0, j].set_xlabel("training step")
            snaps = runs[name][0][1]
            steps = [s["step"] for s in snaps]
            v = np.array([value(s) for s in snaps])  # (snaps, L, H)
            for layer in range(v.shape[1]):
                ls = "--" if dash_early_layers and layer < v.shape[1] - 1 else "-"
                for h in range(v.shape[2]):
                    axes[0, j].plot(steps, v[:, layer, h], lw=1, label=f"{layer}.{h}", ls=ls)
        axes[0, 0].set_ylabel(ylabel)
        return fig, axes

    # Argument 3: each head's ablation effect on the ICL score over training (first seed)
    fig, axes = head_curves(
        lambda s: np.array(s["ablated_icl"]) - s["icl_score"],
        "ICL score: head zeroed - intact",
        dash_early_layers=True,
    )
    for j, name in enumerate(names):
        snaps = [s for s in runs[name][0][1] if s["icl_induction_heads_ablated"] is not None]
        if snaps:
            steps = [s["step"] for s in snaps]
            effect = [s["icl_induction_heads_ablated"] - s["icl_score"] for s in snaps]
            axes[0, j].plot(steps, effect, color="k", lw=2, label="all induction heads")
        axes[0, j].legend(fontsize=5, ncol=2)
    title = "Argument 3: the ICL score with one head zeroed (dashed: layer 0), or all induction "
    fig.suptitle(title + "heads (black), minus intact", fontsize=9)
    paths.append(save_figure(fig, os.path.join(out_dir, "ablation.png")))
    fig, _ = head_curves(lambda s: s["prefix_matching"], "prefix-matching score")
    paths.append(save_figure(fig, os.path.join(out_dir, "prefix_matching.png")))

    if ex:  # Argument 4: the induction head's attention on one repeated sequence
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(np.array(ex["attention"]), cmap="viridis")
        ax.set_title(
            f"{ex['model']} head {ex['head']} on a repeated random sequence:\n"
            "the off-diagonal stripe is induction",
            fontsize=8,
        )
        ax.set(xlabel="key position", ylabel="query position")
        paths.append(save_figure(fig, os.path.join(out_dir, "attention.png")))
    return paths


# -----------------------------------------------------------------------------
# Results and the report


def targets(summary, phase_steps):
    """The issue's targets, each true or false (null when its model was not run), from the
    models' summaries and phase-change steps (each seed). Also adds to attn2's ablation the
    share of the gap to attn1's ICL score that each ablation closes."""
    s, t = summary, {}

    def every_seed(name, test):
        return all(test(r) for r in s[name]["runs"]) if name in s else None

    def half_in_window(r):
        return r["icl_change_in_window"] is not None and r["icl_change_in_window"] >= 0.5

    def no_phase_change(r):
        return r["phase_change_step"] is None and r["max_prefix_matching"] < 0.2

    t["attn2_half_icl_change_in_window_every_seed"] = every_seed("attn2", half_in_window)
    t["attn1_no_phase_change"] = every_seed("attn1", no_phase_change)
    if "attn1" in s and "attn2" in s:
        a = s["attn2"]["ablation"]
        gap = s["attn1"]["final_icl_score"] - a["icl_score_intact"]
        for key in ("top_head", "prev_token_head", "induction_heads", "prev_token_heads"):
            v = a.get(f"icl_score_{key}_ablated")
            a[f"gap_closed_{key}"] = None
            if v is not None and gap:
                a[f"gap_closed_{key}"] = (v - a["icl_score_intact"]) / gap
        t["ablating_top_head_closes_half_the_gap_to_attn1"] = (a["gap_closed_top_head"] or 0) >= 0.5
    if "smear1" in s and "attn2" in s:
        smear, attn = phase_steps["smear1"], phase_steps["attn2"]
        earlier = None not in smear + attn and max(smear) < min(attn)
        t["smear1_earlier_than_attn2_every_seed"] = earlier
    t["mlp2_half_icl_change_in_window"] = every_seed("mlp2", half_in_window)
    return t


def main(cfg):
    t0 = time.time()
    device = get_device(cfg.device)
    if cfg.analyze:
        return analyze(cfg.analyze, device, cfg.probe_vocab)
    log = printer(cfg.quiet)
    out_dir = run_dir(cfg.out_dir, data_name(cfg.data, default="synthetic"), cfg.preset)
    text, vocab, tokenizer = training_data(cfg)
    log(
        f"induction heads: models {cfg.models} ({cfg.seeds} seeds for {cfg.seed_models}), "
        f"{cfg.data} data (vocab {vocab}, context {cfg.block_size}), {cfg.steps} steps of "
        f"{cfg.batch_size} sequences, snapshots every {cfg.snap_every} steps"
    )
    runs, summary, ex = {}, {}, None
    for name in cfg.models.split(","):
        n_seeds = cfg.seeds if name in cfg.seed_models.split(",") else 1
        for seed in range(cfg.seed, cfg.seed + n_seeds):
            t1 = time.time()
            model, snaps, k_init = train_one(name, cfg, device, text, vocab, seed)
            for s in snaps:
                log_metrics(out_dir, s)
            r = summarize(model, snaps, k_init, cfg)
            r["seed"] = seed
            r["seconds"] = time.time() - t1
            runs.setdefault(name, []).append((seed, snaps))
            if seed == cfg.seed:  # the first seed is the model's entry; every seed is in its runs
                summary[name] = {**r, "top_heads": head_table(model, vocab)[:3], "runs": []}
                save_checkpoint(os.path.join(out_dir, f"{name}.pt"), model, tokenizer)
                if r["max_prefix_matching"] >= cfg.threshold and (ex is None or name == "attn2"):
                    ex = {"model": name, **example(model, r["ablation"]["top_head"], vocab)}
            # what results.json keeps of every run (seed) of a model
            keys = ("seed", *PHASE_KEYS, "max_prefix_matching", "final_icl_score")
            summary[name]["runs"].append({k: r[k] for k in keys})
            log(
                f"  {name} seed {seed}: phase change at step {r['phase_change_step']}, best prefix "
                f"matching {r['max_prefix_matching']:.2f}, final ICL score "
                f"{r['final_icl_score']:.3f} ({r['seconds']:.0f}s)"
            )
    phase_steps = {k: [r["phase_change_step"] for r in v["runs"]] for k, v in summary.items()}
    res = {"models": summary, "seeds": phase_steps.get("attn2", []), "seeds_by_model": phase_steps}
    res["targets"] = targets(summary, phase_steps)
    res["example"] = {k: v for k, v in ex.items() if k != "attention"} if ex else None
    res["config"] = asdict(cfg)
    res["figures"] = figures(runs, summary, ex, out_dir)
    res["seconds"] = time.time() - t0
    write_json(os.path.join(out_dir, "results.json"), res)
    report(res, print)  # the summary, --quiet or not
    files = "".join(", " + os.path.basename(f) for f in res["figures"])
    print(f"\nwrote {out_dir}/ (results.json, metrics.jsonl{files}) in {res['seconds']:.0f}s")
    return res


def report(res, log):
    phase_rows, ablation_rows = [], []
    for name, s in res["models"].items():
        w, runs, a = s["pm_window"], s["runs"], s["ablation"]
        kcomp = f"{fmt(s['k_composition_max'], '.2f')} ({fmt(s['k_composition_init'], '.2f')})"
        row = {
            "model": name,
            "phase change (each seed)": ", ".join(str(r["phase_change_step"]) for r in runs),
            "window": f"{w['start']}-{w['end']}" if w else "-",
            "ICL in window": ", ".join(fmt(r["icl_change_in_window"], ".0%") for r in runs),
            "loss in window": fmt(s["loss_change_in_window"], ".0%"),
            "max prefix": fmt(s["max_prefix_matching"], ".2f"),
            "prev-token": fmt(s["prev_token_max"], ".2f"),
            "K-comp (init)": kcomp,
        }
        phase_rows.append(row)
        partner = fmt(a.get("icl_score_prev_token_head_ablated"))
        induction = fmt(a["icl_score_induction_heads_ablated"])
        prev_token = fmt(a["icl_score_prev_token_heads_ablated"])
        row = {
            "model": name,
            "intact": a["icl_score_intact"],
            "top induction head": f"{a['top_head']}: {fmt(a['icl_score_top_head_ablated'])}",
            "its prev-token partner": f"{s.get('prev_token_head', '-')}: {partner}",
            "all induction heads": f"{len(a['induction_heads'])} heads: {induction}",
            "all prev-token heads": f"{len(a['prev_token_heads'])} heads: {prev_token}",
        }
        ablation_rows.append(row)
    log("")
    table(log, phase_rows)
    log("\nICL score at the end (Argument 3), intact and with heads zeroed:")
    table(log, ablation_rows)
    ex = res["example"]
    if ex:
        log(
            f"\nexample ({ex['model']} head {ex['head']}, random tokens repeated once): "
            f"{ex['share_on_next_after_first_copy']:.0%} of the second copy's tokens attend most "
            f"to the token after their first occurrence; loss {ex['loss_first_copy']:.2f} on "
            f"the first copy, {ex['loss_second_copy']:.2f} on the second"
        )
    log("targets: " + ", ".join(f"{k} {v}" for k, v in res["targets"].items()))


if __name__ == "__main__":
    cli(main, parse_args)
