"""
train_pm.py -- preference models (Bai et al. 2022, "Training a Helpful and Harmless
Assistant with RLHF", Sec. 3 and 4.1, App. A).

A preference model (PM) is the language model with a scalar head, read at an
end-of-context token appended to the transcript. Trained on comparisons with
    loss = log(1 + exp(r_rejected - r_chosen))          (hard labels)
    loss = cross-entropy(sigmoid(r_chosen - r_rejected), label)   (soft labels, e.g. AI feedback)
The paper finds PMs are close to calibrated: P(chosen > rejected) = sigmoid(r_c - r_r)
matches the observed frequency (its Fig. 10). We report accuracy, mean margin, a
reliability table and ECE on held-out comparisons; on the assistant world also accuracy
against the gold labels (per helpfulness / harmlessness axis) and on near-miss twins.

Run (CPU, 2 cores; builds out/train_lm/pretrain.pt first if missing, ~3 min):
    python train_pm.py                                   # assistant world, ~1.5 min -> out/train_pm/pm.pt
    python train_pm.py --data ../shared/data/hh-rlhf     # real HH-RLHF: builds an LM on its training split first
                                                         # -> out/train_pm/pm_hh-rlhf.pt
    python train_pm.py --eval FILE --init out/train_pm/pm.pt   # any HH-format jsonl(.gz)
One GPU:
    python train_pm.py --preset gpu --init out/train_lm/pretrain.pt   # after train_lm.py --preset gpu

Expect (assistant world, CPU): held-out accuracy ~0.8 against the simulated (noisy) human
labels, higher against gold, twin accuracy well above 0.5 (no keyword rule gets there), and
ECE of a few percent. On real HH-RLHF with a 1M-parameter model: accuracy a little above
chance (the paper's 52B PM reaches ~72%); see README for the measured numbers.
Writes out/train_pm/results.json (accuracy, ece, gold_accuracy, twin_accuracy, ...),
metrics.jsonl and calibration.png.
"""

import hashlib
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
from model import (autocast, configure_optimizer, left_pad, load_checkpoint, parse_config, pyplot, run_prerequisite,
                   save_checkpoint)


@dataclass
class Config:
    data: str = "world"      # "world" (simulated comparisons) or HH jsonl(.gz) file/directory
    init: str = ""           # LM checkpoint to start from (default: built by train_lm.py on the same data)
    eval: str = ""           # with --init PM.pt: evaluate on this comparisons file and exit
    out_dir: str = "out/train_pm"
    n_train: int = 4000      # assistant-world comparisons for training
    n_test: int = 1000       # ... and for evaluation (held-out requests)
    max_pairs: int = 0       # cap on real-data training pairs (0: all)
    test_every: int = 10     # real data: pairs whose prompt hash % test_every == 0 are the test split
    batch_size: int = 32     # pairs per step
    epochs: int = 2
    lr: float = 5e-4
    warmup_iters: int = 10
    weight_decay: float = 0.0
    eval_interval: int = 50
    lm_preset: str = "cpu"   # preset for train_lm.py when the LM must be built
    seed: int = 1337
    device: str = "auto"
    quiet: bool = False


PRESETS = {"cpu": {}, "gpu": {"n_train": 40000, "n_test": 4000, "batch_size": 64, "epochs": 1, "lr": 2e-4,
                             "lm_preset": "gpu"},
           "tiny": {"n_train": 64, "n_test": 64, "batch_size": 16, "eval_interval": 2, "lm_preset": "tiny"}}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, "Preference models (see the top of train_pm.py)", argv)[0]


# -----------------------------------------------------------------------------
# Data

def write_jsonl(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def world_pairs(cfg):
    """Simulated human comparisons: training pairs from training requests, test pairs from
    held-out requests. Written as HH jsonl so `--eval` and other tools can read them."""
    train = world.comparison_pairs(cfg.n_train, seed=0)
    test = world.comparison_pairs(cfg.n_test, seed=1, heldout=True)
    for name, ps in (("train", train), ("test", test)):
        write_jsonl(os.path.join(cfg.out_dir, f"world_{name}.jsonl"), ps)
    as_pairs = lambda ps, name: [{**p, "label": 1.0, "file": name} for p in ps]
    return as_pairs(train, "world_train"), as_pairs(test, "world_test")


def real_pairs(cfg):
    """HH-RLHF files, split by prompt: a pair is in the test split when the MD5 of its prompt
    is 0 mod test_every (10% by default), so no prompt is in both splits."""
    pairs, _ = load_comparisons(cfg.data, verbose=not cfg.quiet)
    is_test = lambda p: int(hashlib.md5(p["prompt"].encode()).hexdigest(), 16) % cfg.test_every == 0
    train, test = [p for p in pairs if not is_test(p)], [p for p in pairs if is_test(p)]
    if cfg.max_pairs:
        train = random.Random(cfg.seed).sample(train, min(cfg.max_pairs, len(train)))
    return train, test


def twin_pairs():
    """Near-miss twin probe: for every held-out harmful request and benign twin, compliance
    vs an explained refusal. Gold prefers the refusal for the harmful request and the
    compliance for its twin; a PM that keys on words cannot get both right."""
    rng = random.Random(0)
    out = []
    for harmful in (True, False):
        for req in world.harm_requests(harmful):
            if not world.is_heldout(req):
                continue
            task = world.parse_request(req)
            comply, refuse = world.respond(task, "helpful", rng), world.explained_refusal(task)
            good, bad = (refuse, comply) if harmful else (comply, refuse)
            out.append({"chosen": world.dialogue([(req, good)]), "rejected": world.dialogue([(req, bad)]),
                        "label": 1.0, "harmful": harmful})
    return out


def tokenize_pairs(enc, pairs, max_len):
    return [(encode_transcript(enc, p["chosen"], max_len), encode_transcript(enc, p["rejected"], max_len)) for p in pairs]


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


def pair_scores(model, tok_pairs, batch_size, device):
    """-> (r_chosen, r_rejected) as numpy arrays; chosen and rejected go through one batch."""
    model.eval()
    rc, rr = [], []
    with torch.no_grad():
        for i in range(0, len(tok_pairs), batch_size):
            chunk = tok_pairs[i:i + batch_size]
            idx, pad = left_pad([c for c, _ in chunk] + [r for _, r in chunk], 0, device)
            with autocast(device.type):
                s = model.score(idx, pad)[:, -1]
            rc.append(s[:len(chunk)].cpu())
            rr.append(s[len(chunk):].cpu())
    model.train()
    return torch.cat(rc).numpy(), torch.cat(rr).numpy()


def calibration(r_c, r_r, labels, n_bins=10):
    """Reliability table and expected calibration error of P(chosen > rejected) =
    sigmoid(r_c - r_r). Each pair is counted in both orientations, (p, y) and (1 - p, 1 - y),
    so the table does not depend on which response happened to be listed first."""
    p = 1 / (1 + np.exp(-(r_c - r_r)))
    probs, ys = np.concatenate([p, 1 - p]), np.concatenate([labels, 1 - labels])
    table, ece = [], 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = (probs >= lo) & ((probs < hi) | (b == n_bins - 1))
        if sel.any():
            conf, freq = float(probs[sel].mean()), float(ys[sel].mean())
            table.append({"bin": [lo, hi], "n": int(sel.sum()), "predicted": conf, "observed": freq})
            ece += sel.sum() / len(probs) * abs(conf - freq)
    return table, float(ece)


def accuracy(r_c, r_r):
    return float(np.mean((r_c > r_r) + 0.5 * (r_c == r_r)))


def evaluate(model, tok_pairs, pairs, batch_size, device):
    r_c, r_r = pair_scores(model, tok_pairs, batch_size, device)
    labels = np.array([p.get("label", 1.0) for p in pairs])
    table, ece = calibration(r_c, r_r, labels)
    return {"accuracy": accuracy(r_c, r_r), "mean_margin": float(np.mean(r_c - r_r)), "ece": ece,
            "calibration": table, "n_pairs": len(pairs)}, r_c, r_r


def gold_metrics(pairs, r_c, r_r):
    """Accuracy against gold preferences on each pair's axis (ties in gold skipped)."""
    hits = {"helpful": [], "harmless": []}
    for p, a, b in zip(pairs, r_c, r_r):
        prompt, rc = world.split_transcript(p["chosen"])
        _, rr = world.split_transcript(p["rejected"])
        req = world.last_human(prompt)
        task = world.parse_request(req)
        if task is None:
            continue
        axis = p.get("axis") or ("harmless" if task["kind"] == "harm" and task["harmful"] else "helpful")
        k = 0 if axis == "helpful" else 1
        gc, gr = world.gold(req, rc)[k], world.gold(req, rr)[k]
        if gc != gr:
            hits[axis].append(float((a > b) == (gc > gr)))
    allh = hits["helpful"] + hits["harmless"]
    return {"gold_accuracy": float(np.mean(allh)) if allh else None,
            "gold_accuracy_helpful": float(np.mean(hits["helpful"])) if hits["helpful"] else None,
            "gold_accuracy_harmless": float(np.mean(hits["harmless"])) if hits["harmless"] else None,
            "gold_pairs": len(allh)}


def plot_calibration(table, path, title):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot([t["predicted"] for t in table], [t["observed"] for t in table], "o-", label="PM")
    ax.set_xlabel("predicted P(A preferred)"), ax.set_ylabel("observed frequency A preferred")
    ax.set_title(title, fontsize=9), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -----------------------------------------------------------------------------

def default_init(cfg, train):
    """The LM a PM starts from; train_lm.py builds it when missing (as ppo.py does). On real
    data the LM sees only the PM's training split (written out as jsonl), so no test-split
    reply is ever in the LM's training text."""
    if cfg.data == "world":
        path, argv = "out/train_lm/pretrain.pt", ["--preset", cfg.lm_preset]
    else:
        name = os.path.basename(os.path.normpath(cfg.data)).split(".")[0]
        d = os.path.join(cfg.out_dir, f"lm_{name}")
        src = os.path.join(d, f"{name}_pm_train.jsonl")
        if not os.path.exists(os.path.join(d, "pretrain.pt")):
            os.makedirs(d, exist_ok=True)
            write_jsonl(src, [{"chosen": p["chosen"], "rejected": p["rejected"]} for p in train])
        path, argv = os.path.join(d, "pretrain.pt"), ["--preset", cfg.lm_preset, "--data", src, "--out_dir", d]
    run_prerequisite(path, "train_lm.py", argv, "the language model the PM starts from",
                     "~3 minutes on 2 CPU cores" if cfg.lm_preset == "cpu" else "")
    return path


def run_eval_only(cfg, device):
    if not cfg.init:
        raise SystemExit("--eval needs --init PM.pt (a checkpoint written by train_pm.py)")
    model, ck = load_checkpoint(cfg.init, device)
    if model.scalar is None:
        raise SystemExit(f"{cfg.init}: not a preference model (no scalar head)")
    enc = get_tokenizer(ck["tokenizer"])
    pairs, _ = load_comparisons(cfg.eval, verbose=not cfg.quiet)
    m, r_c, r_r = evaluate(model, tokenize_pairs(enc, pairs, model.cfg.block_size), pairs, cfg.batch_size, device)
    if any(world.parse_request(world.last_human(world.split_transcript(p["chosen"])[0])) for p in pairs[:50]):
        m.update(gold_metrics(pairs, r_c, r_r))
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "eval_results.json"), "w") as f:
        json.dump({"file": cfg.eval, "checkpoint": cfg.init, **m}, f, indent=1)
    print(f"accuracy {m['accuracy']:.4f} on {m['n_pairs']} pairs")
    return m


def main(cfg):
    t0 = time.time()
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    os.makedirs(cfg.out_dir, exist_ok=True)
    if cfg.eval:
        return run_eval_only(cfg, device)
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    torch.manual_seed(cfg.seed)
    train, test = world_pairs(cfg) if cfg.data == "world" else real_pairs(cfg)
    init = cfg.init or default_init(cfg, train)
    # the PM is the LM plus a fresh scalar head (Bai et al. 2022, Sec. 4.1)
    model, ck = load_checkpoint(init, device, scalar_head=True, dropout=0.0)
    enc = get_tokenizer(ck["tokenizer"])
    max_len = model.cfg.block_size
    tr_tok, te_tok = tokenize_pairs(enc, train, max_len), tokenize_pairs(enc, test, max_len)
    soft = any(p["label"] != 1.0 for p in train)
    log(f"PM from {init}: {model.num_params() / 1e6:.2f}M parameters; {len(train)} training pairs, "
        f"{len(test)} test pairs{' (soft labels)' if soft else ''}")

    opt = configure_optimizer(model, cfg.lr, cfg.weight_decay, device_type=device.type)
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    rng = random.Random(cfg.seed)
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    mf = open(metrics_path, "w")
    bar = tqdm(total=steps, disable=cfg.quiet, desc="PM")
    step = 0
    for epoch in range(cfg.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            ids = order[i:i + cfg.batch_size]
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_iters) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = lr
            idx, pad = left_pad([tr_tok[j][0] for j in ids] + [tr_tok[j][1] for j in ids], 0, device)
            with autocast(device.type):
                s = model.score(idx, pad)[:, -1]
            r_c, r_r = s[:len(ids)], s[len(ids):]
            label = torch.tensor([train[j]["label"] for j in ids], device=device) if soft else None
            loss = pm_loss(r_c, r_r, label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            rec = {"step": step, "loss": loss.item(), "train_accuracy": float((r_c > r_r).float().mean()), "lr": lr}
            if step % cfg.eval_interval == 0 or step == steps:
                m, _, _ = evaluate(model, te_tok[:256], test[:256], 64, device)
                rec.update({"test_accuracy": m["accuracy"], "test_ece": m["ece"]})
                bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{m['accuracy']:.3f}")
            mf.write(json.dumps(rec) + "\n")
            mf.flush()
            bar.update(1)
    bar.close()
    mf.close()
    # pm.pt is the assistant-world PM that ppo.py uses; a PM on other data gets its own name
    name = "pm" if cfg.data == "world" else "pm_" + os.path.basename(os.path.normpath(cfg.data)).split(".")[0]
    ckpt = os.path.join(cfg.out_dir, f"{name}.pt")
    save_checkpoint(ckpt, model, ck["tokenizer"], init=init, data=cfg.data)

    # ---- held-out evaluation
    res, r_c, r_r = evaluate(model, te_tok, test, 64, device)
    res.update({"train_pairs": len(train), "init": init, "data": cfg.data, "checkpoint": ckpt,
                "params": model.num_params(non_embedding=False), "device": str(device)})
    files = sorted({p["file"] for p in test})
    res["accuracy_per_file"] = {f: accuracy(r_c[m], r_r[m]) for f in files
                                for m in [np.array([p["file"] == f for p in test])]}
    if cfg.data == "world":
        res.update(gold_metrics(test, r_c, r_r))
        tw = twin_pairs()
        tc, tr = pair_scores(model, tokenize_pairs(enc, tw, max_len), 64, device)
        harm = np.array([p["harmful"] for p in tw])
        res.update({"twin_accuracy": accuracy(tc, tr), "twin_accuracy_harmful": accuracy(tc[harm], tr[harm]),
                    "twin_accuracy_benign": accuracy(tc[~harm], tr[~harm]), "twin_pairs": len(tw)})
    res["seconds"] = time.time() - t0
    fig = plot_calibration(res["calibration"], os.path.join(cfg.out_dir, "calibration.png"),
                           f"PM calibration on {len(test)} held-out pairs (ECE {res['ece']:.3f})")
    with open(os.path.join(cfg.out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)

    log(f"\nheld-out comparisons: accuracy {res['accuracy']:.3f} on {len(test)} pairs, mean margin "
        f"{res['mean_margin']:.2f}, ECE {res['ece']:.3f}")
    for f, a in res["accuracy_per_file"].items():
        log(f"  {f}: accuracy {a:.3f}")
    log("  calibration: " + "  ".join(f"{t['predicted']:.2f}->{t['observed']:.2f} (n={t['n']})" for t in res["calibration"]))
    if cfg.data == "world":
        log(f"against gold labels: {res['gold_accuracy']:.3f} (helpfulness {res['gold_accuracy_helpful']:.3f}, "
            f"harmlessness {res['gold_accuracy_harmless']:.3f}); near-miss twins {res['twin_accuracy']:.3f} "
            f"(harmful {res['twin_accuracy_harmful']:.3f}, benign {res['twin_accuracy_benign']:.3f})")
    log(f"PM written to {ckpt} in {res['seconds']:.0f}s" + (f"; figure {fig}" if fig else ""))
    return res


if __name__ == "__main__":
    main(parse_args())
