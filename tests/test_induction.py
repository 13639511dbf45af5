"""Induction-head measurements on hand-built cases where the answer is known, then a short
training run in which a 2-layer model forms induction heads and a 1-layer model does not."""

import copy
import json

import numpy as np
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
    # no chance duplicates: only i - n + 1 follows an earlier copy
    tokens = torch.arange(n).repeat(2)[None]
    prefix = induction.prefix_matching([perfect, prev, uniform], tokens, n)
    assert prefix[0, 0].item() == 1.0
    assert prefix[1, 0].item() == 0.0  # a previous-token head is not an induction head
    assert 0.0 < prefix[2, 0].item() < 0.15
    # with a chance duplicate, attention after *any* earlier occurrence of the token counts
    dup = torch.tensor([[5, 1, 5, 2, 5, 1, 5, 2]])  # n = 4
    after_first = pattern(8, lambda i: 1 if i >= 4 and i % 2 == 0 else i)  # the 5s attend to 1
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
        m.blocks[0].attn.qkv.weight[2 * d :] = Wv.T
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
    # short contexts use the scaled positions 50/512 T and 500/512 T
    short = 3.0 - torch.arange(64) / 64
    assert induction.icl_score(short) == pytest.approx(-(61 - 6) / 64, abs=1e-5)


def test_prefix_matching_with_random_periods_defeats_a_positional_head():
    """With one period per sequence, a head that always attends a fixed offset back scores 1
    only on the sequence whose period matches the offset."""
    periods = torch.tensor([5, 8])
    T = 16
    tokens = torch.stack(
        [
            torch.cat([torch.arange(p), torch.arange(p), 100 + torch.arange(T - 2 * p)])
            for p in periods.tolist()
        ]
    )

    def back(p):  # each query attends to the token p - 1 before it
        return pattern(T, lambda i: i - p + 1)

    fixed = back(5).expand(2, 1, T, T)  # offset right for period 5 only
    induction_ = torch.cat([back(p) for p in periods.tolist()])
    score = induction.prefix_matching([induction_], tokens, periods)[0, 0].item()
    assert score == pytest.approx(1.0)
    # sequence 1: 5/5 second-copy tokens right; sequence 2: 0/8 -> 5/13
    assert induction.prefix_matching([fixed], tokens, periods)[0, 0].item() == pytest.approx(5 / 13)
    x, n = induction.repeated_random(64, 32, 50, torch.Generator().manual_seed(0), T=64)
    assert len(set(n.tolist())) > 10 and n.min() >= 8 and n.max() <= 32
    assert all(torch.equal(x[b, :p], x[b, p : 2 * p]) for b, p in enumerate(n.tolist()))


def test_previous_token_score_on_hand_built_patterns():
    prev = pattern(10, lambda i: i - 1)  # query 0 attends to itself
    same = pattern(10, lambda i: i)
    scores = induction.prev_token_scores([torch.cat([prev, same], 1)])
    assert scores[0, 0].item() == pytest.approx(1.0) and scores[0, 1].item() == 0.0


def test_head_ablation_matches_zeroing_the_heads_output_weights():
    """Reference: a copy of the model whose output projection has the head's columns zeroed."""
    torch.manual_seed(0)
    cfg = induction.parse_args(["--preset", "tiny", "--quiet"])
    model = induction.build("mlp2", cfg, cfg.vocab).eval()
    x = torch.randint(0, cfg.vocab, (3, 20))
    hd = cfg.n_embd // cfg.n_head
    for heads in ([(1, 2)], [(0, 0), (1, 1), (1, 3)]):
        ref = copy.deepcopy(model)
        with torch.no_grad():
            for layer, h in heads:
                ref.blocks[layer].attn.proj.weight[:, h * hd : (h + 1) * hd] = 0
        with induction.ablated(model, heads):
            got = model(x)[0]
        assert torch.allclose(got, ref(x)[0], atol=1e-6)
        # and the hooks are gone after the block
        assert not torch.allclose(got, model(x)[0], atol=1e-4)


def test_k_composition_on_hand_built_weights():
    """Layer-0 head 0 writes only into dimensions 0-7; layer-1 head 0's key reads exactly
    those, head 1's key reads only dimensions 8-15: composition 1/sqrt(rank)-ish vs zero."""
    cfg = induction.parse_args(["--preset", "tiny", "--n_embd", "16", "--n_head", "2", "--quiet"])
    model = induction.build("attn2", cfg, cfg.vocab)
    C = 16
    with torch.no_grad():
        for blk in model.blocks:
            blk.ln1.fill_(1.0)
        w0, w1 = model.blocks[0].attn, model.blocks[1].attn
        w0.proj.weight.zero_()
        # head 0 (columns 0-7) writes dims 0-7; head 1 writes nothing
        w0.proj.weight[:8, :8] = torch.eye(8)
        w1.qkv.weight[C : 2 * C].zero_()
        w1.qkv.weight[C : C + 8, :8] = torch.eye(8)  # head 0's key reads dims 0-7
        w1.qkv.weight[C + 8 : 2 * C, 8:] = torch.eye(8)  # head 1's key reads dims 8-15
    kc = induction.k_composition(model)
    assert kc.shape == (2, 2) and kc[0, 0] > 0.2 and kc[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert induction.k_composition(induction.build("attn1", cfg, cfg.vocab)) is None


def test_phase_change_window_and_shares():
    curves = [  # step, best prefix matching, ICL score, loss
        (0, 0.0, 0.0, 4.0),
        (20, 0.05, -0.1, 3.9),
        (40, 0.2, -0.2, 3.8),
        (60, 0.6, -0.9, 3.2),
        (80, 0.95, -1.0, 3.0),
        (100, 1.0, -1.0, 3.0),
    ]
    snaps = [
        {"step": step, "max_prefix_matching": pm, "icl_score": icl, "eval_loss": loss}
        for step, pm, icl, loss in curves
    ]
    pc = induction.phase_change(snaps, 0.3)
    # rise 0 -> 1: first >= 0.1 at step 40, so the window starts at 20; first >= 0.9 at 80;
    # half at 60
    assert pc["pm_window"] == {"start": 20, "end": 80} and pc["phase_change_step"] == 60
    assert pc["icl_change_in_window"] == pytest.approx(0.9)
    assert pc["loss_change_in_window"] == pytest.approx(0.9)
    flat = [dict(s, max_prefix_matching=0.1) for s in snaps]
    assert induction.phase_change(flat, 0.3) == {
        "phase_change_step": None,
        "pm_window": None,
        "icl_change_in_window": None,
        "loss_change_in_window": None,
    }


def test_smeared_keys_start_without_a_previous_token_mechanism():
    cfg = induction.parse_args(["--preset", "tiny", "--quiet"])
    model = induction.build("smear1", cfg, cfg.vocab)
    assert torch.allclose(torch.sigmoid(model.blocks[0].attn.smear), torch.tensor(cfg.smear_init))
    opt = induction.make_optimizer(model, cfg, torch.device("cpu"))
    groups = [[id(p) for p in g["params"]] for g in opt.param_groups]
    # each parameter once
    assert sorted(sum(groups, [])) == sorted(id(p) for p in model.parameters())
    assert opt.param_groups[-1]["params"] == [model.blocks[0].attn.smear]
    assert opt.param_groups[-1]["lr_mult"] == cfg.smear_lr_mult


def test_text_windows_copy_an_earlier_span():
    ids = np.arange(10_000)  # no natural repeats: every repeat comes from the copy
    x, y = induction.text_batch(ids, 16, 64, torch.Generator().manual_seed(0), repeat_frac=1.0)
    for row in x.tolist():
        grams = [tuple(row[i : i + 8]) for i in range(57)]
        assert len(set(grams)) < len(grams)
    x, _ = induction.text_batch(ids, 16, 64, torch.Generator().manual_seed(0), repeat_frac=0.0)
    assert all(len(set(row)) == 64 for row in x.tolist())


def test_synthetic_batches_repeat_a_segment():
    x, y = induction.synthetic_batch(8, 64, 50, torch.Generator().manual_seed(0))
    assert x.shape == (8, 64) and torch.equal(x[:, 1:], y[:, :-1])
    for row in x.tolist():  # some 8-gram appears twice
        grams = [tuple(row[i : i + 8]) for i in range(57)]
        assert len(set(grams)) < len(grams)


def test_training_run_writes_results_and_analyze_reads_the_checkpoint(tmp_path):
    """Plumbing only: a few steps, the results contract, and --analyze on the checkpoint."""
    argv = "--models attn1,smear1,mlp2 --steps 20 --mlp_steps 10 --snap_every 10"
    argv += " --block_size 32 --seeds 2 --quiet"
    res = induction.main(induction.parse_args([*argv.split(), "--out_dir", str(tmp_path)]))
    saved = json.load(open(tmp_path / "results.json"))
    models = saved["models"]
    assert models["smear1"]["smeared_key"] is True and models["attn1"]["layers"] == 1
    assert models["mlp2"]["attn_only"] is False and models["attn1"]["attn_only"] is True
    keys = {
        "layers",
        "smeared_key",
        "attn_only",
        "phase_change_step",
        "final_icl_score",
        "max_prefix_matching",
        "pm_window",
        "icl_change_in_window",
        "ablation",
        "prev_token_max",
        "k_composition_max",
        "k_composition_init",
    }
    for m in models.values():
        assert set(m) >= keys
        assert set(m["ablation"]) >= {"icl_score_intact", "icl_score_top_head_ablated", "top_head"}
    assert models["mlp2"]["k_composition_max"] > 0 and models["attn1"]["k_composition_max"] is None
    # smear1 is a seed model; attn1 is not; no attn2 in this run
    assert [r["seed"] for r in models["smear1"]["runs"]] == [0, 1]
    assert len(models["attn1"]["runs"]) == 1 and saved["seeds"] == []
    # snapshots: 3 per attention-only run (attn1, smear1 x 2), 2 for mlp2's 10 steps
    assert len(open(tmp_path / "metrics.jsonl").read().splitlines()) == 3 * 3 + 2
    rows = induction.analyze(str(tmp_path / "attn1.pt"), torch.device("cpu"))
    assert len(rows) == 4 and rows == sorted(rows, key=lambda r: -r["prefix_matching"])
    assert models["attn1"]["max_prefix_matching"] == res["models"]["attn1"]["max_prefix_matching"]


@pytest.mark.slow
def test_two_layers_form_induction_heads_one_layer_does_not(tmp_path):
    """The phase change itself, in a short run (800 steps). Prints each measured
    value next to the bound it is held to."""
    argv = "--models attn1,attn2 --seeds 1 --steps 800 --snap_every 50 --quiet".split()
    m = induction.main(induction.parse_args([*argv, "--out_dir", str(tmp_path)]))["models"]
    attn1, attn2, a = m["attn1"], m["attn2"], m["attn2"]["ablation"]
    print(
        f"attn2 max prefix matching {attn2['max_prefix_matching']:.3f} (> 0.4), "
        f"attn1 {attn1['max_prefix_matching']:.3f} (< 0.15); final ICL score attn2 "
        f"{attn2['final_icl_score']:.3f} (< attn1 - 0.3 = {attn1['final_icl_score'] - 0.3:.3f}); "
        f"induction heads {a['induction_heads']} zeroed: ICL score "
        f"{induction.fmt(a['icl_score_induction_heads_ablated'])} "
        f"(> attn1 {attn1['final_icl_score']:.3f})"
    )
    assert attn2["max_prefix_matching"] > 0.4 and attn2["phase_change_step"] is not None
    assert attn1["max_prefix_matching"] < 0.15 and attn1["phase_change_step"] is None
    assert attn2["final_icl_score"] < attn1["final_icl_score"] - 0.3
    assert attn2["top_heads"][0]["head"].startswith("1.")  # the induction head sits in layer 1
    # zeroing the induction heads together takes the ICL score back past the 1-layer model's
    assert a["induction_heads"]
    assert a["icl_score_induction_heads_ablated"] > attn1["final_icl_score"]


@pytest.mark.slow
def test_gpu_preset_and_text_data_build_and_name_their_tokenizer(tmp_path):
    """The gpu preset keeps the synthetic vocabulary; on text the checkpoint records the
    tokenizer (not the data path), so --analyze can read it back."""
    out = ["--out_dir", str(tmp_path), "--quiet"]
    argv = "--preset gpu --models attn1 --steps 1 --snap_every 1 --batch_size 2 --n_embd 32"
    cfg = induction.parse_args(argv.split() + out)
    assert cfg.vocab == 64 and cfg.block_size == 512
    assert induction.main(cfg)["models"]["attn1"]["layers"] == 1
    assert (tmp_path / "gpu" / "attn1.pt").exists()
    argv = "--preset text --data world --models attn1 --steps 1 --snap_every 1 --batch_size 2"
    induction.main(induction.parse_args(argv.split() + ["--block_size", "32"] + out))
    checkpoint = str(tmp_path / "world" / "text" / "attn1.pt")
    assert torch.load(checkpoint, weights_only=True)["tokenizer"] == "world"
    assert len(induction.analyze(checkpoint, torch.device("cpu"))) == 4


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
        ),
    ],
)
def test_snapshot_measurements_run_on_the_models_device(device):
    """A snapshot (ICL score, per-head prefix matching) runs wherever the model is: every
    tensor it builds follows the model's device (on a GPU machine this catches a mask left
    on the CPU), and the results come back on the CPU for logging."""
    cfg = induction.parse_args(["--preset", "tiny", "--quiet"])
    model = induction.build("attn2", cfg, cfg.vocab).to(device)
    n = cfg.block_size // 2
    x = induction.repeated_random(4, n, cfg.vocab, torch.Generator().manual_seed(0))[0]
    x = x.to(device)
    tokens, periods = induction.repeated_random(
        4, n, cfg.vocab, torch.Generator().manual_seed(1), cfg.block_size
    )
    probe = (tokens.to(device), periods.to(device))
    snap = induction.measure(model, (x[:, :-1], x[:, 1:]), probe, cfg.threshold)
    assert snap["prefix_matching"].device.type == "cpu"
    assert snap["prefix_matching"].shape == (2, cfg.n_head)
    assert 0.0 <= float(snap["prefix_matching"].max()) <= 1.0
    assert torch.isfinite(torch.tensor(snap["icl_score"]))
    assert snap["ablated_icl"].shape == (2, cfg.n_head) and snap["prev_token"].device.type == "cpu"
