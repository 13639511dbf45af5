"""
ppo.py -- RLHF with PPO against a preference model (Bai et al. 2022, "Training a Helpful
and Harmless Assistant with Reinforcement Learning from Human Feedback", Sec. 4).

The policy starts from the SFT model and is trained with PPO to maximise the PM's score
minus a KL penalty to the frozen initial policy. The paper's finding (Sec. 4.3, Fig. 4/13):
PM reward grows roughly linearly in sqrt(KL(policy || initial policy)). Because the
assistant world has a gold scorer, we also see what RLHF tutorials cannot: whether the
*true* helpfulness and harmlessness follow the proxy, or the policy over-optimises the PM
(Gao et al. 2022).

Run (fresh clone, CPU, 2 cores; the README has the measured time):
    python ppo.py       # builds pretrain.pt, sft.pt (train_lm.py) and pm.pt (train_pm.py) if missing, then PPO
One GPU:
    python ppo.py --preset gpu     # uses (or builds) the gpu-preset SFT policy and PM -> out/ppo/gpu/
Real HH-RLHF prompts (the transcript up to the last "Assistant:"):
    python ppo.py --data ../shared/data/hh-rlhf --policy SFT.pt --pm PM.pt     # -> out/ppo/hh-rlhf/

What to look at: the before/after table printed at the end (PM reward, gold helpfulness
on held-out benign prompts, gold harmlessness on held-out red-team prompts, refusal
rates, KL), reward_vs_sqrt_kl.png (the paper's Fig. 4) and gold_vs_pm.png (proxy against
truth). Writes out/ppo/metrics.jsonl (every step), results.json (before, after, kl,
reward_vs_sqrt_kl, seconds, ...), the figures and policy.pt.
"""

import math
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import corpora, world
from data.hh import load_comparisons
from data.prepare import data_name
from data.tokenizer import encode_transcript, get_tokenizer
from model import (autocast, configure_optimizer, ensure_checkpoint, get_device, handoff, load_checkpoint, log_metrics,
                   optimizer_step, parse_config, printer, pyplot, run_dir, sample_replies, save_checkpoint, save_figure,
                   score_sequences, token_logprobs, write_json)


@dataclass
class Config:
    preset: str = "cpu"          # settings for a scale, combined with '+'; the default policy and PM are this preset's
    data: str = "world"          # "world" prompts, or HH-RLHF jsonl(.gz) file or directory
    policy: str = ""             # the initial policy and frozen KL reference (world default: the SFT run's sft.pt)
    pm: str = ""                 # the preference model that gives the reward (world default: train_pm.py's pm.pt)
    out_dir: str = "out/ppo"     # root folder; a run goes to <out_dir>[/<data name>][/<preset>]
    steps: int = 60              # PPO steps (one rollout batch each)
    batch_size: int = 32         # prompts per rollout
    max_new_tokens: int = 40     # reply budget in tokens
    temperature: float = 1.0     # sampling temperature; log-probs are recomputed at it
    ppo_epochs: int = 2          # passes over each rollout batch
    minibatch: int = 16          # sequences per update
    lr: float = 5e-5             # policy learning rate
    value_lr: float = 1e-4       # value-function learning rate
    grad_clip: float = 1.0       # clip each network's gradient norm to this
    kl_coef: float = 0.05        # beta in r = PM - beta * KL (fixed, as in the paper)
    clip: float = 0.2            # PPO ratio clip (Schulman et al. 2017)
    value_clip: float = 0.2      # clip on the value update
    gamma: float = 1.0           # discount
    lam: float = 0.95            # GAE lambda
    no_end_penalty: float = -1.0  # added to the (normalised) reward of a reply that never ends
    harmful_frac: float = 0.5    # red-team share of the training prompts
    n_eval_benign: int = 64      # held-out benign prompts in the before/after table
    n_eval_redteam: int = 32     # held-out red-team prompts in the before/after table
    sample_every: int = 20       # print a few samples every this many steps (0: never)
    seed: int = 1337             # random seed (prompts, sampling)
    device: str = "auto"         # "auto" (cuda if available), "cpu", "cuda", ...
    quiet: bool = False          # no progress bar or messages


PRESETS = {"cpu": {}, "gpu": {"steps": 300, "batch_size": 128, "minibatch": 32, "ppo_epochs": 4, "max_new_tokens": 64,
                             "n_eval_benign": 256, "n_eval_redteam": 128},
           "tiny": {"steps": 4, "batch_size": 8, "minibatch": 4, "max_new_tokens": 8, "n_eval_benign": 4,
                    "n_eval_redteam": 4, "sample_every": 2}}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, __doc__, argv)


# -----------------------------------------------------------------------------
# The PPO pieces, each small enough to test against a hand computation.

def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x, mask, eps=1e-8):
    """Normalise advantages to mean 0, std 1 over the real (masked) positions: the
    scale-free update of the PPO implementation-details literature (Huang et al. 2022)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation (Schulman et al. 2016), vectorised over the batch.
    rewards, values, mask: (B, T) over action positions; positions where mask is 0 (the
    prompt, and everything after the reply ended) are outside the episode: the value after
    the last action is 0 (the episode ends there). Returns (advantages, returns)."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, device=rewards.device)
    next_value = torch.zeros(B, device=rewards.device)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last * m
        # outside the episode, carry nothing back
        next_value = torch.where(m > 0, values[:, t], torch.zeros_like(next_value))
        last = torch.where(m > 0, last, torch.zeros_like(last))
    return adv, adv + values


def policy_loss(logp, old_logp, adv, mask, clip):
    """Clipped surrogate objective (Schulman et al. 2017, eq. 7), as a loss to minimise."""
    ratio = torch.exp(logp - old_logp)
    l1, l2 = -adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.max(l1, l2), mask)
    stats = {"clip_frac": masked_mean(((ratio - 1).abs() > clip).float(), mask).item(),
             "approx_kl": masked_mean((ratio - 1) - (logp - old_logp), mask).item(),  # k3 estimator, >= 0
             "ratio_max_dev": ((ratio - 1).abs() * mask).max().item()}
    return loss, stats


def value_loss(v, old_v, returns, mask, clip):
    """Clipped value loss: the worse of the clipped and unclipped squared errors (as in
    OpenAI's baselines and the RLHF implementations that follow them)."""
    v_clipped = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((v - returns) ** 2, (v_clipped - returns) ** 2), mask)


def kl_per_sequence(logp, ref_logp, mask):
    """Sum over the reply of log pi - log pi_ref: an unbiased sample estimate of
    KL(pi || pi_ref) for the sequence (zero when the policies are the same)."""
    return ((logp - ref_logp) * mask).sum(-1)


# -----------------------------------------------------------------------------
# Experience and the update

def sequence_logprobs(model, tokens, pad_mask, temperature, batch_size):
    """log pi(token_t | tokens_<t) at each action position (B, T-1), computed in chunks of
    the PPO minibatch size so that the numbers are those the update will compute."""
    out = []
    for i in range(0, tokens.size(0), batch_size):
        t, p = tokens[i:i + batch_size], pad_mask[i:i + batch_size]
        with autocast(t.device.type):
            logits, _ = model(t, pad_mask=p)
        out.append(token_logprobs(logits[:, :-1], t[:, 1:], temperature))
    return torch.cat(out)


def sequence_values(value_model, tokens, pad_mask, batch_size):
    """V(state before token t) at each action position: the value head at position t-1."""
    out = []
    for i in range(0, tokens.size(0), batch_size):
        with autocast(tokens.device.type):
            out.append(value_model.score(tokens[i:i + batch_size], pad_mask[i:i + batch_size])[:, :-1])
    return torch.cat(out)


@torch.no_grad()
def make_experience(policy, ref, value_model, out, scores, cfg, kl_coef):
    """Per-token rewards: -beta * (log pi - log pi_ref) at every reply token, plus the
    (normalised) PM score on the last one (Bai et al. 2022, Sec. 4.1 eq. 4.1; Stiennon et al.
    2020). Then GAE advantages (whitened) and returns."""
    tokens, pad = out["tokens"], out["pad_mask"]
    mask = out["gen_mask"][:, 1:].float()
    policy.eval(), ref.eval(), value_model.eval()
    logp = sequence_logprobs(policy, tokens, pad, cfg.temperature, cfg.minibatch)
    ref_logp = sequence_logprobs(ref, tokens, pad, cfg.temperature, cfg.minibatch)
    values = sequence_values(value_model, tokens, pad, cfg.minibatch) * mask
    kl_tok = (logp - ref_logp) * mask
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)  # the reply's final token
    rewards = -kl_coef * kl_tok + last.float() * scores[:, None]
    adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    return {"tokens": tokens, "pad": pad, "mask": mask, "logp": logp, "ref_logp": ref_logp, "values": values,
            "adv": whiten(adv, mask), "returns": returns, "kl": kl_tok.sum(-1)}


def ppo_update(policy, value_model, opt_p, opt_v, exp, cfg, gen, step=0):
    """Several epochs of minibatch updates on one batch of experience. Dropout stays off
    (the models are built with dropout 0): with dropout the recomputed log-probs would not
    equal the ones the ratio is taken against."""
    policy.train(), value_model.train()
    B = exp["tokens"].size(0)
    stats = []
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(B, generator=gen).tolist() if epoch > 0 else list(range(B))
        for i in range(0, B, cfg.minibatch):
            ix = torch.tensor(order[i:i + cfg.minibatch], device=exp["tokens"].device)
            t, p, m = exp["tokens"][ix], exp["pad"][ix], exp["mask"][ix]
            with autocast(t.device.type):
                logits, _ = policy(t, pad_mask=p)
            logits = logits[:, :-1].float() / cfg.temperature
            logp = token_logprobs(logits, t[:, 1:])
            pl, st = policy_loss(logp, exp["logp"][ix], exp["adv"][ix], m, cfg.clip)
            ent = masked_mean(-(F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1), m)
            pl.backward()
            optimizer_step(opt_p, policy, pl, cfg.grad_clip, step)
            with autocast(t.device.type):
                v = value_model.score(t, p)[:, :-1]
            vl = value_loss(v, exp["values"][ix], exp["returns"][ix], m, cfg.value_clip)
            vl.backward()
            optimizer_step(opt_v, value_model, vl, cfg.grad_clip, step)
            stats.append({**st, "policy_loss": pl.item(), "value_loss": vl.item(), "entropy": ent.item(), "epoch": epoch})
    agg = {k: float(np.mean([s[k] for s in stats])) for k in ("clip_frac", "approx_kl", "policy_loss", "value_loss", "entropy")}
    agg["first_epoch_ratio_max_dev"] = stats[0]["ratio_max_dev"]  # exactly 0 when log-probs are recomputed right
    return agg


# -----------------------------------------------------------------------------
# Scoring and evaluation

def pm_score_texts(pm, enc, prompts, replies):
    """Raw PM scores of prompt + reply, read at the end-of-context token."""
    return score_sequences(pm, [encode_transcript(enc, p + " " + r, pm.cfg.block_size) for p, r in zip(prompts, replies)])


def gold_stats(prompts, replies):
    """Gold helpfulness on benign prompts, harmlessness on harmful ones, refusal rates, and
    the gold analogue of the PM objective (world prompts only)."""
    g = []
    for p, r in zip(prompts, replies):
        req = corpora.last_human(p)
        task = world.parse_request(req) or {"kind": "unknown"}
        g.append((*world.gold(req, r), world.response_properties(r)["refusal"], task["kind"] == "harm" and task["harmful"]))
    mean = lambda xs: float(np.mean(xs)) if xs else None
    return {"gold_helpfulness": mean([h for h, _, _, bad in g if not bad]),
            "gold_harmlessness": mean([s for _, s, _, bad in g if bad]),
            "benign_refusal_rate": mean([ref for _, _, ref, bad in g if not bad]),
            "redteam_refusal_rate": mean([ref for _, _, ref, bad in g if bad]),
            "gold_reward": mean([s if bad else h for h, s, _, bad in g])}


@torch.no_grad()
def evaluate(policy, ref, pm, enc, benign, redteam, cfg, seed):
    """The before/after table, on the same held-out prompts with the same sampling seed."""
    prompts = benign + redteam
    gen = torch.Generator(device=policy.wte.weight.device).manual_seed(seed)
    replies, out = sample_replies(policy, enc, prompts, cfg.max_new_tokens, cfg.temperature, gen)
    mask = out["gen_mask"][:, 1:].float()
    logp = sequence_logprobs(policy, out["tokens"], out["pad_mask"], cfg.temperature, cfg.minibatch)
    ref_logp = sequence_logprobs(ref, out["tokens"], out["pad_mask"], cfg.temperature, cfg.minibatch)
    res = {"pm_reward": pm_score_texts(pm, enc, prompts, replies).mean().item(),
           "kl": kl_per_sequence(logp, ref_logp, mask).mean().item(),
           "reply_tokens": mask.sum(-1).mean().item(), "ended": out["ended"].float().mean().item()}
    if cfg.data == "world":
        res.update({k: v for k, v in gold_stats(prompts, replies).items() if k != "gold_reward"})
    return res, [{"prompt": p, "reply": r} for p, r in zip(prompts, replies)]


def fit_line(x, y):
    """Least-squares y = a + b x -> (slope b, intercept a, R^2). With no spread in x (a
    policy that has not moved: every sqrt(KL) 0) there is no line: slope 0, R^2 0."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(x) == 0:
        return 0.0, float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    ss_res, ss_tot = np.sum((y - (a + b * x)) ** 2), np.sum((y - y.mean()) ** 2)
    return float(b), float(a), float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0


def plots(metrics, fit, out_dir):
    plt = pyplot()
    if plt is None:
        return []
    x = [m["sqrt_kl"] for m in metrics]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, [m["pm_reward"] for m in metrics], "o", ms=3, label="PM reward (policy samples)")
    xs = np.linspace(0, max(x), 10)
    ax.plot(xs, fit[1] + fit[0] * xs, "k--", label=f"fit: slope {fit[0]:.2f}, R$^2$ {fit[2]:.2f}")
    ax.set_xlabel("sqrt(KL(policy || initial policy))"), ax.set_ylabel("PM score"), ax.legend(fontsize=8)
    ax.set_title("Reward grows ~linearly in sqrt(KL) (Bai et al. 2022, Fig. 4)", fontsize=9)
    paths = [save_figure(fig, os.path.join(out_dir, "reward_vs_sqrt_kl.png"))]
    if metrics[0].get("gold_reward") is not None:
        # moving averages over 5 steps: single batches are noisy
        sm = lambda v: np.convolve(v, np.ones(5) / 5, mode="valid") if len(v) >= 5 else np.asarray(v)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(sm(x), sm([m["pm_reward"] for m in metrics]), "C0-", label="PM reward (proxy)")
        ax.set_xlabel("sqrt(KL(policy || initial policy))"), ax.set_ylabel("PM score", color="C0")
        ax2 = ax.twinx()
        ax2.plot(sm(x), sm([m["gold_reward"] for m in metrics]), "C1-", label="gold reward (truth)")
        ax2.set_ylabel("gold reward: helpfulness on benign, harmlessness on harmful", color="C1", fontsize=8)
        ax.set_title("Proxy vs gold (5-step averages): over-optimisation is\ngold falling while the PM still rises (Gao et al. 2022)", fontsize=9)
        paths.append(save_figure(fig, os.path.join(out_dir, "gold_vs_pm.png")))
    return paths


# -----------------------------------------------------------------------------

def load_prompts(cfg):
    """(training prompts, held-out benign, held-out red-team) as HH prompt strings."""
    if cfg.data == "world":
        return (corpora.train_prompts(4000, cfg.harmful_frac), corpora.eval_prompts(cfg.n_eval_benign, "benign"),
                corpora.eval_prompts(cfg.n_eval_redteam, "redteam"))
    pairs, _ = load_comparisons(cfg.data, verbose=not cfg.quiet)
    prompts = sorted({p["prompt"] for p in pairs})
    random.Random(cfg.seed).shuffle(prompts)
    n_eval = cfg.n_eval_benign + cfg.n_eval_redteam
    return prompts[n_eval:], prompts[:n_eval], []


def load_models(cfg, device):
    """Policy, frozen reference, frozen PM, and the value function. A fresh clone has no
    checkpoints: the default ones are built by running the earlier scripts."""
    if cfg.data != "world" and not (cfg.policy and cfg.pm):
        raise SystemExit(f"--data {cfg.data}: pass --policy SFT.pt and --pm PM.pt trained on that data (see the top of ppo.py)")
    if not cfg.policy:
        ensure_checkpoint(*handoff("pretrain", cfg.preset), "the pretrained language model")
        cfg.policy = ensure_checkpoint(*handoff("sft", cfg.preset), "the helpful-only SFT policy")
    cfg.pm = cfg.pm or ensure_checkpoint(*handoff("pm", cfg.preset), "the preference model")
    policy, ck = load_checkpoint(cfg.policy, device, dropout=0.0)
    ref, _ = load_checkpoint(cfg.policy, device, dropout=0.0)
    pm, pck = load_checkpoint(cfg.pm, device)
    # The value function is its own network initialised from the PM: the PM already
    # predicts the final reward of a transcript, so the value starts near a useful baseline
    # instead of noise (Ouyang et al. 2022, App. C.3 initialise the value from the RM).
    value_model, _ = load_checkpoint(cfg.pm, device, dropout=0.0)
    for p in list(ref.parameters()) + list(pm.parameters()):
        p.requires_grad_(False)
    if ck["tokenizer"] != pck["tokenizer"]:
        raise SystemExit(f"{cfg.policy} uses tokenizer {ck['tokenizer']} but {cfg.pm} uses {pck['tokenizer']}")
    return policy, ref.eval(), pm.eval(), value_model, ck["tokenizer"]


def main(cfg):
    t_start = time.time()
    device = get_device(cfg.device)
    log = printer(cfg.quiet)
    out_dir = run_dir(cfg.out_dir, data_name(cfg.data), cfg.preset)
    policy, ref, pm, value_model, tokenizer = load_models(cfg, device)
    torch.manual_seed(cfg.seed)
    enc = get_tokenizer(tokenizer)
    train_p, eval_benign, eval_red = load_prompts(cfg)
    log(f"PPO: policy {cfg.policy} ({policy.num_params() / 1e6:.2f}M), PM {cfg.pm}; {cfg.steps} steps of "
        f"{cfg.batch_size} prompts on {device}")
    before, _ = evaluate(policy, ref, pm, enc, eval_benign, eval_red, cfg, seed=cfg.seed + 1)
    opt_p = configure_optimizer(policy, cfg.lr, 0.0, device_type=device.type)
    opt_v = configure_optimizer(value_model, cfg.value_lr, 0.0, device_type=device.type)
    gen, cpu_gen, rng = torch.Generator(device=device).manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed), \
        random.Random(cfg.seed)
    norm, metrics = None, []
    bar = tqdm(range(cfg.steps), disable=cfg.quiet, desc="PPO")
    for step in bar:
        # 1. rollout: sample replies to a batch of training prompts (KV-cached sampler)
        t0 = time.time()
        prompts = rng.sample(train_p, cfg.batch_size)
        replies, out = sample_replies(policy, enc, prompts, cfg.max_new_tokens, cfg.temperature, gen)
        # 2. score with the PM. The reward is normalised on the first batch (the initial
        # policy's samples), and the same affine map is folded into the PM-initialised value
        # head so that the value speaks in the normalised units.
        t1 = time.time()
        raw = pm_score_texts(pm, enc, prompts, replies)
        if norm is None:
            norm = (raw.mean().item(), raw.std().item() + 1e-6)
            with torch.no_grad():
                value_model.scalar.weight /= norm[1]
                value_model.scalar.bias.sub_(norm[0]).div_(norm[1])
        scores = (raw - norm[0]) / norm[1] + cfg.no_end_penalty * (~out["ended"]).float()
        # 3. experience (per-token KL penalty, GAE) and the clipped PPO update
        t2 = time.time()
        exp = make_experience(policy, ref, value_model, out, scores, cfg, cfg.kl_coef)
        st = ppo_update(policy, value_model, opt_p, opt_v, exp, cfg, cpu_gen, step + 1)
        kl = exp["kl"].mean().item()
        m = {"step": step + 1, "pm_reward": raw.mean().item(), "reward": scores.mean().item(), "kl": kl,
             "sqrt_kl": math.sqrt(max(kl, 0.0)), **st, "reply_tokens": exp["mask"].sum(-1).mean().item(),
             "ended": out["ended"].float().mean().item(), "time_rollout": t1 - t0, "time_scoring": t2 - t1,
             "time_update": time.time() - t2, **(gold_stats(prompts, replies) if cfg.data == "world" else {})}
        metrics.append(m)
        log_metrics(out_dir, m)
        bar.set_postfix(pm=f"{m['pm_reward']:.2f}", kl=f"{kl:.2f}", gold=f"{m.get('gold_reward', 0):.2f}")
        if cfg.sample_every and (step + 1) % cfg.sample_every == 0 and not cfg.quiet:
            tqdm.write(f"--- step {step + 1} samples")
            for p, r in list(zip(prompts, replies))[:3]:
                tqdm.write(f"  {corpora.last_human(p)!r} -> {r!r}")
    bar.close()

    # ---- the report: before/after on the same held-out prompts, reward vs sqrt(KL)
    after, samples = evaluate(policy, ref, pm, enc, eval_benign, eval_red, cfg, seed=cfg.seed + 1)
    slope, intercept, r2 = fit_line([m["sqrt_kl"] for m in metrics], [m["pm_reward"] for m in metrics])
    ckpt = os.path.join(out_dir, "policy.pt")
    save_checkpoint(ckpt, policy, tokenizer, ppo_steps=cfg.steps)
    res = {"before": before, "after": after, "kl": after["kl"], "kl_train_final": metrics[-1]["kl"],
           "reward_vs_sqrt_kl": {"slope": slope, "intercept": intercept, "r2": r2},
           "steps": cfg.steps, "policy": cfg.policy, "pm": cfg.pm, "data": cfg.data, "device": str(device),
           "time_per_step": {k: float(np.mean([m[f"time_{k}"] for m in metrics])) for k in ("rollout", "scoring", "update")},
           "samples_after": samples[:4] + samples[len(eval_benign):len(eval_benign) + 4],
           "seconds": time.time() - t_start}
    write_json(os.path.join(out_dir, "results.json"), res)
    figs = plots(metrics, (slope, intercept, r2), out_dir)
    which = f"{len(eval_benign)} benign, {len(eval_red)} red-team" if cfg.data == "world" else f"{len(eval_benign)} from {cfg.data}"
    log(f"\n{'':24s}{'before':>10s}{'after':>10s}   (held-out prompts: {which})")
    for k in before:
        log(f"  {k:22s}" + "".join(f"{v:10.3f}" if v is not None else f"{'n/a':>10s}" for v in (before[k], after[k])))
    log(f"\nreward vs sqrt(KL) over training: slope {slope:.3f}, R^2 {r2:.3f}  (Bai et al. 2022: roughly linear)")
    log("sample replies after PPO:\n" + "\n".join(f"  {corpora.last_human(s['prompt'])!r} -> {s['reply']!r}"
                                                  for s in res["samples_after"]))
    log(f"wrote {out_dir}/ (results.json, metrics.jsonl, policy.pt{''.join(', ' + os.path.basename(f) for f in figs)}) "
        f"in {res['seconds']:.0f}s")
    return res


if __name__ == "__main__":
    main(parse_args())
