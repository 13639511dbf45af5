"""
train_pm.py -- preference models (Bai et al. 2022, "Training a Helpful and Harmless
Assistant with RLHF", Sec. 3 and 4.1, App. A).

A preference model (PM) is the language model with a scalar head, read at an
end-of-context token appended to the transcript. Trained on comparisons with
    loss = log(1 + exp(r_rejected - r_chosen))          (hard labels)
    loss = cross-entropy(sigmoid(r_chosen - r_rejected), label)   (soft labels, e.g. AI feedback)
The paper finds PMs are close to calibrated: P(chosen > rejected) = sigmoid(r_c - r_r)
matches the observed frequency (its Fig. 10). We report accuracy (beside the "longer reply
wins" baseline, so that what the PM learned beyond length shows), mean margin, a
reliability table and ECE on held-out comparisons; on the assistant world also accuracy
against the gold labels (per helpfulness / harmlessness axis), on near-miss twins of whole
scenarios held out of training, and on explained refusals against deflections.

Run (CPU, 2 cores; builds out/train_lm/pretrain.pt first if missing):
    python train_pm.py                                # assistant world -> out/train_pm/pm.pt
    python train_pm.py --data ../shared/data/hh-rlhf  # real HH-RLHF -> out/train_pm/hh-rlhf/pm.pt
        # (builds an LM on the PM's training split first)
    python train_pm.py --eval FILE --init out/train_pm/pm.pt
        # any HH-format jsonl(.gz) -> out/train_pm/eval/...
One GPU:
    python train_pm.py --preset gpu  # -> out/train_pm/gpu/pm.pt
        # from out/train_lm/gpu/pretrain.pt (built if missing)

What to look at: held-out accuracy against the simulated (noisy) labels, which bounds it,
against the gold labels, and on near-miss twins of held-out objects per side (beside the
keyword rule of data/skills.py on the same requests, and the twins of training objects:
what the PM learned beyond words and beyond memory); calibration.png, the reliability
diagram (the paper's Fig. 10). Each run writes results.json (accuracy,
longer_reply_accuracy, ece, gold_accuracy, twin_accuracy(_harmful, _benign, _train),
keyword_baseline_twin_accuracy, deflection_accuracy, ...),
metrics.jsonl, the figure and pm.pt into its folder; the measured numbers are on the docs
page docs/hh_rlhf.md.
"""

import hashlib
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data import corpora, skills, world
from data.calibration import reliability
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
    left_pad,
    load_checkpoint,
    log_metrics,
    lr_at,
    optimizer_step,
    parse_config,
    printer,
    progress,
    pyplot,
    run_dir,
    run_path,
    save_checkpoint,
    save_figure,
    score_sequences,
    write_json,
)


@dataclass
class Config:
    # settings for a scale, combined with '+'; the LM is built with the same preset
    preset: str = "cpu"
    # "world" (simulated comparisons) or HH-RLHF jsonl(.gz) file or directory
    data: str = "world"
    # LM checkpoint to start from (default: built by train_lm.py on the same data)
    init: str = ""
    # with --init PM.pt: only evaluate that PM on this comparisons file
    eval: str = ""
    # root folder; a run goes to <out_dir>[/<data name>][/<preset>], --eval to <out_dir>/eval/...
    out_dir: str = "out/train_pm"
    # assistant-world comparisons for training
    n_train: int = 3600
    # assistant-world comparisons for evaluation (held-out requests)
    n_test: int = 1000
    # cap on real-data training pairs (0: all)
    max_pairs: int = 0
    # real data: pairs whose prompt hash % test_every == 0 are the test split
    test_every: int = 10
    # comparisons per step
    batch_size: int = 32
    # passes over the training comparisons: the second buys the twin contrasts (held-out
    # twins 0.61 -> 0.72 on world version 10; docs/hh_rlhf.md), at some calibration
    epochs: int = 2
    # peak learning rate
    lr: float = 1e-3
    # steps of linear warm-up before the cosine decay (0: none)
    warmup: int = 10
    # AdamW weight decay on matrices
    weight_decay: float = 0.0
    # clip the gradient norm to this (0: no clipping)
    grad_clip: float = 1.0
    # steps between evaluations on 256 test pairs
    eval_interval: int = 50
    # random seed (data order)
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
    "gpu": {"n_train": 40000, "n_test": 4000, "batch_size": 64, "epochs": 1, "lr": 2e-4},
    "tiny": {"n_train": 64, "n_test": 64, "batch_size": 16, "eval_interval": 2},
}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, __doc__, argv)


# -----------------------------------------------------------------------------
# Data


def world_pairs(cfg, out_dir):
    """Simulated human comparisons: training pairs from training requests, test pairs from
    held-out requests. Written as HH jsonl so that `--eval` and other tools can read them."""
    train = corpora.comparison_pairs(cfg.n_train, seed=0)
    test = corpora.comparison_pairs(cfg.n_test, seed=1, heldout=True)
    write_jsonl(os.path.join(out_dir, "world_train.jsonl"), train)
    write_jsonl(os.path.join(out_dir, "world_test.jsonl"), test)
    train = [{**p, "label": 1.0, "file": "world_train"} for p in train]
    test = [{**p, "label": 1.0, "file": "world_test"} for p in test]
    return train, test


def real_pairs(cfg):
    """HH-RLHF files, split by prompt: a pair is in the test split when the MD5 of its prompt
    is 0 mod test_every (10% by default), so no prompt is in both splits."""
    pairs, _ = load_comparisons(cfg.data, verbose=not cfg.quiet)
    train, test = [], []
    for p in pairs:
        md5 = int(hashlib.md5(p["prompt"].encode()).hexdigest(), 16)
        if md5 % cfg.test_every == 0:
            test.append(p)
        else:
            train.append(p)
    if cfg.max_pairs:
        train = random.Random(cfg.seed).sample(train, min(cfg.max_pairs, len(train)))
    return train, test


def twin_pairs(heldout=True):
    """Near-miss twin probe, on the held-out objects (whole scenarios the PM never saw; or on
    the training objects): for every harmful request and its benign twin, compliance vs an
    explained refusal. Gold prefers the refusal for the harmful request and the compliance
    for its twin; a PM that keys on words (or looks up known harmful phrases) gets both right
    only where the words happen to tell (the keyword rule: 0.81 held out). Plus the
    deflection probe: for each harmful request, an explained refusal vs a how-to for another,
    benign object (gold: the refusal)."""
    rng = random.Random(0)
    out = []
    for harmful in (True, False):
        for req in corpora.harm_requests(harmful, heldout=heldout):
            task = world.parse_request(req)
            comply = world.respond(task, "helpful", rng)
            refuse = world.explained_refusal(task)
            good, bad = (refuse, comply) if harmful else (comply, refuse)
            out.append(
                {
                    "chosen": corpora.dialogue([(req, good)]),
                    "rejected": corpora.dialogue([(req, bad)]),
                    "label": 1.0,
                    "probe": "harmful" if harmful else "benign",
                    # the keyword rule (data/skills.py) refuses when the object has a word of
                    # a training harmful object and of no training twin
                    "keyword_right": skills.keyword_flag(task["object"]) == harmful,
                }
            )
            if harmful:
                deflect = world.compliance_text(task, rng, obj=world.TWIN_OF[task["object"]])
                out.append(
                    {
                        "chosen": corpora.dialogue([(req, refuse)]),
                        "rejected": corpora.dialogue([(req, deflect)]),
                        "label": 1.0,
                        "probe": "deflection",
                    }
                )
    return out


def tokenize_pairs(enc, pairs, max_len):
    return [
        (
            encode_transcript(enc, p["chosen"], max_len),
            encode_transcript(enc, p["rejected"], max_len),
        )
        for p in pairs
    ]


# -----------------------------------------------------------------------------
# Loss and metrics


def pm_loss(r_chosen, r_rejected, label=None):
    """Bradley-Terry loss. With label=None (hard labels): log(1 + exp(r_r - r_c)), written as
    -logsigmoid(r_c - r_r) for numerical stability. With soft labels y = P(chosen better):
    binary cross-entropy between y and sigmoid(r_c - r_r)."""
    d = r_chosen - r_rejected
    if label is None:
        return -F.logsigmoid(d).mean()
    return -(label * F.logsigmoid(d) + (1 - label) * F.logsigmoid(-d)).mean()


def pair_scores(model, tok_pairs, batch_size=64):
    """-> (r_chosen, r_rejected) as numpy arrays, the PM read at the end-of-context token."""
    seqs = [c for c, _ in tok_pairs] + [r for _, r in tok_pairs]
    s = score_sequences(model, seqs, batch_size).cpu().numpy()
    return s[: len(tok_pairs)], s[len(tok_pairs) :]


def calibration(r_c, r_r, labels, n_bins=10):
    """Reliability table and expected calibration error of P(chosen > rejected) =
    sigmoid(r_c - r_r), in equal-width bins (data.calibration). Each pair is counted in both
    orientations, (p, y) and (1 - p, 1 - y), so the table does not depend on which response
    happened to be listed first."""
    p = 1 / (1 + np.exp(-(r_c - r_r)))
    m = reliability(np.concatenate([p, 1 - p]), np.concatenate([labels, 1 - labels]), n_bins)
    return m["table"], m["ece"]


def accuracy(r_c, r_r):
    return float(np.mean((r_c > r_r) + 0.5 * (r_c == r_r)))


def evaluate(model, tok_pairs, pairs):
    r_c, r_r = pair_scores(model, tok_pairs)
    table, ece = calibration(r_c, r_r, np.array([p.get("label", 1.0) for p in pairs]))
    # the baseline a PM must beat to have learned more than length: "the longer reply wins"
    # (characters of the final reply; equal lengths count half)
    l_c = np.array([len(corpora.split_transcript(p["chosen"])[1]) for p in pairs], float)
    l_r = np.array([len(corpora.split_transcript(p["rejected"])[1]) for p in pairs], float)
    res = {
        "accuracy": accuracy(r_c, r_r),
        "longer_reply_accuracy": accuracy(l_c, l_r),
        "mean_margin": float(np.mean(r_c - r_r)),
        "ece": ece,
        "calibration": table,
        "n_pairs": len(pairs),
    }
    files = np.array([p.get("file", "") for p in pairs])
    res["accuracy_per_file"] = {}
    res["longer_reply_accuracy_per_file"] = {}
    for f in sorted({p.get("file", "") for p in pairs}):
        res["accuracy_per_file"][f] = accuracy(r_c[files == f], r_r[files == f])
        res["longer_reply_accuracy_per_file"][f] = accuracy(l_c[files == f], l_r[files == f])
    # world comparisons: their requests parse, so gold can judge them
    if any(world.parse_request(corpora.last_human(p["chosen"])) for p in pairs[:50]):
        res.update(gold_metrics(pairs, r_c, r_r))
    return res


def gold_metrics(pairs, r_c, r_r):
    """Accuracy against gold preferences on each pair's axis (ties in gold skipped)."""
    hits = {"helpful": [], "harmless": []}
    for p, a, b in zip(pairs, r_c, r_r, strict=True):
        prompt, rc = corpora.split_transcript(p["chosen"])
        rr = corpora.split_transcript(p["rejected"])[1]
        req = corpora.last_human(prompt)
        task = world.parse_request(req)
        if task is None:
            continue
        # the pair's axis, or else harmlessness for harmful requests, helpfulness otherwise
        axis = p.get("axis")
        if not axis:
            axis = "harmless" if task["kind"] == "harm" and task["harmful"] else "helpful"
        k = 0 if axis == "helpful" else 1  # world.gold -> (helpfulness, harmlessness)
        gc, gr = world.gold(req, rc)[k], world.gold(req, rr)[k]
        if gc != gr:
            hits[axis].append(float((a > b) == (gc > gr)))
    both = hits["helpful"] + hits["harmless"]
    return {
        "gold_accuracy": mean_or_none(both),
        "gold_accuracy_helpful": mean_or_none(hits["helpful"]),
        "gold_accuracy_harmless": mean_or_none(hits["harmless"]),
        "gold_pairs": len(both),
    }


def mean_or_none(x):
    return float(np.mean(x)) if x else None


def plot_calibration(table, path, title):
    plt = pyplot(os.path.basename(path))
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot([t["predicted"] for t in table], [t["observed"] for t in table], "o-", label="PM")
    ax.set(xlabel="predicted P(A preferred)", ylabel="observed frequency A preferred")
    ax.set_title(title, fontsize=9)
    ax.legend()
    return save_figure(fig, path)


# -----------------------------------------------------------------------------


def default_init(cfg, train, out_dir):
    """The LM a PM starts from; train_lm.py builds it when missing (as ppo.py does). On real
    data the LM sees only the PM's training split (written out as jsonl), so no test-split
    reply is ever in the LM's training text."""
    if cfg.data == "world":
        return ensure_checkpoint(
            *handoff("pretrain", cfg.preset), "the language model the PM starts from", cfg.quiet
        )
    # the file's name names the LM's tokenizer
    src = os.path.join(out_dir, f"{data_name(cfg.data)}_pm_train.jsonl")
    lm_dir = os.path.join(out_dir, "lm")
    ckpt = os.path.join(run_path(lm_dir, data_name(src), cfg.preset), "pretrain.pt")
    if not os.path.exists(ckpt):
        write_jsonl(src, [{"chosen": p["chosen"], "rejected": p["rejected"]} for p in train])
    argv = ["train_lm.py", "--preset", cfg.preset, "--data", src, "--out_dir", lm_dir]
    return ensure_checkpoint(
        ckpt, argv, "the language model the PM starts from, on the PM's training split", cfg.quiet
    )


def last_two_parts(path):
    """A path's last two components joined by '-', up to the first dot: a folder name."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)[-2:]
    return "-".join(parts).split(".")[0]


def evaluate_file(cfg, device):
    """--eval: score an existing PM on any HH-format comparisons file."""
    if not cfg.init:
        raise SystemExit("--eval needs --init PM.pt (a checkpoint written by train_pm.py)")
    model, ck = load_checkpoint(cfg.init, device)
    if model.scalar is None:
        raise SystemExit(f"{cfg.init}: not a preference model (no scalar head)")
    pairs, _ = load_comparisons(cfg.eval, verbose=not cfg.quiet)
    tok_pairs = tokenize_pairs(get_tokenizer(ck["tokenizer"]), pairs, model.cfg.block_size)
    res = evaluate(model, tok_pairs, pairs)
    # one folder per (PM, file), e.g. eval/hh-rlhf-gpu/harmless-base-test for
    # out/train_pm/hh-rlhf/gpu/pm.pt
    pm_name = last_two_parts(os.path.dirname(cfg.init))
    folder = run_dir(cfg.out_dir, "eval", pm_name, last_two_parts(cfg.eval))
    write_json(
        os.path.join(folder, "results.json"), {"file": cfg.eval, "checkpoint": cfg.init, **res}
    )
    print(f"accuracy {res['accuracy']:.4f} on {res['n_pairs']} pairs")
    return res


def main(cfg):
    t0 = time.time()
    device = get_device(cfg.device)
    if cfg.eval:
        return evaluate_file(cfg, device)
    log = printer(cfg.quiet)
    real = real_pairs(cfg) if cfg.data != "world" else None  # bad data: stopped, no folder
    out_dir = run_dir(cfg.out_dir, data_name(cfg.data), cfg.preset)
    torch.manual_seed(cfg.seed)
    train, test = real or world_pairs(cfg, out_dir)
    init = cfg.init or default_init(cfg, train, out_dir)
    # the PM is the LM plus a fresh scalar head (Bai et al. 2022, Sec. 4.1)
    model, ck = load_checkpoint(init, device, scalar_head=True, dropout=0.0)
    enc = get_tokenizer(ck["tokenizer"])
    tr_tok = tokenize_pairs(enc, train, model.cfg.block_size)
    te_tok = tokenize_pairs(enc, test, model.cfg.block_size)
    soft = any(p["label"] != 1.0 for p in train)
    log(
        f"PM from {init}: {model.num_params() / 1e6:.2f}M parameters; {len(train)} training "
        f"pairs, {len(test)} test pairs{' (soft labels)' if soft else ''}"
    )

    # ---- training: chosen and rejected of each pair go through the model in one batch
    opt = configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    rng, batches = random.Random(cfg.seed), []
    for _ in range(cfg.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        batches += [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    steps = len(batches)
    bar = progress(batches, "PM", cfg.quiet)
    for step, ids in enumerate(bar, 1):
        model.train()
        # the chosen replies, then the rejected ones
        idx, pad = left_pad([tr_tok[j][0] for j in ids] + [tr_tok[j][1] for j in ids], 0, device)
        with autocast(device.type):
            s = model.score(idx, pad)[:, -1]
        label = None
        if soft:
            label = torch.tensor([train[j]["label"] for j in ids], device=device)
        loss = pm_loss(s[: len(ids)], s[len(ids) :], label)
        loss.backward()
        lr = lr_at(step - 1, steps, cfg.lr, cfg.warmup)
        optimizer_step(opt, model, loss, cfg.grad_clip, step, lr)
        rec = {
            "step": step,
            "loss": loss.item(),
            "train_accuracy": float((s[: len(ids)] > s[len(ids) :]).float().mean()),
            "lr": lr,
        }
        if step % cfg.eval_interval == 0 or step == steps:
            m = evaluate(model, te_tok[:256], test[:256])
            rec.update({"test_accuracy": m["accuracy"], "test_ece": m["ece"]})
            bar.set_postfix(
                loss=f"{loss.item():.3f}", test_acc=f"{m['accuracy']:.3f}", refresh=False
            )
        log_metrics(out_dir, rec)
    ckpt = os.path.join(out_dir, "pm.pt")
    save_checkpoint(ckpt, model, ck["tokenizer"], init=init, data=cfg.data)

    # ---- held-out evaluation: accuracy, calibration, gold, twins
    res = evaluate(model, te_tok, test)
    res.update(
        {
            "train_pairs": len(train),
            "init": init,
            "data": cfg.data,
            "checkpoint": ckpt,
            "params": model.num_params(non_embedding=False),
            "device": str(device),
        }
    )
    # world comparisons (simulated, or AI-labelled by critique_revise.py): the probes
    if res.get("gold_accuracy") is not None:
        tw = twin_pairs()
        tc, tr = pair_scores(model, tokenize_pairs(enc, tw, model.cfg.block_size))
        probe = np.array([p["probe"] for p in tw])
        twin = probe != "deflection"
        res["twin_accuracy"] = accuracy(tc[twin], tr[twin])
        res["twin_pairs"] = int(twin.sum())
        for k in ("harmful", "benign"):
            res[f"twin_accuracy_{k}"] = accuracy(tc[probe == k], tr[probe == k])
        deflection = probe == "deflection"
        res["deflection_accuracy"] = accuracy(tc[deflection], tr[deflection])
        res["keyword_baseline_twin_accuracy"] = float(
            np.mean([p["keyword_right"] for p in tw if p["probe"] != "deflection"])
        )
        tt = [p for p in twin_pairs(heldout=False) if p["probe"] != "deflection"]
        res["twin_accuracy_train"] = accuracy(
            *pair_scores(model, tokenize_pairs(enc, tt, model.cfg.block_size))
        )
    res["seconds"] = time.time() - t0
    write_json(os.path.join(out_dir, "results.json"), res)
    fig = plot_calibration(
        res["calibration"],
        os.path.join(out_dir, "calibration.png"),
        f"PM calibration on {len(test)} held-out pairs (ECE {res['ece']:.3f})",
    )
    if "twin_accuracy" in res:
        probes = (
            f"gold {res['gold_accuracy']:.3f}, near-miss twins on held-out objects "
            f"{res['twin_accuracy']:.3f} (harmful {res['twin_accuracy_harmful']:.3f}, benign "
            f"{res['twin_accuracy_benign']:.3f}; keyword rule "
            f"{res['keyword_baseline_twin_accuracy']:.3f}), on training objects "
            f"{res['twin_accuracy_train']:.3f}, refusal over deflection "
            f"{res['deflection_accuracy']:.3f}"
        )
    else:
        probes = ", ".join(
            f"{os.path.basename(os.path.dirname(f))} {a:.3f} (longer wins "
            f"{res['longer_reply_accuracy_per_file'][f]:.3f})"
            for f, a in res["accuracy_per_file"].items()
        )
    print(  # the summary, --quiet or not
        f"\nheld-out: accuracy {res['accuracy']:.3f} on {len(test)} pairs (longer reply wins: "
        f"{res['longer_reply_accuracy']:.3f}), ECE {res['ece']:.3f}; {probes}"
    )
    figure = ", " + os.path.basename(fig) if fig else ""
    print(f"wrote {out_dir}/ (results.json, pm.pt{figure}) in {res['seconds']:.0f}s")
    return res


if __name__ == "__main__":
    cli(main, parse_args)
