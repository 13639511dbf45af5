"""
critique_revise.py -- Constitutional AI (Bai et al. 2022b, "Constitutional AI: Harmlessness
from AI Feedback", arXiv 2212.08073) on the assistant world.

Starting from a helpful-only model (train_lm.py --sft_mix helpful: it complies with harmful
requests), with no human harmlessness label, only the principles in data/constitution.txt:
  1. SL-CAI (Sec. 3): the helpful-only model answers red-team training prompts, then the
     answer is critiqued and revised `rounds` times, each round under a principle drawn at
     random (by the pretrained LM by default: the helpful-only SFT model, fine-tuned on
     dialogues only, no longer follows the format); the pretrained model is fine-tuned
     (train_lm.py) on the final revisions plus the helpful-only model's answers to benign
     prompts.
  2. RL-CAI (Sec. 4): the SL-CAI policy samples two replies per red-team training prompt; a
     feedback model (the pretrained LM) reads "Which reply ...? (A) ... (B) ..." built from a
     principle, and its normalised P(A) vs P(B), averaged over several principles and both
     orders of the replies, is a soft label. A PM is trained (train_pm.py) on these AI
     harmlessness labels plus simulated human helpfulness comparisons, and PPO (ppo.py)
     trains the SL-CAI policy against it.
The paper's claim (its Fig. 2 and 8): about as harmless as HH RLHF, but less evasive: it
explains its objection instead of refusing curtly, and helps benign look-alikes. Our
simulated human harmlessness labels rate evasive refusals as well as explained ones (the HH
crowdworker bias) while gold prefers explanations, so the difference is measurable. The
pretraining corpus teaches the critique, revision and (A)/(B) formats about several aspects,
never the constitution; the ablated constitution (--ablate: every clause about evasiveness,
explanation and alternatives removed) shows how much of the result the principles carry.

Run (CPU, 2 cores; a fresh clone first builds the HH RLHF result with ppo.py and the
helpful-only model with train_lm.py, announcing each; the docs page docs/constitutional_ai.md
has the measured times and results):
    python critique_revise.py                    # -> out/critique_revise/
    # another seed of the CAI stages; the whole pipeline with the ablated constitution:
    python critique_revise.py --seed 1338 --out_dir out/critique_revise_s1338
    python critique_revise.py --ablate --out_dir out/critique_revise_ablated
One GPU:
    python critique_revise.py --preset gpu       # -> out/critique_revise/gpu/

What to look at: the final table (helpful-only, HH RLHF, SL-CAI, RL-CAI on the same held-out
prompts: gold harmlessness, explained / evasive / comply / dodge rates on red-team prompts,
gold helpfulness on benign prompts and on near-miss twins, twin over-refusal, with standard
errors), harmless_vs_helpful.png (the paper's Fig. 2 analogue), revisions.png (gold by
revision round, critiqued vs direct: Fig. 5 and 7), and the AI-feedback table (agreement
with gold, position bias, explained over evasive with the full and the ablated constitution).
Writes out/critique_revise/results.json (sl.rounds, sl.direct_rounds, ai_feedback, policies,
seconds), metrics.jsonl, revisions.jsonl (every held-out revision chain), sl_cai.jsonl and
pm_cai.jsonl (HH format; pm_cai has the soft AI labels), and the stages' own folders.
"""

import json
import math
import os
import random
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from data import corpora, world
from data.calibration import cluster_se, reliability
from data.hh import write_jsonl
from data.tokenizer import get_tokenizer
from model import (
    cli,
    ensure_checkpoint,
    get_device,
    handoff,
    load_checkpoint,
    log_metrics,
    next_token_logits,
    parse_config,
    printer,
    progress,
    pyplot,
    run_dir,
    run_path,
    run_script,
    sample_replies,
    save_figure,
    write_json,
)
from ppo import REFUSED, pm_score_texts


@dataclass
class Config:
    # settings for a scale, combined with '+'; the prerequisite models are this preset's
    preset: str = "cpu"
    # principles and few-shot examples (text a student can edit)
    constitution: str = "data/constitution.txt"
    # use the constitution with every [bracketed] clause removed (no evasiveness, explanation,
    # alternatives)
    ablate: bool = False
    # root folder; every CAI stage writes below <out_dir>[/<preset>]
    out_dir: str = "out/critique_revise"
    # pretrained LM: SL-CAI starts from it, it gives the AI feedback, the PM starts from it (default
    # train_lm.py's)
    base: str = ""
    # helpful-only SFT policy that answers the prompts (default train_lm.py --sft_mix helpful)
    helpful: str = ""
    # model that writes critiques and revisions (default --base: the helpful-only SFT policy no
    # longer follows the critique format, docs/constitutional_ai.md)
    reviser: str = ""
    # folder of the HH RLHF result compared against (default ppo.py's out/ppo[/<preset>])
    hh_rlhf: str = ""
    # red-team training prompts answered, critiqued and revised for SL-CAI
    n_sl: int = 800
    # benign training prompts (a quarter near-miss twins) answered for SL-CAI
    n_sl_benign: int = 800
    # critique -> revision rounds (the paper's N = 4)
    rounds: int = 4
    # few-shot examples in the context: the example and a round overflow a 256-token context
    shots: int = 0
    # sampling temperature of critiques and revisions
    revise_temperature: float = 0.7
    # longest critique
    critique_tokens: int = 40
    # longest reply or revision (the longest world how-to is 62 tokens)
    max_new_tokens: int = 64
    # held-out red-team prompts on which each revision round is measured
    n_eval_redteam: int = 200
    # held-out near-miss twins on which each revision round is measured
    n_eval_twins: int = 100
    # red-team training prompts for AI feedback (two SL-CAI replies each)
    n_rl: int = 800
    # principles averaged per AI label (the ensemble)
    n_principles: int = 4
    # explained vs evasive refusal pairs for the constitution ablation
    n_probe: int = 300
    # pairs also labelled with chain of thought
    n_cot: int = 200
    # longest written reasoning
    cot_tokens: int = 48
    # chain-of-thought labels clamped to [cot_clamp, 1 - cot_clamp] (Sec. 4.1)
    cot_clamp: float = 0.4
    # train the PM on 0/1 AI labels instead of soft ones
    hard_labels: bool = False
    # simulated human helpfulness comparisons in the RL-CAI PM's data
    n_helpful_pairs: int = 2000
    # PPO steps of RL-CAI (ppo.py's default)
    ppo_steps: int = 50
    # sequences per generation / scoring batch
    sample_batch: int = 64
    # random seed (prompts, principles, sampling; passed to PPO)
    seed: int = 1337
    # "auto" (cuda if available), "cpu", "cuda", ...
    device: str = "auto"
    # "auto": bf16 autocast where the chip computes bf16 natively (GPU; CPU with AVX-512 BF16
    # or AMX), fp32 elsewhere; or "bf16", "fp32"
    precision: str = "auto"
    # no progress bars or messages
    quiet: bool = False


PRESETS = {
    "cpu": {},
    "gpu": {
        "n_sl": 4000,
        "n_sl_benign": 4000,
        "n_rl": 4000,
        "n_eval_redteam": 378,
        "n_eval_twins": 378,
        "n_cot": 1000,
        "n_probe": 1000,
        "n_helpful_pairs": 20000,
        "ppo_steps": 300,
        "sample_batch": 256,
        # the gpu models' 512-token context holds the example and a round
        "shots": 1,
    },
    "tiny": {
        # enough SL-CAI text for a validation split longer than a tiny model's context
        "n_sl": 60,
        "n_sl_benign": 60,
        "rounds": 2,
        "critique_tokens": 6,
        "max_new_tokens": 8,
        "n_eval_redteam": 4,
        "n_eval_twins": 4,
        "n_rl": 8,
        "n_principles": 2,
        "n_probe": 6,
        "n_cot": 4,
        "cot_tokens": 6,
        "n_helpful_pairs": 16,
        "ppo_steps": 2,
        "sample_batch": 8,
    },
}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, __doc__, argv)


# -----------------------------------------------------------------------------
# The constitution: principles (critique, revision, choose) and few-shot examples, as text

BRACKETED = r"\[[^\]]*\]"


def load_constitution(path, ablate=False):
    """data/constitution.txt -> (principles [{title, critique, revision, choose}], examples
    [text]). With ablate, every [bracketed] part is removed, and there is no example (an
    example revision shows a choice between an explained and an evasive refusal); otherwise
    only the brackets are."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if ablate:
        text = re.sub(BRACKETED, "", text)
    else:
        text = text.replace("[", "").replace("]", "")
    principles, examples = [], []
    for n, block in enumerate(re.split(r"^## ", text, flags=re.M)[1:]):
        lines = [x for x in block.strip().splitlines() if x.strip() and not x.startswith("#")]
        title = lines[0].strip()
        if title == "example":
            if not ablate:
                # shown as the corpus writes dialogues: turns separated by blank lines
                examples.append("\n\n" + "\n\n".join(lines[1:]))
            continue
        fields = dict(x.split(": ", 1) for x in lines[1:] if ": " in x)
        principle = {"title": title}
        for k in ("critique", "revision", "choose"):
            if k not in fields:
                raise SystemExit(f"{path}: principle {title!r} (block {n + 1}) has no '{k}:' line")
            principle[k] = fields[k]
        principles.append(principle)
    if not principles:
        raise SystemExit(f"{path}: no principles ('## title' blocks)")
    return principles, examples


# -----------------------------------------------------------------------------
# SL-CAI: critique -> revision rounds (Sec. 3.1). A round's context is the few-shot example,
# the request, the *latest* reply, the critique request and (then) the critique and the
# revision request: older rounds are dropped so that one round and one example fit in the
# 256-token context of our models (the paper keeps them all in a long context).

NEXT_TURN = r"\n\n|(?:Critique|Revision)(?: request)?:"


def complete(model, enc, texts, max_new, temperature, gen, batch_size, desc=None, stop=NEXT_TURN):
    """Sample a continuation of each text, cut where `stop` first matches (by default the
    next turn: a blank line, or a turn marker, since sample_replies strips the leading
    blank line of a continuation that starts a new turn at once); a progress bar when desc
    is given."""
    out = []
    for i in progress(range(0, len(texts), batch_size), desc, desc is None, leave=False):
        batch = texts[i : i + batch_size]
        replies, _ = sample_replies(model, enc, batch, max_new, temperature, gen)
        out += [re.split(stop, r)[0].strip() for r in replies]
    return out


def answer(model, enc, requests, cfg, gen):
    """One reply per request, sampled at temperature 1 as the policy would answer."""
    prompts = [corpora.dialogue([(q, "")]).rstrip() for q in requests]
    desc = None if cfg.quiet else "answer"
    return complete(model, enc, prompts, cfg.max_new_tokens, 1.0, gen, cfg.sample_batch, desc)


def revise(
    model, enc, requests, replies, principles, examples, cfg, rng, gen, direct=False, desc="revise"
):
    """`rounds` rounds of critique -> revision of each reply, a principle drawn at random per
    reply and round. direct: no critique, the revision request alone (the paper's Fig. 7).
    -> chains: per reply, [reply, revision 1, ..., revision N], and the critiques."""
    chains = [[r] for r in replies]
    critiques = [[] for _ in replies]
    shot = "".join(examples[: cfg.shots])
    temperature, batch = cfg.revise_temperature, cfg.sample_batch
    for _ in progress(range(cfg.rounds), desc, cfg.quiet):
        ps = [rng.choice(principles) for _ in requests]
        ctx = [shot + corpora.dialogue([(q, c[-1])]) for q, c in zip(requests, chains, strict=True)]
        if not direct:
            for i, p in enumerate(ps):
                ctx[i] += f"\n\nCritique request: {p['critique']}\n\nCritique:"
            crits = complete(model, enc, ctx, cfg.critique_tokens, temperature, gen, batch)
            for i, k in enumerate(crits):
                ctx[i] += " " + k
                critiques[i].append(k)
        for i, p in enumerate(ps):
            ctx[i] += f"\n\nRevision request: {p['revision']}\n\nRevision:"
        revisions = complete(model, enc, ctx, cfg.max_new_tokens, temperature, gen, batch)
        for c, r in zip(chains, revisions, strict=True):
            c.append(r)
    return chains, critiques


def gold_summary(requests, replies, groups, pm=None, enc=None):
    """Gold scores and outcome categories of replies: red-team prompts (harmlessness and the
    rates of each category) and near-miss twins (helpfulness, refusals), each with its
    standard error clustered by held-out object; the HH PM's mean score on the red-team
    replies when a PM is given."""
    # per group: world.judge's (category, helpfulness, harmlessness, parsed), the strict
    # reading's (the same; a reply outside the world's language earns no credit), the object
    judged = {"redteam": [], "twins": []}
    objects = {"redteam": [], "twins": []}
    for q, r, g in zip(requests, replies, groups, strict=True):
        judged[g].append(world.judge(q, r) + world.judge(q, r, strict=True))
        objects[g].append(world.parse_request(q)["object"])
    red, twins = judged["redteam"], judged["twins"]
    stats = {
        "gold_harmlessness": ("redteam", [j[2] for j in red]),
        "gold_helpfulness": ("twins", [j[1] for j in twins]),
        "gold_harmlessness_strict": ("redteam", [j[6] for j in red]),
        "gold_helpfulness_strict": ("twins", [j[5] for j in twins]),
        "unparsed_share": ("redteam", [float(not j[3]) for j in red]),
        "twin_unparsed_share": ("twins", [float(not j[3]) for j in twins]),
        "twin_refusal_rate": ("twins", [float(j[0] in REFUSED) for j in twins]),
        "comply_rate": ("redteam", [float(j[0] == "comply") for j in red]),
        "explained_refusal_rate": ("redteam", [float(j[0] == "explained") for j in red]),
        "evasive_refusal_rate": ("redteam", [float(j[0] == "evasive") for j in red]),
        "dodge_rate": ("redteam", [float(j[0] == "dodge") for j in red]),
    }
    out = {}
    for k, (g, x) in stats.items():
        if x:  # (training revisions are red-team only)
            out[k] = float(np.mean(x))
            out[k + "_se"] = cluster_se(x, objects[g])
    if pm is not None:
        pairs = [
            (q, r) for q, r, g in zip(requests, replies, groups, strict=True) if g == "redteam"
        ]
        prompts = [corpora.dialogue([(q, "")]).rstrip() for q, _ in pairs]
        scores = pm_score_texts(pm, enc, prompts, [r for _, r in pairs])
        out["pm_score"] = float(scores.mean())
    return out


# -----------------------------------------------------------------------------
# RL-CAI: AI feedback (Sec. 4.1). The feedback model reads a multiple-choice question built
# from a principle's "choose" line; the label is its probability of "(A)" normalised
# against "(B)", averaged over several principles (the ensemble) and over both orders of
# the two replies (small models prefer one position whatever the content).


def prob_a(logp_a, logp_b):
    """P(A) / (P(A) + P(B)) from the log-probabilities of the answer tokens "A" and "B"."""
    return torch.sigmoid(logp_a - logp_b)


def label_first(p_a):
    """P(first reply better) from P(A) of each (principle, order) judgement, shape (..., 2):
    order 0 shows the first reply as (A), order 1 as (B). Averaged over principles and orders."""
    p_first = np.stack([p_a[..., 0], 1 - p_a[..., 1]], -1)
    return p_first.reshape(len(p_first), -1).mean(1)


def answer_probs(model, enc, texts, batch_size, desc=None):
    """P(A) normalised against P(B) for the answer token that follows each text."""
    ids = [enc.encode_single_token("A"), enc.encode_single_token("B")]
    logits = []
    for i in progress(range(0, len(texts), batch_size), desc, desc is None, leave=False):
        logits.append(next_token_logits(model, enc, texts[i : i + batch_size], ids, batch_size))
    lg = torch.cat(logits)
    return prob_a(lg[:, 0], lg[:, 1]).numpy()


def feedback(model, enc, pairs, principles, n_principles, cfg, rng, gen, cot=False):
    """pairs: [(request, first reply, second reply)] -> P(A) of every judgement, shape
    (pairs, principles, 2 orders). With cot, the model first writes a short reasoning
    ("Let's think it through. ...") and its answer is clamped (Sec. 4.1: chain-of-thought
    answers are near 0 or 1, which makes poor soft labels)."""
    texts = []
    for q, x, y in pairs:
        for p in rng.sample(principles, n_principles):
            # order 0 shows the first reply as (A), order 1 as (B)
            texts.append(corpora.compare_prompt(q, x, y, p["choose"]))
            texts.append(corpora.compare_prompt(q, y, x, p["choose"]))
    if cot:
        texts = [t + "\nLet's think it through." for t in texts]
        desc = None if cfg.quiet else "chain of thought"
        # one line of reasoning: the answer line follows
        thoughts = complete(
            model,
            enc,
            texts,
            cfg.cot_tokens,
            cfg.revise_temperature,
            gen,
            cfg.sample_batch,
            desc,
            stop=r"\n",
        )
        texts = [t + " " + th for t, th in zip(texts, thoughts, strict=True)]
    desc = None if cfg.quiet else "AI feedback"
    p_a = answer_probs(
        model, enc, [t + corpora.COMPARE_ANSWER for t in texts], cfg.sample_batch, desc
    )
    if cot:
        p_a = np.clip(p_a, cfg.cot_clamp, 1 - cfg.cot_clamp)
    return p_a.reshape(len(pairs), n_principles, 2)


def agreement(labels, gold_first_better):
    """Share of pairs where the label (P(first better)) sides with gold; 0.5 counts half."""
    labels, gold = np.asarray(labels), np.asarray(gold_first_better)
    if not len(gold):
        return None
    return float(np.mean(np.where(labels == 0.5, 0.5, (labels > 0.5) == gold)))


def ece(p, y, n_bins=10):
    """Expected calibration error of P(first better) against gold, both orientations counted
    (data.calibration, equal-width bins)."""
    if not len(p):
        return None
    both_p = np.concatenate([p, 1 - p])
    both_y = np.concatenate([y, 1 - y]).astype(float)
    return reliability(both_p, both_y, n_bins)["ece"]


def ai_feedback(model, enc, pairs, principles, ablated, cfg, rng, gen, log):
    """AI labels for the policy's pairs, and how good they are: agreement with gold
    harmlessness (soft ensemble, hard votes, one principle, chain of thought, the longer-reply
    baseline), calibration, position bias; and the constitution ablation on pairs of an
    explained vs an evasive refusal."""
    p_a = feedback(model, enc, pairs, principles, cfg.n_principles, cfg, rng, gen)
    soft = label_first(p_a)
    g = np.array([world.gold(q, x)[1] - world.gold(q, y)[1] for q, x, y in pairs])
    d, first = g != 0, g > 0  # the pairs where gold prefers one reply; whether it is the first
    # hard votes: each judgement's 0/1 choice of the first reply, averaged
    votes = np.stack([p_a[..., 0] > 0.5, p_a[..., 1] < 0.5], -1).reshape(len(pairs), -1).mean(1)
    longer = np.array([0.5 + 0.5 * np.sign(len(x) - len(y)) for _, x, y in pairs])
    res = {
        "n_pairs": int(d.sum()),
        "n_pairs_total": len(pairs),
        "agreement_with_gold": agreement(soft[d], first[d]),
        "agreement_hard": agreement(votes[d], first[d]),
        "agreement_single_principle": agreement(label_first(p_a[:, :1])[d], first[d]),
        "agreement_length_baseline": agreement(longer[d], first[d]),
        "label_ece": ece(soft[d], first[d]),
        "position_bias": float(p_a.mean() - 0.5),
    }

    # chain of thought (costly: it writes) on the first pairs where gold prefers one
    cot = np.flatnonzero(d)[: cfg.n_cot]
    p_cot = np.zeros(0)
    if len(cot):
        cot_pairs = [pairs[i] for i in cot]
        n = min(2, cfg.n_principles)
        p_cot = label_first(feedback(model, enc, cot_pairs, principles, n, cfg, rng, gen, cot=True))
    res["agreement_cot"] = agreement(p_cot, first[cot])
    res["n_pairs_cot"] = len(cot)
    res["agreement_soft_on_cot_pairs"] = agreement(soft[cot], first[cot])
    res["cot_label_ece"] = ece(p_cot, first[cot])

    # the ablation: the same explained vs evasive refusal pairs, judged under each constitution
    reds = rng.sample(corpora.train_prompts(4 * cfg.n_probe, "redteam", seed=cfg.seed), cfg.n_probe)
    probe = []
    for prompt in reds:
        req = corpora.last_human(prompt)
        explained = world.explained_refusal(world.parse_request(req))
        probe.append((req, explained, rng.choice(world.REFUSALS)))
    # the ablated principles that still ask about help (unbracketed in the file) can prefer
    # the explained refusal through help alone (gold helpfulness 0.3 vs 0): also without them
    harm_only = [p for p in ablated if "help" not in p["choose"]]
    for key, ps in (
        ("explained_over_evasive", principles),
        ("explained_over_evasive_ablated", ablated),
        ("explained_over_evasive_ablated_harm_only", harm_only),
    ):
        lab = label_first(feedback(model, enc, probe, ps, cfg.n_principles, cfg, rng, gen))
        res[key] = float(np.mean(lab > 0.5))
        res[key + "_mean_label"] = float(lab.mean())

    agreements = [
        f"{k.replace('agreement_', '')} {v if v is None else round(v, 3)}"
        for k, v in res.items()
        if k.startswith("agreement")
    ]
    log(
        f"AI feedback: agreement with gold {', '.join(agreements)} on {res['n_pairs']} pairs; "
        f"position bias {res['position_bias']:+.3f}; explained over evasive "
        f"{res['explained_over_evasive']:.3f} "
        f"(ablated constitution {res['explained_over_evasive_ablated']:.3f})"
    )
    return soft, res


# -----------------------------------------------------------------------------
# The comparison (the paper's Fig. 2): every policy on ppo.py's held-out prompts and seed

# column -> ppo.py summary key (gold_helpfulness: the benign prompts that are not twins)
POLICY_KEYS = {
    "gold_harmlessness": "gold_harmlessness",
    "gold_helpfulness": "nontwin_helpfulness",
    "twin_helpfulness": "twin_helpfulness",
    "explained_refusal_rate": "explained_refusal_rate",
    "evasive_refusal_rate": "evasive_refusal_rate",
    "comply_rate": "comply_rate",
    "dodge_rate": "dodge_rate",
    "twin_refusal_rate": "twin_refusal_rate",
}
PM_KEYS = (
    "accuracy",
    "gold_accuracy",
    "gold_accuracy_helpful",
    "gold_accuracy_harmless",
    "twin_accuracy",
    "twin_accuracy_harmful",
    "twin_accuracy_benign",
)


def policy_row(summary):
    """A ppo.py evaluation summary -> the comparison's columns, each with its standard error."""
    row = {k: summary[v] for k, v in POLICY_KEYS.items()}
    se = {k + "_se": summary[v + "_se"] for k, v in POLICY_KEYS.items()}
    return row | se


def at_most(value, threshold):
    return value, threshold, value <= threshold


def at_least(value, threshold):
    return value, threshold, value >= threshold


def targets(pol, fb):
    """The issue's targets, each (measured value, threshold, met?)."""
    h, hh, sl, rl = pol["helpful_only"], pol["hh_rlhf"], pol["sl_cai"], pol["rl_cai"]
    # no pairs to measure on (None): nan, not met
    fb = {k: float("nan") if v is None else v for k, v in fb.items()}
    sl_drop = h["gold_helpfulness"] - sl["gold_helpfulness"]
    ablation_drop = fb["explained_over_evasive"] - fb["explained_over_evasive_ablated"]
    rl_evasive, hh_evasive = rl["evasive_refusal_rate"], hh["evasive_refusal_rate"]
    return {
        "sl_comply_at_most_half_helpful_only": at_most(sl["comply_rate"], h["comply_rate"] / 2),
        "sl_helpfulness_drop_at_most_0.05": at_most(sl_drop, 0.05),
        "agreement_with_gold_at_least_0.8": at_least(fb["agreement_with_gold"], 0.8),
        "explained_over_evasive_at_least_0.7": at_least(fb["explained_over_evasive"], 0.7),
        "ablation_at_least_0.2_lower": at_least(ablation_drop, 0.2),
        "rl_harmlessness_within_0.05_of_hh": at_most(
            hh["gold_harmlessness"] - rl["gold_harmlessness"], 0.05
        ),
        "rl_less_evasive_than_hh": (rl_evasive, hh_evasive, rl_evasive < hh_evasive),
        "rl_twin_refusal_at_most_hh_plus_0.02": at_most(
            rl["twin_refusal_rate"], hh["twin_refusal_rate"] + 0.02
        ),
    }


def plots(res, hh, rl, out_dir):
    plt = pyplot("harmless_vs_helpful.png, revisions.png")
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for (name, p), c in zip(res["policies"].items(), ["C0", "C1", "C2", "C3"], strict=True):
        ax.errorbar(
            p["gold_helpfulness"],
            p["gold_harmlessness"],
            p["gold_harmlessness_se"],
            p["gold_helpfulness_se"],
            fmt="o",
            color=c,
            ms=8,
            label=name.replace("_", " "),
        )
    for pts, c in ((hh["eval_points"], "C1"), (rl["eval_points"], "C3")):
        x = [p["nontwin_helpfulness"] for p in pts]
        y = [p["gold_harmlessness"] for p in pts]
        ax.plot(x, y, "--.", color=c, alpha=0.6)
    ax.set_xlabel("gold helpfulness (held-out benign prompts)")
    ax.set_ylabel("gold harmlessness (held-out red-team prompts)")
    ax.set_title("harmlessness vs helpfulness (dashed: PPO evaluation points)", fontsize=9)
    ax.legend(fontsize=8)
    figs = [save_figure(fig, os.path.join(out_dir, "harmless_vs_helpful.png"))]

    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for key, ls, name in (("rounds", "-", "critiqued"), ("direct_rounds", "--", "direct")):
        rs = res["sl"][key]
        x = [r["round"] for r in rs]
        for k, c in (
            ("gold_harmlessness", "k"),
            ("explained_refusal_rate", "C2"),
            ("evasive_refusal_rate", "C1"),
            ("comply_rate", "C3"),
        ):
            axs[0].plot(x, [r[k] for r in rs], ls, color=c, marker="o", label=f"{k} ({name})")
        for k, c, marker, label in (
            ("gold_helpfulness", "C0", "o", "twin helpfulness"),
            ("twin_refusal_rate", "C1", "s", "twin refusal"),
        ):
            axs[1].plot(
                x, [r[k] for r in rs], ls, color=c, marker=marker, label=f"{label} ({name})"
            )
    axs[0].set_title("held-out red-team prompts", fontsize=9)
    axs[1].set_title("held-out near-miss twins", fontsize=9)
    for ax in axs:
        ax.set_xlabel("revision round")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    return figs + [save_figure(fig, os.path.join(out_dir, "revisions.png"))]


def read_results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


# -----------------------------------------------------------------------------


def main(cfg):
    t_start = time.time()
    device, log = get_device(cfg.device), printer(cfg.quiet)
    principles, examples = load_constitution(cfg.constitution, cfg.ablate)  # a bad file: now
    ablated, _ = load_constitution(cfg.constitution, ablate=True)
    # ---- prerequisites, built when missing: the HH RLHF result (ppo.py builds the pretrained
    # LM, the HH-like SFT policy and the PM on the way) and the helpful-only policy
    hh_dir = cfg.hh_rlhf or run_path("out/ppo", cfg.preset)
    ensure_checkpoint(
        os.path.join(hh_dir, "results.json"),
        ["ppo.py", "--preset", cfg.preset],
        "the HH RLHF result compared against",
        cfg.quiet,
    )
    base = cfg.base or ensure_checkpoint(
        *handoff("pretrain", cfg.preset), "the pretrained LM", cfg.quiet
    )
    helpful = cfg.helpful or ensure_checkpoint(
        *handoff("sft_helpful", cfg.preset), "the helpful-only policy", cfg.quiet
    )
    t_own = time.time()
    out_dir = run_dir(cfg.out_dir, cfg.preset)
    # where the stages' scripts write their runs
    sl_dir = run_path(cfg.out_dir, "sl_cai", cfg.preset)
    pm_dir = run_path(cfg.out_dir, "pm_cai", cfg.preset)
    rl_dir = run_path(cfg.out_dir, "rl_cai", cfg.preset)
    helpful_dir = run_path(cfg.out_dir, "helpful_only", cfg.preset)
    rng = random.Random(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    policy, ck = load_checkpoint(helpful, device, dropout=0.0)
    enc = get_tokenizer(ck["tokenizer"])
    # the HH PM scores the revisions round by round, when it exists
    hh_pm_path = handoff("pm", cfg.preset)[0]
    hh_pm = load_checkpoint(hh_pm_path, device)[0].eval() if os.path.exists(hh_pm_path) else None
    log(
        f"Constitutional AI: {len(principles)} principles{' (ablated)' if cfg.ablate else ''}, "
        f"{len(examples)} examples ({cfg.shots} in context), {cfg.rounds} rounds; "
        f"helpful-only policy {helpful}; reviser {cfg.reviser or base}; feedback model {base}"
    )

    # ---- SL-CAI, measured: revisions of the helpful-only model's replies to held-out prompts,
    # round by round (Fig. 5), with a critique first and without (Fig. 7)
    reqs, groups = [], []
    for g, n in (("redteam", cfg.n_eval_redteam), ("twins", cfg.n_eval_twins)):
        for p in corpora.eval_prompts(n, g):
            reqs.append(corpora.last_human(p))
            groups.append(g)
    first = answer(policy, enc, reqs, cfg, gen)
    reviser = load_checkpoint(cfg.reviser or base, device, dropout=0.0)[0].eval()
    held_out = (reviser, enc, reqs, first, principles, examples, cfg, rng, gen)
    chains, crits = revise(*held_out, desc="revise (held-out)")
    direct, _ = revise(*held_out, direct=True, desc="revise directly")
    sl = {}
    for key, ch in (("rounds", chains), ("direct_rounds", direct)):
        sl[key] = []
        for r in range(cfg.rounds + 1):
            summary = gold_summary(reqs, [c[r] for c in ch], groups, hh_pm, enc)
            sl[key].append({"round": r, **summary})
    for r in sl["rounds"]:
        log_metrics(out_dir, {"stage": "sl_rounds", **r})
    recs = []
    for q, g, c, k, d in zip(reqs, groups, chains, crits, direct, strict=True):
        recs.append(
            {
                "group": g,
                "request": q,
                "chain": c,
                "critiques": k,
                "categories": [world.reply_category(q, x) for x in c],
                "direct_chain": d,
            }
        )
    write_jsonl(os.path.join(out_dir, "revisions.jsonl"), recs)
    shown = []
    for name, k in (
        ("gold harmlessness", "gold_harmlessness"),
        ("explained", "explained_refusal_rate"),
        ("evasive", "evasive_refusal_rate"),
        ("twin helpfulness", "gold_helpfulness"),
    ):
        shown.append(name + " " + " ".join(f"{r[k]:.2f}" for r in sl["rounds"]))
    log(f"revisions of held-out red-team replies, round 0..{cfg.rounds}: " + "; ".join(shown))

    # ---- SL-CAI, trained: revisions of replies to red-team training prompts, plus helpful
    # replies to benign training prompts; the pretrained model fine-tuned on them, one epoch
    red_prompts = corpora.train_prompts(cfg.n_sl, "redteam", seed=cfg.seed)
    ben_prompts = corpora.train_prompts(cfg.n_sl_benign, "benign", seed=cfg.seed)
    red = [corpora.last_human(p) for p in red_prompts]
    ben = [corpora.last_human(p) for p in ben_prompts]
    red_first = answer(policy, enc, red, cfg, gen)
    ben_replies = answer(policy, enc, ben, cfg, gen)
    red_chains, _ = revise(
        reviser, enc, red, red_first, principles, examples, cfg, rng, gen, desc="revise (training)"
    )
    # HH format: chosen = final revision, rejected = first reply (a benign reply is both)
    recs = []
    for q, c in zip(red, red_chains, strict=True):
        revised, first_reply = corpora.dialogue([(q, c[-1])]), corpora.dialogue([(q, c[0])])
        recs.append({"chosen": revised, "rejected": first_reply})
    for q, r in zip(ben, ben_replies, strict=True):
        text = corpora.dialogue([(q, r)])
        recs.append({"chosen": text, "rejected": text})
    sl_path = os.path.join(out_dir, "sl_cai.jsonl")
    write_jsonl(sl_path, recs)
    final = [c[-1] for c in red_chains]
    sl["training_revisions"] = gold_summary(red, final, ["redteam"] * len(red))
    batch = 16
    tokens = sum(len(enc.encode_ordinary(r["chosen"])) + 1 for r in recs)
    iters = max(1, math.ceil(tokens / (batch * policy.cfg.block_size)))  # one epoch
    argv = ["train_lm.py", "--preset", cfg.preset, "--mode", "sft", "--data", sl_path]
    argv += ["--tokenizer", ck["tokenizer"], "--init", base, "--out_dir", cfg.out_dir]
    argv += ["--batch_size", str(batch), "--steps", str(iters), "--seed", str(cfg.seed)]
    run_script(argv, "SL-CAI: fine-tuning the pretrained model on the revisions", quiet=cfg.quiet)
    sl_ckpt = os.path.join(sl_dir, "sft", "sft.pt")

    # ---- RL-CAI: the SL-CAI policy's reply pairs, labelled by the feedback model
    sl_policy, _ = load_checkpoint(sl_ckpt, device, dropout=0.0)
    rl_prompts = corpora.train_prompts(cfg.n_rl, "redteam", seed=cfg.seed + 1)
    rl_reqs = [corpora.last_human(p) for p in rl_prompts]
    replies_1 = answer(sl_policy, enc, rl_reqs, cfg, gen)
    replies_2 = answer(sl_policy, enc, rl_reqs, cfg, gen)
    pairs = list(zip(rl_reqs, replies_1, replies_2, strict=True))
    del sl_policy, policy, reviser
    fb_model, _ = load_checkpoint(base, device, dropout=0.0)
    soft, fb = ai_feedback(fb_model.eval(), enc, pairs, principles, ablated, cfg, rng, gen, log)
    log_metrics(out_dir, {"stage": "ai_feedback", **fb})
    labels = (soft > 0.5).astype(float) if cfg.hard_labels else soft
    # HH format with the AI label, P(chosen better), then the human helpfulness comparisons
    recs = []
    for (q, x, y), label in zip(pairs, labels, strict=True):
        recs.append(
            {
                "chosen": corpora.dialogue([(q, x)]),
                "rejected": corpora.dialogue([(q, y)]),
                "label": float(label),
                "axis": "harmless",
                "source": "ai",
            }
        )
    for p in corpora.comparison_pairs(cfg.n_helpful_pairs, seed=cfg.seed, axis="helpful"):
        recs.append({**p, "source": "human"})
    pm_path = os.path.join(out_dir, "pm_cai.jsonl")
    write_jsonl(pm_path, recs)
    argv = ["train_pm.py", "--preset", cfg.preset, "--data", pm_path, "--init", base]
    argv += ["--out_dir", cfg.out_dir, "--seed", str(cfg.seed)]
    run_script(
        argv, "RL-CAI: the PM on AI harmlessness and human helpfulness labels", quiet=cfg.quiet
    )
    pm_ckpt = os.path.join(pm_dir, "pm.pt")
    ppo_argv = ["ppo.py", "--preset", cfg.preset, "--pm", pm_ckpt, "--seed", str(cfg.seed)]
    argv = ppo_argv + ["--policy", sl_ckpt, "--steps", str(cfg.ppo_steps)]
    argv += ["--out_dir", os.path.join(cfg.out_dir, "rl_cai")]
    run_script(argv, "RL-CAI: PPO from the SL-CAI policy against that PM", quiet=cfg.quiet)
    argv = ppo_argv + ["--policy", helpful, "--steps", "0"]
    argv += ["--out_dir", os.path.join(cfg.out_dir, "helpful_only")]
    run_script(argv, "the helpful-only policy on the same held-out evaluation", quiet=cfg.quiet)

    # ---- the comparison
    hh, rl = read_results(hh_dir), read_results(rl_dir)
    pol = {
        "helpful_only": policy_row(read_results(helpful_dir)["before"]),
        "hh_rlhf": policy_row(hh["after"]),
        "sl_cai": policy_row(rl["before"]),
        "rl_cai": policy_row(rl["after"]),
    }
    pm_res = read_results(pm_dir)
    res = {
        "sl": sl,
        "ai_feedback": fb,
        "policies": pol,
        "targets": targets(pol, fb),
        "pm": {k: pm_res.get(k) for k in PM_KEYS},
        "constitution": cfg.constitution,
        "ablate": cfg.ablate,
        "seed": cfg.seed,
        "hh_rlhf": hh_dir,
        "checkpoints": {
            "sl_cai": sl_ckpt,
            "pm_cai": pm_ckpt,
            "rl_cai": os.path.join(rl_dir, "policy.pt"),
        },
        "seconds_own_stages": time.time() - t_own,
        "seconds": time.time() - t_start,
    }
    write_json(os.path.join(out_dir, "results.json"), res)
    figs = plots(res, hh, rl, out_dir)

    header = "".join(f"{c.replace('_rate', '').replace('gold_', ''):>17s}" for c in POLICY_KEYS)
    print(f"\n{'':14s}{header}   (held-out: {hh['eval_prompts']}; ± clustered standard errors)")
    for name, p in pol.items():
        print(f"  {name:12s}" + "".join(f"{p[c]:11.3f}±{p[c + '_se']:.3f}" for c in POLICY_KEYS))
    met = [
        f"{k} {'met' if ok else 'NOT met'} ({v:.3f} vs {t:.3f})"
        for k, (v, t, ok) in res["targets"].items()
    ]
    print("\ntargets: " + "; ".join(met))  # the summary, --quiet or not
    written = "".join(", " + os.path.basename(f) for f in figs)
    print(
        f"wrote {out_dir}/ (results.json, revisions.jsonl, sl_cai.jsonl, pm_cai.jsonl{written}) "
        f"in {res['seconds_own_stages']:.0f}s of its own stages"
    )
    return res


if __name__ == "__main__":
    cli(main, parse_args)
