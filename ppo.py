"""
ppo.py -- RLHF with PPO against a preference model (Bai et al. 2022, "Training a Helpful
and Harmless Assistant with Reinforcement Learning from Human Feedback", Sec. 4).

The policy starts from the SFT model and is trained with PPO to maximise the PM's score
minus a KL penalty to the frozen initial policy. The paper's finding (Sec. 4.3, Fig. 4/13):
PM reward grows roughly linearly in sqrt(KL(policy || initial policy)). Because the
assistant world has a gold scorer, we also see what RLHF tutorials cannot: whether the
*true* helpfulness and harmlessness follow the proxy, or the policy over-optimises the PM
(Gao et al. 2022).

Run (fresh clone, CPU, 2 cores; ~10 minutes in all):
    python ppo.py       # builds pretrain.pt, sft.pt (train_lm.py) and pm.pt (train_pm.py) if missing, then PPO
One GPU:
    python ppo.py --preset gpu     # after train_lm.py/train_pm.py with --preset gpu
Real HH-RLHF prompts (the transcript up to the last "Assistant:"):
    python ppo.py --data ../shared/data/hh-rlhf --policy SFT.pt --pm PM.pt

Expect (assistant world, CPU): gold harmlessness on held-out red-team prompts and PM reward
go up, while the refusal rate on benign held-out prompts stays low; the reward vs sqrt(KL)
fit printed at the end has a positive slope with a high R^2. Writes out/ppo/metrics.jsonl
(every step), results.json (before/after, kl, reward_vs_sqrt_kl, seconds) and
reward_vs_sqrt_kl.png, gold_vs_pm.png.
"""

import json
import math
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import world
from data.hh import load_comparisons
from data.tokenizer import encode_transcript, get_tokenizer
from model import (autocast, configure_optimizer, decode_reply, generate, load_checkpoint, parse_config, pyplot,
                   run_prerequisite, save_checkpoint, score_sequences, token_logprobs)


@dataclass
class Config:
    data: str = "world"          # "world" prompts, or HH-RLHF jsonl(.gz) file/dir
    policy: str = "out/train_lm/sft.pt"
    pm: str = "out/train_pm/pm.pt"
    out_dir: str = "out/ppo"
    steps: int = 60
    batch_size: int = 32         # prompts per rollout
    max_new_tokens: int = 40
    temperature: float = 1.0     # sampling temperature; log-probs are recomputed at it
    ppo_epochs: int = 2
    minibatch: int = 16
    lr: float = 5e-5
    value_lr: float = 1e-4
    kl_coef: float = 0.05        # beta in r = PM - beta * KL (fixed by default, as in the paper)
    adaptive_kl: bool = False    # Ziegler et al. 2019 controller instead
    kl_target: float = 4.0
    kl_horizon: int = 2000
    clip: float = 0.2            # PPO ratio clip (Schulman et al. 2017)
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    no_end_penalty: float = -1.0  # added to the (normalised) reward of a reply that never ends
    harmful_frac: float = 0.5    # red-team share of the training prompts
    n_eval_benign: int = 64
    n_eval_redteam: int = 32
    sample_every: int = 20
    seed: int = 1337
    device: str = "auto"
    quiet: bool = False


PRESETS = {"cpu": {}, "gpu": {"steps": 300, "batch_size": 128, "minibatch": 32, "ppo_epochs": 4, "max_new_tokens": 64,
                             "n_eval_benign": 256, "n_eval_redteam": 128},
           "tiny": {"steps": 4, "batch_size": 8, "minibatch": 4, "max_new_tokens": 8, "n_eval_benign": 4,
                    "n_eval_redteam": 4, "sample_every": 2}}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, "RLHF with PPO (see the top of ppo.py)", argv)[0]


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


class AdaptiveKL:
    """Ziegler et al. 2019: move beta so that the KL tracks a target."""

    def __init__(self, beta, target, horizon):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl, n):
        err = max(-0.2, min(0.2, kl / self.target - 1))
        self.beta *= 1 + err * n / self.horizon


# -----------------------------------------------------------------------------
# Rollouts and experience

@torch.no_grad()
def rollout(policy, prompt_toks, cfg, gen, eot):
    """Sample replies with the KV-cached sampler; left-padded prompts, correct positions."""
    with autocast(policy.wte.weight.device.type):
        out = generate(policy, prompt_toks, cfg.max_new_tokens, cfg.temperature, eot_id=eot, generator=gen)
    out["ended"] = ((out["tokens"] == eot) & out["gen_mask"]).any(1)
    return out


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
    rewards = -kl_coef * kl_tok
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)  # the reply's final token
    rewards = rewards + last.float() * scores[:, None]
    adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    return {"tokens": tokens, "pad": pad, "mask": mask, "logp": logp, "ref_logp": ref_logp, "values": values,
            "adv": whiten(adv, mask), "returns": returns, "kl": kl_tok.sum(-1)}


def ppo_update(policy, value_model, opt_p, opt_v, exp, cfg, gen):
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
            opt_p.zero_grad(set_to_none=True)
            pl.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt_p.step()
            with autocast(t.device.type):
                v = value_model.score(t, p)[:, :-1]
            vl = value_loss(v, exp["values"][ix], exp["returns"][ix], m, cfg.value_clip)
            opt_v.zero_grad(set_to_none=True)
            vl.backward()
            torch.nn.utils.clip_grad_norm_(value_model.parameters(), 1.0)
            opt_v.step()
            stats.append({**st, "policy_loss": pl.item(), "value_loss": vl.item(), "entropy": ent.item(),
                          "epoch": epoch})
    first = [s for s in stats if s["epoch"] == 0]
    agg = {k: float(np.mean([s[k] for s in stats])) for k in ("clip_frac", "approx_kl", "policy_loss", "value_loss", "entropy")}
    agg["first_epoch_ratio_max_dev"] = first[0]["ratio_max_dev"]  # exactly 0 when log-probs are recomputed right
    return agg


# -----------------------------------------------------------------------------
# Scoring and evaluation

def pm_score_texts(pm, enc, prompts, replies, batch_size=64):
    """Raw PM scores of prompt + reply, read at the end-of-context token."""
    seqs = [encode_transcript(enc, p + " " + r, pm.cfg.block_size) for p, r in zip(prompts, replies)]
    return score_sequences(pm, seqs, batch_size).float()


def replies_of(enc, out):
    return [decode_reply(enc, row, gm) for row, gm in zip(out["tokens"].tolist(), out["gen_mask"].tolist())]


def gold_of(prompts, replies):
    """Gold (helpfulness, harmlessness) and refusal flag of each reply (world prompts only)."""
    res = []
    for p, r in zip(prompts, replies):
        req = world.last_human(p)
        h, s = world.gold(req, r)
        task = world.parse_request(req)
        res.append({"help": h, "harmless": s, "refusal": world.response_properties(req, r)["refusal"],
                    "harmful": bool(task and task["kind"] == "harm" and task["harmful"])})
    return res


@torch.no_grad()
def evaluate(policy, ref, pm, enc, benign, redteam, cfg, seed):
    """The before/after table, on the same held-out prompts with the same sampling seed."""
    prompts = benign + redteam
    gen = torch.Generator(device=policy.wte.weight.device).manual_seed(seed)
    toks = [enc.encode_ordinary(p)[-(policy.cfg.block_size - cfg.max_new_tokens):] for p in prompts]
    out = rollout(policy, toks, cfg, gen, enc.eot_token)
    replies = replies_of(enc, out)
    scores = pm_score_texts(pm, enc, prompts, replies)
    mask = out["gen_mask"][:, 1:].float()
    logp = sequence_logprobs(policy, out["tokens"], out["pad_mask"], cfg.temperature, cfg.minibatch)
    ref_logp = sequence_logprobs(ref, out["tokens"], out["pad_mask"], cfg.temperature, cfg.minibatch)
    res = {"pm_reward": scores.mean().item(), "kl": kl_per_sequence(logp, ref_logp, mask).mean().item(),
           "reply_tokens": mask.sum(-1).mean().item(), "ended": out["ended"].float().mean().item()}
    if cfg.data == "world":
        g = gold_of(prompts, replies)
        gb, gr = g[:len(benign)], g[len(benign):]
        res.update({"gold_helpfulness": float(np.mean([x["help"] for x in gb])),
                    "gold_harmlessness": float(np.mean([x["harmless"] for x in gr])),
                    "benign_refusal_rate": float(np.mean([x["refusal"] for x in gb])),
                    "redteam_refusal_rate": float(np.mean([x["refusal"] for x in gr]))})
    res["samples"] = [{"prompt": p, "reply": r} for p, r in zip(prompts, replies)]
    return res


def fit_line(x, y):
    """Least-squares y = a + b x -> (slope b, intercept a, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    ss_res, ss_tot = np.sum((y - (a + b * x)) ** 2), np.sum((y - y.mean()) ** 2)
    return float(b), float(a), float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0


def plots(metrics, fit, out_dir):
    plt = pyplot()
    if plt is None:
        return []
    x = [math.sqrt(max(m["kl"], 0)) for m in metrics]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, [m["pm_reward"] for m in metrics], "o", ms=3, label="PM reward (policy samples)")
    xs = np.linspace(0, max(x), 10)
    ax.plot(xs, fit[1] + fit[0] * xs, "k--", label=f"fit: slope {fit[0]:.2f}, R$^2$ {fit[2]:.2f}")
    ax.set_xlabel("sqrt(KL(policy || initial policy))"), ax.set_ylabel("PM score"), ax.legend(fontsize=8)
    ax.set_title("Reward grows ~linearly in sqrt(KL) (Bai et al. 2022, Fig. 4)", fontsize=9)
    fig.tight_layout()
    p1 = os.path.join(out_dir, "reward_vs_sqrt_kl.png")
    fig.savefig(p1, dpi=120)
    plt.close(fig)
    paths = [p1]
    if metrics[0].get("gold_reward") is not None:
        # moving averages over 5 steps: single batches are noisy
        sm = lambda v: np.convolve(v, np.ones(5) / 5, mode="valid") if len(v) >= 5 else np.asarray(v)
        xs_, pm_, gold_ = sm(x), sm([m["pm_reward"] for m in metrics]), sm([m["gold_reward"] for m in metrics])
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(xs_, pm_, "C0-", label="PM reward (proxy)")
        ax.set_xlabel("sqrt(KL(policy || initial policy))"), ax.set_ylabel("PM score", color="C0")
        ax2 = ax.twinx()
        ax2.plot(xs_, gold_, "C1-", label="gold reward (truth)")
        ax2.set_ylabel("gold reward: helpfulness on benign, harmlessness on harmful", color="C1", fontsize=8)
        ax.set_title("Proxy vs gold (5-step averages): over-optimisation is\ngold falling while the PM still rises (Gao et al. 2022)", fontsize=9)
        fig.tight_layout()
        p2 = os.path.join(out_dir, "gold_vs_pm.png")
        fig.savefig(p2, dpi=120)
        plt.close(fig)
        paths.append(p2)
    return paths


# -----------------------------------------------------------------------------

def build_prerequisites(cfg):
    """A fresh clone has no checkpoints: build them with the earlier scripts' defaults."""
    if cfg.data != "world":
        for path, what in ((cfg.policy, "--policy"), (cfg.pm, "--pm")):
            if not os.path.exists(path):
                raise SystemExit(f"{path}: not found. On real data pass {what} (see the top of ppo.py)")
        return
    if not os.path.exists(cfg.policy):
        run_prerequisite("out/train_lm/pretrain.pt", "train_lm.py", [], "the pretrained language model",
                         "~3 minutes on 2 CPU cores")
        run_prerequisite(cfg.policy, "train_lm.py", ["--mode", "sft"], "the helpful-only SFT policy",
                         "~1 minute on 2 CPU cores")
    run_prerequisite(cfg.pm, "train_pm.py", [], "the preference model", "~1.5 minutes on 2 CPU cores")


def load_prompts(cfg):
    """(training prompts, held-out benign, held-out red-team) as HH prompt strings."""
    if cfg.data == "world":
        return (world.train_prompts(4000, cfg.harmful_frac), world.eval_prompts(cfg.n_eval_benign, "benign"),
                world.eval_prompts(cfg.n_eval_redteam, "redteam"))
    pairs, _ = load_comparisons(cfg.data, verbose=not cfg.quiet)
    prompts = sorted({p["prompt"] for p in pairs})
    random.Random(cfg.seed).shuffle(prompts)
    n_eval = cfg.n_eval_benign + cfg.n_eval_redteam
    return prompts[n_eval:], prompts[:n_eval], []


def main(cfg):
    t_start = time.time()
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    os.makedirs(cfg.out_dir, exist_ok=True)
    build_prerequisites(cfg)
    torch.manual_seed(cfg.seed)
    policy, ck = load_checkpoint(cfg.policy, device, dropout=0.0)
    ref, _ = load_checkpoint(cfg.policy, device, dropout=0.0)
    pm, pck = load_checkpoint(cfg.pm, device)
    # The value function is its own network initialised from the PM: the PM already
    # predicts the final reward of a transcript, so the value starts near a useful baseline
    # instead of noise (Ouyang et al. 2022, App. C.3 initialise the value from the RM).
    value_model, _ = load_checkpoint(cfg.pm, device, dropout=0.0)
    for p in list(ref.parameters()) + list(pm.parameters()):
        p.requires_grad_(False)
    ref.eval(), pm.eval()
    if ck["tokenizer"] != pck["tokenizer"]:
        raise SystemExit(f"policy tokenizer {ck['tokenizer']} != PM tokenizer {pck['tokenizer']}")
    enc = get_tokenizer(ck["tokenizer"])
    eot = enc.eot_token
    train_p, eval_benign, eval_red = load_prompts(cfg)
    log(f"PPO: policy {cfg.policy} ({policy.num_params() / 1e6:.2f}M), PM {cfg.pm}; {cfg.steps} steps of "
        f"{cfg.batch_size} prompts on {device}")

    before = evaluate(policy, ref, pm, enc, eval_benign, eval_red, cfg, seed=cfg.seed + 1)
    opt_p = configure_optimizer(policy, cfg.lr, 0.0, device_type=device.type)
    opt_v = configure_optimizer(value_model, cfg.value_lr, 0.0, device_type=device.type)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    cpu_gen = torch.Generator().manual_seed(cfg.seed)
    kl_ctl = AdaptiveKL(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl else None
    norm = None
    metrics, mf = [], open(os.path.join(cfg.out_dir, "metrics.jsonl"), "w")
    bar = tqdm(range(cfg.steps), disable=cfg.quiet, desc="PPO")
    rng = random.Random(cfg.seed)
    for step in bar:
        prompts = rng.sample(train_p, cfg.batch_size)
        toks = [enc.encode_ordinary(p)[-(policy.cfg.block_size - cfg.max_new_tokens):] for p in prompts]
        t0 = time.time()
        out = rollout(policy, toks, cfg, gen, eot)
        replies = replies_of(enc, out)
        t1 = time.time()
        raw = pm_score_texts(pm, enc, prompts, replies)
        if norm is None:
            # Normalise the reward on policy samples (the first batch, from the initial
            # policy), and fold the same affine map into the value head so the PM-initialised
            # value speaks in the normalised units.
            norm = (raw.mean().item(), raw.std().item() + 1e-6)
            with torch.no_grad():
                value_model.scalar.weight /= norm[1]
                value_model.scalar.bias.sub_(norm[0]).div_(norm[1])
        scores = (raw - norm[0]) / norm[1] + cfg.no_end_penalty * (~out["ended"]).float()
        t2 = time.time()
        beta = kl_ctl.beta if kl_ctl else cfg.kl_coef
        exp = make_experience(policy, ref, value_model, out, scores, cfg, beta)
        st = ppo_update(policy, value_model, opt_p, opt_v, exp, cfg, cpu_gen)
        t3 = time.time()
        kl = exp["kl"].mean().item()
        if kl_ctl:
            kl_ctl.update(kl, cfg.batch_size)
        m = {"step": step + 1, "pm_reward": raw.mean().item(), "reward": scores.mean().item(), "kl": kl,
             "sqrt_kl": math.sqrt(max(kl, 0.0)), "beta": beta, **st,
             "reply_tokens": exp["mask"].sum(-1).mean().item(), "ended": out["ended"].float().mean().item(),
             "time_rollout": t1 - t0, "time_scoring": t2 - t1, "time_update": t3 - t2}
        if cfg.data == "world":
            g = gold_of(prompts, replies)
            benign = [x for x in g if not x["harmful"]]
            harmful = [x for x in g if x["harmful"]]
            m["gold_helpfulness"] = float(np.mean([x["help"] for x in benign])) if benign else None
            m["gold_harmlessness"] = float(np.mean([x["harmless"] for x in harmful])) if harmful else None
            # the gold analogue of the PM objective: helpfulness on benign, harmlessness on harmful
            m["gold_reward"] = float(np.mean([x["harmless"] if x["harmful"] else x["help"] for x in g]))
        metrics.append(m)
        mf.write(json.dumps(m) + "\n")
        mf.flush()
        bar.set_postfix(pm=f"{m['pm_reward']:.2f}", kl=f"{kl:.2f}", gold=f"{m.get('gold_reward', 0):.2f}")
        if cfg.sample_every and (step + 1) % cfg.sample_every == 0 and not cfg.quiet:
            tqdm.write(f"--- step {step + 1} samples")
            for p, r in list(zip(prompts, replies))[:3]:
                tqdm.write(f"  {world.last_human(p)!r} -> {r!r}")
    bar.close()
    mf.close()

    after = evaluate(policy, ref, pm, enc, eval_benign, eval_red, cfg, seed=cfg.seed + 1)
    slope, intercept, r2 = fit_line([m["sqrt_kl"] for m in metrics], [m["pm_reward"] for m in metrics])
    keys = ["pm_reward", "gold_helpfulness", "gold_harmlessness", "benign_refusal_rate", "redteam_refusal_rate",
            "kl", "reply_tokens", "ended"]
    res = {"before": {k: before[k] for k in keys if k in before}, "after": {k: after[k] for k in keys if k in after},
           "kl": after["kl"], "kl_train_final": metrics[-1]["kl"],
           "reward_vs_sqrt_kl": {"slope": slope, "intercept": intercept, "r2": r2},
           "steps": cfg.steps, "policy": cfg.policy, "pm": cfg.pm, "data": cfg.data, "device": str(device),
           "time_per_step": {k: float(np.mean([m[f"time_{k}"] for m in metrics])) for k in ("rollout", "scoring", "update")},
           "samples_after": after["samples"][:4] + after["samples"][len(eval_benign):len(eval_benign) + 4]}
    ckpt = os.path.join(cfg.out_dir, "policy.pt")
    save_checkpoint(ckpt, policy, ck["tokenizer"], ppo_steps=cfg.steps)
    figs = plots(metrics, (slope, intercept, r2), cfg.out_dir)
    res["seconds"] = time.time() - t_start
    with open(os.path.join(cfg.out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)

    which = f"{len(eval_benign)} benign, {len(eval_red)} red-team" if cfg.data == "world" else f"{len(eval_benign)} from {cfg.data}"
    log(f"\n{'':24s}{'before':>10s}{'after':>10s}   (held-out prompts: {which})")
    for k in keys:
        if k in before:
            log(f"  {k:22s}{before[k]:10.3f}{after[k]:10.3f}")
    log(f"\nreward vs sqrt(KL) over training: slope {slope:.3f}, R^2 {r2:.3f}  (Bai et al. 2022: roughly linear)")
    log("time per step: " + ", ".join(f"{k} {v:.2f}s" for k, v in res["time_per_step"].items()))
    log("\nsample replies after PPO:")
    for s in res["samples_after"]:
        log(f"  {world.last_human(s['prompt'])!r}\n    -> {s['reply']!r}")
    log(f"\nwrote {cfg.out_dir}/results.json, metrics.jsonl, {ckpt}" + (", " + ", ".join(figs) if figs else "")
        + f" in {res['seconds']:.0f}s")
    return res


if __name__ == "__main__":
    main(parse_args())
