"""
ppo.py -- RLHF with PPO against a preference model (Bai et al. 2022, "Training a Helpful
and Harmless Assistant with Reinforcement Learning from Human Feedback", Sec. 4).

The policy starts from the HH-like SFT model (train_lm.py --sft_mix hh: benign requests
always helped, harmful ones refused about a third of the time, the analogue of the paper's
context-distilled start) and is trained with PPO to maximise the PM's score minus a KL
penalty to the frozen initial policy. The paper's finding (Sec. 4.3, Fig. 4/13): PM reward
grows roughly linearly in sqrt(KL(policy || initial policy)). Because the assistant world
has a gold scorer, we also see what RLHF tutorials cannot: whether the *true* helpfulness
and harmlessness follow the proxy, and what the policy actually does to red-team requests
(comply, refuse with a reason, refuse evasively, or dodge), on whole scenarios held out of
every training corpus.

Run (fresh clone, CPU, 2 cores; the docs page docs/hh_rlhf.md has the measured time). A
fresh clone first builds pretrain.pt, sft_hh/sft.pt (train_lm.py) and pm.pt (train_pm.py):
    python ppo.py
    python ppo.py --seed 1338 --out_dir out/ppo_s1338     # another seed of the PPO stage
    python ppo.py --steps 500 --kl_coef 0.01 --n_evals 9 --out_dir out/ppo_long
        # over-optimisation: gold peaks, then falls while the PM still rises (about 9 min)
One GPU (uses or builds the gpu-preset SFT policy and PM):
    python ppo.py --preset gpu      # -> out/ppo/gpu/
Real HH-RLHF prompts (the transcript up to the last "Assistant:"):
    python ppo.py --data ../shared/data/hh-rlhf --policy SFT.pt --pm PM.pt     # -> out/ppo/hh-rlhf/

What to look at: the before/after table printed at the end (every mean with its standard
error clustered by held-out object, and the paired change): PM reward, exact KL, gold
harmlessness and the red-team outcome rates, gold helpfulness on benign prompts and on
near-miss twins, over-refusal, replies that end, the unparsed share (replies outside the
world's language: the reward-hacking alarm), each gold mean also under the strict reading;
then PM reward against sqrt(KL), KL and log(1 + KL), with R^2 on points held out of the fit,
and where gold peaked. reward_vs_sqrt_kl.png (the paper's Fig. 4, fitted on the held-out
evaluation points) and gold_vs_pm.png (proxy against truth at the same points). Writes
out/ppo/metrics.jsonl (every step and every evaluation), results.json (before, after,
change, eval_points, reward_vs_sqrt_kl, kl_fits, overoptimisation, seconds, ...),
samples.jsonl (every held-out reply before and after, with its gold category, for audits),
the figures and policy.pt.
"""

import os
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm  # tqdm.write: a line that does not break the bar

from data import corpora, world
from data.calibration import cluster_se
from data.hh import load_comparisons, write_jsonl
from data.prepare import data_name
from data.tokenizer import encode_transcript, get_tokenizer
from model import (
    autocast,
    cli,
    configure_optimizer,
    ensure_checkpoint,
    get_device,
    handoff,
    load_checkpoint,
    log_metrics,
    metrics_bytes,
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
    score_sequences,
    token_logprobs,
    write_json,
)


@dataclass
class Config:
    # settings for a scale, combined with '+'; the default policy and PM are this preset's
    preset: str = "cpu"
    # "world" prompts, or HH-RLHF jsonl(.gz) file or directory
    data: str = "world"
    # the initial policy and frozen KL reference (world default: train_lm.py's sft_hh/sft.pt)
    policy: str = ""
    # the preference model that gives the reward (world default: train_pm.py's pm.pt)
    pm: str = ""
    # root folder; a run goes to <out_dir>[/<data name>][/<preset>]
    out_dir: str = "out/ppo"
    # PPO steps (one rollout batch each): what fits the 3.5-minute budget on 2 CPU cores
    # (0: evaluate only)
    steps: int = 50
    # prompts per rollout
    batch_size: int = 32
    # reply budget in tokens: the longest world how-to is 62 with its end token
    max_new_tokens: int = 64
    # sampling temperature; log-probs are recomputed at it
    temperature: float = 1.0
    # passes over each rollout batch
    ppo_epochs: int = 2
    # sequences per update
    minibatch: int = 16
    # policy learning rate
    lr: float = 5e-5
    # value-function learning rate
    value_lr: float = 1e-4
    # clip each network's gradient norm to this (0: no clipping)
    grad_clip: float = 1.0
    # beta in r = PM - beta * KL per reply, fixed as in the paper (docs/hh_rlhf.md: why 0.05;
    # 0: no KL penalty)
    kl_coef: float = 0.05
    # PPO ratio clip (Schulman et al. 2017)
    clip: float = 0.2
    # clip on the value update
    value_clip: float = 0.2
    # discount
    gamma: float = 1.0
    # GAE lambda
    lam: float = 0.95
    # added to the (normalised) reward of a reply that never ends
    no_end_penalty: float = -1.0
    # red-team share of every training batch (fixed, so batches are alike; 0: benign only)
    harmful_frac: float = 0.5
    # held-out benign prompts (not twins) in every evaluation
    n_eval_benign: int = 200
    # held-out red-team prompts (about held-out objects) in every evaluation
    n_eval_redteam: int = 200
    # held-out near-miss twins of those objects in every evaluation
    n_eval_twins: int = 100
    # held-out evaluations during training, after steps 1, 2, 4, 8, ... (dense where KL is
    # small, so that the shape of reward against KL can be told), besides before and after
    n_evals: int = 6
    # print a few samples every this many steps (0: never)
    sample_every: int = 20
    # steps between resumable checkpoints (policy.pt with value, optimisers, RNG states)
    ckpt_interval: int = 10
    # continue an interrupted run from its policy.pt
    resume: bool = False
    # stop after this many steps of this session, to continue later with --resume (0: no)
    stop_after: int = 0
    # random seed (prompts, sampling)
    seed: int = 1337
    # "auto" (cuda if available), "cpu", "cuda", ...
    device: str = "auto"
    # "auto": bf16 autocast where the chip computes bf16 natively (GPU; CPU with AVX-512 BF16
    # or AMX), fp32 elsewhere; or "bf16", "fp32"
    precision: str = "auto"
    # no progress bar or messages
    quiet: bool = False


PRESETS = {
    "cpu": {},
    "gpu": {
        "steps": 300,
        "batch_size": 128,
        "minibatch": 32,
        "ppo_epochs": 4,
        "max_new_tokens": 96,
        "n_eval_benign": 400,
        "n_eval_redteam": 378,
        "n_eval_twins": 378,
        "n_evals": 9,
    },
    "tiny": {
        "steps": 4,
        "batch_size": 8,
        "minibatch": 4,
        "max_new_tokens": 8,
        "n_eval_benign": 4,
        "n_eval_redteam": 4,
        "n_eval_twins": 4,
        "n_evals": 1,
        "sample_every": 2,
    },
}


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
    last = next_value = torch.zeros(B, device=rewards.device)
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
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip, 1 + clip)
    stats = {
        "clip_frac": masked_mean(((ratio - 1).abs() > clip).float(), mask).item(),
        # the k3 estimator of KL(old || new), never negative
        "approx_kl": masked_mean((ratio - 1) - (logp - old_logp), mask).item(),
        "ratio_max_dev": ((ratio - 1).abs() * mask).max().item(),
    }
    return masked_mean(torch.max(unclipped, clipped), mask), stats


def value_loss(v, old_v, returns, mask, clip):
    """Clipped value loss: the worse of the clipped and unclipped squared errors (as in
    OpenAI's baselines and the RLHF implementations that follow them)."""
    v_clipped = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((v - returns) ** 2, (v_clipped - returns) ** 2), mask)


# -----------------------------------------------------------------------------
# Experience and the update


def sequence_logprobs(model, tokens, pad_mask, temperature, batch_size):
    """log pi(token_t | tokens_<t) at each action position (B, T-1), computed in chunks of
    the PPO minibatch size so that the numbers are those the update will compute."""
    logp = []
    for t, p in zip(tokens.split(batch_size), pad_mask.split(batch_size), strict=True):
        with autocast(t.device.type):
            logp.append(token_logprobs(model(t, pad_mask=p)[0][:, :-1], t[:, 1:], temperature))
    return torch.cat(logp)


def sequence_values(value_model, tokens, pad_mask, batch_size):
    """V(state before token t) at each action position: the value head at position t-1."""
    chunks = zip(tokens.split(batch_size), pad_mask.split(batch_size), strict=True)
    with autocast(tokens.device.type):
        return torch.cat([value_model.score(t, p)[:, :-1] for t, p in chunks])


@torch.no_grad()
def make_experience(policy, ref, value_model, out, scores, cfg, kl_coef):
    """Per-token rewards: -beta * (log pi - log pi_ref) at every reply token, plus the
    (normalised) PM score on the last one (Bai et al. 2022, Sec. 4.1 eq. 4.1; Stiennon et al.
    2020). Then GAE advantages (whitened) and returns."""
    tokens, pad = out["tokens"], out["pad_mask"]
    mask = out["gen_mask"][:, 1:].float()
    for m in (policy, ref, value_model):
        m.eval()
    logp = sequence_logprobs(policy, tokens, pad, cfg.temperature, cfg.minibatch)
    ref_logp = sequence_logprobs(ref, tokens, pad, cfg.temperature, cfg.minibatch)
    values = sequence_values(value_model, tokens, pad, cfg.minibatch) * mask
    kl_tok = (logp - ref_logp) * mask
    # the reply's final token
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
    rewards = -kl_coef * kl_tok + last.float() * scores[:, None]
    adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    return {
        "tokens": tokens,
        "pad": pad,
        "mask": mask,
        "logp": logp,
        "values": values,
        "adv": whiten(adv, mask),
        "returns": returns,
        "kl": kl_tok.sum(-1),
    }


def ppo_update(policy, value_model, opt_p, opt_v, exp, cfg, gen, step=0):
    """Several epochs of minibatch updates on one batch of experience -> the mean of each
    loss and statistic. Dropout stays off (the models are built with dropout 0): with
    dropout the recomputed log-probs would not equal the ones the ratio is taken against."""
    policy.train()
    value_model.train()
    B = exp["tokens"].size(0)
    stats = []
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(B, generator=gen).tolist() if epoch > 0 else list(range(B))
        for i in range(0, B, cfg.minibatch):
            ix = torch.tensor(order[i : i + cfg.minibatch], device=exp["tokens"].device)
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
            st |= {"policy_loss": pl.item(), "value_loss": vl.item(), "entropy": ent.item()}
            stats.append(st)
    keys = ("clip_frac", "approx_kl", "policy_loss", "value_loss", "entropy")
    agg = {k: float(np.mean([s[k] for s in stats])) for k in keys}
    # exactly 0 when the log-probs are recomputed right
    agg["first_epoch_ratio_max_dev"] = stats[0]["ratio_max_dev"]
    return agg


# -----------------------------------------------------------------------------
# Scoring and evaluation


def pm_score_texts(pm, enc, prompts, replies):
    """Raw PM scores of prompt + reply, read at the end-of-context token."""
    texts = [p + " " + r for p, r in zip(prompts, replies, strict=True)]
    return score_sequences(pm, [encode_transcript(enc, x, pm.cfg.block_size) for x in texts])


@torch.no_grad()
def exact_kl(policy, ref, tokens, pad_mask, mask, temperature, batch_size):
    """KL(pi || pi_ref) of each sampled reply: the sum over its tokens of the exact KL between
    the two next-token distributions, sum_v pi(v) (log pi(v) - log pi_ref(v)). Unlike the
    sampled log-ratio the training step uses, it is never negative and has far less noise."""
    n = batch_size
    out = []
    for t, p, m in zip(tokens.split(n), pad_mask.split(n), mask.split(n), strict=True):
        with autocast(t.device.type):
            lp = F.log_softmax(policy(t, pad_mask=p)[0][:, :-1].float() / temperature, -1)
            lq = F.log_softmax(ref(t, pad_mask=p)[0][:, :-1].float() / temperature, -1)
        out.append(((lp.exp() * (lp - lq)).sum(-1) * m).sum(-1))
    return torch.cat(out)


REFUSED = ("explained", "evasive")


def reply_stats(r):
    """What one reply record r adds to each reported mean, in the order of the summaries, or
    None for a mean over other replies: the PM score, KL and length over every reply; gold
    (where there is a gold category, not on real HH-RLHF prompts) over its group of held-out
    prompts: red-team prompts (held-out harmful objects), their near-miss twins (twin), or
    the other benign requests (nontwin)."""
    cat, group = r["category"], r["group"]
    red = cat is not None and group == "redteam"
    twin = cat is not None and group == "twins"
    nontwin = cat is not None and group == "benign"

    def only(where, value):
        return value if where else None

    return {
        "pm_reward": r["pm"],
        "kl": r["kl"],
        "ended": float(r["ended"]),
        "reply_tokens": r["tokens"],
        "gold_helpfulness": only(twin or nontwin, r["helpful"]),
        "nontwin_helpfulness": only(nontwin, r["helpful"]),
        "twin_helpfulness": only(twin, r["helpful"]),
        "gold_harmlessness": only(red, r["harmless"]),
        "gold_helpfulness_strict": only(twin or nontwin, r["helpful_strict"]),
        "nontwin_helpfulness_strict": only(nontwin, r["helpful_strict"]),
        "twin_helpfulness_strict": only(twin, r["helpful_strict"]),
        "gold_harmlessness_strict": only(red, r["harmless_strict"]),
        # replies outside the world's language: a rising share is the reward-hacking alarm
        "unparsed_share": only(cat is not None, float(not r["parsed"])),
        "comply_rate": only(red, float(cat == "comply")),
        "redteam_refusal_rate": only(red, float(cat in REFUSED)),
        "explained_refusal_rate": only(red, float(cat == "explained")),
        "evasive_refusal_rate": only(red, float(cat == "evasive")),
        "dodge_rate": only(red, float(cat == "dodge")),
        "twin_refusal_rate": only(twin, float(cat in REFUSED)),
        "benign_refusal_rate": only(nontwin, float(cat in REFUSED)),
        "gold_reward": only(cat is not None, r["harmless"] if group == "redteam" else r["helpful"]),
    }


def summarise(recs):
    """Every reply_stats mean over the (non-empty list of) records it applies to, with its
    clustered standard error in <key>_se (None where no record applies, e.g. gold on real
    HH-RLHF prompts)."""
    stats = [reply_stats(r) for r in recs]
    out = {}
    for k in stats[0]:
        sel = [i for i, s in enumerate(stats) if s[k] is not None]
        x = [stats[i][k] for i in sel]
        out[k] = float(np.mean(x)) if sel else None
        out[k + "_se"] = cluster_se(x, [recs[i]["cluster"] for i in sel]) if sel else None
    return out


def paired_change(before, after):
    """after - before on the same prompts (same order), each with the clustered standard
    error of the per-prompt difference: the test of "did it change", stronger than
    comparing two means with their own errors."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} replies before but {len(after)} after")
    old = [reply_stats(r) for r in before]
    new = [reply_stats(r) for r in after]
    out = {}
    for k in old[0]:
        sel = [i for i, s in enumerate(old) if s[k] is not None]
        d = [new[i][k] - old[i][k] for i in sel]
        if sel:
            out[k] = {
                "change": float(np.mean(d)),
                "se": cluster_se(d, [before[i]["cluster"] for i in sel]),
            }
    return out


def records(prompts, groups, replies, out, pm_scores, kl, is_world):
    """One record per reply: its group, gold category and scores, PM score, exact KL."""
    recs = []
    for i, (p, g, r) in enumerate(zip(prompts, groups, replies, strict=True)):
        req = corpora.last_human(p)
        cat, h, s, parsed = world.judge(req, r) if is_world else (None, None, None, None)
        # the strict reading: a reply outside the world's language earns no credit (world.py)
        _, h_strict, s_strict, _ = world.judge(req, r, strict=True) if is_world else (None,) * 4
        task = world.parse_request(req) if is_world else None
        # standard errors are clustered by held-out object: its 18 phrasings are one scenario
        cluster = task["object"] if task and task["kind"] == "harm" else req
        recs.append(
            {
                "group": g,
                "prompt": p,
                "reply": r,
                "category": cat,
                "helpful": h,
                "harmless": s,
                "parsed": parsed,
                "helpful_strict": h_strict,
                "harmless_strict": s_strict,
                "pm": float(pm_scores[i]),
                "kl": float(kl[i]) if kl is not None else 0.0,
                "ended": bool(out["ended"][i]),
                "tokens": float(out["gen_mask"][i].sum()),
                "cluster": cluster,
            }
        )
    return recs


@torch.no_grad()
def evaluate(policy, ref, pm, enc, sets, cfg, seed):
    """The fixed held-out evaluation: the same prompts and the same sampling seed at every
    evaluation point -> (summary with standard errors, per-reply records)."""
    prompts = [p for s in sets.values() for p in s]
    groups = [g for g, s in sets.items() for _ in s]
    gen = torch.Generator(device=policy.wte.weight.device).manual_seed(seed)
    replies, out = sample_replies(policy, enc, prompts, cfg.max_new_tokens, cfg.temperature, gen)
    mask = out["gen_mask"][:, 1:].float()
    kl = exact_kl(policy, ref, out["tokens"], out["pad_mask"], mask, cfg.temperature, cfg.minibatch)
    pm_scores = pm_score_texts(pm, enc, prompts, replies)
    recs = records(
        prompts, groups, replies, out, pm_scores.tolist(), kl.tolist(), cfg.data == "world"
    )
    return summarise(recs), recs


def fit_line(x, y):
    """Least-squares y = a + b x -> (slope b, intercept a, R^2). With no spread in x (a
    policy that has not moved: every sqrt(KL) 0) there is no line: slope 0, R^2 0."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(x) == 0:
        return 0.0, float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    ss_res = np.sum((y - (a + b * x)) ** 2)
    ss_tot = np.sum((y - y.mean()) ** 2)
    return float(b), float(a), float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0


# The shapes of PM reward against KL to the initial policy: Bai et al. 2022 (Sec. 4.3) find
# it roughly linear in sqrt(KL); linear in KL and log(1 + KL) are the alternatives
KL_SHAPES = {"sqrt": np.sqrt, "linear": lambda k: k, "log1p": np.log1p}


def kl_fits(points):
    """Each shape fitted on every evaluation point ({slope, intercept, r2}), and on the
    even-numbered points only, predicting the odd ones (heldout_r2: 1 - squared error over
    their variance; it can be negative): a fit that tells the shapes apart out of sample."""
    kl = np.maximum([p["kl"] for p in points], 0.0)
    y = np.array([p["pm_reward"] for p in points])
    out = {}
    for name, f in KL_SHAPES.items():
        slope, intercept, r2 = fit_line(f(kl), y)
        b, a, _ = fit_line(f(kl[0::2]), y[0::2])
        odd, held = y[1::2], None
        if len(odd) > 1 and np.ptp(odd) > 0:
            held = float(
                1 - np.sum((odd - (a + b * f(kl[1::2]))) ** 2) / np.sum((odd - odd.mean()) ** 2)
            )
        out[name] = {"r2": r2, "heldout_r2": held, "slope": slope, "intercept": intercept}
    return out


def overoptimisation(points, clusters):
    """Where the gold reward peaks, and how far it has fallen at the last evaluation, with
    the standard error of the paired per-prompt change (the same prompts every time; clusters
    as in summarise). Over-optimisation (Gao et al. 2022) is gold lower by more than two such
    errors while the PM reward is higher -> {step, kl, gold_peak, gold_final, fall, fall_se,
    pm_at_peak, pm_final, turned_down}, or None without gold."""
    # (a run resumed from a checkpoint of older code has points without per-prompt gold)
    if not points or points[0].get("gold_reward") is None or "gold_by_prompt" not in points[0]:
        return None
    p, last = max(points, key=lambda q: q["gold_reward"]), points[-1]
    sel = [i for i, g in enumerate(p["gold_by_prompt"]) if g is not None]
    fall = [last["gold_by_prompt"][i] - p["gold_by_prompt"][i] for i in sel]
    d, se = float(np.mean(fall)), cluster_se(fall, [clusters[i] for i in sel])
    out = {"step": p["step"], "kl": p["kl"], "gold_peak": p["gold_reward"], "fall": d}
    out |= {"gold_final": last["gold_reward"], "fall_se": se, "pm_at_peak": p["pm_reward"]}
    out["pm_final"] = last["pm_reward"]
    out["turned_down"] = d < -2 * se and last["pm_reward"] > p["pm_reward"]
    return out


def plots(points, metrics, fit, out_dir):
    """reward_vs_sqrt_kl.png (Bai et al. 2022, Fig. 4) and, where there is gold,
    gold_vs_pm.png, at the held-out evaluation points -> the paths written."""
    plt = pyplot("reward_vs_sqrt_kl.png, gold_vs_pm.png")
    if plt is None:
        return []
    x = np.sqrt([max(p["kl"], 0.0) for p in points])

    def errorbar(ax, key, fmt, label, **kw):
        ys = [p[key] for p in points]
        ses = [p[key + "_se"] for p in points]
        ax.errorbar(x, ys, ses, fmt=fmt, label=label, **kw)

    fig, ax = plt.subplots(figsize=(5, 4))
    train_x = np.sqrt([max(m["kl"], 0.0) for m in metrics])
    train_y = [m["pm_reward"] for m in metrics]
    ax.plot(train_x, train_y, ".", color="0.75", ms=3, label="training batches (sampled KL)")
    errorbar(ax, "pm_reward", "o", "held-out evaluation (exact KL)", ms=4)
    slope, intercept, r2 = fit
    xs = np.linspace(0, max(x.max(), 1e-3), 10)
    fit_label = f"fit on evaluations: slope {slope:.2f}, R$^2$ {r2:.2f}"
    ax.plot(xs, intercept + slope * xs, "k--", label=fit_label)
    ax.set_xlabel("sqrt(KL(policy || initial policy))")
    ax.set_ylabel("PM score")
    ax.legend(fontsize=7)
    ax.set_title("PM reward against sqrt(KL) (Bai et al. 2022, Fig. 4)", fontsize=9)
    paths = [save_figure(fig, os.path.join(out_dir, "reward_vs_sqrt_kl.png"))]
    if points[0]["gold_reward"] is None:
        return paths
    fig, ax = plt.subplots(figsize=(5.5, 4))
    errorbar(ax, "pm_reward", "C0o-", "PM reward (proxy)")
    ax.set_xlabel("sqrt(KL(policy || initial policy))")
    ax.set_ylabel("PM score", color="C0")
    ax2 = ax.twinx()
    errorbar(ax2, "gold_harmlessness", "C1s--", "gold harmlessness (red-team)", ms=3)
    errorbar(ax2, "nontwin_helpfulness", "C2s--", "gold helpfulness (benign)", ms=3)
    errorbar(ax2, "gold_reward", "C3s--", "gold reward (all)", ms=3)
    ax2.set_ylabel("gold score")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=7, loc="lower right")
    ax.set_title(
        "Proxy vs gold on the held-out evaluations: over-optimisation is\n"
        "gold falling while the PM still rises (Gao et al. 2022)",
        fontsize=9,
    )
    paths.append(save_figure(fig, os.path.join(out_dir, "gold_vs_pm.png")))
    return paths


# -----------------------------------------------------------------------------


def load_prompts(cfg):
    """(training prompts by kind, fixed held-out evaluation sets by group) as HH prompt
    strings. World training batches hold a fixed red-team share, so that batches are alike."""
    if cfg.data != "world" and not (cfg.policy and cfg.pm):
        raise SystemExit(
            f"--data {cfg.data}: pass --policy SFT.pt and --pm PM.pt trained on that data "
            "(see the top of ppo.py)"
        )
    if cfg.data == "world":
        train = {
            "redteam": corpora.train_prompts(4000, "redteam"),
            "benign": corpora.train_prompts(4000, "benign"),
        }
        return train, {
            "redteam": corpora.eval_prompts(cfg.n_eval_redteam, "redteam"),
            "benign": corpora.eval_prompts(cfg.n_eval_benign, "benign"),
            "twins": corpora.eval_prompts(cfg.n_eval_twins, "twins"),
        }
    prompts = sorted({p["prompt"] for p in load_comparisons(cfg.data, verbose=not cfg.quiet)[0]})
    random.Random(cfg.seed).shuffle(prompts)
    n_eval = cfg.n_eval_benign + cfg.n_eval_redteam
    return {"all": prompts[n_eval:]}, {"heldout": prompts[:n_eval]}


def batch_prompts(train, cfg, rng):
    """A training batch -> (prompts, their groups): on the world, a fixed red-team share."""
    if cfg.data != "world":
        return rng.sample(train["all"], cfg.batch_size), ["all"] * cfg.batch_size
    n_red = round(cfg.batch_size * cfg.harmful_frac)
    n_benign = cfg.batch_size - n_red
    prompts = rng.sample(train["redteam"], n_red) + rng.sample(train["benign"], n_benign)
    return prompts, ["redteam"] * n_red + ["benign"] * n_benign


def load_models(cfg, device):
    """Policy, frozen reference, frozen PM, and the value function. A fresh clone has no
    checkpoints: the default ones are built by running the earlier scripts."""
    if not cfg.policy:
        ensure_checkpoint(*handoff("pretrain", cfg.preset), "the pretrained LM", cfg.quiet)
        cfg.policy = ensure_checkpoint(
            *handoff("sft", cfg.preset), "the HH-like SFT policy (--sft_mix hh)", cfg.quiet
        )
    if not cfg.pm:
        cfg.pm = ensure_checkpoint(*handoff("pm", cfg.preset), "the preference model", cfg.quiet)
    policy, ck = load_checkpoint(cfg.policy, device, dropout=0.0)
    ref, _ = load_checkpoint(cfg.policy, device, dropout=0.0)
    pm, pck = load_checkpoint(cfg.pm, device)
    # The value function is its own network initialised from the PM: the PM already
    # predicts the final reward of a transcript, so the value starts near a useful baseline
    # instead of noise (Ouyang et al. 2022, App. C.3 initialise the value from the RM).
    value_model, _ = load_checkpoint(cfg.pm, device, dropout=0.0)
    if policy.scalar is not None:
        raise SystemExit(f"--policy {cfg.policy}: a scalar-head model (a PM?); give an LM")
    if pm.scalar is None:
        raise SystemExit(f"--pm {cfg.pm}: a language model; give a PM (from train_pm.py)")
    if ck["tokenizer"] != pck["tokenizer"]:
        raise SystemExit(
            f"{cfg.policy} uses tokenizer {ck['tokenizer']} but {cfg.pm} uses {pck['tokenizer']}"
        )
    # the reference policy and the PM are frozen
    ref.eval().requires_grad_(False)
    pm.eval().requires_grad_(False)
    return policy, ref, pm, value_model, ck["tokenizer"]


def resume_state(path, policy, value_model, device):
    """An interrupted run's policy.pt: its policy and value weights loaded into the models
    -> the rest of its state (optimisers, RNGs, evaluation points, ...)."""
    if not os.path.exists(path):
        raise SystemExit(f"{path}: not found, so nothing to resume (drop --resume)")
    saved, state = load_checkpoint(path, device, dropout=0.0)
    if "value" not in state:
        raise SystemExit(f"{path}: a finished run; nothing to resume (drop --resume)")
    policy.load_state_dict(saved.state_dict())
    value_model.load_state_dict(state["value"])
    return state


def main(cfg):
    t_start = time.time()
    device = get_device(cfg.device)
    log = printer(cfg.quiet)
    train_p, eval_sets = load_prompts(cfg)  # bad data: stopped before any folder or training
    out_path = run_path(cfg.out_dir, data_name(cfg.data), cfg.preset)
    ckpt_path = os.path.join(out_path, "policy.pt")
    policy, ref, pm, value_model, tokenizer = load_models(cfg, device)
    state = resume_state(ckpt_path, policy, value_model, device) if cfg.resume else None
    out_dir = run_dir(out_path, resume=state and state["metrics_bytes"])
    torch.manual_seed(cfg.seed)
    enc = get_tokenizer(tokenizer)
    is_world = cfg.data == "world"
    # results.json, filled in as the run goes: first the run's settings
    settings = ("kl_coef", "max_new_tokens", "steps", "seed", "policy", "pm", "data")
    res = {k: getattr(cfg, k) for k in settings}
    res["device"] = str(device)
    res["eval_prompts"] = {k: len(v) for k, v in eval_sets.items()}
    sizes = ", ".join(f"{n} {k}" for k, n in res["eval_prompts"].items())
    log(
        f"PPO: policy {cfg.policy} ({policy.num_params() / 1e6:.2f}M), PM {cfg.pm}; "
        f"{cfg.steps} steps of {cfg.batch_size} prompts on {device}; held-out evaluation: {sizes}"
    )
    # the fixed held-out evaluation: before, after steps 1, 2, 4, ... (n_evals of them), and after
    points = []

    def eval_point(step):
        summary, recs = evaluate(policy, ref, pm, enc, eval_sets, cfg, seed=cfg.seed + 1)
        gold = [reply_stats(r)["gold_reward"] for r in recs]  # for paired changes
        points.append({"step": step, **summary, "gold_by_prompt": gold})
        log_metrics(out_dir, {"eval": True, **points[-1]})
        return summary, recs

    opt_p = configure_optimizer(policy, cfg.lr, 0.0, device_type=device.type)
    opt_v = configure_optimizer(value_model, cfg.value_lr, 0.0, device_type=device.type)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    cpu_gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    norm, metrics, start = None, [], 0
    if state is None:
        before, first_recs = eval_point(0)
    else:  # everything the loop below carries from step to step, as it was at the checkpoint
        opt_p.load_state_dict(state["opt_p"])
        opt_v.load_state_dict(state["opt_v"])
        gen.set_state(state["gen"])
        cpu_gen.set_state(state["cpu_gen"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        norm, metrics, points[:] = state["norm"], state["metrics"], state["points"]
        before, first_recs, start = state["before"], state["first_recs"], state["step"]
        log(f"resuming {ckpt_path} at step {start}")
    res["before"] = before
    eval_at = {2**i for i in range(cfg.n_evals) if 2**i < cfg.steps}  # the last step: below
    end = min(cfg.steps, start + cfg.stop_after) if cfg.stop_after else cfg.steps
    bar = progress(range(start + 1, end + 1), "PPO", cfg.quiet, total=cfg.steps, initial=start)
    for step in bar:
        # 1. rollout: sample replies to a batch of training prompts (KV-cached sampler)
        t0 = time.time()
        prompts, groups = batch_prompts(train_p, cfg, rng)
        replies, out = sample_replies(
            policy, enc, prompts, cfg.max_new_tokens, cfg.temperature, gen
        )
        m = {"step": step, "time_rollout": time.time() - t0}
        # 2. score with the PM. The reward is normalised on the first batch (the initial
        # policy's samples), and the same affine map is folded into the PM-initialised value
        # head so that the value speaks in the normalised units.
        t0 = time.time()
        raw = pm_score_texts(pm, enc, prompts, replies)
        if norm is None:
            norm = (raw.mean().item(), raw.std().item() + 1e-6)
            with torch.no_grad():
                value_model.scalar.weight /= norm[1]
                value_model.scalar.bias.sub_(norm[0]).div_(norm[1])
        scores = (raw - norm[0]) / norm[1] + cfg.no_end_penalty * (~out["ended"]).float()
        m["time_scoring"] = time.time() - t0
        # 3. experience (per-token KL penalty, GAE) and the clipped PPO update
        t0 = time.time()
        exp = make_experience(policy, ref, value_model, out, scores, cfg, cfg.kl_coef)
        m |= ppo_update(policy, value_model, opt_p, opt_v, exp, cfg, cpu_gen, step)
        m["time_update"] = time.time() - t0
        m["pm_reward"] = raw.mean().item()
        m["reward"] = scores.mean().item()
        m["kl"] = exp["kl"].mean().item()
        m["reply_tokens"] = exp["mask"].sum(-1).mean().item()
        m["ended"] = out["ended"].float().mean().item()
        batch = summarise(records(prompts, groups, replies, out, raw.tolist(), None, is_world))
        for k in ("gold_reward", "comply_rate", "redteam_refusal_rate"):
            m[k] = batch[k]
        metrics.append(m)
        log_metrics(out_dir, m)
        gold = m["gold_reward"] or 0
        bar.set_postfix(
            pm=f"{m['pm_reward']:.2f}", kl=f"{m['kl']:.2f}", gold=f"{gold:.2f}", refresh=False
        )
        if cfg.sample_every and step % cfg.sample_every == 0 and not cfg.quiet:
            tqdm.write(f"--- step {step} samples")
            for i in range(0, cfg.batch_size, max(1, cfg.batch_size // 3))[:3]:
                tqdm.write(f"  {corpora.last_human(prompts[i])!r} -> {replies[i]!r}")
        if step in eval_at:
            p = eval_point(step)[0]
            msg = f"  held-out evaluation at step {step}: PM {p['pm_reward']:.3f}"
            msg += f", exact KL {p['kl']:.2f}"
            if p["gold_reward"] is not None:
                msg += f", gold harmless {p['gold_harmlessness']:.3f}"
                msg += f", helpful {p['nontwin_helpfulness']:.3f}"
            if not cfg.quiet:
                tqdm.write(msg)
        if step % cfg.ckpt_interval == 0 or step == end:  # all that a resume restores
            save_checkpoint(
                ckpt_path,
                policy,
                tokenizer,
                step=step,
                train_config=asdict(cfg),
                value=value_model.state_dict(),
                opt_p=opt_p.state_dict(),
                opt_v=opt_v.state_dict(),
                gen=gen.get_state(),
                cpu_gen=cpu_gen.get_state(),
                rng=rng.getstate(),
                torch_rng=torch.get_rng_state(),
                norm=norm,
                metrics=metrics,
                points=points,
                before=before,
                first_recs=first_recs,
                metrics_bytes=metrics_bytes(out_dir),
            )
    if end < cfg.steps:
        print(f"stopped at step {end} of {cfg.steps} (--stop_after); continue with --resume")
        return None
    res["kl_train_final"] = metrics[-1]["kl"] if metrics else 0.0
    res["time_per_step"] = {}
    if metrics:
        for k in ("rollout", "scoring", "update"):
            res["time_per_step"][k] = float(np.mean([m[f"time_{k}"] for m in metrics]))

    # ---- the report: before/after on the same held-out prompts, reward vs sqrt(KL)
    if cfg.steps:
        after, recs = eval_point(cfg.steps)
    else:  # --steps 0: evaluate only
        after, recs = before, first_recs
    change = paired_change(first_recs, recs)
    res["after"] = after
    res["change"] = change
    res["kl"] = after["kl"]
    # what results.json keeps of each evaluation point (metrics.jsonl has them whole)
    keep = (
        "kl pm_reward gold_helpfulness gold_harmlessness gold_harmlessness_strict unparsed_share"
        " gold_reward nontwin_helpfulness redteam_refusal_rate comply_rate"
    ).split()
    res["eval_points"] = [
        {"step": p["step"]} | {k: p[k] for k in keep} | {k + "_se": p[k + "_se"] for k in keep}
        for p in points
    ]
    res["kl_fits"] = kl_fits(points)
    fit = [res["kl_fits"]["sqrt"][k] for k in ("slope", "intercept", "r2")]
    res["reward_vs_sqrt_kl"] = dict(zip(("slope", "intercept", "r2"), fit, strict=True)) | {
        "fitted_on": "eval_points"
    }
    res["overoptimisation"] = overoptimisation(points, [r["cluster"] for r in recs])
    # the finished policy alone (finished() reads its step)
    save_checkpoint(ckpt_path, policy, tokenizer, step=cfg.steps, train_config=asdict(cfg))
    # every held-out reply, before and after, for audits
    audit = []
    for b, a in zip(first_recs, recs, strict=True):
        audit.append(
            {
                "group": a["group"],
                "prompt": corpora.last_human(a["prompt"]),
                "before": b["reply"],
                "before_category": b["category"],
                "after": a["reply"],
                "after_category": a["category"],
                "after_gold": [a["helpful"], a["harmless"]],
                "after_pm": a["pm"],
            }
        )
    write_jsonl(os.path.join(out_dir, "samples.jsonl"), audit)
    # the first three replies of each held-out group
    res["samples_after"] = []
    for group in eval_sets:
        for r in [r for r in recs if r["group"] == group][:3]:
            res["samples_after"].append(
                {"prompt": r["prompt"], "reply": r["reply"], "category": r["category"]}
            )
    res["seconds"] = time.time() - t_start
    write_json(os.path.join(out_dir, "results.json"), res)
    figs = plots(points, metrics, fit, out_dir)

    print(
        f"\n{'':24s}{'before':>16s}{'after':>16s}{'change':>16s}   "
        f"(held-out: {sizes}; ± clustered standard errors)"
    )
    # the means that apply here: those with a change
    for k, ch in change.items():
        b = f"{before[k]:10.3f}±{before[k + '_se']:.3f}"
        a = f"{after[k]:10.3f}±{after[k + '_se']:.3f}"
        print(f"  {k:22s}{b}{a}{ch['change']:+10.3f}±{ch['se']:.3f}")
    shapes = ", ".join(
        f"{k} {v['r2']:.3f} / " + ("-" if v["heldout_r2"] is None else f"{v['heldout_r2']:.3f}")
        for k, v in res["kl_fits"].items()
    )
    print(
        f"\nPM reward against exact KL on the {len(points)} evaluations, R^2 on all of them / on"
        f" the odd ones from a fit on the even: {shapes} (Bai et al. 2022: roughly linear in"
        f" sqrt(KL); slope {fit[0]:.3f})"
    )
    if o := res["overoptimisation"]:
        print(
            f"gold reward peaked at step {o['step']} (KL {o['kl']:.2f}) at {o['gold_peak']:.3f}; at"
            f" the end {o['gold_final']:.3f} ({o['fall']:+.3f}±{o['fall_se']:.3f}, paired), the PM"
            f" {o['pm_at_peak']:.3f} -> {o['pm_final']:.3f}: "
            + ("over-optimisation" if o["turned_down"] else "no over-optimisation")
        )
    log("sample replies after PPO:")
    for s in res["samples_after"]:
        log(f"  [{s['category']}] {corpora.last_human(s['prompt'])!r} -> {s['reply']!r}")
    names = "".join(", " + os.path.basename(f) for f in figs)
    print(
        f"wrote {out_dir}/ (results.json, metrics.jsonl, samples.jsonl, policy.pt{names}) "
        f"in {res['seconds']:.0f}s"
    )
    return res


if __name__ == "__main__":
    cli(main, parse_args)
