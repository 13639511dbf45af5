"""Induction-head measurements on hand-built cases where the answer is known, then a short
training run in which a 2-layer model forms induction heads and a 1-layer model does not."""

import json

import pytest
import torch

import induction
from model import GPT, GPTConfig


def pattern(T, targets):
    """(1, 1, T, T) attention that puts all weight of query i on key targets(i)."""
    a = torch.zeros(1, 1, T, T)
    for i in range(T):
        a[0, 0, i, max(0, min(i, targets(i)))] = 1.0
    return a


def test_prefix_matching_on_hand_built_patterns():
    n = 10
    perfect = pattern(2 * n, lambda i: i - n + 1 if i >= n else 0)
    prev = pattern(2 * n, lambda i: i - 1)
    uniform = torch.ones(1, 1, 2 * n, 2 * n).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    tokens = torch.arange(n).repeat(2)[None]  # no chance duplicates: only i - n + 1 follows an earlier copy
    prefix = induction.prefix_matching([perfect, prev, uniform], tokens, n)
    assert prefix[0, 0].item() == 1.0
    assert prefix[1, 0].item() == 0.0  # a previous-token head is not an induction head
    assert 0.0 < prefix[2, 0].item() < 0.15
    # with a chance duplicate, attention after *any* earlier occurrence of the token counts
    dup = torch.tensor([[5, 1, 5, 2, 5, 1, 5, 2]])  # n = 4
    after_first = pattern(8, lambda i: 1 if i >= 4 and i % 2 == 0 else i)  # the 5s attend to position 1
    assert induction.prefix_matching([after_first], dup, 4)[0, 0].item() == pytest.approx(0.5)


def test_copying_score_on_hand_built_weights():
    torch.manual_seed(0)
    d, H, V = 16, 2, 40
    m = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=H, n_embd=d, attn_only=True))
    with torch.no_grad():
        m.ln_f.fill_(1.0), m.blocks[0].ln1.fill_(1.0)
        q = torch.linalg.qr(torch.randn(d, d))[0]
        m.wte.weight.copy_(torch.randn(V, d) @ q)
        hd = d // H
        # head 0 copies: V projects onto its subspace and O maps it straight back (W_V W_O = P)
        # head 1 suppresses: the same with a minus sign
        Wv = torch.eye(d)
        m.blocks[0].attn.qkv.weight[2 * d:] = Wv.T
        Wo = torch.eye(d)
        Wo[hd:, :] *= -1
        m.blocks[0].attn.proj.weight.copy_(Wo.T)
    eig, logit = induction.copying_scores(m)
    assert eig[0, 0].item() == pytest.approx(1.0, abs=1e-4)
    assert eig[0, 1].item() == pytest.approx(-1.0, abs=1e-4)
    assert logit[0, 0].item() > logit[0, 1].item()


def test_icl_score_on_synthetic_loss_curve():
    T = 512
    flat = torch.full((T,), 3.0)
    assert induction.icl_score(flat) == 0.0
    curve = 3.0 - torch.arange(T) / T  # loss falls linearly with position
    assert induction.icl_score(curve) == pytest.approx(-(500 - 50) / T, abs=1e-5)
    short = 3.0 - torch.arange(64) / 64  # short contexts use the scaled positions 50/512 T and 500/512 T
    assert induction.icl_score(short) == pytest.approx(-(61 - 6) / 64, abs=1e-5)


def test_phase_change_detection():
    snaps = [{"step": s, "max_prefix_matching": p, "icl_score": i} for s, p, i in
             [(0, 0.02, 0.0), (20, 0.03, 0.0), (40, 0.05, -0.01), (60, 0.4, -0.5), (80, 0.7, -0.6)]]
    cross, icl_step, window = induction.phase_change(snaps, 0.3)
    assert cross == 60 and icl_step == 60 and window == [20, 60]  # 20: last step still < 10% of the way up
    assert induction.phase_change(snaps[:3], 0.3)[0] is None


def test_synthetic_batches_repeat_a_segment():
    x, y = induction.synthetic_batch(8, 64, 50, torch.Generator().manual_seed(0))
    assert x.shape == (8, 64) and torch.equal(x[:, 1:], y[:, :-1])
    for row in x.tolist():  # some 8-gram appears twice
        grams = [tuple(row[i:i + 8]) for i in range(57)]
        assert len(set(grams)) < len(grams)


def test_training_run_writes_results_and_analyze_reads_the_checkpoint(tmp_path):
    """Plumbing only: a few steps, the results contract, and --analyze on the checkpoint.
    (Whether a phase change appears is the open part of issue 4, not asserted here.)"""
    cfg = induction.parse_args(["--models", "attn1,smear1", "--steps", "20", "--snap_every", "10",
                                "--block_size", "32", "--out_dir", str(tmp_path), "--quiet"])
    res = induction.main(cfg)
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["models"]["smear1"]["smeared_key"] is True and saved["models"]["attn1"]["layers"] == 1
    for m in saved["models"].values():
        assert set(m) >= {"layers", "smeared_key", "phase_change_step", "final_icl_score", "max_prefix_matching"}
    assert len(open(tmp_path / "metrics.jsonl").read().splitlines()) == 2 * 3  # 3 snapshots per model
    rows = induction.analyze(str(tmp_path / "attn1.pt"), torch.device("cpu"))
    assert len(rows) == 4 and rows == sorted(rows, key=lambda r: -r["prefix_matching"])
    assert saved["models"]["attn1"]["max_prefix_matching"] == res["models"]["attn1"]["max_prefix_matching"]


@pytest.mark.slow
def test_two_layers_form_induction_heads_one_layer_does_not(tmp_path):
    """The phase change itself, short: under a minute on 2 CPU cores."""
    cfg = induction.parse_args(["--models", "attn1,attn2", "--steps", "800", "--snap_every", "50",
                                "--out_dir", str(tmp_path), "--quiet"])
    m = induction.main(cfg)["models"]
    print({k: (v["max_prefix_matching"], v["phase_change_step"]) for k, v in m.items()})
    assert m["attn2"]["max_prefix_matching"] > 0.4 and m["attn2"]["phase_change_step"] is not None
    assert m["attn1"]["max_prefix_matching"] < 0.15 and m["attn1"]["phase_change_step"] is None
    assert m["attn2"]["final_icl_score"] < m["attn1"]["final_icl_score"] - 0.3
    assert m["attn2"]["top_heads"][0]["head"].startswith("1.")  # the induction head sits in layer 1


@pytest.mark.slow
def test_gpu_preset_and_text_data_build_and_name_their_tokenizer(tmp_path):
    """The gpu preset keeps the synthetic vocabulary; on text the checkpoint records the
    tokenizer (not the data path), so --analyze can read it back."""
    cfg = induction.parse_args(["--preset", "gpu", "--models", "attn1", "--steps", "1", "--snap_every", "1",
                                "--batch_size", "2", "--n_embd", "32", "--out_dir", str(tmp_path), "--quiet"])
    assert cfg.vocab == 64 and cfg.block_size == 512
    assert induction.main(cfg)["models"]["attn1"]["layers"] == 1 and (tmp_path / "gpu" / "attn1.pt").exists()
    cfg = induction.parse_args(["--preset", "text", "--models", "attn1", "--steps", "1", "--snap_every", "1",
                                "--batch_size", "2", "--block_size", "32", "--out_dir", str(tmp_path), "--quiet"])
    induction.main(cfg)
    assert torch.load(tmp_path / "world" / "text" / "attn1.pt", weights_only=True)["tokenizer"] == "world"
    assert len(induction.analyze(str(tmp_path / "world" / "text" / "attn1.pt"), torch.device("cpu"))) == 4


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_snapshot_measurements_run_on_the_models_device(device):
    """A snapshot (ICL score, per-head prefix matching) runs wherever the model is: every
    tensor it builds follows the model's device (on a GPU machine this catches a mask left
    on the CPU), and the results come back on the CPU for logging."""
    cfg = induction.parse_args(["--preset", "tiny", "--quiet"])
    model = induction.build("attn2", cfg, cfg.vocab).to(device)
    x = induction.repeated_random(4, cfg.block_size // 2, cfg.vocab, torch.Generator().manual_seed(0)).to(device)
    snap = induction.measure(model, cfg, (x[:, :-1], x[:, 1:]), cfg.vocab)
    assert snap["prefix_matching"].device.type == "cpu" and snap["prefix_matching"].shape == (2, cfg.n_head)
    assert 0.0 <= float(snap["prefix_matching"].max()) <= 1.0 and torch.isfinite(torch.tensor(snap["icl_score"]))
