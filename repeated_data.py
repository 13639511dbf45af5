"""
repeated_data.py -- the repeated-data experiment (Hernandez et al. 2022, "Scaling Laws and
Interpretability of Learning from Repeated Data", arXiv 2205.10487), run by

    python train_lm.py --sweep repeated               # the default sweep -> out/train_lm/repeated/
    python train_lm.py --sweep repeated --sweep_full  # + shares 10% and 50%, a second seed
                                                      #   at every point, fewer tokens

At a fixed number of training tokens, a share of the training windows comes from a small
subset of the data seen repeat_count times; the rest is seen once. The paper finds that
the damage to the held-out loss peaks at an intermediate repeat count, where the subset is
just memorisable within training (a double descent, Fig. 2), that the damaged model
behaves like a smaller one (Fig. 1), and that copying -- induction heads -- suffers more
than the loss overall (Sec. 5). The damage needs competition for capacity, so the data are
a language with more structure than these small models can hold: 256 tokens, each followed
by one of 16 random successors, in documents of 128 tokens half of which repeat their first
half from a random point, so that copying (induction) pays too (data.prepare.markov_table
and markov_documents). The exact Bayes predictor of such documents gives the entropy floor
of the held-out ones (data.prepare.markov_floor), so the damage can be read against the
reducible loss. train_lm.py trains every model; this file lays out the runs and reads them.

What to look at: the table printed at the end; repeated.png (held-out loss, effective size
and copying against repeat count) and curves_<share>.png (held-out and repeated-subset loss
through training: the mid-training rise, and when the subset is memorised). Measured
numbers: docs/repeated_data.md.
"""

import json
import os
import time
from dataclasses import asdict, replace

import numpy as np

from data.prepare import markov_heldout_floor, prepare
from model import (
    log_metrics,
    printer,
    progress,
    pyplot,
    run_dir,
    run_script,
    save_figure,
    write_json,
)

# the repeated subset counts as memorised once its loss is below half the held-out loss
MEMORISED = 0.5


def run(cfg, train, width, share, count, seed, steps):
    """One pretraining run (train_lm.main), then induction.py --analyze on its checkpoint
    (the best prefix-matching score) -> the run's row, with its loss curves."""
    name = f"width{width}_share{share:g}_repeat{count}_seed{seed}_steps{steps}"
    args = dict(n_embd=width, seed=seed, steps=steps, repeat_count=count, quiet=True)
    # a single run: the sweep's own settings cleared, so that a finished run is recognised
    sweep = dict(sweep="", sweep_full=False, sweep_shares="", repeat_counts="", sweep_widths="")
    cfg = replace(cfg, **args, **sweep, repeat_frac=share if count else 0.0)
    cfg.out_dir = os.path.join(cfg.out_dir, name)
    done = os.path.join(cfg.out_dir, "row.json")
    if os.path.exists(done):  # finished before with these settings: read back
        with open(done) as f:
            saved = json.load(f)
        if saved["config"] == asdict(cfg):
            return saved["row"]
    res = train(cfg)
    probe = ["--probe_vocab", str(res["probe_vocab"]), "--device", cfg.device]
    run_script(["induction.py", "--analyze", res["checkpoint"], *probe], "prefix matching", True)
    with open(os.path.splitext(res["checkpoint"])[0] + ".heads.json") as f:
        heads = json.load(f)
    with open(os.path.join(cfg.out_dir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if "val_loss" in r]
    row = {"repeat_count": count, "share": share if count else 0.0, "width": width, "seed": seed}
    row.update(steps=steps, params=res["params_non_embedding"], heldout_loss=res["val_loss"])
    for key in ("repeated_fraction", "repeated_train_loss", "copying_loss", "first_copy_loss"):
        row[key] = res[key]
    row["max_prefix_matching"] = max(h["prefix_matching"] for h in heads)
    row["heldout_loss_curve"] = [
        {
            "step": r["step"],
            "heldout_loss": r["val_loss"],
            "repeated_loss": r.get("repeated_train_loss"),
        }
        for r in evals
    ]
    # when the subset is memorised: the first evaluation with its loss below MEMORISED x held-out
    memorised = [
        r["step"]
        for r in evals
        if (r.get("repeated_train_loss") or 1e9) < MEMORISED * r["val_loss"]
    ]
    row["memorised_at_step"] = memorised[0] if memorised else None
    row["seconds"] = res["seconds"]
    write_json(done, {"config": asdict(cfg), "row": row})
    return row


def effective_params(loss, sizes):
    """A run's held-out loss read on the no-repeat loss-vs-parameters curve, linear in log
    parameters between the neighbouring sizes (None outside it, or where it does not fall)."""
    sizes = sorted(sizes, key=lambda p: p["params"])
    curve = np.array([p["heldout_loss"] for p in sizes])
    if not (curve.min() <= loss <= curve.max() and np.all(np.diff(curve) < 0)):
        return None
    return float(np.exp(np.interp(-loss, -curve, np.log([p["params"] for p in sizes]))))


def peak(points, floor):
    """The repeat count of largest held-out loss, how far above no repetition (relative, and
    as a share of the reducible loss above the entropy floor), copying's relative damage
    there, and whether a later count is lower (the second descent)."""
    base, repeated = points[0], points[1:]
    top = max(repeated, key=lambda p: p["heldout_loss"])
    later = [p["heldout_loss"] for p in repeated if p["repeat_count"] > top["repeat_count"]]
    excess = top["heldout_loss"] - base["heldout_loss"]
    return {
        "repeat_count": top["repeat_count"],
        "heldout_excess": excess / base["heldout_loss"],
        "share_of_reducible": excess / (base["heldout_loss"] - floor) if floor else None,
        "copying_excess": top["copying_loss"] / base["copying_loss"] - 1,
        # None: off the size curve (the 50% share's peak is worse than the smallest model)
        "effective_size": top["effective_params"] and top["effective_params"] / top["params"],
        "later_lower": bool(later) and min(later) < top["heldout_loss"],
        "memorised_at_step": top["memorised_at_step"],
    }


def sweep(cfg, train):
    """The default share at repeat counts 0 and --repeat_counts, and --sweep_widths without
    repetition, all at the same training tokens; with --sweep_full also the shares
    --sweep_shares, the second seed at every count, and the fewer-tokens control. A run
    already finished with the same settings (an interrupted sweep, or the default sweep
    before the fuller one) is read back, not trained again."""
    t0, log = time.time(), printer(cfg.quiet)
    run_dir(cfg.out_dir)
    prepare(cfg.data, cfg.tokenizer, verbose=not cfg.quiet)
    floor = None  # known for the Markov language only
    if cfg.data == "markov":
        floor = markov_heldout_floor(cfg.eval_iters * cfg.batch_size, cfg.block_size)
    counts = [0] + [int(r) for r in cfg.repeat_counts.split(",")]
    widths = [int(w) for w in cfg.sweep_widths.split(",") if int(w) != cfg.n_embd]
    others = [float(f) for f in cfg.sweep_shares.split(",")] if cfg.sweep_full else []
    shares = [cfg.repeat_frac, *others]
    seeds = [cfg.seed] + ([cfg.seed + 1] if cfg.sweep_full else [])
    W, S = cfg.n_embd, cfg.steps
    grid = [(W, shares[0] if r else 0.0, r, seed, S) for seed in seeds for r in counts]
    grid += [(W, share, r, cfg.seed, S) for share in shares[1:] for r in counts[1:]]
    grid += [(w, 0.0, 0, cfg.seed, S) for w in widths]
    if cfg.sweep_full:  # only the unique tokens, nothing repeated: the cost of fewer tokens
        grid.append((W, 0.0, 0, cfg.seed, round(S * (1 - shares[0]))))
    tokens = S * cfg.batch_size * cfg.block_size
    log(
        f"repeated data: {len(grid)} runs of {tokens:,} training tokens ({cfg.n_layer} layers, "
        f"context {cfg.block_size}, data {cfg.data}, entropy floor {floor or 0:.4f} nats)"
    )
    rows = {}
    for key in progress(grid, "repeated-data sweep", cfg.quiet):
        rows[key] = run(cfg, train, *key)
        log_metrics(cfg.out_dir, rows[key])

    # effective size on the no-repeat curve of the first seed, at the same tokens
    sizes = [rows[(w, 0.0, 0, cfg.seed, S)] for w in sorted([W, *widths])]
    for row in rows.values():
        row["effective_params"] = effective_params(row["heldout_loss"], sizes)
    base = rows[(W, 0.0, 0, cfg.seed, S)]
    by_share = []
    for share in shares:
        points = [base] + [rows[(W, share, r, cfg.seed, S)] for r in counts[1:]]
        entry = {"repeat_frac": share, "points": points, "peak": peak(points, floor)}
        entry["curves"] = plot_curves(cfg.out_dir, points, share)
        by_share.append(entry)
    default = by_share[0]
    top = default["peak"]
    res = {
        "points": default["points"],
        "peak": top,
        "shares": by_share,
        "baseline_sizes": [{k: p[k] for k in ("params", "heldout_loss", "width")} for p in sizes],
        "effective_params": [
            {k: p[k] for k in ("repeat_count", "effective_params", "params")}
            for p in default["points"][1:]
        ],
        "entropy_floor": floor,
        "reducible_loss_no_repeat": base["heldout_loss"] - floor if floor else None,
        "other_seed_no_repeat": [],  # these two: --sweep_full
        "fewer_tokens": [],
    }
    targets = {
        "peak_at_least_3pct_above_no_repeat": top["heldout_excess"] >= 0.03,
        "peak_at_least_10pct_of_reducible_loss": (top["share_of_reducible"] or 0) >= 0.10,
        "a_later_repeat_count_is_lower": top["later_lower"],
        "effective_size_at_peak_at_most_80pct": (top["effective_size"] or 1) <= 0.8,
        "copying_damaged_more_than_heldout_at_peak": top["copying_excess"] > top["heldout_excess"],
    }
    if cfg.sweep_full:
        points = [rows[(W, shares[0] if r else 0.0, r, seeds[1], S)] for r in counts]
        res["other_seed"] = {"points": points, "peak": peak(points, floor)}
        res["other_seed_no_repeat"] = [points[0]]
        res["fewer_tokens"] = [rows[(W, 0.0, 0, cfg.seed, round(S * (1 - shares[0])))]]
        second = res["other_seed"]["peak"]
        targets["other_seed_peak_3pct_and_10pct_of_reducible_and_a_later_count_lower"] = (
            second["heldout_excess"] >= 0.03
            and (second["share_of_reducible"] or 0) >= 0.10
            and second["later_lower"]
        )
        fewer = res["fewer_tokens"][0]["heldout_loss"] - base["heldout_loss"]
        targets["fewer_tokens_cost_less_than_the_peak"] = (
            fewer < top["heldout_excess"] * base["heldout_loss"]
        )
    res.update(targets=targets, seconds=time.time() - t0, config=asdict(cfg))
    res["figure"] = plot_sweep(cfg.out_dir, by_share, sizes)
    write_json(os.path.join(cfg.out_dir, "results.json"), res)
    report(res, log)
    print("targets: " + ", ".join(f"{k} {v}" for k, v in targets.items()))  # --quiet too
    print(f"wrote {cfg.out_dir}/ in {res['seconds']:.0f}s")
    return res


def report(res, log):
    """The sweep's table: one line per run of each share, the sizes, the controls."""
    floor = res["entropy_floor"]
    if floor:
        log(
            f"entropy floor {floor:.4f} nats; reducible loss without repetition "
            f"{res['reducible_loss_no_repeat']:.4f}"
        )
    for entry in res["shares"]:
        log(f"repeated share {entry['repeat_frac']:.0%}:")
        for p in entry["points"]:
            eff = p["effective_params"]
            log(
                f"  repeat count {p['repeat_count']:5d}: held-out {p['heldout_loss']:.4f}, "
                f"repeated subset {p['repeated_train_loss'] or float('nan'):.3f} (memorised at "
                f"step {p['memorised_at_step']}), copies {p['first_copy_loss']:.3f} -> "
                f"{p['copying_loss']:.3f}, prefix matching {p['max_prefix_matching']:.2f}, "
                f"effective params {f'{eff:,.0f}' if eff else '-'}"
            )
        top = entry["peak"]
        log(
            f"  peak at {top['repeat_count']} repeats: held-out +{top['heldout_excess']:.1%} "
            f"({(top['share_of_reducible'] or 0):.0%} of the reducible loss), copying "
            f"{top['copying_excess']:+.0%}, effective size "
            f"{top['effective_size'] or float('nan'):.0%}"
        )
    log(
        "no repetition by size: "
        + ", ".join(
            f"{p['params']:,} params {p['heldout_loss']:.4f}" for p in res["baseline_sizes"]
        )
    )
    if "other_seed" in res:
        for p in res["other_seed"]["points"]:
            count, loss = p["repeat_count"], p["heldout_loss"]
            log(f"  second seed, repeat count {count:5d}: held-out {loss:.4f}")
        log(f"only the unique tokens: held-out {res['fewer_tokens'][0]['heldout_loss']:.4f}")


def plot_curves(out_dir, points, share):
    """Held-out and repeated-subset loss through training, one line per repeat count."""
    plt = pyplot(f"curves_{share:g}.png")
    if plt is None:
        return None
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for i, p in enumerate(points):
        steps = [c["step"] for c in p["heldout_loss_curve"]]
        label = f"{p['repeat_count']} repeats" if p["repeat_count"] else "no repetition"
        ax[0].plot(
            steps, [c["heldout_loss"] for c in p["heldout_loss_curve"]], color=f"C{i}", label=label
        )
        if p["repeat_count"]:
            repeated = [c["repeated_loss"] for c in p["heldout_loss_curve"]]
            ax[1].plot(steps, repeated, color=f"C{i}", label=label)
    low = min(c["heldout_loss"] for p in points for c in p["heldout_loss_curve"])
    ax[0].set(xlabel="step", ylabel="held-out loss", ylim=(low - 0.02, low + 0.6))
    ax[0].set_title(f"held-out loss ({share:.0%} of windows repeated)")
    ax[1].set(xlabel="step", ylabel="loss on the repeated subset", yscale="log")
    ax[1].set_title("repeated subset: memorised when it drops")
    for axis in ax:
        axis.legend(fontsize=7)
    return save_figure(fig, os.path.join(out_dir, f"curves_{share:g}.png"))


def plot_sweep(out_dir, by_share, sizes):
    """The paper's Fig. 2 shape per share, effective size, and copying against repeat count."""
    plt = pyplot("repeated.png")
    if plt is None:
        return None
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for i, entry in enumerate(by_share):
        base, repeated = entry["points"][0], entry["points"][1:]
        counts = [p["repeat_count"] for p in repeated]
        share = f"{entry['repeat_frac']:.0%} repeated"
        ax[0].plot(counts, [p["heldout_loss"] for p in repeated], "o-", color=f"C{i}", label=share)
        ratio = [(p["effective_params"] or np.nan) / p["params"] for p in repeated]
        ax[1].plot(counts, ratio, "o-", color=f"C{i}", label=share)
        for key, style in (("heldout_loss", "o-"), ("copying_loss", "s--")):
            change = [p[key] / base[key] - 1 for p in repeated]
            what = "held-out" if key == "heldout_loss" else "copying (2nd copy)"
            ax[2].plot(counts, change, style, color=f"C{i}", label=f"{what}, {share}")
    ax[0].axhline(
        by_share[0]["points"][0]["heldout_loss"], color="grey", ls="--", label="no repetition"
    )
    ax[0].set(ylabel="held-out loss", title="Fig. 2 shape: held-out loss vs repeat count")
    ax[1].axhline(1, color="grey", ls="--", lw=0.5)
    ax[1].set(ylabel="effective / real parameters", title=f"effective size ({len(sizes)} sizes)")
    ax[2].axhline(0, color="grey", lw=0.5)
    ax[2].set(ylabel="change vs no repetition", title="copying is damaged more")
    counts = [p["repeat_count"] for p in by_share[0]["points"][1:]]
    for axis in ax:  # the limits set: a panel with no finite point still draws
        axis.set(xscale="log", xlabel="repeat count", xlim=(min(counts) / 1.5, max(counts) * 1.5))
        axis.legend(fontsize=7)
    return save_figure(fig, os.path.join(out_dir, "repeated.png"))
