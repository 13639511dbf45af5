"""
induction.py -- induction heads and the in-context-learning phase change (Olsson et al.
2022, "In-context Learning and Induction Heads").

Claims examined at small scale:
  * induction heads form in a sudden phase change early in training (Argument 1);
  * in the same stretch of training the in-context-learning (ICL) score drops -- late
    tokens become much easier than early ones -- and the loss falls off its plateau
    (Sec. 3); how closely the two coincide is measured, not assumed (see the README);
  * one-layer attention-only models show none of it: an induction head needs two layers
    (a previous-token head feeding the key of an induction head, K-composition);
  * the "smeared key" variant (Argument 2), whose keys mix in the previous token's key,
    forms induction heads in one layer, and earlier than the plain two-layer model.
The attention-only models have an untied unembedding: with W_U = W_E^T (the direct path
votes for the current token) no induction head formed in 2,500 steps in our runs.

Run (CPU, 2 cores, under a minute: 1- and 2-layer attention-only models and a 1-layer smeared-key model):
    python induction.py
    python induction.py --models attn1,attn2,attn3,smear1,smear2,mlp2      # the full set
    python induction.py --preset text     # natural text: the assistant-world corpus -> out/induction/world/text/
    python induction.py --data ../shared/data/text/tinyshakespeare.txt --preset gpu   # context 512, ICL as defined
    python induction.py --analyze out/train_lm/pretrain.pt    # per-head scores of any checkpoint
What to look at: the table printed at the end (phase-change step, ICL score, the top
heads' prefix-matching and copying scores), phase_change.png (loss and ICL score with the
phase-change window shaded, the paper's Fig. 1/5), prefix_matching.png (every head over
training) and attention.png (the induction stripe). Writes results.json (models: layers,
smeared_key, phase_change_step, final_icl_score, max_prefix_matching; seconds),
metrics.jsonl, the figures and each model's checkpoint; measured numbers are in the README.
"""

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.prepare import data_name, default_tokenizer, load_split, prepare
from model import (GPT, GPTConfig, configure_optimizer, get_device, load_checkpoint, log_metrics, lr_at,
                   optimizer_step, parse_config, printer, pyplot, run_dir, save_checkpoint, save_figure, write_json)


@dataclass
class Config:
    preset: str = "cpu"       # settings for a scale, combined with '+' (each non-cpu preset has its own run folder)
    models: str = "attn1,attn2,smear1"  # comma-separated: attnN N-layer attention-only, smearN smeared keys, mlpN with MLPs
    data: str = "synthetic"   # "synthetic" (repeated random segments), "world", or a text / HH file
    steps: int = 1000         # training steps per model
    batch_size: int = 32      # sequences per step
    block_size: int = 64      # context length in tokens
    vocab: int = 64           # synthetic vocabulary size (other data: the tokenizer's)
    p_repeat: float = 0.7     # synthetic: share of chunks that copy an earlier stretch
    n_embd: int = 64          # residual stream width
    n_head: int = 4           # attention heads per layer
    lr: float = 1e-3          # learning rate (constant after warm-up)
    warmup: int = 20          # steps of linear warm-up
    grad_clip: float = 0.0    # clip the gradient norm to this (0: no clipping)
    snap_every: int = 25      # measurements every this many steps: resolves the phase change in time
    threshold: float = 0.3    # prefix-matching score that marks an induction head
    repeat_frac: float = 0.0  # natural text: share of documents replaced by a repeated random span
    analyze: str = ""         # print the per-head scores of this checkpoint and exit
    out_dir: str = "out/induction"  # root folder; a run goes to <out_dir>[/<data name>][/<preset>]
    seed: int = 0             # random seed (initialisation, data)
    device: str = "auto"      # "auto" (cuda if available), "cpu", "cuda", ...
    quiet: bool = False       # no progress bar or messages


PRESETS = {"cpu": {}, "text": {"data": "world", "block_size": 256, "steps": 800},
           "tiny": {"steps": 20, "snap_every": 10, "block_size": 32},  # seconds, for tests
           "gpu": {"block_size": 512, "steps": 3000, "batch_size": 64, "n_embd": 256, "n_head": 8, "snap_every": 50}}


def parse_args(argv=None):
    return parse_config(Config, PRESETS, __doc__, argv)


# -----------------------------------------------------------------------------
# Data

def synthetic_batch(batch, T, vocab, gen, p_repeat=0.7):
    """Uniform random tokens written in chunks of 4-12 tokens; each chunk is, with
    probability p_repeat, a copy of an earlier stretch of the same sequence taken from a
    random offset. Random offsets mean position alone cannot predict a repeat: only looking
    back for the previous occurrence of the current token does. Fresh data every step."""
    x = torch.multinomial(torch.full((batch, vocab), 1.0 / vocab), T + 1, replacement=True, generator=gen)
    for b in range(batch):
        t = int(torch.randint(4, 13, (1,), generator=gen))
        while t < T + 1:
            L = min(int(torch.randint(4, 13, (1,), generator=gen)), T + 1 - t)
            if float(torch.rand(1, generator=gen)) < p_repeat and t >= L + 1:
                src = int(torch.randint(0, t - L + 1, (1,), generator=gen))
                x[b, t:t + L] = x[b, src:src + L].clone()
            t += L
    return x[:, :-1], x[:, 1:]


def repeated_random(batch, n, vocab, gen, lo=0):
    """Uniform random tokens repeated twice: the probe for prefix matching (Olsson et al.
    2022, Sec. 2: 'repeated sequences of random tokens')."""
    r = torch.randint(lo, vocab, (batch, n), generator=gen)
    return torch.cat([r, r], 1)


def text_stream(cfg):
    """Natural text as a token array, with our BPE (world / any text) -> (ids, vocab, tokenizer)."""
    tok = default_tokenizer(cfg.data)
    d, meta = prepare(cfg.data, tok, verbose=not cfg.quiet)
    return np.asarray(load_split(d, "train", meta)[0], dtype=np.int64), meta["vocab"], tok


def text_batch(ids, batch, T, gen, vocab, repeat_frac):
    ix = torch.randint(len(ids) - T - 1, (batch,), generator=gen).tolist()
    x = torch.from_numpy(np.stack([ids[i:i + T + 1] for i in ix]))
    for b in range(batch):  # optionally replace a document with a repeated random span
        if float(torch.rand(1, generator=gen)) < repeat_frac:
            n = (T + 1) // 2 + 1
            x[b] = repeated_random(1, n, vocab, gen)[0, :T + 1]
    return x[:, :-1], x[:, 1:]


# -----------------------------------------------------------------------------
# Measurements (Olsson et al. 2022, Sec. 2 "Key concepts" and App. on methods)

def icl_score(loss_per_pos, early=None, late=None):
    """In-context learning score: mean loss at a late token minus mean loss at an early one.
    The paper uses token 500 minus token 50 (context 512+). For shorter contexts we scale
    both positions with the context length (50/512 and 500/512 of T) and average over a
    small window around each (+-2 tokens) to reduce noise. Negative = later tokens are
    easier = the model learns in context."""
    T = loss_per_pos.shape[-1]
    early = early if early is not None else max(1, round(50 / 512 * T))
    late = late if late is not None else min(T - 3, round(500 / 512 * T))  # keep the +-2 window inside
    w = lambda c: loss_per_pos[..., max(0, c - 2):c + 3].mean()
    return float(w(late) - w(early))


def prefix_matching(atts, tokens, n):
    """Per-head prefix-matching score: on sequences of n random tokens repeated twice, the
    attention from each token of the second repeat to the tokens that *followed earlier
    occurrences of the current token* (Olsson et al. 2022, Sec. 2) -- above all position
    i - n + 1, but also after chance duplicates in the random part. A perfect induction head
    scores 1; a previous-token head scores ~0. atts: list over layers of (B, H, T, T);
    tokens: (B, T)."""
    T = tokens.size(1)
    prev = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], 1)  # token before each key
    target = (prev[:, None, :] == tokens[:, :, None]) & torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    out = []
    for a in atts:
        s = (a * target[:, None].to(a.dtype)).sum(-1)  # (B, H, Tq)
        out.append(s[:, :, n:].mean(dim=(0, 2)))
    return torch.stack(out)  # (layers, heads)


def ov_circuits(model):
    """For each head, the OV circuit's small form A_h = W_V^h W_O^h W_U W_E (head_dim x
    head_dim), whose eigenvalues are the non-zero eigenvalues of the full vocab x vocab
    circuit W_E W_V^h W_O^h W_U (eig(XY) = eig(YX)). LayerNorm gains are folded in (its
    centering and scaling are left out, as is usual for this analysis)."""
    cfg = model.cfg
    hd = cfg.n_embd // cfg.n_head
    V = cfg.vocab_valid or cfg.vocab_size
    W_E = model.wte.weight[:V].detach().float()  # (V, d)
    W_U = (model.unembedding()[:V].detach().float() * model.ln_f.detach()).T  # (d, V), with the final norm gain
    circuits = []
    for blk in model.blocks:
        Wv = blk.attn.qkv.weight.detach().float()[2 * cfg.n_embd:].T * blk.ln1.detach()[:, None]  # (d, d)
        Wo = blk.attn.proj.weight.detach().float().T  # (d, d)
        for h in range(cfg.n_head):
            sl = slice(h * hd, (h + 1) * hd)
            circuits.append((Wv[:, sl], Wo[sl, :]))
    return W_E, W_U, circuits


def copying_scores(model, top=5):
    """Per-head copying score from the OV circuit's eigenvalues: sum(Re lambda) / sum(|lambda|),
    1 for a head that copies every token it attends to, -1 for one that suppresses it
    (Elhage et al. 2021; Olsson et al. 2022 use the positive-eigenvalue share). Also a
    logit check: the share of tokens t whose own logit is in the top-`top` of the OV output
    when the head attends to t. Note: a 2-layer head's OV reads the embedding directly here;
    composition through earlier heads is ignored, as in the paper's per-head measure."""
    W_E, W_U, circs = ov_circuits(model)
    eig, logit = [], []
    for Wv, Wo in circs:
        small = Wo @ W_U @ W_E @ Wv  # (hd, hd): same non-zero eigenvalues as W_E Wv Wo W_U
        lam = torch.linalg.eigvals(small)
        eig.append(float(lam.real.sum() / lam.abs().sum().clamp(min=1e-12)))
        out = W_E @ Wv @ Wo @ W_U  # (V, V): row t = logits when the head attends to token t
        rank = (out > out.diagonal()[:, None]).sum(1)
        logit.append(float((rank < top).float().mean()))
    L, H = model.cfg.n_layer, model.cfg.n_head
    return torch.tensor(eig).view(L, H), torch.tensor(logit).view(L, H)


def measure(model, cfg, eval_batch, vocab):
    """Snapshot: ICL score on held-out data, per-head prefix matching, per-position loss."""
    model.eval()
    with torch.no_grad():
        x, y = eval_batch
        logits, _ = model(x)
        lpp = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(0)
        n = min(cfg.block_size // 2, 32)
        probe = repeated_random(16, n, vocab, torch.Generator().manual_seed(1)).to(x.device)
        prefix = prefix_matching(model.attention_patterns(probe), probe, n)
    model.train()
    return {"icl_score": icl_score(lpp.cpu()), "eval_loss": float(lpp.mean()), "prefix_matching": prefix.cpu()}


def phase_change(snaps, threshold):
    """First snapshot step where the best head's prefix-matching score crosses threshold
    (None if never), the step where the ICL score falls most between snapshots, and the
    window from the last snapshot below a tenth of the way to the threshold to the crossing."""
    steps = [s["step"] for s in snaps]
    best = [s["max_prefix_matching"] for s in snaps]
    cross = next((st for st, b in zip(steps, best) if b >= threshold), None)
    drops = [snaps[i]["icl_score"] - snaps[i - 1]["icl_score"] for i in range(1, len(snaps))]
    icl_step = steps[1 + int(np.argmin(drops))] if drops else None
    window = None
    if cross is not None:
        k = steps.index(cross)
        start = max([i for i in range(k) if best[i] < best[0] + 0.1 * (threshold - best[0])] or [0])
        window = [steps[start], cross]
    return cross, icl_step, window


# -----------------------------------------------------------------------------

def build(name, cfg, vocab):
    kind, L = name.rstrip("0123456789"), int(name[len(name.rstrip("0123456789")):])
    if kind not in ("attn", "smear", "mlp"):
        raise SystemExit(f"unknown model {name!r}: use attnN, smearN or mlpN")
    mc = GPTConfig(vocab_size=vocab, block_size=cfg.block_size, n_layer=L, n_head=cfg.n_head, n_embd=cfg.n_embd,
                   attn_only=kind != "mlp", smeared_key=kind == "smear", tie_embeddings=False)
    return GPT(mc)


def train_one(name, cfg, device, text, vocab):
    torch.manual_seed(cfg.seed)
    model = build(name, cfg, vocab).to(device)
    opt = configure_optimizer(model, cfg.lr, 0.0, device_type=device.type)
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_gen = torch.Generator().manual_seed(999)
    batch = lambda g, n: (text_batch(text, n, cfg.block_size, g, vocab, cfg.repeat_frac) if text is not None
                          else synthetic_batch(n, cfg.block_size, vocab, g, cfg.p_repeat))
    ex, ey = batch(eval_gen, 128)
    eval_batch = (ex.to(device), ey.to(device))
    snaps, losses = [], []
    bar = tqdm(range(cfg.steps + 1), disable=cfg.quiet, desc=name, leave=False)
    for step in bar:
        if step % cfg.snap_every == 0:
            m = measure(model, cfg, eval_batch, vocab)
            prefix = m.pop("prefix_matching")
            snap = {"model": name, "step": step, "tokens": step * cfg.batch_size * cfg.block_size,
                    "train_loss": float(np.mean(losses[-cfg.snap_every:])) if losses else None, **m,
                    "max_prefix_matching": float(prefix.max()), "prefix_matching": prefix.tolist()}
            snaps.append(snap)
            bar.set_postfix(loss=f"{snap['train_loss'] or 0:.3f}", icl=f"{m['icl_score']:.3f}",
                            prefix=f"{prefix.max():.2f}")
        if step == cfg.steps:
            break
        x, y = batch(gen, cfg.batch_size)
        _, loss = model(x.to(device), y.to(device))
        loss.backward()
        optimizer_step(opt, model, loss, cfg.grad_clip, step + 1, lr_at(step, cfg.steps, cfg.lr, cfg.warmup, cfg.lr))
        losses.append(loss.item())
    return model, snaps


def head_table(model, vocab, n=32):
    """Per-head (layer.head, prefix matching, copying eigen-score, copying logit check)."""
    probe = repeated_random(16, min(n, model.cfg.block_size // 2), vocab, torch.Generator().manual_seed(1))
    with torch.no_grad():
        probe = probe.to(model.wte.weight.device)
        prefix = prefix_matching(model.attention_patterns(probe), probe, probe.size(1) // 2).cpu()
    eig, logit = copying_scores(model)
    rows = [{"head": f"{l}.{h}", "prefix_matching": float(prefix[l, h]), "copying": float(eig[l, h]),
             "copying_logit": float(logit[l, h])} for l in range(prefix.size(0)) for h in range(prefix.size(1))]
    return sorted(rows, key=lambda r: -r["prefix_matching"])


def analyze(path, device):
    model, ck = load_checkpoint(path, device)
    model.eval()
    vocab = model.cfg.vocab_valid or model.cfg.vocab_size
    rows = head_table(model, vocab)
    print(f"{path}: {model.cfg.n_layer} layers x {model.cfg.n_head} heads (tokenizer {ck['tokenizer']})")
    print(f"{'head':>6s} {'prefix-match':>13s} {'copying':>8s} {'copy-logit':>11s}")
    for r in rows:
        print(f"{r['head']:>6s} {r['prefix_matching']:13.3f} {r['copying']:8.3f} {r['copying_logit']:11.3f}")
    return rows


def figures(all_snaps, summary, models, cfg, vocab, out_dir):
    plt = pyplot()
    if plt is None:
        return []
    paths = []
    names = list(all_snaps)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.5), squeeze=False, sharex=True)
    for j, name in enumerate(names):
        s = all_snaps[name]
        tok = [x["tokens"] for x in s]
        axes[0, j].plot(tok[1:], [x["train_loss"] for x in s[1:]], color="C0")
        axes[0, j].set_title(name, fontsize=9), axes[0, j].set_ylabel("training loss")
        axes[1, j].plot(tok, [x["icl_score"] for x in s], color="C1")
        axes[1, j].set_ylabel("ICL score"), axes[1, j].set_xlabel("training tokens")
        w = summary[name]["window"]
        if w:
            for ax in axes[:, j]:
                ax.axvspan(w[0] * cfg.batch_size * cfg.block_size, w[1] * cfg.batch_size * cfg.block_size,
                           color="grey", alpha=0.25, lw=0)
    fig.suptitle("Phase change (shaded): loss and ICL score (Olsson et al. 2022, Fig. 1/5)", fontsize=10)
    paths.append(save_figure(fig, os.path.join(out_dir, "phase_change.png")))

    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3), squeeze=False, sharey=True)
    for j, name in enumerate(names):
        s = all_snaps[name]
        prefix = np.array([x["prefix_matching"] for x in s])  # (snaps, L, H)
        for l in range(prefix.shape[1]):
            for h in range(prefix.shape[2]):
                axes[0, j].plot([x["tokens"] for x in s], prefix[:, l, h], lw=1, label=f"{l}.{h}")
        axes[0, j].set_title(name, fontsize=9), axes[0, j].set_xlabel("training tokens")
    axes[0, 0].set_ylabel("prefix-matching score")
    paths.append(save_figure(fig, os.path.join(out_dir, "prefix_matching.png")))

    best = max(summary, key=lambda k: summary[k]["max_prefix_matching"])
    model = models[best]
    top = summary[best]["top_heads"][0]["head"]
    l, h = map(int, top.split("."))
    probe = repeated_random(1, 24, vocab, torch.Generator().manual_seed(3))
    with torch.no_grad():
        att = model.attention_patterns(probe.to(model.wte.weight.device))[l][0, h].cpu()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(att, cmap="viridis")
    ax.set_title(f"{best} head {top} on a repeated random sequence:\nthe off-diagonal stripe is induction", fontsize=8)
    ax.set_xlabel("key position"), ax.set_ylabel("query position")
    paths.append(save_figure(fig, os.path.join(out_dir, "attention.png")))
    return paths


def main(cfg):
    t0 = time.time()
    device = get_device(cfg.device)
    if cfg.analyze:
        return analyze(cfg.analyze, device)
    log = printer(cfg.quiet)
    out_dir = run_dir(cfg.out_dir, data_name(cfg.data, default="synthetic"), cfg.preset)
    text, vocab, tokenizer = (None, cfg.vocab, "synthetic") if cfg.data == "synthetic" else text_stream(cfg)
    log(f"induction heads: models {cfg.models}, {cfg.data} data (vocab {vocab}, context {cfg.block_size}), "
        f"{cfg.steps} steps of {cfg.batch_size} sequences, snapshots every {cfg.snap_every} steps")
    all_snaps, summary, models = {}, {}, {}
    for name in cfg.models.split(","):
        t1 = time.time()
        model, snaps = train_one(name, cfg, device, text, vocab)
        for s in snaps:
            log_metrics(out_dir, s)
        cross, icl_step, window = phase_change(snaps, cfg.threshold)
        model.eval()
        rows = head_table(model, vocab)
        summary[name] = {"layers": model.cfg.n_layer, "smeared_key": model.cfg.smeared_key,
                         "attn_only": model.cfg.attn_only, "phase_change_step": cross, "icl_change_step": icl_step,
                         "window": window, "final_icl_score": snaps[-1]["icl_score"],
                         "max_prefix_matching": max(s["max_prefix_matching"] for s in snaps),
                         "final_prefix_matching": snaps[-1]["max_prefix_matching"],
                         "final_loss": snaps[-1]["eval_loss"], "top_heads": rows[:3], "seconds": time.time() - t1}
        models[name], all_snaps[name] = model, snaps
        save_checkpoint(os.path.join(out_dir, f"{name}.pt"), model, tokenizer)
        log(f"  {name}: phase change {'at step ' + str(cross) if cross is not None else 'none'}, "
            f"final ICL score {snaps[-1]['icl_score']:.3f}, best prefix matching {summary[name]['max_prefix_matching']:.2f} "
            f"({time.time() - t1:.0f}s)")
    figs = figures(all_snaps, summary, models, cfg, vocab, out_dir)
    res = {"models": summary, "seconds": time.time() - t0, "data": cfg.data, "block_size": cfg.block_size,
           "steps": cfg.steps, "threshold": cfg.threshold, "figures": figs}
    write_json(os.path.join(out_dir, "results.json"), res)
    log(f"\n{'model':8s}{'phase change (step)':>20s}{'window':>14s}{'ICL drop at':>12s}{'final ICL':>10s}  top induction heads (layer.head: prefix-matching / copying)")
    for name, s in summary.items():
        w = f"{s['window'][0]}-{s['window'][1]}" if s["window"] else "-"
        heads = ", ".join(f"{r['head']}: {r['prefix_matching']:.2f}/{r['copying']:.2f}" for r in s["top_heads"][:2])
        log(f"{name:8s}{str(s['phase_change_step']):>20s}{w:>14s}{str(s['icl_change_step']):>12s}{s['final_icl_score']:10.3f}  {heads}")
    log(f"\nwrote {out_dir}/ (results.json, metrics.jsonl{''.join(', ' + os.path.basename(f) for f in figs)}) "
        f"in {res['seconds']:.0f}s")
    return res


if __name__ == "__main__":
    main(parse_args())
