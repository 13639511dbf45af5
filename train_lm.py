"""
train_lm.py -- pretraining and supervised fine-tuning (SFT) of the small GPT.

Reproduces the first stage of every 2022 alignment pipeline: a base language model trained
on a mixture of good and bad assistant dialogues (and prose), then an SFT policy, with the
loss only on the assistant's tokens. Two SFT mixtures on the world: "hh", the analogue of
the HH paper's context-distilled HHH policy (Bai et al. 2022a, Sec. 2.2: benign requests
always helped, harmful ones sometimes refused), which ppo.py starts from; and "helpful",
which never refuses: the Constitutional AI paper's helpful-only starting point (Bai et al.
2022b, Sec. 3).

The repeated-data experiment (Hernandez et al. 2022, "Scaling Laws and Interpretability of
Learning from Repeated Data"): at a fixed number of training tokens, 10% of the sequences
come from a small subset of the training data seen repeat_count times. `--sweep repeated`
runs one model size at several repeat counts and a few sizes without repetition, in one
process, on synthetic data in which copying pays (random tokens with in-context copies: on
world text our small models do not learn to copy; README). What to look at: the table
printed at the end and repeated.png -- held-out loss vs repeat count (the paper's Fig. 2
shape: a peak of damage at an intermediate count?), each repeated run's effective size on
the no-repeat loss-vs-parameters fit, and the copying loss (second copy of held-out text)
and best prefix-matching score (induction.py --analyze) vs repeat count.

The CPU default is a speedrun (in the spirit of the public nanoGPT speedruns): the best base
model 2 CPU cores train in about 4 minutes, pretraining and SFT together. What it uses, each
kept because it measurably helped at equal wall time (README, "Speedrun"): a constant
learning rate with a linear warm-down, Muon for the blocks' weight matrices (AdamW for the
embedding and gains), higher learning rates, and smeared keys (Olsson et al. 2022). The
gpu preset inherits them (not yet run at full length on a GPU).

Run (CPU, 2 cores: about 3 minutes, then about 1 minute for SFT):
    python train_lm.py                        # pretrain on the assistant world -> out/train_lm/pretrain.pt
    python train_lm.py --mode sft             # HH-like SFT from it             -> out/train_lm/sft_hh/sft.pt
    python train_lm.py --mode sft --sft_mix helpful    # helpful-only SFT   -> out/train_lm/sft_helpful/sft.pt
    python train_lm.py --data ../shared/data/hh-rlhf           # real HH-RLHF dialogues -> out/train_lm/hh-rlhf/
    python train_lm.py --data ../shared/data/text/tinyshakespeare.txt   # any plain text (our BPE, or --tokenizer gpt2)
    python train_lm.py --sweep repeated      # the repeated-data experiment -> out/train_lm/repeated/ (CPU: ~10 min)
One GPU:
    python train_lm.py --preset gpu           # wider/deeper model, bf16, torch.compile
    python train_lm.py --sweep repeated --preset gpu --n_layer 4 --n_embd 256 --batch_size 16 --max_iters 2000 \
        --sweep_widths 64,128,512    # a larger repeated-data sweep, not yet run (the sweep's own settings override the
        # preset's shape; 4.1M tokens a run, within the 5.1M-token synthetic stream)
Several devices (DDP; gloo on CPU, nccl on GPU):
    torchrun --nproc_per_node 2 train_lm.py ...
Resume after an interruption (continues exactly, same losses):
    python train_lm.py --resume

What to look at: the validation loss (also in bits per byte, comparable across tokenizers)
and its curve (loss_pretrain.png / loss_sft.png); for SFT on the world, the gold
helpfulness of the policy's replies to 512 held-out benign prompts (128 per kind:
arithmetic, facts, word tasks, open requests; sampled at temperature 1 with a fixed seed),
printed by kind and written to results.json by kind, by group (digits and operation,
fact frequency band, ...) and as the macro mean over the four kinds. Each run writes
metrics.jsonl, results.json (val_loss, val_bpb, train_tokens, tokens_per_sec, seconds,
...; SFT on the world adds gold_helpfulness_by_kind, gold_helpfulness_macro,
gold_helpfulness_by_group and every evaluated reply) and its checkpoint into its own
folder: out/train_lm/ for pretraining, out/train_lm/sft_hh/ and sft_helpful/ for SFT,
out/train_lm/<data name>/ (and its sft/) for other data.
"""

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data import corpora, world
from data.prepare import (
    copy_spans,
    data_name,
    default_tokenizer,
    load_split,
    prepare,
    repeated_subset,
)
from data.tokenizer import get_tokenizer, vocab_size_padded
from model import (
    GPT,
    GPTConfig,
    autocast,
    configure_optimizer,
    get_device,
    load_checkpoint,
    log_metrics,
    lr_at,
    mfu,
    optimizer_step,
    parse_config,
    printer,
    pyplot,
    run_dir,
    run_path,
    run_script,
    sample_replies,
    save_checkpoint,
    save_figure,
    write_json,
)


@dataclass
class Config:
    # settings for a scale, combined with '+' (each non-cpu preset has its own run folder)
    preset: str = "cpu"
    # "world", "synthetic" (random tokens with copies), a text file, or HH-RLHF jsonl(.gz)
    data: str = "world"
    # "pretrain", or "sft": loss on assistant tokens only, starting from --init
    mode: str = "pretrain"
    # world SFT data: "hh" (harmful requests sometimes refused) or "helpful" (never refused)
    sft_mix: str = "hh"
    # "auto": "world" on the world, our BPE trained on the data otherwise; or "gpt2"
    tokenizer: str = "auto"
    # start from this checkpoint; SFT starts from the pretraining run of the same data and preset
    init: str = ""
    # root folder; a run goes to <out_dir>[/<data name>][/<preset>][/sft_hh, sft_helpful, or sft]
    out_dir: str = "out/train_lm"
    # transformer blocks
    n_layer: int = 4
    # attention heads per block
    n_head: int = 4
    # residual stream width
    n_embd: int = 128
    # context length in tokens
    block_size: int = 256
    # dropout probability (0: none; PPO needs none)
    dropout: float = 0.0
    # keys mix in the previous token's key (Olsson et al. 2022): induction heads form sooner
    smeared_key: bool = True
    # sequences per micro-batch
    batch_size: int = 16
    # micro-batches per optimiser step
    grad_accum: int = 1
    # optimiser steps
    max_iters: int = 240
    # peak learning rate (AdamW; with Muon, for the embedding and gains)
    lr: float = 6e-3
    # learning rate at the end of the decay
    min_lr: float = 0.0
    # steps of linear warm-up
    warmup_iters: int = 30
    # AdamW weight decay on matrices
    weight_decay: float = 0.1
    # "muon": Muon for the blocks' weight matrices, AdamW for the rest; or "adamw"
    optimizer: str = "muon"
    # Muon's peak learning rate (it follows the same schedule as --lr)
    muon_lr: float = 0.04
    # > 0: constant rate, then linear decay over this last fraction of the steps (else cosine)
    warmdown: float = 0.4
    # clip the gradient norm to this
    grad_clip: float = 1.0
    # steps between validation losses
    eval_interval: int = 100
    # batches per validation loss
    eval_iters: int = 10
    # steps between metrics.jsonl records
    log_interval: int = 10
    # steps between checkpoints
    ckpt_interval: int = 150
    # continue the run in this folder from its checkpoint
    resume: bool = False
    # stop after this many steps of this session, to continue later with --resume (0: no)
    stop_after: int = 0
    # random seed (data order, initialisation, samples)
    seed: int = 1337
    # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # torch.compile the model
    compile: bool = False
    # sample dialogues printed and saved at the end
    samples: int = 4
    # SFT on the world: held-out benign prompts per kind for gold helpfulness (0: skip)
    eval_per_kind: int = 128
    # longest reply sampled for that evaluation
    eval_tokens: int = 64
    # no progress bar or messages
    quiet: bool = False
    # share of training windows with an earlier span copied later (in-context repeats)
    copy_frac: float = 0.0
    # repeated data: share of training sequences taken from a small repeated subset
    repeat_frac: float = 0.0
    # repeated data: how many times each window of that subset is seen (0: none)
    repeat_count: int = 0
    # "repeated": the repeated-data experiment, every run in one process -> <out_dir>/repeated/
    sweep: str = ""
    # the sweep's repeat counts (it adds one run without repetition)
    repeat_counts: str = "2,10,40,160,640"
    # the sweep's widths without repetition (effective model size); repeats use --n_embd
    sweep_widths: str = "32,64,128"


PRESETS = {
    "cpu": {},
    # one GPU: ~25M parameters, longer context
    "gpu": {
        "n_layer": 8,
        "n_head": 8,
        "n_embd": 512,
        "block_size": 512,
        "batch_size": 64,
        "max_iters": 3000,
        "lr": 1e-3,
        "warmup_iters": 200,
        "eval_interval": 250,
        "ckpt_interval": 1000,
        "compile": True,
    },
    # seconds-long runs for the tests
    "tiny": {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 64,
        "batch_size": 8,
        "max_iters": 40,
        "eval_interval": 20,
        "eval_iters": 2,
        "ckpt_interval": 20,
        "log_interval": 1,
        "warmup_iters": 5,
        "samples": 1,
    },
    # Hernandez et al. 2022 at CPU scale: 2-layer models, 0.8M training tokens of synthetic data each (README)
    "sweep=repeated": {
        "data": "synthetic",
        "n_layer": 2,
        "n_embd": 64,
        "block_size": 128,
        "max_iters": 400,
        "warmup_iters": 20,
        "eval_interval": 100,
        "eval_iters": 8,
        "ckpt_interval": 10**9,
        "samples": 0,
        "repeat_frac": 0.1,
    },
    # applied on top of any preset with --mode sft: short and gentle, the model already knows the format
    "mode=sft": {
        "max_iters": 80,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "warmup_iters": 8,
        "eval_interval": 40,
        "optimizer": "adamw",
        "warmdown": 0.0,
    },
}


def parse_args(argv=None):
    cfg = parse_config(Config, PRESETS, __doc__, argv)
    if cfg.mode not in ("pretrain", "sft"):
        raise SystemExit(f"--mode must be pretrain or sft, not {cfg.mode!r}")
    if cfg.sft_mix not in corpora.SFT_MIXES:
        raise SystemExit(
            f"--sft_mix must be one of {', '.join(corpora.SFT_MIXES)}, not {cfg.sft_mix!r}"
        )
    cfg.tokenizer = default_tokenizer(cfg.data) if cfg.tokenizer == "auto" else cfg.tokenizer
    pretrain_dir = run_path(cfg.out_dir, data_name(cfg.data), cfg.preset)
    if cfg.mode == "sft":
        cfg.init = cfg.init or os.path.join(pretrain_dir, "pretrain.pt")
    # world SFT runs are named by their mixture (sft_hh/, sft_helpful/); other data has one
    sft_dir = f"sft_{cfg.sft_mix}" if cfg.data == "world" else "sft"
    cfg.out_dir = (
        run_path(cfg.out_dir, cfg.preset, "repeated")
        if cfg.sweep
        else run_path(pretrain_dir, sft_dir if cfg.mode == "sft" else "")
    )
    if cfg.sweep not in ("", "repeated") or (cfg.sweep and cfg.mode != "pretrain"):
        raise SystemExit(f"--sweep takes 'repeated' (pretraining), not {cfg.sweep!r}")
    if not cfg.sweep and (cfg.repeat_count > 0) != (cfg.repeat_frac > 0):
        raise SystemExit("repeated data needs both --repeat_frac and --repeat_count (or neither)")
    return cfg


# -----------------------------------------------------------------------------
# Muon (Jordan et al. 2024, used by the nanoGPT speedruns): momentum whose update for each
# hidden weight matrix is orthogonalised -- every singular value set near 1 -- so that all
# directions of the matrix learn at the same rate. Embeddings and gains keep AdamW, as in
# the speedruns. torch.optim.Muon orthogonalises in bf16, which is slow on CPUs; this one
# works in fp32. One optimiser for both kinds of group, so checkpoints resume it exactly.


def orthogonalise(G, steps=5):
    """Newton-Schulz quintic iteration towards U V^T for each G = U S V^T in a stack of
    matrices (..., rows, cols), in fp32 (Jordan et al.'s coefficients: singular values land
    in about [0.7, 1.2], which trains as well as exactly 1)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.float() / (G.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    tall = G.size(-2) > G.size(-1)
    X = X.mT if tall else X
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Groups with "muon": True get Muon (Nesterov momentum, then orthogonalised, scaled
    by sqrt(max(1, rows/cols))); the others AdamW."""

    def __init__(self, groups, lr, momentum=0.95, betas=(0.9, 0.95), eps=1e-8):
        super().__init__(
            groups,
            dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=0.0, muon=False),
        )

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            ps = [p for p in g["params"] if p.grad is not None]
            for p in ps:
                p.mul_(1 - g["lr"] * g["weight_decay"])
            if g["muon"]:  # matrices of one shape orthogonalised together: one batched matmul
                for shape in {p.shape for p in ps}:
                    same = [p for p in ps if p.shape == shape]
                    bufs = [
                        self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                        for p in same
                    ]
                    for p, buf in zip(same, bufs):
                        buf.lerp_(p.grad, 1 - g["momentum"])
                    nesterov = torch.stack(
                        [p.grad.lerp(buf, g["momentum"]) for p, buf in zip(same, bufs)]
                    )
                    for p, u in zip(same, orthogonalise(nesterov)):
                        p.add_(u, alpha=-g["lr"] * max(1.0, shape[0] / shape[1]) ** 0.5)
                continue
            b1, b2 = g["betas"]
            for p in ps:
                st = self.state[p]
                if not st:
                    st.update(
                        step=torch.tensor(0.0),
                        exp_avg=torch.zeros_like(p),
                        exp_avg_sq=torch.zeros_like(p),
                    )
                t = float(st["step"].add_(1))
                st["exp_avg"].lerp_(p.grad, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (st["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(g["eps"])
                p.addcdiv_(st["exp_avg"], denom, value=-g["lr"] / (1 - b1**t))


def make_optimizer(model, cfg, device):
    if cfg.optimizer == "adamw":
        return configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    if cfg.optimizer != "muon":
        raise SystemExit(f"--optimizer must be adamw or muon, not {cfg.optimizer!r}")
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
    rest = [
        p for n, p in model.named_parameters() if not (p.dim() == 2 and n.startswith("blocks."))
    ]
    return MuonAdamW(
        [{"params": hidden, "muon": True, "lr_mult": cfg.muon_lr / cfg.lr}, {"params": rest}],
        cfg.lr,
    )


def get_batch(ids, mask, block_size, batch_size, gen, device, copy_frac=0.0):
    """Random windows of block_size + 1 tokens (nanoGPT), a share copy_frac of them with an
    earlier span copied later. With an SFT mask, targets outside assistant replies are -1
    (ignored by the loss)."""
    ix = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=gen).tolist()
    w = copy_spans(
        torch.from_numpy(np.stack([ids[i : i + block_size + 1].astype(np.int64) for i in ix])),
        copy_frac,
        gen,
    )
    x, y = w[:, :-1], w[:, 1:]
    if mask is not None:
        y = y.masked_fill(
            ~torch.from_numpy(np.stack([mask[i + 1 : i + 1 + block_size] for i in ix])).bool(), -1
        )
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# Repeated data (Hernandez et al. 2022, Sec. 2): at a fixed number of training tokens, a
# share repeat_frac of the sequences comes from a small subset of the training split seen
# repeat_count times (data.prepare.repeated_subset); the rest from the rest of the split.
# The held-out split is untouched.


def fill_repeated(x, y, slots, windows):
    """Replace the batch rows whose slot holds a subset window (slots >= 0) with that window."""
    k, w = (
        torch.from_numpy(slots >= 0).to(x.device),
        torch.from_numpy(windows[slots[slots >= 0]]).to(x.device),
    )
    x[k], y[k] = w[:, :-1], w[:, 1:]
    return x, y


@torch.no_grad()
def window_loss(model, windows, device, first=0):
    """Mean loss on given windows (n, T + 1) predicting positions first.. (at most 64 windows)."""
    model.eval()
    w = torch.as_tensor(windows[:64], dtype=torch.long, device=device)
    with autocast(device.type):
        loss = torch.nn.functional.cross_entropy(
            model(w[:, :-1])[0].float().transpose(1, 2), w[:, 1:], reduction="none"
        )
    model.train()
    return float(loss[:, first:].mean())


def copying(model, val_ids, T, device):
    """Held-out text repeated within the context: 64 spans of T/2 tokens, each followed by
    itself -> (loss on the first copy, loss on the second copy from its second token: the
    copying that induction heads do; Hernandez et al. 2022, Sec. 5)."""
    n = T // 2
    starts = np.random.default_rng(0).integers(0, len(val_ids) - n, 64)
    w = np.stack([np.tile(np.asarray(val_ids[i : i + n], dtype=np.int64), 2) for i in starts])
    return window_loss(model, w[:, :n], device), window_loss(model, w, device, first=n)


@torch.no_grad()
def evaluate(model, ids, mask, cfg, device):
    """Mean loss on the same eval_iters batches every time (a fixed generator), so evals
    are comparable across steps and runs."""
    model.eval()
    gen = torch.Generator().manual_seed(12345)
    with autocast(device.type):
        losses = [
            model(*get_batch(ids, mask, cfg.block_size, cfg.batch_size, gen, device))[1].item()
            for _ in range(cfg.eval_iters)
        ]
    model.train()
    return float(np.mean(losses))


def sample_prompts(cfg, n, enc, val_ids):
    """Held-out prompts to show what the model writes: world red-team and benign prompts;
    on other data, the start of validation documents (up to the first 'Assistant:' in HH
    dialogues, the first 100 characters of plain text)."""
    if cfg.data == "world":
        return corpora.eval_prompts(n - n // 2, "benign") + corpora.eval_prompts(n // 2, "redteam")
    docs = [d for d in enc.decode(val_ids[:20000].tolist()).split("<|endoftext|>") if d.strip()]
    cut = lambda d: (
        d[: d.find("\n\nAssistant:") + len("\n\nAssistant:")] if "\n\nAssistant:" in d else d[:100]
    )
    return [cut(d) for d in docs[:n]]


def bytes_per_token(enc, ids, mask):
    """UTF-8 bytes of text per counted token (every token, or the SFT mask's): the factor from
    nats per token to bits per byte, a loss that does not depend on the tokenizer. Special
    tokens count as zero bytes (they are not text) but their loss is counted."""
    special = {enc.encode_single_token(t) for t in enc.special_tokens_set}
    lens = np.array(
        [0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]
    )
    counted = ids if mask is None else ids[mask.astype(bool)]
    return float(lens[counted].sum() / max(len(counted), 1))


def gold_helpfulness(model, enc, n_per_kind, max_new_tokens, device):
    """The policy's gold helpfulness on the fixed benign evaluation set (corpora.benign_eval_set),
    sampled at temperature 1 with a fixed seed -> results: by kind and by group (mean, standard
    error, n), the macro mean over the four kinds, and every reply."""
    items = corpora.benign_eval_set(n_per_kind)
    gen = torch.Generator(device=device).manual_seed(0)
    replies, out = sample_replies(
        model, enc, [it["prompt"] for it in items], max_new_tokens, 1.0, gen
    )
    scores = [world.gold(corpora.last_human(it["prompt"]), r)[0] for it, r in zip(items, replies)]

    def stats(keep):
        x = np.array([s for s, it in zip(scores, items) if keep(it)])
        return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x))), "n": len(x)}

    by_kind = {
        k: stats(lambda it, k=k: it["kind"] == k) for k in dict.fromkeys(it["kind"] for it in items)
    }
    by_group = {
        g: stats(lambda it, g=g: f"{it['kind']}/{it['group']}" == g)
        for g in sorted({f"{it['kind']}/{it['group']}" for it in items})
    }
    return {
        "gold_helpfulness_by_kind": by_kind,
        "gold_helpfulness_macro": float(np.mean([v["mean"] for v in by_kind.values()])),
        "gold_helpfulness_macro_se": float(
            np.sqrt(sum(v["se"] ** 2 for v in by_kind.values())) / len(by_kind)
        ),
        "gold_helpfulness_by_group": by_group,
        "eval_ended": float(out["ended"].float().mean()),
        "eval_samples": [
            {"prompt": it["prompt"], "reply": r, "gold_helpful": s}
            for it, r, s in zip(items, replies, scores)
        ],
    }


def setup_distributed(device):
    """Under torchrun (RANK is set): one process per device, nccl on GPU, gloo on CPU.
    -> (ddp, rank, world_size, device)."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 1, device
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
        torch.cuda.set_device(device)
    return True, dist.get_rank(), dist.get_world_size(), device


def build_model(cfg, enc, device, ckpt_path):
    """Our own checkpoint on --resume, the --init checkpoint, or a fresh model -> (model,
    checkpoint dict or None)."""
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd")}
    if cfg.resume:
        return load_checkpoint(
            ckpt_path, device, expect=shape, tokenizer_name=cfg.tokenizer, dropout=cfg.dropout
        )
    if cfg.init:
        if not os.path.exists(cfg.init):
            raise SystemExit(
                f"{cfg.init}: no such checkpoint; SFT starts from the pretrained model of the same "
                f"data: run `python train_lm.py` (same --data and --preset) first, or pass --init"
            )
        return load_checkpoint(cfg.init, device, tokenizer_name=cfg.tokenizer, dropout=cfg.dropout)[
            0
        ], None
    mcfg = GPTConfig(
        vocab_size=vocab_size_padded(enc),
        vocab_valid=enc.n_vocab,
        block_size=cfg.block_size,
        dropout=cfg.dropout,
        smeared_key=cfg.smeared_key,
        **shape,
    )
    return GPT(mcfg).to(device), None


def save(path, model, opt, gen, step, cfg, ddp, world_size):
    """Checkpoint with everything --resume needs: optimiser, step, every rank's data RNG."""
    rngs = [gen.get_state()]
    if ddp:  # every rank's data generator, so a resumed run draws the same batches
        rngs = [torch.empty_like(rngs[0]) for _ in range(world_size)]
        dist.all_gather(rngs, gen.get_state())
    if not ddp or dist.get_rank() == 0:
        save_checkpoint(
            path,
            model,
            cfg.tokenizer,
            optimizer=opt.state_dict(),
            step=step,
            rng=rngs,
            torch_rng=torch.get_rng_state(),
            train_config=asdict(cfg),
        )


def ddp_in_sync(model, device, world_size):
    """After DDP training every rank must hold identical weights."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    sums = [torch.zeros(2, device=device) for _ in range(world_size)]
    dist.all_gather(sums, torch.stack([flat.sum(), (flat * flat).sum()]))
    return all(torch.equal(s, sums[0]) for s in sums)


def plot(out_dir, mode):
    plt = pyplot()
    if plt is None:
        return None
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    fig, ax = plt.subplots(figsize=(6, 4))
    tr, ev = [m for m in metrics if "loss" in m], [m for m in metrics if "val_loss" in m]
    ax.plot([m["tokens"] for m in tr], [m["loss"] for m in tr], label="train", alpha=0.6)
    ax.plot([m["tokens"] for m in ev], [m["val_loss"] for m in ev], "o-", label="val")
    ax.set_xlabel("training tokens"), ax.set_ylabel("loss"), ax.set_yscale("log"), ax.legend()
    return save_figure(fig, os.path.join(out_dir, f"loss_{mode}.png"))


def main(cfg):
    t_start = time.time()
    ddp, rank, world_size, device = setup_distributed(get_device(cfg.device))
    master = rank == 0
    log = printer(cfg.quiet or not master)
    if master:
        run_dir(cfg.out_dir, resume=cfg.resume)
    torch.manual_seed(cfg.seed + rank)
    torch.backends.cuda.matmul.allow_tf32 = True

    # ---- data: rank 0 prepares the token streams, the others wait, then all read them
    if master:
        prepare(
            cfg.data, cfg.tokenizer, sft=cfg.mode == "sft", verbose=not cfg.quiet, mix=cfg.sft_mix
        )
    if ddp:
        dist.barrier()
    d, meta = prepare(
        cfg.data, cfg.tokenizer, sft=cfg.mode == "sft", verbose=False, mix=cfg.sft_mix
    )
    (train_ids, train_mask), (val_ids, val_mask) = (
        load_split(d, "train", meta),
        load_split(d, "val", meta),
    )
    enc = get_tokenizer(cfg.tokenizer)
    windows = schedule = None
    if cfg.repeat_count > 0 and cfg.repeat_frac > 0:
        if ddp or cfg.grad_accum > 1 or cfg.mode != "pretrain":
            raise SystemExit("repeated data: pretraining on one device with --grad_accum 1")
        train_ids, windows, schedule = repeated_subset(
            train_ids,
            cfg.block_size,
            cfg.max_iters,
            cfg.batch_size,
            cfg.repeat_frac,
            cfg.repeat_count,
            cfg.seed,
        )

    # ---- model and optimiser, restored exactly on --resume
    ckpt_path = os.path.join(cfg.out_dir, f"{cfg.mode}.pt")
    raw, ck = build_model(cfg, enc, device, ckpt_path)
    cfg.block_size = min(cfg.block_size, raw.cfg.block_size)
    log(
        f"model: {raw.num_params() / 1e6:.2f}M parameters (+{raw.wte.weight.numel() / 1e6:.2f}M embedding), "
        f"{raw.cfg.n_layer} layers, width {raw.cfg.n_embd}, context {raw.cfg.block_size}, on {device}"
        + (
            f"; resuming {ckpt_path} at step {ck['step']}"
            if ck
            else f"; from {cfg.init}"
            if cfg.init
            else ""
        )
    )
    opt = make_optimizer(raw, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    step = 0
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["rng"][rank] if rank < len(ck["rng"]) else ck["rng"][0])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
    model = torch.compile(raw) if cfg.compile else raw
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ---- the training loop
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.grad_accum * world_size
    record = (lambda m: log_metrics(cfg.out_dir, m)) if master else (lambda m: None)
    train_time, t_tokens, val_loss = 0.0, 0, None
    end = min(cfg.max_iters, step + cfg.stop_after) if cfg.stop_after else cfg.max_iters
    bar = tqdm(
        range(step, end),
        initial=step,
        total=cfg.max_iters,
        disable=not master or cfg.quiet,
        desc=cfg.mode,
    )
    model.train()
    for it in bar:
        if it % cfg.eval_interval == 0 and master:
            val_loss = evaluate(raw, val_ids, val_mask, cfg, device)
            record(
                {
                    "step": it,
                    "tokens": it * tokens_per_iter,
                    "val_loss": val_loss,
                    **(
                        {"repeated_train_loss": window_loss(raw, windows, device)}
                        if windows is not None
                        else {}
                    ),
                }
            )
        t0 = time.time()
        for micro in range(cfg.grad_accum):
            x, y = get_batch(
                train_ids, train_mask, cfg.block_size, cfg.batch_size, gen, device, cfg.copy_frac
            )
            if schedule is not None:  # this step's slots for the repeated subset
                x, y = fill_repeated(x, y, schedule[it], windows)
            sync = model.no_sync() if ddp and micro < cfg.grad_accum - 1 else nullcontext()
            with sync, autocast(device.type):
                _, loss = model(x, y)
                (loss / cfg.grad_accum).backward()
        lr = lr_at(it, cfg.max_iters, cfg.lr, cfg.warmup_iters, cfg.min_lr, cfg.warmdown)
        gnorm = optimizer_step(opt, model, loss, cfg.grad_clip, it + 1, lr)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if it > step:  # the first step includes compilation and warm-up
            train_time, t_tokens = train_time + time.time() - t0, t_tokens + tokens_per_iter
        if it % cfg.log_interval == 0 or it == end - 1:
            tps = t_tokens / train_time if train_time else tokens_per_iter / (time.time() - t0)
            record(
                {
                    "step": it + 1,
                    "tokens": (it + 1) * tokens_per_iter,
                    "loss": loss.item(),
                    "lr": lr,
                    "grad_norm": gnorm,
                    "tokens_per_sec": tps,
                }
            )
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                val=f"{val_loss:.3f}" if val_loss else "-",
                tok_s=f"{tps:,.0f}",
            )
        if (it + 1) % cfg.ckpt_interval == 0 or it + 1 == end:
            save(ckpt_path, raw, opt, gen, it + 1, cfg, ddp, world_size)
    bar.close()
    in_sync = ddp_in_sync(raw, device, world_size) if ddp else None
    if ddp:
        dist.destroy_process_group()
    if end < cfg.max_iters:
        log(f"stopped at step {end} of {cfg.max_iters} (--stop_after); continue with --resume")
        return None
    if not master:
        return None

    # ---- the report: final validation loss, throughput, sample dialogues
    val_loss = evaluate(raw, val_ids, val_mask, cfg, device)
    record({"step": end, "tokens": end * tokens_per_iter, "val_loss": val_loss})
    tps = t_tokens / train_time if train_time else 0.0
    prompts = sample_prompts(cfg, cfg.samples, enc, val_ids) if cfg.samples else []
    replies = (
        sample_replies(
            raw, enc, prompts, 48, 0.7, torch.Generator(device=device).manual_seed(0), 40
        )[0]
        if prompts
        else []
    )
    results = {
        "val_loss": val_loss,
        "train_tokens": end * tokens_per_iter,
        "tokens_per_sec": tps,
        "seconds": time.time() - t_start,
        "mfu": mfu(raw.cfg, raw.num_params(), tps / world_size, device),
        "params": raw.num_params(non_embedding=False),
        "iters": end,
        "mode": cfg.mode,
        "data": cfg.data,
        "tokenizer": cfg.tokenizer,
        "device": str(device),
        "world_size": world_size,
        "ddp_in_sync": in_sync,
        "checkpoint": ckpt_path,
        "samples": [{"prompt": p, "reply": r} for p, r in zip(prompts, replies)],
    }
    results["val_bpb"] = val_loss / math.log(2) / bytes_per_token(enc, val_ids, val_mask)
    if cfg.mode == "pretrain":
        results["first_copy_loss"], results["copying_loss"] = copying(
            raw, val_ids, cfg.block_size, device
        )
        results["params_non_embedding"] = raw.num_params()
        n_rep = int((schedule >= 0).sum()) if schedule is not None else 0
        results.update(
            repeat_count=cfg.repeat_count if n_rep else 0,
            repeated_fraction=n_rep / (end * cfg.batch_size),
            repeated_tokens=n_rep * cfg.block_size,
            unique_tokens=(end * cfg.batch_size - n_rep) * cfg.block_size,
            repeated_train_loss=window_loss(raw, windows, device) if n_rep else None,
        )
    if cfg.mode == "sft" and cfg.data == "world" and cfg.eval_per_kind:
        results.update(
            gold_helpfulness(
                raw, enc, cfg.eval_per_kind, min(cfg.eval_tokens, cfg.block_size // 2), device
            )
        )
    write_json(os.path.join(cfg.out_dir, "results.json"), results)
    fig = plot(cfg.out_dir, cfg.mode)
    log("\nsample replies to held-out prompts (temperature 0.7):")
    for p, r in zip(prompts, replies):
        log(f"  {p.strip()} {r}".replace("\n\n", "\n  "))
    if "gold_helpfulness_macro" in results:
        log(
            "gold helpfulness on held-out benign prompts (temperature 1): "
            + ", ".join(
                f"{k} {v['mean']:.2f}±{v['se']:.2f}"
                for k, v in results["gold_helpfulness_by_kind"].items()
            )
            + f"; macro {results['gold_helpfulness_macro']:.3f}±{results['gold_helpfulness_macro_se']:.3f}"
        )
    log(
        f"\n{cfg.mode} done: val loss {val_loss:.3f} ({results['val_bpb']:.3f} bits/byte), {results['train_tokens'] / 1e6:.1f}M tokens at {tps:,.0f} "
        f"tokens/s, {results['seconds']:.0f}s -> {cfg.out_dir}/ (results.json, {cfg.mode}.pt"
        + (f", {os.path.basename(fig)})" if fig else ")")
    )
    return results


# -----------------------------------------------------------------------------
# The repeated-data sweep (Hernandez et al. 2022, Fig. 2 and Sec. 4-5)


def sweep_repeated(cfg):
    """One model size at repeat counts 0 and --repeat_counts (same training tokens), and
    --sweep_widths without repetition; for each run the held-out loss, the loss on the
    repeated subset, the copying loss and the best prefix-matching score (induction.py
    --analyze, the same definition as the induction experiment); then each repeated run's
    effective size on the no-repeat loss-vs-parameters fit."""
    t0, log = time.time(), printer(cfg.quiet)
    run_dir(cfg.out_dir)
    it, fewer = cfg.max_iters, round(cfg.max_iters * (1 - cfg.repeat_frac))
    grid = (
        [(cfg.n_embd, int(r), cfg.seed, it) for r in ["0"] + cfg.repeat_counts.split(",")]
        + [(int(w), 0, cfg.seed, it) for w in cfg.sweep_widths.split(",") if int(w) != cfg.n_embd]
        + [
            (
                cfg.n_embd,
                0,
                cfg.seed + 1,
                it,
            ),  # a second seed without repetition: how large is run-to-run noise?
            (cfg.n_embd, 0, cfg.seed, fewer),
        ]
    )  # only the unique tokens, nothing repeated: the cost of fewer tokens
    log(
        f"repeated data: {len(grid)} runs of {cfg.max_iters * cfg.batch_size * cfg.block_size:,} training tokens "
        f"({cfg.n_layer} layers, context {cfg.block_size}); repeated share {cfg.repeat_frac:.0%} at width {cfg.n_embd}"
    )
    points, sizes, other_seed = [], [], []
    for width, r, seed, iters in tqdm(grid, desc="repeated-data sweep", disable=cfg.quiet):
        res = main(
            replace(
                cfg,
                sweep="",
                n_embd=width,
                repeat_count=r,
                repeat_frac=cfg.repeat_frac if r else 0.0,
                seed=seed,
                max_iters=iters,
                quiet=True,
                out_dir=os.path.join(
                    cfg.out_dir, f"width{width}_repeat{r}_seed{seed}_steps{iters}"
                ),
            )
        )
        run_script(
            [
                "induction.py",
                "--analyze",
                res["checkpoint"],
                "--device",
                cfg.device,
                "--probe_vocab",
                str(64 if cfg.data == "synthetic" else 0),
            ],
            "prefix matching (induction.py's definition)",
            quiet=True,
        )
        heads = json.load(open(os.path.splitext(res["checkpoint"])[0] + ".heads.json"))
        row = {
            "repeat_count": r,
            "params": res["params_non_embedding"],
            "width": width,
            "seed": seed,
            "steps": iters,
            "heldout_loss": res["val_loss"],
            "max_prefix_matching": max(h["prefix_matching"] for h in heads),
            **{
                k: res[k]
                for k in (
                    "repeated_fraction",
                    "repeated_train_loss",
                    "copying_loss",
                    "first_copy_loss",
                    "seconds",
                )
            },
        }
        log_metrics(cfg.out_dir, row)
        (
            other_seed if (seed, iters) != (cfg.seed, it) else points if width == cfg.n_embd else []
        ).append(row)
        if r == 0 and (seed, iters) == (cfg.seed, it):
            sizes.append(
                {"params": row["params"], "heldout_loss": row["heldout_loss"], "width": width}
            )
    # effective size: the repeated run's held-out loss read on the no-repeat loss-vs-parameters curve
    # (linear in log parameters between the two neighbouring sizes; None outside the measured range)
    sizes.sort(key=lambda p: p["params"])
    n, loss = np.log([p["params"] for p in sizes]), np.array([p["heldout_loss"] for p in sizes])
    for p in points:
        inside = loss.min() <= p["heldout_loss"] <= loss.max() and np.all(np.diff(loss) < 0)
        p["effective_params"] = (
            float(np.exp(np.interp(-p["heldout_loss"], -loss, n))) if inside else None
        )
    base, rep_pts = points[0], points[1:]
    peak = max(rep_pts, key=lambda p: p["heldout_loss"])
    rel = lambda p, k: p[k] / base[k] - 1
    targets = {
        "peak_at_least_2pct_above_no_repeat": rel(peak, "heldout_loss") >= 0.02,
        "a_point_beyond_the_peak_is_lower": any(
            p["heldout_loss"] < peak["heldout_loss"]
            for p in rep_pts
            if p["repeat_count"] > peak["repeat_count"]
        ),
        "copying_degrades_more_than_heldout_at_peak": rel(peak, "copying_loss")
        > rel(peak, "heldout_loss"),
    }
    res = {
        "points": points,
        "baseline_sizes": sizes,
        "other_seed_no_repeat": other_seed[:1],
        "fewer_tokens": other_seed[1:],
        "effective_params": [
            {
                "repeat_count": p["repeat_count"],
                "effective_params": p["effective_params"],
                "params": p["params"],
            }
            for p in rep_pts
        ],
        "peak": {
            "repeat_count": peak["repeat_count"],
            "heldout_excess": rel(peak, "heldout_loss"),
            "copying_excess": rel(peak, "copying_loss"),
        },
        "targets": targets,
        "seconds": time.time() - t0,
        "config": {
            k: getattr(cfg, k)
            for k in (
                "n_layer",
                "n_embd",
                "block_size",
                "batch_size",
                "max_iters",
                "repeat_frac",
                "copy_frac",
                "data",
                "seed",
            )
        },
    }
    res["figure"] = plot_repeated(cfg.out_dir, points, sizes)
    write_json(os.path.join(cfg.out_dir, "results.json"), res)
    for p in points:
        log(
            f"repeat count {p['repeat_count']:4d}: held-out loss {p['heldout_loss']:.4f}, repeated subset "
            f"{p['repeated_train_loss'] or float('nan'):.3f}, copies {p['first_copy_loss']:.3f} -> {p['copying_loss']:.3f}, "
            f"prefix matching {p['max_prefix_matching']:.2f}, effective params {p['effective_params'] or 0:,.0f}"
        )
    log(
        "no repetition by size: "
        + ", ".join(f"{p['params']:,} params {p['heldout_loss']:.4f}" for p in sizes)
        + "; other seed, then only the unique tokens: "
        + ", ".join(
            f"held-out {p['heldout_loss']:.4f}, copies {p['copying_loss']:.3f}" for p in other_seed
        )
        + "\ntargets: "
        + ", ".join(f"{k} {v}" for k, v in targets.items())
        + f"\nwrote {cfg.out_dir}/ in {res['seconds']:.0f}s"
    )
    return res


def plot_repeated(out_dir, points, sizes):
    plt = pyplot()
    if plt is None:
        return None
    rep_pts, base = points[1:], points[0]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    rc = [p["repeat_count"] for p in rep_pts]
    ax[0].plot(rc, [p["heldout_loss"] for p in rep_pts], "o-", label="held-out loss (unique data)")
    ax[0].axhline(base["heldout_loss"], color="grey", ls="--", label="no repetition")
    ax[0].twinx().plot(rc, [p["repeated_train_loss"] for p in rep_pts], "s:", color="C3")[
        0
    ].axes.set_ylabel("loss on the repeated subset (red)", color="C3")
    ax[0].set(
        xscale="log",
        xlabel="repeat count",
        ylabel="held-out loss",
        title="Fig. 2 shape (red: repeated-subset loss)",
    )
    ax[1].plot(
        rc,
        [(p["effective_params"] or np.nan) / p["params"] for p in rep_pts],
        "o-",
        label="effective / real size",
    )
    ax[1].axhline(1, color="grey", ls="--", lw=0.5)
    ax[1].set(
        xscale="log",
        xlabel="repeat count",
        ylabel="effective / real parameters",
        title=f"effective size on the no-repeat curve ({len(sizes)} sizes)",
    )
    ax[2].plot(
        rc,
        [p["heldout_loss"] / base["heldout_loss"] - 1 for p in rep_pts],
        "o-",
        label="held-out loss",
    )
    ax[2].plot(
        rc,
        [p["copying_loss"] / base["copying_loss"] - 1 for p in rep_pts],
        "s-",
        label="copying loss (second copy)",
    )
    ax[2].axhline(0, color="grey", lw=0.5)
    ax3 = ax[2].twinx()  # green: best prefix matching (dashed: no repetition)
    ax3.plot(rc, [p["max_prefix_matching"] for p in rep_pts], "^:", color="C2")
    ax3.axhline(base["max_prefix_matching"], color="C2", ls="--", lw=0.5)
    ax3.set_ylabel("best prefix matching (green; dashed: no repetition)", color="C2")
    ax[2].set(
        xscale="log",
        xlabel="repeat count",
        ylabel="change vs no repetition",
        title="copying (green: prefix matching)",
    )
    for axis in ax:
        axis.legend(fontsize=7, loc="center left")
    return save_figure(fig, os.path.join(out_dir, "repeated.png"))


if __name__ == "__main__":
    cfg = parse_args()
    sweep_repeated(cfg) if cfg.sweep else main(cfg)
