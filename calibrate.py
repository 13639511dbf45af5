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
examples under details). The measured numbers are on the docs page docs/calibration.md.
"""

import math
import os
import random
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data import world
from data.calibration import auroc, cluster_se, reliability
from data.corpora import LETTERS, mc_prompt, qa_prompt, qa_set, tf_prompt
from data.prepare import prepare
from data.skills import continuation_logprobs
from data.tokenizer import get_tokenizer
from model import (
    autocast,
    cli,
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
    progress,
    pyplot,
    run_dir,
    run_path,
    sample_replies,
    save_figure,
    score_sequences,
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
    # "auto": bf16 autocast where the chip computes bf16 natively (GPU; CPU with AVX-512 BF16
    # or AMX), fp32 elsewhere; or "bf16", "fp32"
    precision: str = "auto"
    # no progress bar or messages
    quiet: bool = False


PRESETS = {
    "cpu": {},
    "gpu": {"n_mc": 4000, "n_ptrue": 3000, "n_pik": 6000, "n_samples": 30, "batch_size": 64},
    "tiny": {"n_mc": 60, "n_ptrue": 24, "n_pik": 90, "n_samples": 2, "pik_epochs": 1, "n_boot": 20},
}
# frequency bands: a fact's count of statements in the pretraining corpus
BANDS = [(0, 0), (1, 3), (4, 15), (16, 99), (100, 10**9)]


def band_name(lo, hi):
    if lo == hi:
        return str(lo)
    if hi >= 10**9:
        return f"{lo}+"
    return f"{lo}-{hi}"


def band_of(count):
    return next(band_name(lo, hi) for lo, hi in BANDS if lo <= count <= hi)


# -----------------------------------------------------------------------------
# Reading the model: letter probabilities, sampled answers, the scalar head


def letter_logits(model, enc, prompts, n_letters, batch_size=64):
    """Logits of the letters A, B, ... at the end of each prompt (which ends in "("),
    -> (N, n_letters) array; softmax over them normalises over the choices."""
    ids = [enc.encode_ordinary(letter) for letter in LETTERS[:n_letters]]
    assert all(len(i) == 1 for i in ids), "each choice letter must be one token"
    return next_token_logits(model, enc, prompts, [i[0] for i in ids], batch_size).numpy()


def mc_prompts(qs):
    return [mc_prompt(q["question"], q["choices"]) for q in qs]


def softmax(x, temperature=1.0):
    e = np.exp(x / temperature - (x / temperature).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def sample_answers(model, enc, prompts, n, max_new_tokens, gen, quiet, desc, batch_size=512):
    """n samples at T = 1 of each prompt -> list (per prompt) of n first lines."""
    flat = [p for p in prompts for _ in range(n)]
    texts = []
    for i in progress(range(0, len(flat), batch_size), desc, quiet, leave=False):
        replies, _ = sample_replies(model, enc, flat[i : i + batch_size], max_new_tokens, 1.0, gen)
        texts += [r.split("\n")[0] for r in replies]
    return [texts[j * n : (j + 1) * n] for j in range(len(prompts))]


def answer_of(text):
    """A sampled answer: its first line, without a final full stop ("Paris." -> "Paris")."""
    return text.strip().removesuffix(".").strip()


def well_formed(q, answer):
    """Is a sampled short answer in the world's language: a whole number for arithmetic, one
    of the answers the world knows for a fact's kind otherwise?"""
    if q["kind"] == "arith":
        return re.fullmatch(r"-?\d+", answer) is not None
    return answer in world.ANSWERS_BY_KIND[world.FACTS[q["fact"]]["kind"]]


def head_scores(model, enc, prompts):
    """P(IK) = sigmoid(scalar head) at the last token of each prompt."""
    scores = score_sequences(model, [enc.encode_ordinary(p) for p in prompts])
    return torch.sigmoid(scores).cpu().numpy()


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


def ece_at(logits, answers, temperature):
    """ECE of the top choice, the letter logits divided by the temperature."""
    p = softmax(logits, temperature)
    return reliability(p.max(1), p.argmax(1) == answers, 10, True)["ece"]


def auroc_se(scores, labels, clusters, rng, n_boot, base=None):
    """AUROC and its bootstrap standard error, resampling whole clusters (a question with its
    samples, or a fact with all its questions); with base, another score of the same samples,
    also the standard error of AUROC(scores) - AUROC(base) over the same resamples (paired)."""
    s = [np.asarray(scores, float)]
    if base is not None:
        s.append(np.asarray(base, float))
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    groups = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    boot = []
    for _ in range(n_boot // 5):
        i = np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])
        boot.append([auroc(x[i], labels[i]) for x in s])
    # a resample with only right or only wrong samples has no AUROC
    boot = np.array([b for b in boot if None not in b]).reshape(-1, len(s))
    se = float(np.std(boot[:, 0])) if len(boot) else None
    if base is None:
        return auroc(s[0], labels), se
    diff_se = float(np.std(boot[:, 0] - boot[:, 1])) if len(boot) else None
    return auroc(s[0], labels), se, diff_se


# -----------------------------------------------------------------------------
# 1-2. Multiple choice, none of the above, True/False; an RLHF policy and temperature


def multiple_choice(model, enc, cfg, rng, counts):
    mc = qa_set(cfg.n_mc, 0, arith_share=cfg.arith_share)
    # the same questions with one choice replaced by "none of the above", which keeps the
    # letter where it replaces the answer: the right letters are the same in both sets
    nota = qa_set(cfg.n_mc, 0, arith_share=cfg.arith_share, nota=True)
    answers = [LETTERS.index(q["mc_answer"]) for q in mc]
    logits = letter_logits(model, enc, mc_prompts(mc), 4)
    res = {"mc": choice_metrics(logits, answers, rng, cfg.n_boot)}
    nota_logits = letter_logits(model, enc, mc_prompts(nota), 4)
    res["mc_none_of_above"] = choice_metrics(nota_logits, answers, rng, cfg.n_boot)
    # True/False: each question with a proposed answer, right half of the time, else a
    # wrong choice; the letter A is "True"
    r = random.Random(cfg.seed)
    tf_prompts, tf_letters = [], []
    for q in mc:
        if r.random() < 0.5:
            tf_prompts.append(tf_prompt(q["question"], q["answer"]))
            tf_letters.append(0)
        else:
            wrong = r.choice([c for c in q["choices"] if c != q["answer"]])
            tf_prompts.append(tf_prompt(q["question"], wrong))
            tf_letters.append(1)
    tf_logits = letter_logits(model, enc, tf_prompts, 2)
    res["true_false"] = choice_metrics(tf_logits, tf_letters, rng, cfg.n_boot)
    # the same questions scored by the answers themselves ("Answer: Paris"), normalised over
    # the four choices: what the model knows, without finding its answer among the letters
    by_answer = continuation_logprobs(
        model,
        enc,
        [qa_prompt(q["question"]) for q in mc for _ in range(4)],
        [" " + c for q in mc for c in q["choices"]],
    )[0].reshape(-1, 4)
    res["mc_answer_scoring"] = choice_metrics(by_answer, answers, rng, cfg.n_boot)
    # where the knowledge is: accuracy and confidence by frequency band and by digit count
    groups = []
    for q in mc:
        if q["kind"] == "fact":
            groups.append(f"facts, {band_of(counts[q['fact']])}")
        else:
            groups.append(f"{q['digits']}-digit")
    groups = np.array(groups)
    order = [f"facts, {band_name(lo, hi)}" for lo, hi in BANDS]
    order += [f"{d}-digit" for d in range(1, 5)]
    right = softmax(logits).argmax(1) == answers
    right_by_answer = softmax(by_answer).argmax(1) == answers
    confidence = softmax(logits).max(1)
    res["mc_by_group"] = []
    for g in order:
        if g not in groups:
            continue
        res["mc_by_group"].append(
            {
                "group": g,
                "n": int((groups == g).sum()),
                "accuracy": float(right[groups == g].mean()),
                "mean_confidence": float(confidence[groups == g].mean()),
                "accuracy_answer_scoring": float(right_by_answer[groups == g].mean()),
            }
        )
    return res, logits, answers, mc


def rlhf_calibration(cfg, device, enc_name, mc, mc_logits, answers, rng):
    """The PPO policy on the same questions at T = 1, and the temperature (applied to the
    letter logits) that minimises its ECE; the base model's best temperature beside it."""
    path = cfg.policy or os.path.join(run_path("out/ppo", cfg.preset), "policy.pt")
    if not os.path.exists(path) and not cfg.build_policy:
        return (
            None,
            f"{path} not found: run `python ppo.py` (5-10 minutes) or pass --build_policy",
        )
    ensure_checkpoint(path, ["ppo.py", "--preset", cfg.preset], "the RLHF policy", cfg.quiet)
    policy, _ = load_checkpoint(path, device, tokenizer_name=enc_name)
    logits = letter_logits(policy, get_tokenizer(enc_name), mc_prompts(mc), 4)
    temps = [round(t, 2) for t in np.arange(0.25, 8.01, 0.25)]
    ans = np.asarray(answers)
    h = len(mc) // 2
    base_curve = [ece_at(mc_logits, ans, t) for t in temps]
    # the temperature is chosen on the first half of the questions and measured on the second
    best = temps[int(np.argmin([ece_at(logits[:h], ans[:h], t) for t in temps]))]
    t1 = choice_metrics(logits, answers, rng, cfg.n_boot)
    tb = choice_metrics(logits[h:], answers[h:], rng, cfg.n_boot, best)
    return {
        "ece_t1": t1["ece"],
        "best_temperature": best,
        "ece_best_t": tb["ece"],
        "accuracy": t1["accuracy"],
        "ece_t1_ci": t1["ece_ci"],
        "ece_best_t_ci": tb["ece_ci"],
        "mean_confidence_t1": t1["mean_confidence"],
        "ece_t1_second_half": ece_at(logits[h:], ans[h:], 1.0),
        "temperatures": temps,
        "ece_by_temperature": [ece_at(logits, ans, t) for t in temps],
        "base_ece_by_temperature": base_curve,
        "base_best_temperature": temps[int(np.argmin(base_curve))],
        "table_t1": t1["table"],
        "table_best_t": tb["table"],
    }, None


# -----------------------------------------------------------------------------
# 3. P(True): the model judges its own samples


def p_true(model, enc, cfg, gen, rng):
    qs = qa_set(cfg.n_ptrue, 1, arith_share=cfg.arith_share)
    # six samples per question: the first is judged, the other five are its brainstorm
    prompts = [qa_prompt(q["question"]) for q in qs]
    samples = sample_answers(
        model, enc, prompts, 6, cfg.max_new_tokens, gen, cfg.quiet, "P(True) samples"
    )
    proposed = [answer_of(s[0]) for s in samples]
    brainstorm = [[answer_of(x) for x in s[1:]] for s in samples]
    correct = np.array([a == q["answer"] for a, q in zip(proposed, qs, strict=True)])
    plain = [tf_prompt(q["question"], a) for q, a in zip(qs, proposed, strict=True)]
    shown = zip(qs, proposed, brainstorm, strict=True)
    with_brainstorm = [tf_prompt(q["question"], a, b) for q, a, b in shown]
    pt = softmax(letter_logits(model, enc, plain, 2))[:, 0]
    pb = softmax(letter_logits(model, enc, with_brainstorm, 2))[:, 0]
    ids = np.arange(len(qs))
    res = {}
    res["auroc"], res["auroc_se"] = auroc_se(pt, correct, ids, rng, cfg.n_boot)
    a, se, diff_se = auroc_se(pb, correct, ids, rng, cfg.n_boot, base=pt)
    res["auroc_brainstorm"] = a
    res["auroc_brainstorm_se"] = se
    res["auroc_brainstorm_minus_plain_se"] = diff_se
    # keep the share cfg.keep of the samples, those P(True) rates most likely true
    threshold = float(np.quantile(pt, 1 - cfg.keep))
    kept = pt >= threshold
    res["accuracy_all"] = float(correct.mean())
    # samples that are not an answer of the world's kind (a number, or a capital, colour ...)
    res["unparsed_share"] = float(
        np.mean([not well_formed(q, a) for q, a in zip(qs, proposed, strict=True)])
    )
    res["accuracy_kept"] = float(correct[kept].mean()) if kept.any() else None
    res["threshold"] = threshold
    res["kept"] = int(kept.sum())
    res["n"] = len(qs)
    res["examples"] = [
        {"question": q["question"], "sample": s[0], "correct": bool(c), "p_true": float(p)}
        for q, s, c, p in list(zip(qs, samples, correct, pt, strict=True))[:8]
    ]
    return res


# -----------------------------------------------------------------------------
# 4. P(IK): predicting from the question alone whether the model will answer right


def pik_prompt(q, context=False):
    """The question; with context, the fact stated before it (the paper's source material)."""
    prefix = world.fact_statement(world.FACTS[q["fact"]]) + "\n" if context else ""
    return prefix + qa_prompt(q["question"])


def label(model, enc, cfg, qs, gen, context=False, desc="P(IK) labels"):
    """Per question, whether each of n_samples samples at T = 1 is right -> (len(qs), n)."""
    prompts = [pik_prompt(q, context) for q in qs]
    s = sample_answers(model, enc, prompts, cfg.n_samples, cfg.max_new_tokens, gen, cfg.quiet, desc)
    right = [[answer_of(x) == q["answer"] for x in xs] for q, xs in zip(qs, s, strict=True)]
    return np.array(right, float)


def train_p_ik(cfg, device, init, enc, qs, y, out_dir, tag):
    """Fine-tune the whole base model with a fresh scalar head: cross-entropy between
    sigmoid(head at the question's last token) and the fraction of samples right."""
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation, the same whatever ran before
    model, _ = load_checkpoint(init, device, scalar_head=True)
    opt = configure_optimizer(model, cfg.pik_lr, 0.0, device_type=device.type)
    toks = [enc.encode_ordinary(pik_prompt(q)) for q in qs]
    order_rng = np.random.default_rng(cfg.seed)
    per_epoch = math.ceil(len(qs) / cfg.batch_size)
    batches = []
    for _ in range(cfg.pik_epochs):
        batches += np.array_split(order_rng.permutation(len(qs)), per_epoch)
    steps = len(batches)
    bar = progress(batches, f"P(IK) head ({tag})", cfg.quiet, leave=False)
    for step, batch in enumerate(bar):
        model.train()
        idx, pad = left_pad([toks[i] for i in batch], 0, device)
        with autocast(device.type):
            loss = F.binary_cross_entropy_with_logits(
                model.score(idx, pad)[:, -1], torch.tensor(y[batch], device=device).float()
            )
        loss.backward()
        optimizer_step(opt, model, loss, 1.0, step, lr_at(step, steps, cfg.pik_lr, steps // 10))
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % 10 == 0:
            rec = {"section": "p_ik", "head": tag, "step": step, "loss": round(loss.item(), 4)}
            log_metrics(out_dir, rec)
    return model


def mean_where(values, keys, key):
    """The mean of the values whose key is key."""
    return float(np.mean([v for v, k in zip(values, keys, strict=True) if k == key]))


def p_ik(model, cfg, device, init, enc, gen, rng, out_dir, counts):
    # a quarter of the facts held out of P(IK) training; arithmetic split in halves
    test_facts = [f["id"] for f in world.FACTS if f["id"] % 4 == 0]
    train_facts = [f["id"] for f in world.FACTS if f["id"] % 4 != 0]
    tr = qa_set(cfg.n_pik // 2, 2, train_facts, 0.0)
    te = qa_set(cfg.n_pik // 4, 3, test_facts, 0.0)
    ar = qa_set(cfg.n_pik // 4, 4, None, 1.0)
    ar_tr, ar_te = ar[: len(ar) // 2], ar[len(ar) // 2 :]
    y_tr = label(model, enc, cfg, tr, gen, desc="P(IK) labels, train")
    y_te = label(model, enc, cfg, te, gen, desc="P(IK) labels, test")
    y_ar_tr = label(model, enc, cfg, ar_tr, gen, desc="P(IK) labels, arith_train")
    y_ar_te = label(model, enc, cfg, ar_te, gen, desc="P(IK) labels, arith_test")
    y_ctx = label(model, enc, cfg, te, gen, True, "with context")
    head = train_p_ik(cfg, device, init, enc, tr, y_tr.mean(1), out_dir, "facts")
    p_te = head_scores(head, enc, [pik_prompt(q) for q in te])
    p_ar = head_scores(head, enc, [pik_prompt(q) for q in ar_te])
    p_ctx = head_scores(head, enc, [pik_prompt(q, context=True) for q in te])
    head_r = train_p_ik(cfg, device, init, enc, ar_tr, y_ar_tr.mean(1), out_dir, "arithmetic")
    p_rev = head_scores(head_r, enc, [pik_prompt(q) for q in te])
    res = {"n_samples": cfg.n_samples, "n_train": len(tr), "n_test": len(te), "n_ood": len(ar_te)}

    # AUROC over samples: each of a question's samples, right or wrong, scored by its P(IK);
    # standard errors resample whole facts (a fact's questions are not independent)
    def per_sample(x):
        return np.repeat(np.asarray(x, float), cfg.n_samples)

    facts = per_sample([q["fact"] for q in te])
    log_count = per_sample(np.log1p([counts[q["fact"]] for q in te]))  # the difficulty baseline
    right = y_te.ravel()
    a, se, vs_base_se = auroc_se(per_sample(p_te), right, facts, rng, cfg.n_boot, base=log_count)
    res["auroc_in"] = a
    res["auroc_in_se"] = se
    res["auroc_in_minus_baseline_se"] = vs_base_se
    a, se = auroc_se(log_count, right, facts, rng, cfg.n_boot)
    res["auroc_difficulty_baseline"] = a
    res["auroc_difficulty_baseline_se"] = se
    # out of distribution: arithmetic from the facts head (baseline: fewer digits are
    # easier), and held-out facts from the arithmetic head
    questions = per_sample(range(len(ar_te)))
    right_ar = y_ar_te.ravel()
    a, se = auroc_se(per_sample(p_ar), right_ar, questions, rng, cfg.n_boot)
    res["auroc_ood"] = a
    res["auroc_ood_se"] = se
    res["auroc_difficulty_baseline_ood"] = auroc(
        per_sample([-q["digits"] for q in ar_te]), right_ar
    )
    res["auroc_ood_reverse"] = auroc(per_sample(p_rev), right)
    cal_in = reliability(p_te, y_te.mean(1), 10, equal_count=True)
    cal_ood = reliability(p_ar, y_ar_te.mean(1), 10, equal_count=True)
    res["ece_in"] = cal_in["ece"]
    res["ece_ood"] = cal_ood["ece"]
    res["table_in"] = cal_in["table"]
    res["table_ood"] = cal_ood["table"]
    # with the fact stated in the context (the paper's source material), beside without it
    res["mean_with_context"] = float(p_ctx.mean())
    res["mean_without_context"] = float(p_te.mean())
    res["with_context_diff_se"] = cluster_se(p_ctx - p_te, [q["fact"] for q in te])
    res["accuracy_with_context"] = float(y_ctx.mean())
    res["accuracy_without_context"] = float(y_te.mean())
    bands = [band_of(counts[q["fact"]]) for q in te]
    res["by_frequency"] = [
        {
            "band": b,
            "n": bands.count(b),
            "mean_p_ik": mean_where(p_te, bands, b),
            "accuracy": mean_where(y_te.mean(1), bands, b),
            "accuracy_with_context": mean_where(y_ctx.mean(1), bands, b),
        }
        for b in [band_name(lo, hi) for lo, hi in BANDS]
        if b in bands
    ]
    return res


# -----------------------------------------------------------------------------
# Figures and the summary


def plots(res, out_dir):
    plt = pyplot("reliability.png")
    if plt is None:
        return []
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    base = [
        ("multiple choice", res["mc"]["table"]),
        ("none of the above", res["mc_none_of_above"]["table"]),
        ("True/False", res["true_false"]["table"]),
    ]
    # an empty panel when the policy was skipped
    r = res["rlhf"] or {"table_t1": [], "table_best_t": [], "best_temperature": "?"}
    rlhf = [("T = 1", r["table_t1"]), (f"T = {r['best_temperature']}", r["table_best_t"])]
    pik = [
        ("held-out facts", res["p_ik"]["table_in"]),
        ("arithmetic (OOD)", res["p_ik"]["table_ood"]),
    ]
    panels = [("base model", base), ("RLHF policy", rlhf), ("P(IK)", pik)]
    for ax, (title, curves) in zip(axes[:3], panels, strict=True):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for name, table in curves:
            predicted = [t["predicted"] for t in table]
            ax.plot(predicted, [t["observed"] for t in table], "o-", label=name)
        ax.set(
            title=title,
            xlabel="predicted probability",
            ylabel="frequency correct",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend(fontsize=8)
    bf = res["p_ik"]["by_frequency"]
    x = np.arange(len(bf))
    axes[3].bar(x - 0.2, [b["mean_p_ik"] for b in bf], 0.4, label="mean P(IK)")
    axes[3].bar(x + 0.2, [b["accuracy"] for b in bf], 0.4, label="accuracy (T = 1)")
    axes[3].set(
        xticks=x,
        xticklabels=[b["band"] for b in bf],
        xlabel="statements in the pretraining corpus",
        title="P(IK) by fact frequency (held-out facts)",
        ylim=(0, 1),
    )
    axes[3].legend(fontsize=8)
    return [save_figure(fig, os.path.join(out_dir, "reliability.png"))]


def fmt(x):
    """Three decimals, or n/a for None (an AUROC with only right or only wrong samples)."""
    return "n/a" if x is None else f"{x:.3f}"


def summary(res, log):
    log("\n" + "=" * 78 + "\nKadavath et al. 2022 on the assistant world\n" + "=" * 78)
    log(
        f"{'format':<26}{'n':>6}{'accuracy':>10}{'ECE [95% CI]':>22}"
        f"{'floor':>7}{'RMS':>7}{'Brier':>7}"
    )
    for k in ("mc", "mc_none_of_above", "true_false", "mc_answer_scoring"):
        m = res[k]
        ci = f"[{m['ece_ci'][0]:.3f}, {m['ece_ci'][1]:.3f}]"
        log(
            f"{k:<26}{m['n']:>6}{m['accuracy']:>10.3f}{m['ece']:>8.3f} {ci}"
            f"{m['ece_floor']:>7.3f}{m['rms_ce']:>7.3f}{m['brier']:>7.3f}"
        )
    r = res["rlhf"]
    if r:
        log(
            f"RLHF policy: ECE {r['ece_t1']:.3f} at T=1 (accuracy {r['accuracy']:.3f}); at its "
            f"best T = {r['best_temperature']} (the paper: 2.5), chosen on half the questions, "
            f"{r['ece_best_t']:.3f} on the other half ({r['ece_t1_second_half']:.3f} at T=1)"
        )
    else:
        log(f"RLHF policy: skipped ({res['rlhf_skipped']})")
    p = res["p_true"]
    log(
        f"P(True): AUROC {fmt(p['auroc'])} +- {fmt(p['auroc_se'])}, with brainstorming "
        f"{fmt(p['auroc_brainstorm'])} +- {fmt(p['auroc_brainstorm_se'])} (paired difference "
        f"SE {fmt(p['auroc_brainstorm_minus_plain_se'])}); accuracy of all samples "
        f"{p['accuracy_all']:.3f}, of those kept (P(True) >= {p['threshold']:.2f}, "
        f"{p['kept']}/{p['n']}) {fmt(p['accuracy_kept'])}"
    )
    k = res["p_ik"]
    log(
        f"P(IK) ({k['n_samples']} samples per question): AUROC held-out facts "
        f"{fmt(k['auroc_in'])} +- {fmt(k['auroc_in_se'])} (difficulty-only baseline "
        f"{fmt(k['auroc_difficulty_baseline'])}, paired difference SE "
        f"{fmt(k['auroc_in_minus_baseline_se'])}), arithmetic (OOD) {fmt(k['auroc_ood'])} "
        f"(baseline {fmt(k['auroc_difficulty_baseline_ood'])}), facts from an arithmetic head "
        f"{fmt(k['auroc_ood_reverse'])}; ECE {k['ece_in']:.3f} / {k['ece_ood']:.3f}"
    )
    log(
        f"P(IK) with the fact in context {k['mean_with_context']:.3f} vs without "
        f"{k['mean_without_context']:.3f} (accuracy {k['accuracy_with_context']:.3f} vs "
        f"{k['accuracy_without_context']:.3f})"
    )
    bands = [
        f"{b['band']}: P(IK) {b['mean_p_ik']:.2f}, accuracy {b['accuracy']:.2f} (n={b['n']})"
        for b in k["by_frequency"]
    ]
    log("by frequency band: " + "; ".join(bands))


def main(cfg):
    t0 = time.time()
    device = get_device(cfg.device)
    log = printer(cfg.quiet)
    init = cfg.init or ensure_checkpoint(
        *handoff("pretrain", cfg.preset), "the pretrained LM", cfg.quiet
    )
    model, ck = load_checkpoint(init, device)
    out_dir = run_dir(cfg.out_dir, cfg.preset)
    enc = get_tokenizer(ck["tokenizer"])
    # each fact's count of statements in the pretraining corpus, counted when it was prepared
    counts = prepare("world", ck["tokenizer"], verbose=False)[1]["fact_counts"]
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    log(f"calibrate: {init} ({model.num_params() / 1e6:.2f}M) on {device}")
    res, mc_logits, answers, mc = multiple_choice(model, enc, cfg, rng, counts)
    eces = {k: res[k]["ece"] for k in ("mc", "mc_none_of_above", "true_false")}
    log_metrics(out_dir, {"section": "mc", **eces})
    res["rlhf"], why = rlhf_calibration(cfg, device, ck["tokenizer"], mc, mc_logits, answers, rng)
    if why:
        res["rlhf_skipped"] = why
    res["p_true"] = p_true(model, enc, cfg, gen, rng)
    log_metrics(out_dir, {"section": "p_true", "auroc": res["p_true"]["auroc"]})
    res["p_ik"] = p_ik(model, cfg, device, init, enc, gen, rng, out_dir, counts)
    res["seconds"] = round(time.time() - t0, 1)
    res["figures"] = plots(res, out_dir)
    # the sections keep their numbers (intervals in sibling keys *_ci, by_frequency); tables,
    # curves and examples move to "details"
    details = {}
    for section, v in res.items():
        if isinstance(v, dict):
            lists = [n for n in v if isinstance(v[n], list)]
            moved = [n for n in lists if n != "by_frequency" and not n.endswith("_ci")]
            details[section] = {n: v.pop(n) for n in moved}
    res["details"] = details
    write_json(os.path.join(out_dir, "results.json"), res)
    summary(res, print)  # the summary, --quiet or not
    print(f"results in {out_dir}/ ({res['seconds']:.0f}s)")
    return res


if __name__ == "__main__":
    cli(main, lambda argv: parse_config(Config, PRESETS, __doc__, argv))
