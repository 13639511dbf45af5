"""
calibrate.py -- calibration, P(True) and P(IK) (Kadavath et al. 2022, "Language Models
(Mostly) Know What They Know", arXiv 2207.05221), on the assistant world's questions:
facts whose pretraining frequency runs from thousands of statements down to once or never
(data/world.py), and arithmetic with 1-4 digits. The base model is train_lm.py's.

  1. Multiple choice (Sec. 3, Fig. 4): "Question: ... Choices: (A) ... (D) ... Answer: (",
     scored by the probability of each letter, normalised over the choices. Accuracy, ECE
     on the top choice in 10 equal-count bins (with a bootstrap interval and the sampling
     floor: the ECE a perfectly calibrated model with the same probabilities would get on
     this many questions), RMS calibration error, Brier score; the "none of the above"
     variant and the True/False format (Sec. 3) ("Proposed answer: ... (A) True (B) False").
  2. RLHF policies (Sec. 3): the same questions on ppo.py's policy, and the temperature
     that recalibrates it (the paper's T = 2.5).
  3. P(True) (Sec. 4): the model samples an answer at T = 1, then judges it; P(True) is the
     normalised probability of "(A) True". AUROC for telling its right samples from its
     wrong ones, accuracy of the samples it keeps, and brainstorming: five more of its own
     samples shown before the question.
  4. P(IK) (Sec. 5): a scalar head on the base model, the whole model fine-tuned to predict
     from the question alone the fraction of its N samples at T = 1 that are right. AUROC
     and ECE on held-out facts, out of distribution (facts -> arithmetic and back), beside a
     baseline that sees only the difficulty (the fact's corpus count, the digit count); by
     frequency band; and with the fact stated in the context (the paper's source material).

Run (CPU, 2 cores; builds out/train_lm/pretrain.pt first if missing, uses
out/ppo/policy.pt if present -- `--build_policy` builds it with ppo.py, ~10 minutes):
    python calibrate.py                    # -> out/calibrate/
One GPU:
    python calibrate.py --preset gpu       # more questions, 30 samples each -> out/calibrate/gpu/

What to look at: the summary table it prints; reliability.png (the paper's Fig. 4 for the
base model, the RLHF policy at T = 1 and at its best temperature, and P(IK); and P(IK)
beside the accuracy by frequency band); results.json (mc, mc_none_of_above, true_false,
mc_answer_scoring -- the same questions scored by the answers themselves, not the letters --,
mc_by_group, rlhf or rlhf_skipped, p_true, p_ik, seconds, figures; tables, curves and sample
examples under details). The
measured numbers are in the README.
"""

import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import world
from data.calibration import auroc, reliability
from data.corpora import LETTERS, mc_prompt, qa_prompt, qa_set, tf_prompt
from data.prepare import prepare
from data.tokenizer import get_tokenizer
from model import (
    autocast,
    cluster_se,
    configure_optimizer,
    ensure_checkpoint,
    get_device,
    handoff,
    left_pad,
    load_checkpoint,
    log_metrics,
    lr_at,
    next_token_logits,
    optimizer_step,
    parse_config,
    printer,
    pyplot,
    run_dir,
    run_path,
    sample_replies,
    save_figure,
    score_sequences,
    token_logprobs,
    write_json,
)


@dataclass
class Config:
    # settings for a scale, combined with '+'; the LM is built with the same preset
    preset: str = "cpu"
    # base LM checkpoint (default: train_lm.py's pretraining run of the same preset)
    init: str = ""
    # RLHF policy checkpoint (default: ppo.py's of the same preset; skipped if missing)
    policy: str = ""
    # build a missing RLHF policy with ppo.py first (~10 minutes on CPU)
    build_policy: bool = False
    # root folder; a run goes to <out_dir>[/<preset>]
    out_dir: str = "out/calibrate"
    # distinct multiple-choice questions (facts and arithmetic)
    n_mc: int = 1200
    # share of arithmetic among the questions of sections 1 and 3
    arith_share: float = 0.35
    # questions whose samples the model judges (P(True))
    n_ptrue: int = 1000
    # P(True): share of samples kept, those the model rates most likely true
    keep: float = 0.2
    # questions for P(IK): half training facts, a quarter held-out facts, a quarter arithmetic
    n_pik: int = 2000
    # samples at T=1 per question for the P(IK) label (the paper: 30)
    n_samples: int = 10
    # longest sampled answer (the longest statement is 15 tokens)
    max_new_tokens: int = 20
    # passes over the P(IK) training questions
    pik_epochs: int = 4
    # P(IK) fine-tuning learning rate (whole model)
    pik_lr: float = 3e-4
    # P(IK) questions per step
    batch_size: int = 32
    # bootstrap resamples for the ECE intervals (a fifth as many for AUROC standard errors)
    n_boot: int = 1000
    # random seed (samples, bootstrap, data order)
    seed: int = 1337
    # "auto" (cuda if available), "cpu", "cuda", ...
    device: str = "auto"
    # no progress bar or messages
    quiet: bool = False


PRESETS = {
    "cpu": {},
    "gpu": {"n_mc": 4000, "n_ptrue": 3000, "n_pik": 6000, "n_samples": 30, "batch_size": 64},
    "tiny": {"n_mc": 60, "n_ptrue": 24, "n_pik": 90, "n_samples": 2, "pik_epochs": 1, "n_boot": 20},
}
BANDS = [
    (0, 0),
    (1, 3),
    (4, 15),
    (16, 99),
    (100, 10**9),
]  # a fact's statements in the pretraining corpus


def band_name(lo, hi):
    return str(lo) if lo == hi else f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"


def band_of(count):
    return next(band_name(lo, hi) for lo, hi in BANDS if lo <= count <= hi)


# -----------------------------------------------------------------------------
# Reading the model: letter probabilities, sampled answers, the scalar head


def letter_logits(model, enc, prompts, n_letters, batch_size=64):
    """Logits of the letters A, B, ... at the end of each prompt (which ends in "("),
    -> (N, n_letters) array; softmax over them normalises over the choices."""
    ids = [enc.encode_ordinary(l) for l in LETTERS[:n_letters]]
    assert all(len(i) == 1 for i in ids), "each choice letter must be one token"
    return next_token_logits(model, enc, prompts, [i[0] for i in ids], batch_size).numpy()


@torch.no_grad()
def answer_logprobs(model, enc, prompts, answers, batch_size=64):
    """log p(" " + answer | prompt), summed over the answer's tokens, for each pair."""
    model.eval()
    out, device = [], model.wte.weight.device
    for i in range(0, len(prompts), batch_size):
        pairs = [
            (enc.encode_ordinary(p + " " + a), enc.encode_ordinary(p))
            for p, a in zip(prompts[i : i + batch_size], answers[i : i + batch_size])
        ]
        idx, pad = left_pad([full for full, _ in pairs], 0, device)
        n_ans = torch.tensor([len(full) - len(prompt) for full, prompt in pairs])
        with autocast(device.type):
            lp = token_logprobs(model(idx, pad_mask=pad)[0][:, :-1], idx[:, 1:])
        last = (
            torch.arange(idx.size(1) - 1)[None] >= idx.size(1) - 1 - n_ans[:, None]
        )  # the answer's tokens
        out.append((lp.float().cpu() * last).sum(1))
    return torch.cat(out).numpy()


def softmax(x, temperature=1.0):
    e = np.exp(x / temperature - (x / temperature).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def sample_answers(model, enc, prompts, n, max_new_tokens, gen, quiet, desc, batch_size=512):
    """n samples at T = 1 of each prompt -> list (per prompt) of n first lines."""
    flat = [p for p in prompts for _ in range(n)]
    texts = [
        r.split("\n")[0]
        for i in tqdm(range(0, len(flat), batch_size), desc=desc, leave=False, disable=quiet)
        for r in sample_replies(model, enc, flat[i : i + batch_size], max_new_tokens, 1.0, gen)[0]
    ]
    return [texts[j * n : (j + 1) * n] for j in range(len(prompts))]


def answer_of(text):
    """A sampled answer: its first line, without a final full stop ("Paris." -> "Paris")."""
    return text.strip().removesuffix(".").strip()


def head_scores(model, enc, prompts):
    """P(IK) = sigmoid(scalar head) at the last token of each prompt."""
    return (
        torch.sigmoid(score_sequences(model, [enc.encode_ordinary(p) for p in prompts]))
        .cpu()
        .numpy()
    )


# -----------------------------------------------------------------------------
# Metrics with their uncertainty


def calibration_metrics(conf, correct, rng, n_boot):
    """The paper's calibration of the top choice: ECE in 10 equal-count bins, with a
    bootstrap 95% interval over questions and the sampling floor (the mean ECE of outcomes
    drawn as Bernoulli(conf): a perfectly calibrated model's ECE on this many questions)."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    m = reliability(conf, correct, 10, equal_count=True)
    idx = rng.integers(0, len(conf), (n_boot, len(conf)))
    boot = [reliability(conf[i], correct[i], 10, equal_count=True)["ece"] for i in idx]
    floor = [
        reliability(conf, rng.random(len(conf)) < conf, 10, equal_count=True)["ece"]
        for _ in range(200)
    ]
    return {
        "accuracy": float(correct.mean()),
        "ece": m["ece"],
        "ece_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "ece_floor": float(np.mean(floor)),
        "rms_ce": m["rms_ce"],
        "brier": m["brier"],
        "n": m["n"],
        "mean_confidence": float(conf.mean()),
        "table": m["table"],
    }


def choice_metrics(logits, answers, rng, n_boot, temperature=1.0):
    p = softmax(logits, temperature)
    return calibration_metrics(p.max(1), p.argmax(1) == np.asarray(answers), rng, n_boot)


def auroc_se(scores, labels, clusters, rng, n_boot, base=None):
    """AUROC and its bootstrap standard error, resampling whole clusters (a question with its
    samples, or a fact with all its questions); with base, another score of the same samples,
    also the standard error of AUROC(scores) - AUROC(base) over the same resamples (paired)."""
    s, labels, clusters = (
        [np.asarray(x, float) for x in [scores] + ([] if base is None else [base])],
        np.asarray(labels),
        np.asarray(clusters),
    )
    groups = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    boot = []
    for _ in range(n_boot // 5):
        i = np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])
        boot.append([auroc(x[i], labels[i]) for x in s])
    boot = np.array([b for b in boot if None not in b]).reshape(-1, len(s))
    se = lambda v: float(np.std(v)) if len(v) else None
    return (auroc(s[0], labels), se(boot[:, 0])) + (
        () if base is None else (se(boot[:, 0] - boot[:, 1]),)
    )


# -----------------------------------------------------------------------------
# 1-2. Multiple choice, none of the above, True/False; an RLHF policy and temperature


def multiple_choice(model, enc, cfg, rng, counts):
    mc, nota = (
        qa_set(cfg.n_mc, 0, arith_share=cfg.arith_share),
        qa_set(cfg.n_mc, 0, arith_share=cfg.arith_share, nota=True),
    )
    answers = [
        LETTERS.index(q["mc_answer"]) for q in mc
    ]  # the same in both sets: the letter stays with NOTA
    logits = letter_logits(model, enc, [mc_prompt(q["question"], q["choices"]) for q in mc], 4)
    res = {"mc": choice_metrics(logits, answers, rng, cfg.n_boot)}
    res["mc_none_of_above"] = choice_metrics(
        letter_logits(model, enc, [mc_prompt(q["question"], q["choices"]) for q in nota], 4),
        answers,
        rng,
        cfg.n_boot,
    )
    # True/False: each question with a proposed answer, right half of the time, else a wrong choice
    r = random.Random(cfg.seed)
    tf = [
        (q, q["answer"], True)
        if r.random() < 0.5
        else (q, r.choice([c for c in q["choices"] if c != q["answer"]]), False)
        for q in mc
    ]
    tf_logits = letter_logits(model, enc, [tf_prompt(q["question"], a) for q, a, _ in tf], 2)
    res["true_false"] = choice_metrics(
        tf_logits, [0 if r else 1 for _, _, r in tf], rng, cfg.n_boot
    )
    # the same questions scored by the answers themselves ("Answer: Paris"), normalised over
    # the four choices: what the model knows, without finding its answer among the letters
    by_answer = answer_logprobs(
        model,
        enc,
        [qa_prompt(q["question"]) for q in mc for _ in range(4)],
        [c for q in mc for c in q["choices"]],
    ).reshape(-1, 4)
    res["mc_answer_scoring"] = choice_metrics(by_answer, answers, rng, cfg.n_boot)
    # where the knowledge is: accuracy and confidence by frequency band and by digit count
    groups = np.array(
        [
            f"facts, {band_of(counts[q['fact']])}"
            if q["kind"] == "fact"
            else f"{q['digits']}-digit"
            for q in mc
        ]
    )
    order = [f"facts, {band_name(lo, hi)}" for lo, hi in BANDS] + [
        f"{d}-digit" for d in range(1, 5)
    ]
    right = lambda x, g: float((softmax(x).argmax(1) == answers)[groups == g].mean())
    res["mc_by_group"] = [
        {
            "group": g,
            "n": int((groups == g).sum()),
            "accuracy": right(logits, g),
            "mean_confidence": float(softmax(logits).max(1)[groups == g].mean()),
            "accuracy_answer_scoring": right(by_answer, g),
        }
        for g in order
        if g in groups
    ]
    return res, logits, answers, mc


def rlhf_calibration(cfg, device, enc_name, mc, mc_logits, answers, rng):
    """The PPO policy on the same questions at T = 1, and the temperature (applied to the
    letter logits) that minimises its ECE; the base model's best temperature beside it."""
    path = cfg.policy or os.path.join(run_path("out/ppo", cfg.preset), "policy.pt")
    if not os.path.exists(path):
        if not cfg.build_policy:
            return (
                None,
                f"{path} not found: run `python ppo.py` (about 10 minutes) or pass --build_policy",
            )
        ensure_checkpoint(path, ["ppo.py", "--preset", cfg.preset], "the RLHF policy")
    policy, _ = load_checkpoint(path, device, tokenizer_name=enc_name)
    logits = letter_logits(
        policy, get_tokenizer(enc_name), [mc_prompt(q["question"], q["choices"]) for q in mc], 4
    )
    temps = [round(t, 2) for t in np.arange(0.25, 8.01, 0.25)]
    ans, h = np.asarray(answers), len(mc) // 2
    ece = lambda lg, a, t: reliability(
        softmax(lg, t).max(1), softmax(lg, t).argmax(1) == a, 10, True
    )["ece"]
    curve, base_curve = (
        [ece(logits, ans, t) for t in temps],
        [ece(mc_logits, ans, t) for t in temps],
    )
    # the temperature is chosen on the first half of the questions and measured on the second
    best = temps[int(np.argmin([ece(logits[:h], ans[:h], t) for t in temps]))]
    t1, tb = (
        choice_metrics(logits, answers, rng, cfg.n_boot),
        choice_metrics(logits[h:], answers[h:], rng, cfg.n_boot, best),
    )
    return {
        "ece_t1": t1["ece"],
        "best_temperature": best,
        "ece_best_t": tb["ece"],
        "accuracy": t1["accuracy"],
        "ece_t1_ci": t1["ece_ci"],
        "ece_best_t_ci": tb["ece_ci"],
        "mean_confidence_t1": t1["mean_confidence"],
        "ece_t1_second_half": ece(logits[h:], ans[h:], 1.0),
        "temperatures": temps,
        "ece_by_temperature": curve,
        "base_ece_by_temperature": base_curve,
        "base_best_temperature": temps[int(np.argmin(base_curve))],
        "table_t1": t1["table"],
        "table_best_t": tb["table"],
    }, None


# -----------------------------------------------------------------------------
# 3. P(True): the model judges its own samples


def p_true(model, enc, cfg, gen, rng):
    qs = qa_set(cfg.n_ptrue, 1, arith_share=cfg.arith_share)
    samples = sample_answers(
        model,
        enc,
        [qa_prompt(q["question"]) for q in qs],
        6,
        cfg.max_new_tokens,
        gen,
        cfg.quiet,
        "P(True) samples",
    )
    proposed, brain = (
        [answer_of(s[0]) for s in samples],
        [[answer_of(x) for x in s[1:]] for s in samples],
    )
    correct = np.array([a == q["answer"] for a, q in zip(proposed, qs)])
    pt = softmax(
        letter_logits(model, enc, [tf_prompt(q["question"], a) for q, a in zip(qs, proposed)], 2)
    )[:, 0]
    pb = softmax(
        letter_logits(
            model, enc, [tf_prompt(q["question"], a, b) for q, a, b in zip(qs, proposed, brain)], 2
        )
    )[:, 0]
    ids = np.arange(len(qs))
    a, a_se = auroc_se(pt, correct, ids, rng, cfg.n_boot)
    ab, ab_se, diff_se = auroc_se(pb, correct, ids, rng, cfg.n_boot, base=pt)
    threshold = float(np.quantile(pt, 1 - cfg.keep))
    kept = pt >= threshold
    return {
        "auroc": a,
        "auroc_se": a_se,
        "auroc_brainstorm": ab,
        "auroc_brainstorm_se": ab_se,
        "auroc_brainstorm_minus_plain_se": diff_se,
        "accuracy_all": float(correct.mean()),
        "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
        "threshold": threshold,
        "kept": int(kept.sum()),
        "n": len(qs),
        "examples": [
            {"question": q["question"], "sample": s[0], "correct": bool(c), "p_true": float(p)}
            for q, s, c, p in list(zip(qs, samples, correct, pt))[:8]
        ],
    }


# -----------------------------------------------------------------------------
# 4. P(IK): predicting from the question alone whether the model will answer right


def label(model, enc, cfg, qs, gen, prefix=lambda q: "", desc="P(IK) labels"):
    """Per question, whether each of n_samples samples at T = 1 is right -> (len(qs), n)."""
    s = sample_answers(
        model,
        enc,
        [prefix(q) + qa_prompt(q["question"]) for q in qs],
        cfg.n_samples,
        cfg.max_new_tokens,
        gen,
        cfg.quiet,
        desc,
    )
    return np.array([[answer_of(x) == q["answer"] for x in xs] for q, xs in zip(qs, s)], float)


def train_p_ik(cfg, device, init, enc, qs, y, out_dir, tag):
    """Fine-tune the whole base model with a fresh scalar head: cross-entropy between
    sigmoid(head at the question's last token) and the fraction of samples right."""
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation, the same whatever ran before
    model, _ = load_checkpoint(init, device, scalar_head=True)
    opt = configure_optimizer(model, cfg.pik_lr, 0.0, device_type=device.type)
    toks = [enc.encode_ordinary(qa_prompt(q["question"])) for q in qs]
    order_rng, per_epoch = np.random.default_rng(cfg.seed), -(-len(qs) // cfg.batch_size)
    batches = [
        b
        for _ in range(cfg.pik_epochs)
        for b in np.array_split(order_rng.permutation(len(qs)), per_epoch)
    ]
    steps = len(batches)
    bar = tqdm(batches, desc=f"P(IK) head ({tag})", leave=False, disable=cfg.quiet)
    for step, batch in enumerate(bar):
        model.train()
        idx, pad = left_pad([toks[i] for i in batch], 0, device)
        with autocast(device.type):
            loss = F.binary_cross_entropy_with_logits(
                model.score(idx, pad)[:, -1], torch.tensor(y[batch], device=device).float()
            )
        loss.backward()
        optimizer_step(opt, model, loss, 1.0, step, lr_at(step, steps, cfg.pik_lr, steps // 10))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % 10 == 0:
            log_metrics(
                out_dir,
                {"section": "p_ik", "head": tag, "step": step, "loss": round(loss.item(), 4)},
            )
    return model


def p_ik(model, cfg, device, init, enc, gen, rng, out_dir, counts):
    # a quarter of the facts held out of P(IK) training
    test_facts, train_facts = (
        [f["id"] for f in world.FACTS if (f["id"] % 4 == 0) == t] for t in (True, False)
    )
    n = cfg.n_pik
    tr, te, ar = (
        qa_set(n // 2, 2, train_facts, 0.0),
        qa_set(n // 4, 3, test_facts, 0.0),
        qa_set(n // 4, 4, None, 1.0),
    )
    ar_tr, ar_te = ar[: len(ar) // 2], ar[len(ar) // 2 :]
    y = {
        k: label(model, enc, cfg, qs, gen, desc=f"P(IK) labels, {k}")
        for k, qs in [("train", tr), ("test", te), ("arith_train", ar_tr), ("arith_test", ar_te)]
    }
    ctx = lambda q: (
        world.fact_statement(world.FACTS[q["fact"]]) + "\n"
    )  # the fact stated before the question
    y_ctx = label(model, enc, cfg, te, gen, ctx, "with context")
    head = train_p_ik(cfg, device, init, enc, tr, y["train"].mean(1), out_dir, "facts")
    prompts = lambda qs, pre=lambda q: "": [pre(q) + qa_prompt(q["question"]) for q in qs]
    p_te, p_ar = head_scores(head, enc, prompts(te)), head_scores(head, enc, prompts(ar_te))
    p_ctx = head_scores(head, enc, prompts(te, ctx))
    head_r = train_p_ik(
        cfg, device, init, enc, ar_tr, y["arith_train"].mean(1), out_dir, "arithmetic"
    )
    p_rev = head_scores(head_r, enc, prompts(te))
    # AUROC over samples: each of a question's samples, right or wrong, scored by its P(IK);
    # standard errors resample whole facts (a fact's questions are not independent)
    rep = lambda x, yy: np.repeat(np.asarray(x, float), yy.shape[1])
    facts_te = rep([q["fact"] for q in te], y["test"])
    log_count = rep(np.log1p([counts[q["fact"]] for q in te]), y["test"])
    a_in, a_in_se, vs_base_se = auroc_se(
        rep(p_te, y["test"]), y["test"].ravel(), facts_te, rng, cfg.n_boot, base=log_count
    )
    a_base, a_base_se = auroc_se(log_count, y["test"].ravel(), facts_te, rng, cfg.n_boot)
    ood = lambda x: auroc_se(
        rep(x, y["arith_test"]),
        y["arith_test"].ravel(),
        rep(range(len(ar_te)), y["arith_test"]),
        rng,
        cfg.n_boot,
    )
    (a_ood, a_ood_se), (a_base_ood, _) = ood(p_ar), ood([-q["digits"] for q in ar_te])
    cal_in, cal_ood = (
        reliability(p, yy.mean(1), 10, equal_count=True)
        for p, yy in ((p_te, y["test"]), (p_ar, y["arith_test"]))
    )
    bands = [band_of(counts[q["fact"]]) for q in te]
    in_band = lambda v, b: float(np.mean([x for x, c in zip(v, bands) if c == b]))
    by_freq = [
        {
            "band": b,
            "n": bands.count(b),
            "mean_p_ik": in_band(p_te, b),
            "accuracy": in_band(y["test"].mean(1), b),
            "accuracy_with_context": in_band(y_ctx.mean(1), b),
        }
        for b in [band_name(*lh) for lh in BANDS]
        if b in bands
    ]
    diff = p_ctx - p_te
    return {
        "auroc_in": a_in,
        "auroc_in_se": a_in_se,
        "auroc_ood": a_ood,
        "auroc_ood_se": a_ood_se,
        "auroc_ood_reverse": auroc(rep(p_rev, y["test"]), y["test"].ravel()),
        "auroc_difficulty_baseline": a_base,
        "auroc_in_minus_baseline_se": vs_base_se,
        "auroc_difficulty_baseline_se": a_base_se,
        "auroc_difficulty_baseline_ood": a_base_ood,
        "ece_in": cal_in["ece"],
        "ece_ood": cal_ood["ece"],
        "mean_with_context": float(p_ctx.mean()),
        "mean_without_context": float(p_te.mean()),
        "with_context_diff_se": cluster_se(diff, [q["fact"] for q in te]),
        "accuracy_with_context": float(y_ctx.mean()),
        "accuracy_without_context": float(y["test"].mean()),
        "by_frequency": by_freq,
        "n_samples": cfg.n_samples,
        "n_train": len(tr),
        "n_test": len(te),
        "n_ood": len(ar_te),
        "table_in": cal_in["table"],
        "table_ood": cal_ood["table"],
    }


# -----------------------------------------------------------------------------
# Figures and the summary


def plots(res, out_dir):
    plt = pyplot()
    if plt is None:
        return []
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    panels = [
        (
            axes[0],
            "base model",
            [
                ("multiple choice", res["mc"]["table"]),
                ("none of the above", res["mc_none_of_above"]["table"]),
                ("True/False", res["true_false"]["table"]),
            ],
        )
    ]
    r = res["rlhf"] or {
        "table_t1": [],
        "table_best_t": [],
        "best_temperature": "?",
    }  # empty panel: policy skipped
    panels.append(
        (
            axes[1],
            "RLHF policy",
            [("T = 1", r["table_t1"]), (f"T = {r['best_temperature']}", r["table_best_t"])],
        )
    )
    panels.append(
        (
            axes[2],
            "P(IK)",
            [
                ("held-out facts", res["p_ik"]["table_in"]),
                ("arithmetic (OOD)", res["p_ik"]["table_ood"]),
            ],
        )
    )
    for ax, title, curves in panels:
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for name, table in curves:
            ax.plot(
                [t["predicted"] for t in table], [t["observed"] for t in table], "o-", label=name
            )
        ax.set(
            title=title,
            xlabel="predicted probability",
            ylabel="frequency correct",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend(fontsize=8)
    bf, x = res["p_ik"]["by_frequency"], np.arange(len(res["p_ik"]["by_frequency"]))
    for off, key, name in [
        (-0.2, "mean_p_ik", "mean P(IK)"),
        (0.2, "accuracy", "accuracy (T = 1)"),
    ]:
        axes[3].bar(x + off, [b[key] for b in bf], 0.4, label=name)
    axes[3].set(
        xticks=x,
        xticklabels=[b["band"] for b in bf],
        xlabel="statements in the pretraining corpus",
        title="P(IK) by fact frequency (held-out facts)",
        ylim=(0, 1),
    )
    axes[3].legend(fontsize=8)
    return [save_figure(fig, os.path.join(out_dir, "reliability.png"))]


def summary(res, log):
    log("\n" + "=" * 78 + "\nKadavath et al. 2022 on the assistant world\n" + "=" * 78)
    log(
        f"{'format':<26}{'n':>6}{'accuracy':>10}{'ECE [95% CI]':>22}{'floor':>7}{'RMS':>7}{'Brier':>7}"
    )
    for k in ("mc", "mc_none_of_above", "true_false", "mc_answer_scoring"):
        m = res[k]
        log(
            f"{k:<26}{m['n']:>6}{m['accuracy']:>10.3f}{m['ece']:>8.3f} [{m['ece_ci'][0]:.3f}, {m['ece_ci'][1]:.3f}]"
            f"{m['ece_floor']:>7.3f}{m['rms_ce']:>7.3f}{m['brier']:>7.3f}"
        )
    r = res["rlhf"]
    log(
        f"RLHF policy: ECE {r['ece_t1']:.3f} at T=1 (accuracy {r['accuracy']:.3f}); at its best T = "
        f"{r['best_temperature']} (the paper: 2.5), chosen on half the questions, {r['ece_best_t']:.3f} on the other half "
        f"({r['ece_t1_second_half']:.3f} at T=1)"
        if r
        else f"RLHF policy: skipped ({res['rlhf_skipped']})"
    )
    p, k, f = (
        res["p_true"],
        res["p_ik"],
        lambda x: "n/a" if x is None else f"{x:.3f}",
    )  # AUROC: None if one class is empty
    log(
        f"P(True): AUROC {f(p['auroc'])} +- {f(p['auroc_se'])}, with brainstorming {f(p['auroc_brainstorm'])} +- "
        f"{f(p['auroc_brainstorm_se'])} (paired difference SE {f(p['auroc_brainstorm_minus_plain_se'])}); "
        f"accuracy of all samples {p['accuracy_all']:.3f}, of those kept "
        f"(P(True) >= {p['threshold']:.2f}, {p['kept']}/{p['n']}) {f(p['accuracy_kept'])}"
    )
    log(
        f"P(IK) ({k['n_samples']} samples per question): AUROC held-out facts {f(k['auroc_in'])} +- {f(k['auroc_in_se'])} "
        f"(difficulty-only baseline {f(k['auroc_difficulty_baseline'])}, paired difference SE "
        f"{f(k['auroc_in_minus_baseline_se'])}), arithmetic (OOD) {f(k['auroc_ood'])} "
        f"(baseline {f(k['auroc_difficulty_baseline_ood'])}), facts from an arithmetic head {f(k['auroc_ood_reverse'])}; "
        f"ECE {k['ece_in']:.3f} / {k['ece_ood']:.3f}"
    )
    log(
        f"P(IK) with the fact in context {k['mean_with_context']:.3f} vs without {k['mean_without_context']:.3f} "
        f"(accuracy {k['accuracy_with_context']:.3f} vs {k['accuracy_without_context']:.3f})"
    )
    log(
        "by frequency band: "
        + "; ".join(
            f"{b['band']}: P(IK) {b['mean_p_ik']:.2f}, accuracy {b['accuracy']:.2f} (n={b['n']})"
            for b in k["by_frequency"]
        )
    )


def main(cfg):
    t0, device, log = time.time(), get_device(cfg.device), printer(cfg.quiet)
    out_dir = run_dir(cfg.out_dir, cfg.preset)
    init = cfg.init or ensure_checkpoint(*handoff("pretrain", cfg.preset), "the pretrained LM")
    model, ck = load_checkpoint(init, device)
    enc = get_tokenizer(ck["tokenizer"])
    # each fact's count of statements in the pretraining corpus, counted when it was prepared
    counts = prepare("world", ck["tokenizer"], verbose=False)[1]["fact_counts"]
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator(device=device).manual_seed(cfg.seed)
    log(f"calibrate: {init} ({model.num_params() / 1e6:.2f}M) on {device}")
    res, mc_logits, answers, mc = multiple_choice(model, enc, cfg, rng, counts)
    log_metrics(
        out_dir,
        {"section": "mc", **{k: res[k]["ece"] for k in ("mc", "mc_none_of_above", "true_false")}},
    )
    res["rlhf"], why = rlhf_calibration(cfg, device, ck["tokenizer"], mc, mc_logits, answers, rng)
    res.update({"rlhf_skipped": why} if why else {})
    res["p_true"] = p_true(model, enc, cfg, gen, rng)
    log_metrics(out_dir, {"section": "p_true", "auroc": res["p_true"]["auroc"]})
    res["p_ik"] = p_ik(model, cfg, device, init, enc, gen, rng, out_dir, counts)
    res["seconds"] = round(time.time() - t0, 1)
    res["figures"] = plots(res, out_dir)
    # the contract's sections hold numbers (intervals in sibling keys, by_frequency); tables,
    # curves and examples move to "details"
    res["details"] = {
        k: {
            n: v.pop(n)
            for n in list(v)
            if isinstance(v[n], list) and n != "by_frequency" and not n.endswith("_ci")
        }
        for k, v in res.items()
        if isinstance(v, dict)
    }
    write_json(os.path.join(out_dir, "results.json"), res)
    summary(res, log)
    log(f"results in {out_dir}/ ({res['seconds']:.0f}s)")
    return res


if __name__ == "__main__":
    main(parse_config(Config, PRESETS, __doc__))
