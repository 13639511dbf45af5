"""
train_lm.py -- pretraining and supervised fine-tuning (SFT) of the small GPT.

Reproduces the first stage of every 2022 alignment pipeline: a base language model trained
on a mixture of good and bad assistant dialogues (and prose), then an SFT policy, with the
loss only on the assistant's tokens. Two SFT mixtures on the world: "hh", the analogue of
the HH paper's context-distilled HHH policy (Bai et al. 2022a, Sec. 2.2: benign requests
always helped, harmful ones sometimes refused), which ppo.py starts from; and "helpful",
which never refuses: the Constitutional AI paper's helpful-only starting point (Bai et al.
2022b, Sec. 3).

The CPU default is a speedrun (in the spirit of the public nanoGPT speedruns): the best base
model that 2 CPU cores train within 4 minutes, pretraining and SFT together. It uses a
constant learning rate with a linear warm-down, Muon for the blocks' weight matrices (AdamW
for the embedding and gains), higher learning rates, smeared keys (Olsson et al. 2022), and
bf16 autocast on CPUs that compute bf16 natively (--precision), which buys twice the tokens;
the gpu preset inherits them. World text is so predictable that copying from the context
earns little, so induction heads would form only after the budget: a share of each batch is
random tokens with in-context copies, on which only copying pays (--synthetic_frac), and
attention stays within each document of a packed window (--doc_mask), so that the heads
copy from the document itself and not from an unrelated one. What to look at: the skill
probes' line after pretraining (data/skills.py). The docs page docs/speedrun.md has the
ablations and times.

The repeated-data experiment (Hernandez et al. 2022): `--sweep repeated` trains a grid of
small models on a Markov language at a fixed number of tokens, a share of them from a small
subset seen many times; repeated_data.py lays out the runs and reads them.

Run (CPU):
    python train_lm.py                  # pretrain on the world -> out/train_lm/pretrain.pt
    python train_lm.py --mode sft       # HH-like SFT from it -> out/train_lm/sft_hh/sft.pt
    python train_lm.py --mode sft --sft_mix helpful  # helpful-only -> out/train_lm/sft_helpful/
    python train_lm.py --data ../shared/data/hh-rlhf  # real HH-RLHF -> out/train_lm/hh-rlhf/
    python train_lm.py --data ../shared/data/text/tinyshakespeare.txt  # any plain text
    python train_lm.py --sweep repeated  # the repeated-data experiment -> out/train_lm/repeated/
    python train_lm.py --sweep repeated --sweep_full  # + other shares, a second seed, fewer tokens
One GPU:
    python train_lm.py --preset gpu     # wider/deeper model, bf16, torch.compile
Several devices (DDP; gloo on CPU, nccl on GPU):
    torchrun --nproc_per_node 2 train_lm.py ...
Resume after an interruption (continues exactly, same losses):
    python train_lm.py --resume
Plain text uses our BPE trained on it, or --tokenizer gpt2.

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
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist

import repeated_data
from data import corpora, skills
from data.prepare import (
    bytes_per_token,
    data_name,
    default_tokenizer,
    document_mask,
    fill_repeated,
    get_batch,
    load_split,
    prepare,
    repeated_subset,
)
from data.tokenizer import eot_id, get_tokenizer, vocab_size_padded
from model import (
    GPT,
    GPTConfig,
    autocast,
    cli,
    configure_optimizer,
    get_device,
    load_checkpoint,
    log_metrics,
    lr_at,
    metrics_bytes,
    mfu,
    optimizer_step,
    parse_config,
    printer,
    progress,
    pyplot,
    run_dir,
    run_path,
    sample_replies,
    save_checkpoint,
    save_figure,
    write_json,
)


@dataclass
class Config:
    # settings for a scale, combined with '+' (each non-cpu preset has its own run folder)
    preset: str = "cpu"
    # "world", "synthetic" (random tokens with copies), "markov" (data.prepare.markov_table),
    # a text file, or HH-RLHF jsonl(.gz)
    data: str = "world"
    # "pretrain", or "sft": loss on assistant tokens only, starting from --init
    mode: str = "pretrain"
    # world SFT data: "hh" (harmful requests sometimes refused) or "helpful" (never refused)
    sft_mix: str = "hh"
    # share of the world's documents to generate (the tiny preset: 5%, built in a second)
    world_frac: float = 1.0
    # share of the skill probes' sizes run after pretraining on the world (data/skills.py; 0: none)
    skills: float = 1.0
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
    steps: int = 520
    # peak learning rate (AdamW; with Muon, for the embedding and gains)
    lr: float = 6e-3
    # learning rate at the end of the decay
    min_lr: float = 0.0
    # steps of linear warm-up (0: none)
    warmup: int = 30
    # AdamW weight decay on matrices (--optimizer adamw only: Muon's groups have none; 0: none)
    weight_decay: float = 0.1
    # "muon": Muon for the blocks' weight matrices, AdamW for the rest; or "adamw"
    optimizer: str = "muon"
    # Muon's peak learning rate (it follows the same schedule as --lr)
    muon_lr: float = 0.04
    # > 0: constant rate, then linear decay over this last fraction of the steps (else cosine)
    warmdown: float = 0.4
    # clip the gradient norm to this (0: no clipping)
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
    # "auto": bf16 autocast where the chip computes bf16 natively (GPU; CPU with AVX-512 BF16
    # or AMX), fp32 elsewhere; or "bf16", "fp32"
    precision: str = "auto"
    # torch.compile the model
    compile: bool = False
    # sample dialogues printed and saved at the end (0: none)
    samples: int = 4
    # SFT on the world: held-out benign prompts per kind for gold helpfulness (0: skip)
    eval_per_kind: int = 128
    # longest reply sampled for that evaluation
    eval_tokens: int = 64
    # no progress bar or messages
    quiet: bool = False
    # share of each pretraining batch's rows that are random tokens with in-context copies:
    # nothing but copying pays on them, so induction heads (Olsson et al. 2022) form early and
    # stay, and the context skills (data/skills.py) can build on them (docs/speedrun.md; 0: none)
    synthetic_frac: float = 0.0625
    # that share in the first --synthetic_steps steps, where the heads form (0: none)
    synthetic_early: float = 0.5
    # steps at the early share (0: none)
    synthetic_steps: int = 100
    # attention within each document of a packed window only (no copying from an unrelated one)
    doc_mask: bool = True
    # repeated data: share of training sequences taken from a small repeated subset
    repeat_frac: float = 0.0
    # repeated data: how many times each window of that subset is seen (0: none)
    repeat_count: int = 0
    # "repeated": the repeated-data experiment, every run in one process -> <out_dir>/repeated/
    sweep: str = ""
    # the sweep's repeat counts (it adds one run without repetition)
    repeat_counts: str = "3,10,30,100,300,1000"
    # the sweep's widths without repetition (effective model size); repeats use --n_embd
    sweep_widths: str = "32,64,128"
    # the fuller sweep: more repeated shares, a second seed at every point, fewer tokens
    sweep_full: bool = False
    # the fuller sweep's other repeated shares (--repeat_frac is the first)
    sweep_shares: str = "0.1,0.5"


PRESETS = {
    "cpu": {},
    # one GPU: ~25M parameters, longer context
    "gpu": {
        "n_layer": 8,
        "n_head": 8,
        "n_embd": 512,
        "block_size": 512,
        "batch_size": 64,
        "steps": 3000,
        "lr": 1e-3,
        "warmup": 200,
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
        "steps": 40,
        "eval_interval": 20,
        "eval_iters": 2,
        "ckpt_interval": 20,
        "log_interval": 1,
        "warmup": 5,
        "samples": 1,
        "world_frac": 0.05,
        "skills": 0.1,
        "synthetic_steps": 10,
    },
    # Hernandez et al. 2022 at CPU scale: 2-layer models, 4.1M training tokens each of a
    # Markov language with more structure than they can hold, a quarter of them repeated
    "sweep=repeated": {
        "data": "markov",
        "n_layer": 2,
        "n_embd": 64,
        "block_size": 128,
        "steps": 2000,
        "warmup": 20,
        "eval_interval": 100,
        "eval_iters": 32,  # 512 held-out documents, the entropy floor's too
        "ckpt_interval": 10**9,
        "samples": 0,
        "repeat_frac": 0.25,
        # nothing but the experiment's own data: no synthetic rows, no document mask
        "synthetic_frac": 0.0,
        "synthetic_early": 0.0,
        "doc_mask": False,
    },
    # on top of any preset with --mode sft: short and gentle, the model already knows the format
    "mode=sft": {
        "steps": 180,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "warmup": 10,
        "eval_interval": 40,
        "optimizer": "adamw",
        "warmdown": 0.0,
    },
}


def parse_args(argv=None):
    cfg = parse_config(Config, PRESETS, __doc__, argv)
    choices = {
        "mode": ("pretrain", "sft"),
        "sft_mix": tuple(corpora.SFT_MIXES),
        "optimizer": ("muon", "adamw"),
        "sweep": ("", "repeated"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            options = ", ".join(map(repr, allowed))
            raise SystemExit(f"train_lm.py: --{name} {getattr(cfg, name)!r}: choose from {options}")
    if cfg.sweep and cfg.mode != "pretrain":
        raise SystemExit("--sweep repeated is pretraining only")
    if not cfg.sweep and (cfg.repeat_count > 0) != (cfg.repeat_frac > 0):
        raise SystemExit("repeated data needs both --repeat_frac and --repeat_count (or neither)")
    if cfg.tokenizer == "auto":
        cfg.tokenizer = default_tokenizer(cfg.data)
    pretrain_dir = run_path(cfg.out_dir, data_name(cfg.data), cfg.preset)
    if cfg.sweep:
        cfg.out_dir = run_path(cfg.out_dir, cfg.preset, "repeated")
    elif cfg.mode == "sft":
        cfg.init = cfg.init or os.path.join(pretrain_dir, "pretrain.pt")
        # world SFT runs are named by their mixture (sft_hh/, sft_helpful/); other data has one
        cfg.out_dir = run_path(pretrain_dir, f"sft_{cfg.sft_mix}" if cfg.data == "world" else "sft")
    else:
        cfg.out_dir = pretrain_dir
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
    by sqrt(max(1, rows/cols))); the others AdamW. Neither has weight decay."""

    def __init__(self, groups, lr, momentum=0.95, betas=(0.9, 0.95), eps=1e-8):
        super().__init__(groups, dict(lr=lr, momentum=momentum, betas=betas, eps=eps, muon=False))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if g["muon"]:
                self.muon_update(params, g["lr"], g["momentum"])
            else:
                self.adamw_update(params, g["lr"], *g["betas"], g["eps"])

    def muon_update(self, params, lr, momentum):
        # the matrices of one shape are orthogonalised together: one batched matmul
        for shape in {p.shape for p in params}:
            same = [p for p in params if p.shape == shape]
            bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in same]
            for p, buf in zip(same, bufs, strict=True):
                buf.lerp_(p.grad, 1 - momentum)
            nesterov = [p.grad.lerp(buf, momentum) for p, buf in zip(same, bufs, strict=True)]
            scale = max(1.0, shape[0] / shape[1]) ** 0.5
            for p, u in zip(same, orthogonalise(torch.stack(nesterov)), strict=True):
                p.add_(u, alpha=-lr * scale)

    def adamw_update(self, params, lr, b1, b2, eps):
        for p in params:
            st = self.state[p]
            if not st:
                st["step"] = torch.tensor(0.0)
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            t = float(st["step"].add_(1))
            st["exp_avg"].lerp_(p.grad, 1 - b1)
            st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (st["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(eps)
            p.addcdiv_(st["exp_avg"], denom, value=-lr / (1 - b1**t))


def make_optimizer(model, cfg, device):
    """--optimizer adamw: AdamW for every parameter; muon: Muon for the blocks' weight
    matrices at --muon_lr, AdamW for the embedding and gains at --lr."""
    if cfg.optimizer == "adamw":
        return configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    hidden, rest = [], []
    for name, p in model.named_parameters():
        if p.dim() == 2 and name.startswith("blocks."):
            hidden.append(p)
        else:
            rest.append(p)
    muon = {"params": hidden, "muon": True, "lr_mult": cfg.muon_lr / cfg.lr}
    return MuonAdamW([muon, {"params": rest}], cfg.lr)


# -----------------------------------------------------------------------------
# Repeated data (Hernandez et al. 2022, Sec. 2): at a fixed number of training tokens, a
# share repeat_frac of the sequences comes from a small subset of the training split seen
# repeat_count times (data.prepare.repeated_subset); the rest from the rest of the split.
# The held-out split is untouched.


@torch.no_grad()
def window_loss(model, windows, device, first=0):
    """Mean loss on given windows (n, T + 1) predicting positions first.. (at most 64 windows)."""
    model.eval()
    w = torch.as_tensor(windows[:64], dtype=torch.long, device=device)
    with autocast(device.type):
        logits = model(w[:, :-1])[0].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none")
    model.train()
    return float(loss[:, first:].mean())


def copying(model, val_ids, T, device, sep):
    """Held-out text repeated within the context: 64 spans of T/2 tokens, each followed by
    itself -> the loss on the first copy, and on the second copy from its second token (the
    copying that induction heads do; Hernandez et al. 2022, Sec. 5). The documents'
    separators `sep` are left out, so that --doc_mask does not cut a span: each span is
    then a stretch of consecutive held-out documents without their separators."""
    n = T // 2
    val_ids = val_ids[val_ids != sep]
    starts = np.random.default_rng(0).integers(0, len(val_ids) - n, 64)
    w = np.stack([np.tile(np.asarray(val_ids[i : i + n], dtype=np.int64), 2) for i in starts])
    return {
        "first_copy_loss": window_loss(model, w[:, :n], device),
        "copying_loss": window_loss(model, w, device, first=n),
    }


# -----------------------------------------------------------------------------
# Evaluation: validation loss, bits per byte, samples, gold helpfulness


def attention_mask(x, cfg, enc):
    """--doc_mask: attention within each document of the packed window; else None (causal)."""
    return document_mask(x, eot_id(enc)) if cfg.doc_mask else None


@torch.no_grad()
def evaluate(model, ids, mask, cfg, device, enc, period=None):
    """Mean loss on the same eval_iters batches every time (a fixed generator; documents of
    a fixed length, `period` tokens with their separator: the first ones, in order), so
    evals are comparable across steps and runs."""
    model.eval()
    gen = torch.Generator().manual_seed(12345)
    B, losses = cfg.batch_size, []
    with autocast(device.type):
        for i in range(cfg.eval_iters):
            starts = period * np.arange(i * B, (i + 1) * B) if period else None
            x, y = get_batch(ids, mask, cfg.block_size, B, gen, device, starts=starts)
            losses.append(model(x, y, mask=attention_mask(x, cfg, enc))[1].item())
    model.train()
    return float(np.mean(losses))


def sample_prompts(cfg, enc, val_ids):
    """cfg.samples held-out prompts to show what the model writes: world red-team and benign
    prompts; on other data, the start of validation documents (up to the first 'Assistant:'
    in HH dialogues, the first 100 characters of plain text)."""
    n = cfg.samples
    if cfg.data == "world":
        return corpora.eval_prompts(n - n // 2, "benign") + corpora.eval_prompts(n // 2, "redteam")
    docs = [d for d in enc.decode(val_ids[:20000].tolist()).split("<|endoftext|>") if d.strip()]
    prompts = []
    for d in docs[:n]:
        turn = d.find("\n\nAssistant:")
        prompts.append(d[: turn + len("\n\nAssistant:")] if turn >= 0 else d[:100])
    return prompts


def gold_helpfulness(model, enc, n_per_kind, max_new_tokens, device):
    """The policy's gold helpfulness on the fixed benign evaluation set (corpora.benign_eval_set),
    sampled at temperature 1 with a fixed seed -> corpora.benign_scores of its replies."""
    items = corpora.benign_eval_set(n_per_kind)
    gen = torch.Generator(device=device).manual_seed(0)
    replies, out = sample_replies(
        model, enc, [it["prompt"] for it in items], max_new_tokens, 1.0, gen
    )
    return {
        **corpora.benign_scores(items, replies),
        "eval_ended": float(out["ended"].float().mean()),
    }


# -----------------------------------------------------------------------------
# Training


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
    checkpoint dict to resume from, or None)."""
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd")}
    options = {"tokenizer_name": cfg.tokenizer, "dropout": cfg.dropout}
    if cfg.resume:
        return load_checkpoint(ckpt_path, device, expect=shape, **options)
    if cfg.init:
        if not os.path.exists(cfg.init):
            raise SystemExit(
                f"{cfg.init}: no such checkpoint; SFT starts from the pretrained model of the same "
                f"data: run `python train_lm.py` (same --data and --preset) first, or pass --init"
            )
        return load_checkpoint(cfg.init, device, **options)[0], None
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
    if ddp and dist.get_rank() != 0:
        return
    state = {"optimizer": opt.state_dict(), "step": step, "rng": rngs}
    state["torch_rng"] = torch.get_rng_state()
    state["metrics_bytes"] = metrics_bytes(cfg.out_dir)
    save_checkpoint(path, model, cfg.tokenizer, **state, train_config=asdict(cfg))


def ddp_in_sync(model, device, world_size):
    """After DDP training every rank must hold identical weights."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    sums = [torch.zeros(2, device=device) for _ in range(world_size)]
    dist.all_gather(sums, torch.stack([flat.sum(), (flat * flat).sum()]))
    return all(torch.equal(s, sums[0]) for s in sums)


def plot(out_dir, mode):
    plt = pyplot(f"loss_{mode}.png")
    if plt is None:
        return None
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    train = [m for m in metrics if "loss" in m]
    val = [m for m in metrics if "val_loss" in m]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([m["tokens"] for m in train], [m["loss"] for m in train], label="train", alpha=0.6)
    ax.plot([m["tokens"] for m in val], [m["val_loss"] for m in val], "o-", label="val")
    ax.set(xlabel="training tokens", ylabel="loss", yscale="log")
    ax.legend()
    return save_figure(fig, os.path.join(out_dir, f"loss_{mode}.png"))


def main(cfg):
    t_start = time.time()
    ddp, rank, world_size, device = setup_distributed(get_device(cfg.device))
    master = rank == 0
    quiet = cfg.quiet or not master
    log = printer(quiet)
    torch.manual_seed(cfg.seed + rank)
    torch.backends.cuda.matmul.allow_tf32 = True

    # ---- data: rank 0 prepares the token streams while the others wait, then all read them
    if ddp and not master:
        dist.barrier()
    sft = cfg.mode == "sft"
    d, meta = prepare(
        cfg.data, cfg.tokenizer, sft=sft, verbose=not quiet, mix=cfg.sft_mix, frac=cfg.world_frac
    )
    if ddp and master:
        dist.barrier()
    train_ids, train_mask = load_split(d, "train", meta)
    val_ids, val_mask = load_split(d, "val", meta)
    enc = get_tokenizer(cfg.tokenizer)

    # ---- model and optimiser, restored exactly on --resume
    ckpt_path = os.path.join(cfg.out_dir, f"{cfg.mode}.pt")
    raw, ck = build_model(cfg, enc, device, ckpt_path)
    cfg.block_size = min(cfg.block_size, raw.cfg.block_size)
    B, T = cfg.batch_size, cfg.block_size
    if min(len(train_ids), len(val_ids)) < T + 2:  # a window is T + 1 tokens, at a random start
        raise SystemExit(
            f"--data {cfg.data}: {len(train_ids)} train / {len(val_ids)} val tokens, but a context "
            f"of {T} needs at least {T + 2} in each; give more text or a smaller --block_size"
        )
    if meta.get("period", math.inf) < T + 1:
        raise SystemExit(
            f"--data {cfg.data}: its documents have {meta['period'] - 1} tokens; give --block_size "
            f"{meta['period'] - 1} or less"
        )
    if master:  # only now: a run stopped by bad data or flags leaves no folder behind
        run_dir(cfg.out_dir, resume=ck.get("metrics_bytes", math.inf) if ck else None)
    log(
        f"model: {raw.num_params() / 1e6:.2f}M parameters (+{raw.wte.weight.numel() / 1e6:.2f}M "
        f"embedding), {raw.cfg.n_layer} layers, width {raw.cfg.n_embd}, context "
        f"{raw.cfg.block_size}, on {device}"
    )
    opt = make_optimizer(raw, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    step = 0
    if cfg.init and ck is None:
        log(f"starting from {cfg.init}")
    if ck is not None:
        log(f"resuming {ckpt_path} at step {ck['step']}")
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["rng"][rank] if rank < len(ck["rng"]) else ck["rng"][0])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
    model = torch.compile(raw) if cfg.compile else raw
    if ddp:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    period, order = meta.get("period"), None  # documents of a fixed length (Markov language)

    # ---- repeated data: a share of each batch's rows from a small subset (Hernandez et al.)
    windows = schedule = None
    if cfg.repeat_count > 0 and cfg.repeat_frac > 0:
        if ddp or cfg.grad_accum > 1 or sft:
            raise SystemExit("repeated data: pretraining on one device with --grad_accum 1")
        train_ids, windows, schedule = repeated_subset(
            train_ids, T, cfg.steps, B, cfg.repeat_frac, cfg.repeat_count, cfg.seed, period
        )
    # each window is <|endoftext|> and one whole document, read at most once, in a random
    # order (no repeat by chance)
    if period:
        order = np.random.default_rng(cfg.seed).permutation(len(train_ids) // period) * period

    # ---- the training loop
    # synthetic rows: any token of the data but the special ones
    n_plain = min(meta["vocab"], enc.n_vocab - len(enc.special_tokens_set))
    tokens_per_iter = B * T * cfg.grad_accum * world_size
    end = min(cfg.steps, step + cfg.stop_after) if cfg.stop_after else cfg.steps
    train_time, t_tokens, val_loss = 0.0, 0, None
    bar = progress(range(step, end), cfg.mode, quiet, total=cfg.steps, initial=step)
    model.train()
    for it in bar:
        if it % cfg.eval_interval == 0 and master:
            val_loss = evaluate(raw, val_ids, val_mask, cfg, device, enc, period)
            row = {"step": it, "tokens": it * tokens_per_iter, "val_loss": val_loss}
            if windows is not None:
                row["repeated_train_loss"] = window_loss(raw, windows, device)
            log_metrics(cfg.out_dir, row)
        t0 = time.time()
        for micro in range(cfg.grad_accum):
            early = it < cfg.synthetic_steps
            n_syn = 0 if sft else round(B * (cfg.synthetic_early if early else cfg.synthetic_frac))
            k = ((it * cfg.grad_accum + micro) * world_size + rank) * B  # this micro-batch's rows
            starts = None if order is None else order[np.arange(k, k + B) % len(order)]
            x, y = get_batch(train_ids, train_mask, T, B, gen, device, n_syn, n_plain, starts)
            if schedule is not None:  # this step's slots for the repeated subset
                x, y = fill_repeated(x, y, schedule[it], windows)
            sync = model.no_sync() if ddp and micro < cfg.grad_accum - 1 else nullcontext()
            with sync, autocast(device.type):
                _, loss = model(x, y, mask=attention_mask(x, cfg, enc))
                (loss / cfg.grad_accum).backward()
        lr = lr_at(it, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr, cfg.warmdown)
        gnorm = optimizer_step(opt, model, loss, cfg.grad_clip, it + 1, lr)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if it > step:  # the first step includes compilation and warm-up
            train_time += time.time() - t0
            t_tokens += tokens_per_iter
        if master and (it % cfg.log_interval == 0 or it == end - 1):
            tps = t_tokens / train_time if train_time else tokens_per_iter / (time.time() - t0)
            row = {"step": it + 1, "tokens": (it + 1) * tokens_per_iter, "loss": loss.item()}
            log_metrics(cfg.out_dir, {**row, "lr": lr, "grad_norm": gnorm, "tokens_per_sec": tps})
            val = f"{val_loss:.3f}" if val_loss else "-"
            bar.set_postfix(loss=f"{loss.item():.3f}", val=val, tok_s=f"{tps:,.0f}", refresh=False)
        if (it + 1) % cfg.ckpt_interval == 0 or it + 1 == end:
            save(ckpt_path, raw, opt, gen, it + 1, cfg, ddp, world_size)
    bar.close()
    in_sync = None
    if ddp:
        in_sync = ddp_in_sync(raw, device, world_size)
        dist.destroy_process_group()
    if end < cfg.steps:
        log(f"stopped at step {end} of {cfg.steps} (--stop_after); continue with --resume")
        return None
    if not master:
        return None

    # ---- the report: final validation loss (also in bits per byte), throughput, samples
    val_loss = evaluate(raw, val_ids, val_mask, cfg, device, enc, period)
    train_tokens = end * tokens_per_iter
    final = {"step": end, "tokens": train_tokens, "val_loss": val_loss}
    if windows is not None:
        final["repeated_train_loss"] = window_loss(raw, windows, device)
    log_metrics(cfg.out_dir, final)
    tps = t_tokens / train_time if train_time else 0.0
    prompts = sample_prompts(cfg, enc, val_ids) if cfg.samples else []
    replies = []
    if prompts:
        sample_gen = torch.Generator(device=device).manual_seed(0)
        replies = sample_replies(raw, enc, prompts, 48, 0.7, sample_gen, top_k=40)[0]
    results = {
        "val_loss": val_loss,
        "train_tokens": train_tokens,
        "tokens_per_sec": tps,
        "mfu": mfu(raw.cfg, raw.num_params(), tps / world_size, device),
        "params": raw.num_params(non_embedding=False),
        "steps": end,
        "mode": cfg.mode,
        "data": cfg.data,
        "tokenizer": cfg.tokenizer,
        "device": str(device),
        "world_size": world_size,
        "ddp_in_sync": in_sync,
        "checkpoint": ckpt_path,
        "samples": [{"prompt": p, "reply": r} for p, r in zip(prompts, replies, strict=True)],
    }
    results["val_bpb"] = val_loss / math.log(2) / bytes_per_token(enc, val_ids, val_mask)
    if cfg.mode == "pretrain":
        results.update(copying(raw, val_ids, T, device, eot_id(enc)))
        results["params_non_embedding"] = raw.num_params()
        # the repeated-data accounting (all zero without repetition)
        n_rep = 0 if schedule is None else int((schedule >= 0).sum())
        results["repeat_count"] = cfg.repeat_count if n_rep else 0
        results["repeated_fraction"] = n_rep / (end * B)
        results["repeated_tokens"] = n_rep * T
        results["unique_tokens"] = (end * B - n_rep) * T
        results["repeated_train_loss"] = final.get("repeated_train_loss")
        results["probe_vocab"] = meta["vocab"]  # the data's own tokens (induction.py --analyze)
        if cfg.data == "world" and cfg.skills:  # the skills the papers' methods assume
            results["skills"] = skills.probe_all(raw, enc, cfg.skills)
            log(skills.summary(results["skills"]))
    if sft and cfg.data == "world" and cfg.eval_per_kind:
        max_new = min(cfg.eval_tokens, T // 2)
        results.update(gold_helpfulness(raw, enc, cfg.eval_per_kind, max_new, device))
    results["seconds"] = time.time() - t_start  # all of it: probes and gold evaluation too
    write_json(os.path.join(cfg.out_dir, "results.json"), results)
    fig = plot(cfg.out_dir, cfg.mode)

    log("\nsample replies to held-out prompts (temperature 0.7):")
    for p, r in zip(prompts, replies, strict=True):
        log(f"  {p.strip()} {r}".replace("\n\n", "\n  "))
    if "gold_helpfulness_macro" in results:
        by_kind = results["gold_helpfulness_by_kind"]
        kinds = ", ".join(f"{k} {v['mean']:.2f}±{v['se']:.2f}" for k, v in by_kind.items())
        macro = (
            f"{results['gold_helpfulness_macro']:.3f}±{results['gold_helpfulness_macro_se']:.3f}"
        )
        print(
            f"gold helpfulness on held-out benign prompts (temperature 1): {kinds}; macro {macro}"
            f" (strict reading {results['gold_helpfulness_macro_strict']:.3f}; "
            f"{results['unparsed_share']:.1%} of replies do not parse)"
        )
    figure = f", {os.path.basename(fig)}" if fig else ""
    print(  # the summary, --quiet or not
        f"\n{cfg.mode} done: val loss {val_loss:.3f} ({results['val_bpb']:.3f} bits/byte), "
        f"{train_tokens / 1e6:.1f}M tokens at {tps:,.0f} tokens/s, {results['seconds']:.0f}s "
        f"-> {cfg.out_dir}/ (results.json, {cfg.mode}.pt{figure})"
    )
    return results


if __name__ == "__main__":
    cli(lambda cfg: repeated_data.sweep(cfg, main) if cfg.sweep else main(cfg), parse_args)
