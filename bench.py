"""
bench.py -- throughput of model.py: training tokens/s (and MFU on GPU) against a baseline
with nanoGPT's architecture at the same shape, timed in one process with the two models'
steps interleaved (median step time), and sampling tokens/s with the KV cache against
recomputing the whole context every step.

    python bench.py                          # train_lm.py's CPU shape (4 x 128, context 256)
    python bench.py --preset w256            # 4 x 256, vocabulary 4,096
    python bench.py --preset gpt2 --compile  # GPT-2 small (12 x 768, context 1024), one GPU, bf16
    python bench.py --suite gpu              # every GPU number of docs/speedrun.md, one process:
        # GPT-2-small training eager and compiled (ours and the baseline, MFU), KV-cached vs
        # recomputed sampling at batch 64, and each script's --preset gpu for a few steps

What to look at: the printed tokens/s and the ratio to the baseline; on GPU, MFU against
the device's bf16 peak. Writes out/bench/[<preset>/][cuda/][compiled/]results.json (the
suite: out/bench/suite/results.json). Timings exclude warm-up steps (compilation,
allocator, kernel-plan caches), so "no slow first pass" is checked separately: the first
timed sampling call is reported next to the mean.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from data.tokenizer import get_tokenizer, vocab_size_padded
from model import (
    GPT,
    GPTConfig,
    autocast,
    cli,
    configure_optimizer,
    device_peak_flops,
    generate,
    get_device,
    mfu,
    optimizer_step,
    parse_config,
    run_dir,
    run_path,
    score_sequences,
    set_precision,
    token_logprobs,
    write_json,
)


@dataclass
class Config:
    # the shape: cpu (train_lm.py's CPU default), w256, small (its gpu preset), gpt2
    preset: str = "cpu"
    # transformer blocks (train_lm.py's CPU default shape)
    n_layer: int = 4
    # attention heads per block
    n_head: int = 4
    # residual stream width
    n_embd: int = 128
    # context length in tokens
    block_size: int = 256
    # embedding rows (0: the world tokenizer's, padded to a multiple of 64)
    vocab_size: int = 0
    # training sequences per step
    batch_size: int = 16
    # timed training steps
    steps: int = 10
    # untimed warm-up steps (compilation, allocator; 0: none)
    untimed: int = 3
    # torch.compile both models
    compile: bool = False
    # prompts per sampling call
    sample_batch: int = 64
    # prompt length for sampling
    prompt_len: int = 32
    # tokens sampled per prompt
    new_tokens: int = 128
    # also time one ppo.py-shaped step
    ppo_step: bool = True
    # do not time the baseline GPT
    skip_baseline: bool = False
    # "gpu": the GPU suite (GPT-2-small shape unless the shape flags say otherwise)
    suite: str = ""
    # the preset the suite runs each script with (the CPU test uses tiny)
    script_preset: str = "gpu"
    # "auto" (cuda if available), "cpu", "cuda", ...
    device: str = "auto"
    # root folder; a run goes to <out_dir>[/<preset>][/cuda][/compiled]
    out_dir: str = "out/bench"


PRESETS = {
    "cpu": {},
    # the shape of the speedrun comparison with nanoGPT (docs/speedrun.md)
    "w256": {"n_embd": 256, "vocab_size": 4096},
    # train_lm.py --preset gpu
    "small": {"n_layer": 8, "n_head": 8, "n_embd": 512, "block_size": 512},
    "gpt2": {
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "block_size": 1024,
        "vocab_size": 50304,
        "ppo_step": False,
    },
}
# a smoke test: every section in seconds
PRESETS["tiny"] = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "vocab_size": 128}
PRESETS["tiny"] |= {"batch_size": 4, "steps": 2, "untimed": 1, "sample_batch": 4}
PRESETS["tiny"] |= {"prompt_len": 8, "new_tokens": 16}
PRESETS["suite=gpu"] = {**PRESETS["gpt2"], "compile": True}  # eager and compiled


# -----------------------------------------------------------------------------
# The baseline: nanoGPT's architecture (Karpathy's nanoGPT, model.py), written by us:
# LayerNorm without bias, learned absolute positions, fused causal attention, GELU MLP,
# tied embeddings, no biases. Our model must be at least as fast at the same shape.


class BaselineBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd, bias=False)
        self.ln2 = nn.LayerNorm(c.n_embd, bias=False)
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.fc_out = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)
        self.n_head = c.n_head

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, 2)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class BaselineGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList([BaselineBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd, bias=False)
        # nanoGPT's initialisation: N(0, 0.02), the projections into the residual stream
        # scaled by 1/sqrt(2 n_layer) (GPT-2). PyTorch's defaults (N(0, 1) embeddings, tied to
        # the unembedding) saturate the softmax, and the tiny gradients that follow are
        # denormal floats, which some CPUs compute many times slower (docs/speedrun.md).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                residual = name.endswith(("proj.weight", "fc_out.weight"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer) if residual else 0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))

    def num_params(self):
        return sum(p.numel() for p in self.parameters()) - self.wte.weight.numel()


def now(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def bench_train(models, cfg, batch_size, steps, warmup, device, bf16):
    """Training tokens/s of each model, {name: model}: the models' steps interleaved (so a
    slow moment of the machine hits all of them), median step time after warm-up. bf16:
    {name: bool}, whether that model runs under bf16 autocast."""
    opts = {k: configure_optimizer(m, 1e-4, device_type=device.type) for k, m in models.items()}
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size), device=device)
    times = {k: [] for k in models}
    for i in range(warmup + steps):
        for k, m in models.items():
            t0 = now(device)
            # per model, not model.autocast's one switch: this times both precisions side by side
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16[k]):
                _, loss = m(x, y)
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            if i >= warmup:
                times[k].append(now(device) - t0)
    return {k: batch_size * cfg.block_size / statistics.median(t) for k, t in times.items()}


def bench_sample(model, cfg, batch, prompt_len, new_tokens, use_cache, reps, device):
    prompts = [torch.randint(0, cfg.vocab_size, (prompt_len,)).tolist() for _ in range(batch)]
    times = []
    for _ in range(reps + 1):  # the first call is a warm-up, but we report it too
        t0 = now(device)
        with autocast(device.type):
            out = generate(model, prompts, new_tokens, temperature=1.0, use_cache=use_cache)
        times.append(now(device) - t0)
    n = batch * (out["tokens"].size(1) - prompt_len)
    return n / (sum(times[1:]) / reps), n / times[0]


def training(args, cfg, device, res, tag=""):
    """Ours at the default precision against the baseline in fp32 (the speedrun's yardstick:
    nanoGPT's model.py in fp32), and ours in fp32 where the default is bf16; eager (and
    compiled with --compile or in the suite)."""
    bf16 = {"nanoalign": res["precision"] == "bf16", "baseline": device.type == "cuda"}
    torch.manual_seed(0)
    models = {"nanoalign": GPT(cfg).to(device), "baseline": BaselineGPT(cfg).to(device)}
    if bf16["nanoalign"] and device.type == "cpu":
        torch.manual_seed(0)
        models["nanoalign_fp32"], bf16["nanoalign_fp32"] = GPT(cfg).to(device), False
    if args.skip_baseline:
        models.pop("baseline")
    n_params = {k: m.num_params() for k, m in models.items()}
    for compiled in [False, True] if args.suite and args.compile else [args.compile]:
        run = {k: torch.compile(m) for k, m in models.items()} if compiled else models
        tps = bench_train(run, cfg, args.batch_size, args.steps, args.untimed, device, bf16)
        mode = "compiled" if compiled else "eager"
        for k, v in tps.items():
            util = mfu(cfg, n_params[k], v, device, res["peak_flops"])
            res[f"train_tokens_per_sec_{k}_{mode}"] = v
            res[f"train_mfu_{k}_{mode}"] = util
            shown = f", MFU {100 * util:.1f}%" if util is not None else ""
            dtype = "bf16" if bf16[k] else "fp32"
            print(f"[{tag}] train {k:14s} {dtype} {mode:8s}: {v:,.0f} tokens/s{shown}", flush=True)
        for k in [k for k in tps if k != "baseline" and "baseline" in tps]:
            res[f"train_ratio_{k}_{mode}"] = tps[k] / tps["baseline"]
            ratio = res[f"train_ratio_{k}_{mode}"]
            print(f"[{tag}] {k} / baseline fp32 ({mode}): {ratio:.3f}x", flush=True)
        if "baseline" in tps:  # scales a time measured on a slower or faster day
            print(f"[{tag}] reference speed (baseline, fp32): {tps['baseline']:,.0f} tokens/s")
    return models["nanoalign"]


def matmul_peak(device, shapes, seconds=0.5):
    """The device's own matmul FLOP/s in bf16 and fp32 -> {f"{dtype} {m}x{k}x{n}": FLOP/s}:
    the peak a CPU's MFU is measured against (the best bf16 number), at the model's shapes
    (tokens x width x 4 width) and a large square one; each timed for `seconds`, the best
    of 5 rounds (a short timing on a shared machine reads low)."""
    out = {}
    for m, k, n in shapes:
        for dtype in (torch.bfloat16, torch.float32):
            a = torch.randn(m, k, device=device, dtype=dtype)
            b = torch.randn(k, n, device=device, dtype=dtype)
            for _ in range(3):  # warm-up: kernel choice, caches
                a @ b
            best = 0.0
            for _ in range(5):
                t0, reps = now(device), 0
                while (elapsed := now(device) - t0) < seconds / 5:
                    a @ b
                    reps += 1
                best = max(best, 2 * m * k * n * reps / elapsed)
            out[f"{str(dtype)[6:]} {m}x{k}x{n}"] = best
    return out


def sampling(args, cfg, model, device, res, tag=""):
    model.eval()
    nt = min(args.new_tokens, cfg.block_size - args.prompt_len)
    batch, prompt_len = args.sample_batch, args.prompt_len
    reps = min(3, args.steps)  # --steps bounds every section
    cached, first = bench_sample(model, cfg, batch, prompt_len, nt, True, reps, device)
    full, _ = bench_sample(model, cfg, batch, prompt_len, nt, False, 1, device)
    res["sample_batch"] = batch
    res["sample_new_tokens"] = nt
    res["sample_tokens_per_sec_cached"] = cached
    res["sample_tokens_per_sec_cached_first_call"] = first
    res["sample_tokens_per_sec_recompute"] = full
    res["sample_speedup"] = cached / full
    print(
        f"[{tag}] sample batch {batch}, {nt} new tokens: KV cache {cached:,.0f} tokens/s "
        f"(first call {first:,.0f}), full recompute {full:,.0f} tokens/s -> {cached / full:.1f}x",
        flush=True,
    )


def scripts(args, root):
    """Each script with --preset <script_preset> for a few steps, one after another, as a
    user would run them: pretraining, SFT, the PM, PPO, induction heads."""
    p = args.script_preset
    lm, pm = os.path.join(root, "lm"), os.path.join(root, "pm")
    pretrained = os.path.join(run_path(lm, p), "pretrain.pt")
    sft = os.path.join(run_path(lm, p, "sft_hh"), "sft.pt")
    pm_ckpt = os.path.join(run_path(pm, p), "pm.pt")
    ppo, ind = os.path.join(root, "ppo"), os.path.join(root, "ind")
    # (script, its flags, its output folder)
    pm_flags = ["--init", pretrained, *"--n_train 256 --n_test 128 --epochs 1".split()]
    runs = [
        ("train_lm.py", "--steps 20 --eval_interval 10".split(), lm),
        ("train_lm.py", "--mode sft --steps 10 --eval_interval 5".split(), lm),
        ("train_pm.py", pm_flags, pm),
        ("ppo.py", ["--policy", sft, "--pm", pm_ckpt, "--steps", "2"], ppo),
        ("induction.py", "--models attn2 --steps 60 --snap_every 20".split(), ind),
    ]
    out = []
    for script, flags, out_dir in runs:
        cmd = [script, "--preset", p, "--quiet", *flags, "--out_dir", out_dir]
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, *cmd],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        last = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
        run = {
            "command": "python " + " ".join(cmd),
            "exit": r.returncode,
            "seconds": time.perf_counter() - t0,
            "last_line": last[0][-300:],
        }
        out.append(run)
        failure = "" if r.returncode == 0 else f"\n    {last[0]}"
        print(
            f"[scripts] exit {r.returncode} in {run['seconds']:.0f}s: {run['command']}{failure}",
            flush=True,
        )
    lm_res = os.path.join(run_path(lm, p), "results.json")
    if os.path.exists(lm_res):
        with open(lm_res) as f:
            r = json.load(f)
        out.append({"train_lm_tokens_per_sec": r["tokens_per_sec"], "train_lm_mfu": r["mfu"]})
    return out


def bench_ppo_step(
    cfg, device, batch=32, prompt_len=24, new_tokens=64, epochs=2, minibatch=16, reps=3
):
    """The cost profile of one ppo.py step (its defaults), built from model.py alone:
    rollout (KV-cached sampling), scoring (PM at the end-of-context token, plus reference
    log-probs), update (epochs x minibatches of policy and value forward/backward)."""
    policy = GPT(cfg).to(device)
    pm = GPT(replace(cfg, scalar_head=True)).to(device)
    value = GPT(replace(cfg, scalar_head=True)).to(device)
    opt_p = configure_optimizer(policy, 1e-5, device_type=device.type)
    opt_v = configure_optimizer(value, 1e-5, device_type=device.type)
    prompts = [torch.randint(0, cfg.vocab_size, (prompt_len,)).tolist() for _ in range(batch)]
    times = {"rollout": [], "scoring": [], "update": []}
    for r in range(reps + 1):
        t0 = now(device)
        with autocast(device.type):
            out = generate(policy, prompts, new_tokens, temperature=1.0)
        t1 = now(device)
        seqs = out["tokens"].tolist()
        score_sequences(pm, seqs)
        with torch.no_grad(), autocast(device.type):
            policy(out["tokens"], pad_mask=out["pad_mask"])
        t2 = now(device)
        for _ in range(epochs):
            for i in range(0, batch, minibatch):
                t, p = out["tokens"][i : i + minibatch], out["pad_mask"][i : i + minibatch]
                with autocast(device.type):
                    lp = token_logprobs(policy(t, pad_mask=p)[0][:, :-1], t[:, 1:])
                    v = value.score(t, p)
                pl, vl = -lp.mean(), v.pow(2).mean()
                pl.backward()
                optimizer_step(opt_p, policy, pl, 1.0, r)
                vl.backward()
                optimizer_step(opt_v, value, vl, 1.0, r)
        t3 = now(device)
        if r > 0:  # the first step is a warm-up
            times["rollout"].append(t1 - t0)
            times["scoring"].append(t2 - t1)
            times["update"].append(t3 - t2)
    return {k: sum(v) / len(v) for k, v in times.items()}


def main(args):
    t_start = time.perf_counter()
    device = get_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = GPTConfig(
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        block_size=args.block_size,
        vocab_size=args.vocab_size or vocab_size_padded(get_tokenizer("world")),
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tag = f"{cfg.n_layer}x{cfg.n_embd}, context {cfg.block_size}, batch {args.batch_size}, {name}"
    res = {
        **asdict(args),
        "vocab_size": cfg.vocab_size,
        "device": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": set_precision("auto", device),
        "peak_flops": device_peak_flops(device),
    }
    if device.type == "cpu":  # no spec sheet: measure what this CPU's matmuls reach
        tokens = args.batch_size * cfg.block_size
        shapes = [(tokens, cfg.n_embd, 4 * cfg.n_embd), (2048, 2048, 2048)]
        res["matmul_flops"] = matmul_peak(device, shapes, seconds=min(0.5, args.steps / 20))
        res["peak_flops"] = max(v for k, v in res["matmul_flops"].items() if "bfloat16" in k)
        shown = ", ".join(f"{k} {v / 1e9:,.0f}" for k, v in res["matmul_flops"].items())
        print(f"[{tag}] matmul GFLOP/s: {shown}; peak (bf16) {res['peak_flops'] / 1e9:,.0f}")
    model = training(args, cfg, device, res, tag)
    sampling(args, cfg, model, device, res, tag)
    if args.ppo_step:
        short = {"new_tokens": min(64, cfg.block_size - 24), "reps": min(3, args.steps)}
        res["ppo_step_seconds"] = bench_ppo_step(cfg, device, **short)
        print(
            f"[{tag}] PPO step (32 prompts, {short['new_tokens']} new tokens, 2 epochs): "
            + ", ".join(f"{k} {v:.2f}s" for k, v in res["ppo_step_seconds"].items())
        )
    if args.suite:
        out_dir = run_dir(args.out_dir, "suite")
        res["scripts"] = scripts(args, os.path.join(out_dir, "runs"))
    else:
        out_dir = run_dir(
            args.out_dir,
            args.preset,
            "cuda" if device.type == "cuda" else "",
            "compiled" if args.compile else "",
        )
    res["seconds"] = time.perf_counter() - t_start
    write_json(os.path.join(out_dir, "results.json"), res)
    print(f"wrote {out_dir}/results.json in {res['seconds']:.0f}s")
    return res


if __name__ == "__main__":
    cli(main, lambda argv: parse_config(Config, PRESETS, __doc__, argv))
