"""
bench.py -- throughput of model.py: training tokens/s (and MFU on GPU) against a minimal
plain-PyTorch GPT of the same shape, and sampling tokens/s with the KV cache against
recomputing the whole context every step.

    python bench.py                           # train_lm.py's CPU shape (4 layers, width 128, context 256)
    python bench.py --preset gpt2 --compile   # GPT-2 small (12 x 768, context 1024) on one GPU, bf16
    python bench.py --preset gpt2 --device cpu --batch_size 2 --steps 3   # same shape, CPU (slow)

Writes out/bench/results.json (out/bench/gpt2/cuda/compiled/results.json for the second command). Timings exclude warm-up steps (compilation, allocator,
kernel-plan caches), so "no slow first pass" is checked separately: the first timed
sampling call is reported next to the mean.
"""

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from data.tokenizer import get_tokenizer, vocab_size_padded
from model import (GPT, GPTConfig, autocast, configure_optimizer, device_peak_flops, generate, get_device, mfu,
                   optimizer_step, parse_config, run_dir, score_sequences, token_logprobs, write_json)


@dataclass
class Config:
    preset: str = "cpu"          # the shape: cpu (train_lm.py's CPU default), small (its gpu preset), gpt2
    n_layer: int = 4             # transformer blocks (train_lm.py's CPU default shape)
    n_head: int = 4              # attention heads per block
    n_embd: int = 128            # residual stream width
    block_size: int = 256        # context length in tokens
    vocab_size: int = 0          # embedding rows (0: the world tokenizer's, padded to a multiple of 64)
    batch_size: int = 16         # training sequences per step
    steps: int = 10              # timed training steps
    warmup: int = 3              # untimed warm-up steps (compilation, allocator)
    compile: bool = False        # torch.compile both models
    sample_batch: int = 64       # prompts per sampling call
    prompt_len: int = 32         # prompt length for sampling
    new_tokens: int = 128        # tokens sampled per prompt
    ppo_step: bool = True        # also time one ppo.py-shaped step
    skip_baseline: bool = False  # do not time the minimal baseline GPT
    device: str = "auto"         # "auto" (cuda if available), "cpu", "cuda", ...
    out_dir: str = "out/bench"   # root folder; a run goes to <out_dir>[/<preset>][/cuda][/compiled]


PRESETS = {"cpu": {},
           "small": {"n_layer": 8, "n_head": 8, "n_embd": 512, "block_size": 512},  # train_lm.py --preset gpu
           "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50304,
                    "ppo_step": False}}


# -----------------------------------------------------------------------------
# The baseline: the minimal GPT most tutorials write (minGPT style) -- learned positions,
# LayerNorm, attention computed explicitly with a masked softmax, GELU MLP, tied head.

class MinimalBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.qkv, self.proj = nn.Linear(c.n_embd, 3 * c.n_embd), nn.Linear(c.n_embd, c.n_embd)
        self.mlp = nn.Sequential(nn.Linear(c.n_embd, 4 * c.n_embd), nn.GELU(), nn.Linear(4 * c.n_embd, c.n_embd))
        self.n_head = c.n_head
        self.register_buffer("mask", torch.ones(c.block_size, c.block_size).tril().bool())

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, 2)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class MinimalGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = c
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.Sequential(*[MinimalBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        logits = self.ln_f(self.blocks(x)) @ self.wte.weight.T
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))

    def num_params(self):
        return sum(p.numel() for p in self.parameters()) - self.wte.weight.numel()


def bench_train(model, cfg, batch_size, steps, warmup, device):
    opt = configure_optimizer(model, 1e-4, device_type=device.type) if isinstance(model, GPT) or hasattr(model, "_orig_mod") \
        else torch.optim.AdamW(model.parameters(), 1e-4, fused=device.type == "cuda")
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size), device=device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        with autocast(device.type):
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.time() - t0)
    return batch_size * cfg.block_size * steps / sum(times)


def bench_sample(model, cfg, batch, prompt_len, new_tokens, use_cache, reps, device):
    prompts = [torch.randint(0, cfg.vocab_size, (prompt_len,)).tolist() for _ in range(batch)]
    times = []
    for i in range(reps + 1):  # the first call is a warm-up, but we report it too
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        with autocast(device.type):
            out = generate(model, prompts, new_tokens, temperature=1.0, use_cache=use_cache)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - t0)
    n = batch * (out["tokens"].size(1) - prompt_len)
    return n / (sum(times[1:]) / reps), n / times[0]


def bench_ppo_step(cfg, device, batch=32, prompt_len=24, new_tokens=40, epochs=2, minibatch=16, reps=3):
    """The cost profile of one ppo.py step (its defaults), built from model.py alone:
    rollout (KV-cached sampling), scoring (PM at the end-of-context token, plus reference
    log-probs), update (epochs x minibatches of policy and value forward/backward)."""
    policy, pm = GPT(cfg).to(device), GPT(GPTConfig(**{**cfg.__dict__, "scalar_head": True})).to(device)
    value = GPT(GPTConfig(**{**cfg.__dict__, "scalar_head": True})).to(device)
    opt_p, opt_v = configure_optimizer(policy, 1e-5, device_type=device.type), configure_optimizer(value, 1e-5, device_type=device.type)
    prompts = [torch.randint(0, cfg.vocab_size, (prompt_len,)).tolist() for _ in range(batch)]
    times = {"rollout": [], "scoring": [], "update": []}
    def now():
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.time()
    for r in range(reps + 1):
        t0 = now()
        with autocast(device.type):
            out = generate(policy, prompts, new_tokens, temperature=1.0)
        t1 = now()
        seqs = out["tokens"].tolist()
        score_sequences(pm, seqs)
        with torch.no_grad(), autocast(device.type):
            policy(out["tokens"], pad_mask=out["pad_mask"])
        t2 = now()
        for _ in range(epochs):
            for i in range(0, batch, minibatch):
                t, p = out["tokens"][i:i + minibatch], out["pad_mask"][i:i + minibatch]
                with autocast(device.type):
                    lp = token_logprobs(policy(t, pad_mask=p)[0][:, :-1], t[:, 1:])
                    v = value.score(t, p)
                (-lp.mean()).backward()
                optimizer_step(opt_p, policy, lp.mean(), 1.0, r)
                v.pow(2).mean().backward()
                optimizer_step(opt_v, value, v.mean(), 1.0, r)
        t3 = now()
        if r > 0:  # the first step is a warm-up
            for k, v_ in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(v_)
    return {k: sum(v) / len(v) for k, v in times.items()}


def main(args):
    device = get_device(args.device)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
                    vocab_size=args.vocab_size or vocab_size_padded(get_tokenizer("world")))
    shape, bs = f"{cfg.n_layer}x{cfg.n_embd}-ctx{cfg.block_size}", args.batch_size
    res = {**asdict(args), "vocab_size": cfg.vocab_size, "device": torch.cuda.get_device_name(device)
           if device.type == "cuda" else "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "peak_flops": device_peak_flops(device)}

    model = GPT(cfg).to(device)
    res["params_non_embedding"] = model.num_params()
    train_model = torch.compile(model) if args.compile else model
    tps = bench_train(train_model, cfg, bs, args.steps, args.warmup, device)
    res["train_tokens_per_sec"] = tps
    res["train_mfu"] = mfu(cfg, model.num_params(), tps, device)
    mfu_s = f", MFU {100 * res['train_mfu']:.1f}%" if res["train_mfu"] is not None else ", MFU n/a on CPU"
    print(f"[{shape} on {res['device']}] train nanoalign GPT : {tps:,.0f} tokens/s{mfu_s}")
    if not args.skip_baseline:
        base = MinimalGPT(cfg).to(device)
        base_model = torch.compile(base) if args.compile else base
        btps = bench_train(base_model, cfg, bs, args.steps, args.warmup, device)
        res["baseline_train_tokens_per_sec"] = btps
        res["baseline_train_mfu"] = mfu(cfg, base.num_params(), btps, device)
        print(f"[{shape} on {res['device']}] train minimal GPT   : {btps:,.0f} tokens/s "
              f"(nanoalign is {tps / btps:.2f}x)")
        del base, base_model

    model.eval()
    nt = min(args.new_tokens, cfg.block_size - args.prompt_len)
    reps = 3
    cached, cached_first = bench_sample(model, cfg, args.sample_batch, args.prompt_len, nt, True, reps, device)
    full, _ = bench_sample(model, cfg, args.sample_batch, args.prompt_len, nt, False, 1, device)
    res.update({"sample_batch": args.sample_batch, "sample_new_tokens": nt, "sample_tokens_per_sec_cached": cached,
                "sample_tokens_per_sec_cached_first_call": cached_first, "sample_tokens_per_sec_recompute": full,
                "sample_speedup": cached / full})
    print(f"[{shape} on {res['device']}] sample batch {args.sample_batch}, {nt} new tokens: KV cache "
          f"{cached:,.0f} tokens/s (first call {cached_first:,.0f}), full recompute {full:,.0f} tokens/s "
          f"-> {cached / full:.1f}x")
    if args.ppo_step:
        step = bench_ppo_step(cfg, device)
        res["ppo_step_seconds"] = step
        print(f"[{shape} on {res['device']}] PPO step (ppo.py defaults: 32 prompts, 40 new tokens, 2 epochs): "
              + ", ".join(f"{k} {v:.2f}s" for k, v in step.items()))
    out = os.path.join(run_dir(args.out_dir, args.preset, "cuda" if device.type == "cuda" else "",
                               "compiled" if args.compile else ""), "results.json")
    write_json(out, res)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main(parse_config(Config, PRESETS, __doc__))
