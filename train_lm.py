"""
train_lm.py -- pretraining and supervised fine-tuning (SFT) of the small GPT.

Reproduces the first stage of every 2022 alignment pipeline: a base language model trained
on a mixture of good and bad assistant dialogues (and prose), then a "helpful-only" SFT
model trained on helpful replies, with the loss only on the assistant's tokens (Bai et al.
2022, "Constitutional AI", Sec. 3: the helpful-only starting point). The repeated-data
experiment (Hernandez et al. 2022) builds on this script.

Run (CPU, 2 cores: ~3 minutes, then ~1 minute for SFT):
    python train_lm.py                        # pretrain on the assistant world -> out/train_lm/pretrain.pt
    python train_lm.py --mode sft             # SFT from pretrain.pt          -> out/train_lm/sft.pt
    python train_lm.py --data ../shared/data/hh-rlhf          # the same on real HH-RLHF dialogues
One GPU:
    python train_lm.py --preset gpu           # wider/deeper model, bf16, torch.compile
Several devices (DDP; gloo on CPU, nccl on GPU):
    torchrun --nproc_per_node 2 train_lm.py ...
Resume after an interruption (continues exactly, same losses):
    python train_lm.py --resume

Expect (assistant world, CPU preset, 2 cores): val loss falls from ~8.1 (uniform over the
vocabulary) to ~0.6 in ~160 s (1.8M tokens, ~12k tokens/s); SFT reaches ~0.44 on assistant
tokens in ~1 minute. Most of what is left is the world's genuine randomness (which style
the assistant answers in, which facts, which digits). The sample dialogues at the end are
well-formed HH transcripts in the right styles; copying numbers and names out of the
request needs longer training (induction heads form later).
Writes out/train_lm/metrics.jsonl, results.json
(val_loss, train_tokens, tokens_per_sec, seconds, ...) and loss.png when matplotlib exists.
"""

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data import world
from data.prepare import load_split, prepare
from data.tokenizer import get_tokenizer, vocab_size_padded
from model import (GPT, GPTConfig, autocast, complete, configure_optimizer, load_checkpoint, mfu, parse_config,
                   pyplot, save_checkpoint)


@dataclass
class Config:
    data: str = "world"          # "world", a text file, or HH-RLHF jsonl(.gz) file/directory
    mode: str = "pretrain"       # "pretrain" or "sft" (loss on assistant tokens only)
    tokenizer: str = "auto"      # auto: "world" for the world, our BPE trained on the data otherwise; or "gpt2"
    init: str = ""               # start from this checkpoint (sft default: <out_dir>/pretrain.pt)
    out_dir: str = "out/train_lm"
    ckpt: str = ""               # checkpoint file name (default: <mode>.pt)
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    dropout: float = 0.0
    # optimisation
    batch_size: int = 16
    grad_accum: int = 1
    max_iters: int = 450
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # bookkeeping
    eval_interval: int = 100
    eval_iters: int = 10
    log_interval: int = 10
    ckpt_interval: int = 150
    resume: bool = False
    stop_after: int = 0          # stop after this many iterations (simulates an interruption; tests)
    seed: int = 1337
    device: str = "auto"
    compile: bool = False
    samples: int = 4             # sample dialogues printed at the end
    quiet: bool = False


PRESETS = {
    "cpu": {},
    # SFT: short, gentler; the model already knows the format
    "sft": {"max_iters": 150, "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 10, "eval_interval": 50, "ckpt_interval": 150},
    # one GPU: ~25M parameters, longer context
    "gpu": {"n_layer": 8, "n_head": 8, "n_embd": 512, "block_size": 512, "batch_size": 64, "max_iters": 3000,
            "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 200, "eval_interval": 250, "ckpt_interval": 1000, "compile": True},
    # seconds-long runs for the tests
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "batch_size": 8, "max_iters": 40,
             "eval_interval": 20, "eval_iters": 2, "ckpt_interval": 20, "log_interval": 1, "warmup_iters": 5, "samples": 1},
}


def parse_args(argv=None):
    cfg, args = parse_config(Config, PRESETS, "Pretraining and SFT (see the top of train_lm.py)", argv)
    if cfg.mode == "sft" and "sft" not in args.preset.split("+"):
        # SFT gets the SFT schedule on top of the chosen preset (e.g. --preset gpu -> gpu+sft)
        return parse_args([*(sys.argv[1:] if argv is None else argv), "--preset", args.preset + "+sft"])
    if cfg.mode not in ("pretrain", "sft"):
        raise SystemExit("--mode must be pretrain or sft")
    if cfg.tokenizer == "auto":
        cfg.tokenizer = "world" if cfg.data == "world" else "bpe:" + os.path.basename(os.path.normpath(cfg.data)).split(".")[0]
    cfg.ckpt = cfg.ckpt or f"{cfg.mode}.pt"
    if cfg.mode == "sft" and not cfg.init and not cfg.resume:
        cfg.init = os.path.join(cfg.out_dir, "pretrain.pt")
    return cfg


def get_batch(ids, mask, block_size, batch_size, gen, device):
    """Random windows of block_size + 1 tokens (nanoGPT). With an SFT mask, targets outside
    assistant replies are -1 (ignored by the loss)."""
    ix = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=gen).tolist()
    x = torch.from_numpy(np.stack([ids[i:i + block_size].astype(np.int64) for i in ix]))
    y = torch.from_numpy(np.stack([ids[i + 1:i + 1 + block_size].astype(np.int64) for i in ix]))
    if mask is not None:
        m = torch.from_numpy(np.stack([mask[i + 1:i + 1 + block_size] for i in ix])).bool()
        y = y.masked_fill(~m, -1)
    return x.to(device), y.to(device)


def lr_at(it, cfg):
    """Linear warm-up, then cosine decay to min_lr."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / cfg.warmup_iters
    r = min(1.0, (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (cfg.lr - cfg.min_lr)


@torch.no_grad()
def evaluate(model, ids, mask, cfg, device):
    """Mean loss on the same eval_iters batches every time (a fixed generator), so evals
    are comparable across steps and runs."""
    model.eval()
    gen = torch.Generator().manual_seed(12345)
    losses = []
    for _ in range(cfg.eval_iters):
        x, y = get_batch(ids, mask, cfg.block_size, cfg.batch_size, gen, device)
        with autocast(device.type):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train()
    return float(np.mean(losses))


def sample_prompts(cfg, n, enc):
    if cfg.data == "world":
        return world.eval_prompts(n - n // 2, "benign") + world.eval_prompts(n // 2, "redteam")
    d, meta = prepare(cfg.data, cfg.tokenizer, verbose=False)
    text = enc.decode(load_split(d, "val", meta)[0][:20000].tolist())
    out = []
    for doc in text.split("<|endoftext|>"):
        i = doc.find("\n\nAssistant:")
        if i > 0 and len(out) < n:
            out.append(doc[:i + len("\n\nAssistant:")])
    return out


def plot(metrics, path):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    tr = [m for m in metrics if "loss" in m]
    ev = [m for m in metrics if "val_loss" in m]
    ax.plot([m["tokens"] for m in tr], [m["loss"] for m in tr], label="train", alpha=0.6)
    ax.plot([m["tokens"] for m in ev], [m["val_loss"] for m in ev], "o-", label="val")
    ax.set_xlabel("training tokens"), ax.set_ylabel("loss"), ax.set_yscale("log"), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(cfg):
    t_start = time.time()
    ddp = int(os.environ.get("RANK", -1)) != -1
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world_size = 0, 1
    if ddp:
        dist.init_process_group(backend="nccl" if cfg.device == "cuda" else "gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        if cfg.device == "cuda":
            cfg.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(cfg.device)
    master = rank == 0
    device = torch.device(cfg.device)
    log = (lambda *a: print(*a, flush=True)) if master and not cfg.quiet else (lambda *a: None)
    torch.manual_seed(cfg.seed + rank)
    torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(cfg.out_dir, exist_ok=True)

    # ---- data (rank 0 prepares, the others wait and then read the same files)
    if master:
        d, meta = prepare(cfg.data, cfg.tokenizer, sft=cfg.mode == "sft", verbose=not cfg.quiet)
    if ddp:
        dist.barrier()
    d, meta = prepare(cfg.data, cfg.tokenizer, sft=cfg.mode == "sft", verbose=False)
    train_ids, train_mask = load_split(d, "train", meta)
    val_ids, val_mask = load_split(d, "val", meta)
    enc = get_tokenizer(cfg.tokenizer)

    # ---- model: fresh, from --init, or from our own checkpoint on --resume
    ckpt_path = os.path.join(cfg.out_dir, cfg.ckpt)
    ck = None
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd")}
    if cfg.resume:
        model, ck = load_checkpoint(ckpt_path, device, expect=shape, tokenizer_name=cfg.tokenizer, dropout=cfg.dropout)
        log(f"resuming {ckpt_path} at step {ck['step']}")
    elif cfg.init:
        if not os.path.exists(cfg.init):
            raise SystemExit(f"{cfg.init}: no such checkpoint. SFT starts from a pretrained model: run "
                             f"`python train_lm.py` first, or pass --init.")
        model, _ = load_checkpoint(cfg.init, device, tokenizer_name=cfg.tokenizer, dropout=cfg.dropout)
        log(f"initialised from {cfg.init}")
    else:
        mcfg = GPTConfig(vocab_size=vocab_size_padded(enc), vocab_valid=enc.n_vocab, block_size=cfg.block_size, dropout=cfg.dropout, **shape)
        model = GPT(mcfg).to(device)
    cfg.block_size = min(cfg.block_size, model.cfg.block_size)
    raw = model
    log(f"model: {model.num_params() / 1e6:.2f}M parameters (+{model.wte.weight.numel() / 1e6:.2f}M embedding), "
        f"{model.cfg.n_layer} layers, width {model.cfg.n_embd}, context {model.cfg.block_size}, on {device}")
    opt = configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    step = 0
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["rng"][rank] if rank < len(ck["rng"]) else ck["rng"][0])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
    if cfg.compile:
        model = torch.compile(model)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if master and not cfg.resume and os.path.exists(metrics_path):
        os.remove(metrics_path)
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.grad_accum * world_size
    metrics, train_time, t_tokens = [], 0.0, 0

    def checkpoint(at_step):
        rngs = [gen.get_state()]
        if ddp:  # every rank's data generator, so a resumed run draws the same batches
            rngs = [torch.empty_like(rngs[0]) for _ in range(world_size)]
            dist.all_gather(rngs, gen.get_state())
        if master:
            save_checkpoint(ckpt_path, raw, cfg.tokenizer, optimizer=opt.state_dict(), step=at_step, rng=rngs,
                            torch_rng=torch.get_rng_state(), train_config=asdict(cfg))

    def record(m):
        metrics.append(m)
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(m) + "\n")

    end = cfg.max_iters if not cfg.stop_after else min(cfg.max_iters, step + cfg.stop_after)
    bar = tqdm(range(step, end), initial=step, total=cfg.max_iters, disable=not master or cfg.quiet, desc=cfg.mode)
    model.train()
    val_loss = None
    for it in bar:
        if it % cfg.eval_interval == 0 and master:
            val_loss = evaluate(raw, val_ids, val_mask, cfg, device)
            record({"step": it, "tokens": it * tokens_per_iter, "val_loss": val_loss})
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(it, cfg)
        for micro in range(cfg.grad_accum):
            x, y = get_batch(train_ids, train_mask, cfg.block_size, cfg.batch_size, gen, device)
            sync = nullcontext() if not ddp or micro == cfg.grad_accum - 1 else model.no_sync()
            with sync, autocast(device.type):
                _, loss = model(x, y)
                (loss / cfg.grad_accum).backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        if it > step:  # the first step includes compilation and warm-up
            train_time += dt
            t_tokens += tokens_per_iter
        if it % cfg.log_interval == 0 or it == end - 1:
            tps = t_tokens / train_time if train_time else tokens_per_iter / dt
            record({"step": it + 1, "tokens": (it + 1) * tokens_per_iter, "loss": loss.item(), "lr": lr_at(it, cfg),
                    "grad_norm": gnorm.item(), "tokens_per_sec": tps})
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val_loss:.3f}" if val_loss else "-", tok_s=f"{tps:,.0f}")
        if (it + 1) % cfg.ckpt_interval == 0 or it + 1 == end:
            checkpoint(it + 1)
    bar.close()
    step = end

    # ---- DDP sanity: every rank must hold identical weights after training
    in_sync = None
    if ddp:
        flat = torch.cat([p.detach().float().flatten() for p in raw.parameters()])
        sums = [torch.zeros(2, device=device) for _ in range(world_size)]
        dist.all_gather(sums, torch.stack([flat.sum(), (flat * flat).sum()]))
        in_sync = all(torch.equal(s, sums[0]) for s in sums)
    if step < cfg.max_iters:
        log(f"stopped at step {step} of {cfg.max_iters} (--stop_after); continue with --resume")
        if ddp:
            dist.destroy_process_group()
        return None
    results = None
    if master:
        val_loss = evaluate(raw, val_ids, val_mask, cfg, device)
        record({"step": step, "tokens": step * tokens_per_iter, "val_loss": val_loss})
        tps = t_tokens / train_time if train_time else 0.0
        util = mfu(raw.cfg, raw.num_params(), tps / world_size, device)
        samples = []
        if cfg.samples:
            prompts = sample_prompts(cfg, cfg.samples, enc)
            samples = [{"prompt": p, "reply": r} for p, r in zip(prompts, complete(raw, enc, prompts, top_k=40))]
            log("\nsample dialogues (held-out prompts, temperature 0.7):")
            for s in samples:
                log(f"  {s['prompt'].strip()} {s['reply']}".replace("\n\n", "\n  "))
        results = {"val_loss": val_loss, "train_tokens": step * tokens_per_iter, "tokens_per_sec": tps,
                   "seconds": time.time() - t_start, "mfu": util, "params": raw.num_params(non_embedding=False),
                   "iters": step, "mode": cfg.mode, "data": cfg.data, "tokenizer": cfg.tokenizer,
                   "device": str(device), "world_size": world_size, "ddp_in_sync": in_sync,
                   "checkpoint": ckpt_path, "samples": samples}
        fig = plot(metrics if not cfg.resume else [json.loads(l) for l in open(metrics_path)],
                   os.path.join(cfg.out_dir, f"loss_{cfg.mode}.png"))
        with open(os.path.join(cfg.out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        mfu_s = f"{100 * util:.1f}% MFU" if util is not None else "MFU n/a on CPU"
        log(f"\n{cfg.mode} done: val loss {val_loss:.3f}, {step * tokens_per_iter / 1e6:.1f}M tokens at "
            f"{tps:,.0f} tokens/s ({mfu_s}), {results['seconds']:.0f}s. Checkpoint {ckpt_path}"
            + (f", figure {fig}" if fig else ""))
    if ddp:
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main(parse_args())
