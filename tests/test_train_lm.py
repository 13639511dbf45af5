"""train_lm.py end to end on tiny settings: results contract, every run in its own folder,
exact resume, SFT masking, failures that lose nothing, every --data form, DDP on CPU."""

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import repeated_data
import train_lm
from data import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "text", "tinyshakespeare.txt")
TIKTOKEN_CACHE = os.path.join(ROOT, "..", "shared", "data", "tiktoken_cache")


def run(tmp_path, *extra):
    """A tiny run with root tmp_path: it writes into tmp_path/tiny (tmp_path/tiny/sft for SFT)."""
    return train_lm.main(
        train_lm.parse_args(["--preset", "tiny", "--out_dir", str(tmp_path), "--quiet", *extra])
    )


def metrics(path):
    return [json.loads(line) for line in open(path / "metrics.jsonl")]


def losses(path):
    return {m["step"]: m["loss"] for m in metrics(path) if "loss" in m}


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_pretrain_results_contract(tmp_path):
    res = run(tmp_path)
    d = tmp_path / "tiny"
    assert res == json.load(open(d / "results.json"))
    assert res["train_tokens"] == 40 * 8 * 64 and res["steps"] == 40  # steps x batch x context
    vals = [m["val_loss"] for m in metrics(d) if "val_loss" in m]
    assert res["val_loss"] == vals[-1] < vals[0] - 1.0  # it learns
    ls = losses(d)
    assert ls[max(ls)] < ls[1] - 1.0
    assert os.path.exists(d / "pretrain.pt") and len(res["samples"]) == 1


def test_sft_gets_its_own_folder_and_preset(tmp_path):
    pre = run(tmp_path)
    d = tmp_path / "tiny"
    cfg = train_lm.parse_args(["--preset", "tiny", "--out_dir", str(tmp_path), "--mode", "sft"])
    assert cfg.out_dir == str(d / "sft_hh") and cfg.init == str(d / "pretrain.pt")
    # the mode=sft preset on top of tiny
    assert (cfg.steps, cfg.lr, cfg.n_embd, cfg.optimizer) == (180, 1e-3, 32, "adamw")
    assert train_lm.parse_args(["--mode", "sft", "--lr", "5e-4"]).lr == 5e-4  # explicit flags win
    sft = run(tmp_path, "--mode", "sft", "--steps", "10")
    assert sft["mode"] == "sft" and sft["steps"] == 10 and os.path.exists(d / "sft_hh" / "sft.pt")
    assert json.load(open(d / "results.json")) == pre  # pretraining's outputs are untouched
    assert max(losses(d)) == 40 and max(losses(d / "sft_hh")) == 10
    # gold helpfulness on the benign evaluation set: only in the SFT run's results
    assert "gold_helpfulness_macro" not in pre
    by_kind = sft["gold_helpfulness_by_kind"]
    assert set(by_kind) == {"arith", "fact", "word", "open"} and all(
        v["n"] == 128 for v in by_kind.values()
    )
    assert sft["gold_helpfulness_macro"] == pytest.approx(
        np.mean([v["mean"] for v in by_kind.values()])
    )
    assert len(sft["eval_samples"]) == 512 and 0.0 <= sft["gold_helpfulness_macro"] <= 1.0


def test_bits_per_byte_against_decoded_text():
    """bytes_per_token against decoding the text: every token, and only the SFT mask's."""
    from data.tokenizer import get_tokenizer

    enc = get_tokenizer("world")
    text = "\n\nHuman: What is 2 + 3?\n\nAssistant: 2 + 3 = 5.<|endoftext|>\n\nHuman: Hi!"
    ids = np.array(enc.encode(text, allowed_special="all"))
    plain = len(text.replace("<|endoftext|>", "").encode())
    assert prepare.bytes_per_token(enc, ids, None) == pytest.approx(plain / len(ids))
    mask = np.zeros(len(ids), dtype=np.uint8)
    mask[3:9] = 1
    assert prepare.bytes_per_token(enc, ids, mask) == pytest.approx(
        len(enc.decode(ids[3:9].tolist()).encode()) / 6
    )


def test_resume_continues_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a)
    assert run(b, "--stop_after", "20") is None  # interrupted after the step-20 checkpoint
    run(b, "--resume")
    la, lb = losses(a / "tiny"), losses(b / "tiny")
    assert sorted(la) == sorted(lb) and all(la[s] == lb[s] for s in la), "resumed losses differ"


def test_resume_with_other_shape_is_a_clear_error(tmp_path):
    run(tmp_path, "--stop_after", "20")
    with pytest.raises(SystemExit, match="n_embd: checkpoint has 32, requested 48"):
        run(tmp_path, "--resume", "--n_embd", "48")


def test_bad_choices_are_clear_errors():
    for flag, value in [("--mode", "rl"), ("--optimizer", "sgd"), ("--sweep", "other")]:
        with pytest.raises(SystemExit, match=f"{flag} '{value}': choose from"):
            train_lm.parse_args([flag, value])
    with pytest.raises(SystemExit, match="pretraining only"):
        train_lm.parse_args(["--sweep", "repeated", "--mode", "sft"])


def test_sft_targets_only_assistant_tokens():
    ids = np.arange(100, dtype=np.uint16)
    mask = np.zeros(100, dtype=np.uint8)
    mask[40:60] = 1
    gen = torch.Generator().manual_seed(0)
    x, y = prepare.get_batch(ids, mask, 30, 64, gen, "cpu")
    assert ((y >= 40) & (y < 60) | (y == -1)).all() and (y == x + 1)[y != -1].all()
    assert (y != -1).sum() > 0 and ((x + 1 >= 40) & (x + 1 < 60) == (y != -1)).all()


@pytest.mark.slow
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A run whose loss blows up stops with one line saying so and where, exits non-zero,
    and never writes over the last good checkpoint."""
    run(tmp_path)
    before = sha(tmp_path / "tiny" / "pretrain.pt")
    cmd = [
        sys.executable,
        "train_lm.py",
        "--preset",
        "tiny",
        "--optimizer",
        "adamw",
        "--lr",
        "1e4",
        "--min_lr",
        "1e4",
        "--out_dir",
        str(tmp_path),
        "--quiet",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = (r.stdout + r.stderr).strip().splitlines()[-1]
    assert r.returncode != 0 and last.startswith("stopped: non-finite") and " at step " in last, (
        last
    )
    assert sha(tmp_path / "tiny" / "pretrain.pt") == before


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason="needs ../shared/data/text")
@pytest.mark.parametrize("tokenizer", ["auto", "gpt2"])
def test_plain_text_data_runs_to_the_end(tmp_path, monkeypatch, tokenizer):
    """Plain text has no dialogue prompts: the samples continue the start of held-out text."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", TIKTOKEN_CACHE)
    res = run(tmp_path, "--data", SHAKESPEARE, "--tokenizer", tokenizer, "--steps", "4")
    saved = json.load(open(tmp_path / "tinyshakespeare" / "tiny" / "results.json"))
    assert (
        saved["tokenizer"]
        == ("bpe:tinyshakespeare" if tokenizer == "auto" else "gpt2")
        == res["tokenizer"]
    )
    assert len(saved["samples"]) == 1 and saved["samples"][0]["prompt"].strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "train_lm.py",
        "--preset",
        "tiny",
        "--steps",
        "10",
        "--out_dir",
        str(tmp_path),
        "--quiet",
    ]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=300)
    res = json.load(open(tmp_path / "tiny" / "results.json"))
    assert res["world_size"] == 2 and res["ddp_in_sync"] is True
    ck = torch.load(tmp_path / "tiny" / "pretrain.pt", weights_only=True)
    assert len(ck["rng"]) == 2  # each rank's data stream is saved for --resume


# -----------------------------------------------------------------------------
# Muon and the speedrun settings


def test_orthogonalise_keeps_singular_vectors_and_flattens_singular_values():
    """Against the SVD: the result is U f(S) V^T with every f(s) in [0.6, 1.25], for wide,
    tall and stacked matrices, whatever the scale of G."""
    torch.manual_seed(0)
    # (square random matrices have singular values near 0)
    for shape in [(16, 48), (48, 16), (3, 24, 40)]:
        G = torch.randn(*shape) * torch.logspace(-1, 0, shape[-1])  # column scales over a decade
        X = train_lm.orthogonalise(G * 1e3)
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        core = U.mT @ X @ Vh.mT  # diagonal f(S) if the singular vectors are kept
        diag = torch.diagonal(core, dim1=-2, dim2=-1)
        off = core - torch.diag_embed(diag)
        assert off.abs().max() < 1e-3 and diag.min() > 0.6 and diag.max() < 1.25, (shape, diag)


def test_muon_adamw_groups_match_reference_updates():
    """The AdamW groups match torch.optim.AdamW; the Muon group matches a plain loop of
    Nesterov momentum then orthogonalisation, over several steps."""
    torch.manual_seed(0)
    w, e = torch.randn(8, 4, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    w_ref, e_ref = w.detach().clone().requires_grad_(), e.detach().clone().requires_grad_()
    opt = train_lm.MuonAdamW(
        [{"params": [w], "muon": True, "lr_mult": 2.0}, {"params": [e]}], lr=0.01
    )
    ref = torch.optim.AdamW([e_ref], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    buf = torch.zeros_like(w)
    for step in range(4):
        gw, ge = torch.randn(8, 4), torch.randn(5, 3)
        w.grad, e.grad, e_ref.grad = gw.clone(), ge.clone(), ge.clone()
        for g in opt.param_groups:  # as optimizer_step sets them
            g["lr"] = 0.01 * g.get("lr_mult", 1.0)
        opt.step(), ref.step()
        buf = 0.95 * buf + 0.05 * gw
        with torch.no_grad():
            w_ref -= 0.02 * 2**0.5 * train_lm.orthogonalise(0.95 * buf + 0.05 * gw)  # Nesterov
        assert torch.allclose(e, e_ref, atol=1e-6) and torch.allclose(w, w_ref, atol=1e-5), step


def test_muon_run_resumes_exactly(tmp_path):
    full = run(tmp_path / "a", "--optimizer", "muon", "--warmdown", "0.4")
    run(tmp_path / "b", "--optimizer", "muon", "--warmdown", "0.4", "--stop_after", "20")
    resumed = run(tmp_path / "b", "--optimizer", "muon", "--warmdown", "0.4", "--resume")
    assert losses(tmp_path / "a" / "tiny") == losses(tmp_path / "b" / "tiny")
    assert resumed["val_loss"] == full["val_loss"]


# ---- repeated data (Hernandez et al. 2022)


def test_repeated_subset_comes_from_training_data_and_is_seen_exactly_repeat_count_times():
    from data.prepare import repeated_subset

    cfg = train_lm.parse_args(["--preset", "tiny", "--quiet"])
    ids = np.arange(100_000)  # every token distinct: overlaps are visible
    unique, windows, schedule = repeated_subset(
        ids, cfg.block_size, cfg.steps, cfg.batch_size, 0.25, 4, 0
    )
    assert schedule.shape == (cfg.steps, cfg.batch_size)
    n = windows.shape[0]
    assert (
        n == round(0.25 * cfg.steps * cfg.batch_size / 4) and windows.shape[1] == cfg.block_size + 1
    )
    # each window 4 times
    assert np.array_equal(np.bincount(schedule[schedule >= 0], minlength=n), np.full(n, 4))
    assert (schedule >= 0).mean() == pytest.approx(0.25)
    # the unique stream never holds subset tokens
    assert not set(windows.ravel().tolist()) & set(unique.tolist())
    assert unique[0] == windows[-1, -1] + 1  # the rest of the training split, nothing else
    with pytest.raises(SystemExit, match="subset of 0 windows"):
        repeated_subset(ids, cfg.block_size, cfg.steps, cfg.batch_size, 0.01, 1000, 0)


def test_repeated_subset_of_documents_starts_every_window_at_a_document():
    """With documents of a fixed length (the Markov language) and a context shorter than
    one, each subset window is a document's start and the rest of the stream starts at the
    next document, so the training order (whole documents) stays aligned."""
    from data.prepare import repeated_subset

    period, n_docs = 129, 400
    ids = np.arange(period * n_docs)  # document k: ids k * period ... (k + 1) * period - 1
    unique, windows, _ = repeated_subset(ids, 32, 20, 8, 0.25, 2, 0, period=period)
    assert windows.shape == (20, 33) and (windows[:, 0] % period == 0).all()
    assert (np.diff(windows, axis=1) == 1).all()  # contiguous within the document
    assert unique[0] % period == 0 and len(unique) % period == 0


def test_repeated_run_token_counts_match_the_flags(tmp_path):
    res = run(tmp_path, "--repeat_frac", "0.25", "--repeat_count", "4")
    total = res["train_tokens"]
    assert res["repeated_tokens"] + res["unique_tokens"] == total
    assert (
        res["repeated_tokens"] == 0.25 * total
        and res["repeated_fraction"] == 0.25
        and res["repeat_count"] == 4
    )
    assert res["repeated_train_loss"] > 0 and res["copying_loss"] > 0 and res["first_copy_loss"] > 0
    assert "repeated_train_loss" in [m for m in metrics(tmp_path / "tiny") if "val_loss" in m][0]
    plain = run(tmp_path / "plain")
    assert plain["repeated_tokens"] == 0 and plain["repeated_train_loss"] is None


def test_synthetic_rows_replace_the_first_rows_and_copy_within_themselves():
    ids = np.arange(5000, dtype=np.uint16) % 3000 + 100  # every id >= 100, never a copy
    plain = prepare.get_batch(ids, None, 64, 8, torch.Generator().manual_seed(0), "cpu")
    x, y = prepare.get_batch(ids, None, 64, 8, torch.Generator().manual_seed(0), "cpu", 3, 50)
    assert torch.equal(x[3:], plain[0][3:]) and torch.equal(y[3:], plain[1][3:])
    assert bool((x[:3] < 50).all()) and torch.equal(x[:3, 1:], y[:3, :-1])
    for row in x[:3].tolist():  # some 4-token stretch appears twice (random ones almost never)
        grams = [tuple(row[i : i + 4]) for i in range(61)]
        assert len(set(grams)) < len(grams)


def test_document_mask_against_a_loop():
    x = torch.randint(0, 4, (3, 20), generator=torch.Generator().manual_seed(1))  # 0: separator
    m = prepare.document_mask(x, 0)
    for b in range(3):
        doc = [0]
        for t in range(1, 20):  # a new document starts after each separator
            doc.append(doc[-1] + int(x[b, t - 1] == 0))
        for i in range(20):
            for j in range(20):
                assert bool(m[b, 0, i, j]) == (j <= i and doc[i] == doc[j])


@pytest.mark.parametrize("smeared", [False, True])
def test_a_document_masked_model_reads_each_document_as_if_alone(smeared):
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=32, block_size=32, n_layer=2, n_head=2, n_embd=16)
    model = GPT(replace(cfg, smeared_key=smeared)).eval()
    first, second = torch.randint(1, 32, (1, 9)), torch.randint(1, 32, (1, 12))
    packed = torch.cat([first, torch.zeros(1, 1, dtype=torch.long), second], 1)  # 0 ends a doc
    with torch.no_grad():
        masked = model(packed, mask=prepare.document_mask(packed, 0))[0]
        alone = model(second)[0]
        unmasked = model(packed)[0]
    # rotary positions are relative, so the second document's logits do not depend on where
    # it starts; without the mask it reads the first document too
    assert torch.allclose(masked[:, 10:], alone, atol=1e-5)
    assert not torch.allclose(unmasked[:, 10:], alone, atol=1e-3)


def test_copy_spans_repeat_an_earlier_span_and_draw_nothing_at_zero():
    from data.prepare import copy_spans

    w = torch.arange(16 * 65).view(16, 65)
    gen = torch.Generator().manual_seed(0)
    out = copy_spans(w.clone(), 1.0, gen)
    for row in out.tolist():
        assert len(set(row)) <= 65 - 8  # a span of at least 65 // 8 tokens appears twice
    state = gen.get_state()
    assert torch.equal(copy_spans(w.clone(), 0.0, gen), w) and torch.equal(gen.get_state(), state)


def tiny_sweep(tmp_path, *extra):
    argv = ["--sweep", "repeated", "--preset", "tiny", "--repeat_counts", "2,4"]
    argv += ["--sweep_widths", "16,32", "--n_embd", "32", "--steps", "20", "--block_size", "32"]
    argv += ["--eval_iters", "2", "--eval_interval", "5", "--out_dir", str(tmp_path), "--quiet"]
    cfg = train_lm.parse_args(argv + list(extra))
    res = repeated_data.sweep(cfg, train_lm.main)
    return cfg, res, json.load(open(tmp_path / "tiny" / "repeated" / "results.json"))


def test_repeated_sweep_writes_the_contract_and_the_fuller_sweep_adds_to_it(tmp_path):
    cfg, res, saved = tiny_sweep(tmp_path)
    assert cfg.data == "markov" and cfg.tokenizer == "bytes"
    assert [p["repeat_count"] for p in saved["points"]] == [0, 2, 4]
    assert saved["points"][0]["repeated_fraction"] == 0
    assert saved["points"][1]["repeated_fraction"] == pytest.approx(cfg.repeat_frac)
    for p in saved["points"]:
        assert set(p) >= {
            "repeat_count",
            "repeated_fraction",
            "params",
            "heldout_loss",
            "repeated_train_loss",
            "copying_loss",
            "max_prefix_matching",
            "heldout_loss_curve",
        }
        assert 0 <= p["max_prefix_matching"] <= 1
        # the curve: every evaluation, the last one the run's final held-out loss
        assert [c["step"] for c in p["heldout_loss_curve"]] == [0, 5, 10, 15, 20]
        assert p["heldout_loss_curve"][-1]["heldout_loss"] == p["heldout_loss"]
        assert (p["heldout_loss_curve"][0]["repeated_loss"] is None) == (p["repeat_count"] == 0)
    assert [s["width"] for s in saved["baseline_sizes"]] == [16, 32]
    assert len(saved["effective_params"]) == 2
    assert saved["seconds"] > 0 and res["targets"].keys() == saved["targets"].keys()
    assert [s["repeat_frac"] for s in saved["shares"]] == [cfg.repeat_frac]
    assert saved["shares"][0]["points"] == saved["points"]
    floor = saved["entropy_floor"]
    assert 0 < floor < math.log(256)
    assert saved["reducible_loss_no_repeat"] == pytest.approx(
        saved["points"][0]["heldout_loss"] - floor
    )
    assert saved["peak"]["repeat_count"] in (2, 4)
    assert saved["other_seed_no_repeat"] == [] and saved["fewer_tokens"] == []
    # the fuller sweep: another share, the second seed, the fewer-tokens control
    first = saved
    cfg, res, saved = tiny_sweep(tmp_path, "--sweep_full", "--sweep_shares", "0.5")
    # the default sweep's runs are read back, not trained again (their timings are the same)
    assert [p["seconds"] for p in saved["points"]] == [p["seconds"] for p in first["points"]]
    assert [s["repeat_frac"] for s in saved["shares"]] == [cfg.repeat_frac, 0.5]
    assert saved["shares"][1]["points"][0] == saved["points"][0]  # one run without repetition
    assert saved["shares"][1]["points"][1]["repeated_fraction"] == pytest.approx(0.5)
    other = saved["other_seed"]["points"]
    assert [p["seed"] for p in other] == [cfg.seed + 1] * 3 and other[0]["repeat_count"] == 0
    assert saved["other_seed_no_repeat"] == [other[0]]
    # the unique tokens only: 20 steps less the repeated share
    assert saved["fewer_tokens"][0]["steps"] == round(20 * (1 - cfg.repeat_frac))
    assert "fewer_tokens_cost_less_than_the_peak" in saved["targets"]


def test_effective_size_reads_a_loss_on_the_no_repeat_curve():
    sizes = [{"params": 1000, "heldout_loss": 3.0}, {"params": 4000, "heldout_loss": 2.0}]
    assert repeated_data.effective_params(2.5, sizes) == pytest.approx(2000)  # halfway in log
    assert repeated_data.effective_params(3.0, sizes) == pytest.approx(1000)
    assert repeated_data.effective_params(3.1, sizes) is None  # outside the measured sizes
    rising = [{"params": 1000, "heldout_loss": 2.0}, {"params": 4000, "heldout_loss": 3.0}]
    assert repeated_data.effective_params(2.5, rising) is None


def test_the_peak_is_the_worst_repeat_count_read_against_the_floor():
    def point(count, loss, copying):
        return dict(
            repeat_count=count,
            heldout_loss=loss,
            copying_loss=copying,
            params=100,
            effective_params=50,
            memorised_at_step=None,
        )

    points = [point(0, 2.5, 1.0), point(10, 2.6, 1.5), point(100, 2.7, 1.2), point(1000, 2.55, 1.1)]
    top = repeated_data.peak(points, floor=2.3)
    assert top["repeat_count"] == 100 and top["later_lower"]
    assert top["heldout_excess"] == pytest.approx(0.2 / 2.5)
    assert top["share_of_reducible"] == pytest.approx(0.2 / 0.2)
    assert top["copying_excess"] == pytest.approx(0.2) and top["effective_size"] == 0.5
    assert not repeated_data.peak(points[:3], floor=2.3)["later_lower"]  # no count after the peak


def test_markov_language_has_its_successors_and_its_entropy_floor():
    """Each row of the table has exactly `successors` possible next tokens; without copies
    the floor is the table's own loss along the documents (the first token: log vocab)."""
    P = prepare.markov_table(32, 4, seed=0)
    assert np.allclose(P.sum(1), 1) and ((P > 0).sum(1) == 4).all()
    x = prepare.markov_documents(P, 200, 64, 0.0, seed=1)
    nll = -np.log(P[x[:, :-1], x[:, 1:]])
    assert np.isfinite(nll).all()  # every transition possible
    assert prepare.markov_floor(P, x, 0.0) == pytest.approx((nll.sum() + 200 * np.log(32)) / x.size)


def test_markov_documents_repeat_their_first_half_from_a_random_point():
    P = prepare.markov_table(256, 16, seed=0)
    x = prepare.markov_documents(P, 4000, 128, 0.5, seed=1)
    rotations = [[(np.roll(d[:64], -r) == d[64:]).all() for r in range(64)] for d in x]
    copies = np.array([any(r) for r in rotations])
    assert 0.47 < copies.mean() < 0.53
    starts = [r.index(True) for r, c in zip(rotations, copies, strict=True) if c]
    assert len(set(starts)) == 64  # every starting point: the repeat's offset varies
    # the other documents go on with the chain: every transition possible
    assert (P[x[~copies, :-1], x[~copies, 1:]] > 0).all()


def test_markov_floor_is_the_bayes_predictor_written_out_by_enumeration():
    """The floor against an obvious reference: the predictive probability of each token
    of the second half as a ratio of joint probabilities, summed over the hypotheses
    "chain" and "copy from starting point r" by brute force."""
    P = prepare.markov_table(8, 3, seed=0)
    x = prepare.markov_documents(P, 200, 12, 0.4, seed=1)

    def joint(doc, end):  # p(second half up to end | first half), over the hypotheses
        copies = [all(doc[i] == doc[(i - 6 + r) % 6] for i in range(6, end)) for r in range(6)]
        chain = 0.6 * np.prod([P[doc[i - 1], doc[i]] for i in range(6, end)])
        return 0.4 / 6 * sum(copies) + chain

    total = 0.0
    for doc in x:
        logp = np.log(1 / 8) + np.log(P[doc[:5], doc[1:6]]).sum()  # first token, first half
        for t in range(6, 12):
            logp += np.log(joint(doc, t + 1) / joint(doc, t))
        total -= logp
    assert prepare.markov_floor(P, x, 0.4) == pytest.approx(total / x.size)
    # a predictor that ignores the repeats does worse; the floor on the first tokens only
    assert prepare.markov_floor(P, x, 0.0001) > prepare.markov_floor(P, x, 0.4)
    first = -(np.log(1 / 8) + np.log(P[x[:, :3], x[:, 1:4]]).sum(1)).sum() / (200 * 4)
    assert prepare.markov_floor(P, x, 0.4, targets=4) == pytest.approx(first)


def test_markov_windows_are_whole_documents_read_once(tmp_path):
    """Each window of a prepared Markov split is <|endoftext|> and one document; training
    reads them in a permutation (train_lm.main), evaluation the first ones in order."""
    d, meta = prepare.prepare("markov", "bytes", verbose=False)
    ids = np.asarray(prepare.load_split(d, "val", meta)[0])
    period = meta["period"]
    assert len(ids) == 1 + period * prepare.MARKOV["val"]
    windows = ids[: period * 4].reshape(4, period).astype(np.int64)
    assert (windows[:, 0] == 256).all() and (windows[:, 1:] < 256).all()
    x, y = prepare.get_batch(ids, None, period - 1, 4, None, "cpu", starts=period * np.arange(4))
    assert x.tolist() == windows[:, :-1].tolist() and y.tolist() == windows[:, 1:].tolist()
    # the floor is computed on these very documents and targets
    P = prepare.markov_table(prepare.MARKOV["vocab"], prepare.MARKOV["successors"], seed=0)
    floor = prepare.markov_floor(P, windows[:, 1:], prepare.MARKOV["p_copy"], period - 1)
    assert prepare.markov_heldout_floor(4, period - 1) == pytest.approx(floor)
    with pytest.raises(SystemExit, match="block_size 128 or less"):
        train_lm.main(
            train_lm.parse_args(
                [
                    "--data",
                    "markov",
                    "--block_size",
                    "256",
                    "--preset",
                    "tiny",
                    "--out_dir",
                    str(tmp_path),
                ]
            )
        )


def test_bytes_tokenizer_is_one_token_per_byte():
    from data.tokenizer import eot_id, get_tokenizer

    enc = get_tokenizer("bytes")
    assert enc.n_vocab == 258 and eot_id(enc) == 256
    assert enc.encode_ordinary("héllo") == list("héllo".encode())
    assert all(enc.decode_single_token_bytes(i) == bytes([i]) for i in range(256))


def test_repeated_slots_replace_exactly_their_batch_rows():
    x, y = torch.zeros(4, 8, dtype=torch.long), torch.zeros(4, 8, dtype=torch.long)
    windows = np.arange(3 * 9).reshape(3, 9) + 1
    x, y = prepare.fill_repeated(x, y, np.array([-1, 2, -1, 0]), windows)
    assert x[0].eq(0).all() and x[2].eq(0).all()  # unique rows untouched
    assert x[1].tolist() == windows[2, :-1].tolist() and y[1].tolist() == windows[2, 1:].tolist()
    assert x[3].tolist() == windows[0, :-1].tolist() and y[3].tolist() == windows[0, 1:].tolist()


def test_repeated_subset_of_the_synthetic_stream_shares_nothing_with_held_out_data():
    """The subset comes from the training split of a prepared stream; no 16-gram of it
    occurs in the validation split (random tokens: any shared 16-gram would be a leak)."""
    from data.prepare import load_split, prepare, repeated_subset

    d, meta = prepare("synthetic", "world", verbose=False)
    train, val = (np.asarray(load_split(d, s, meta)[0]) for s in ("train", "val"))
    _, windows, _ = repeated_subset(train, 128, 400, 16, 0.1, 2, 0)
    vb = val.astype(np.uint16).tobytes()
    assert not any(
        w[i : i + 16].astype(np.uint16).tobytes() in vb
        for w in windows
        for i in range(0, 129 - 16, 16)
    )
    with pytest.raises(SystemExit, match="both"):
        train_lm.parse_args(["--repeat_count", "4"])
