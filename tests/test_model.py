"""model.py against slow, obvious references. Each test is a small exercise: read the
reference, then the fast code it checks."""

import math
import os
from types import SimpleNamespace

import pytest
import torch

import model
from model import (
    GPT,
    GPTConfig,
    configure_optimizer,
    filter_logits,
    flops_per_token,
    generate,
    left_pad,
    load_checkpoint,
    lr_at,
    mfu,
    optimizer_step,
    save_checkpoint,
    token_logprobs,
)

VARIANTS = {"plain": {}, "attn_only": {"attn_only": True}, "smeared": {"smeared_key": True}}


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=32, **kw)
    return GPT(cfg).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_attention_matches_explicit(variant):
    m = tiny(**VARIANTS[variant])
    x = torch.randint(0, 97, (3, 40))
    fused, _ = m(x)
    slow, _ = m(x, explicit=True)
    assert (fused - slow).abs().max().item() <= 1e-5


def test_attention_patterns_are_causal_distributions():
    m = tiny()
    atts = m.attention_patterns(torch.randint(0, 97, (2, 16)))
    assert len(atts) == 2 and atts[0].shape == (2, 4, 16, 16)
    for a in atts:
        assert torch.allclose(a.sum(-1), torch.ones(2, 4, 16), atol=1e-6)
        assert a.triu(1).abs().max().item() == 0.0  # no attention to the future


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padding_does_not_change_logits(variant):
    m = tiny(**VARIANTS[variant])
    a, b = torch.randint(0, 97, (9,)).tolist(), torch.randint(0, 97, (21,)).tolist()
    idx, pad = left_pad([a, b], pad_id=0, device="cpu")
    batched, _ = m(idx, pad_mask=pad)
    alone_a, _ = m(torch.tensor([a]))
    alone_b, _ = m(torch.tensor([b]))
    assert (batched[0, -len(a) :] - alone_a[0]).abs().max().item() <= 1e-5
    assert (batched[1] - alone_b[0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_cached_sampling_equals_full_recomputation(variant):
    m = tiny(seed=1, **VARIANTS[variant])
    prompts = [torch.randint(1, 97, (n,)).tolist() for n in (3, 11, 7, 1)]
    fast = generate(m, prompts, 25, temperature=0)
    slow = generate(m, prompts, 25, temperature=0, use_cache=False)
    assert torch.equal(fast["tokens"], slow["tokens"])
    # and the reference really is a full recomputation: greedy argmax of the plain forward
    row = torch.tensor([prompts[1]])
    for _ in range(25):
        row = torch.cat([row, m(row)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert fast["tokens"][1].tolist() == row[0].tolist()


def test_generate_stops_at_end_token_and_masks():
    m = tiny(seed=2)
    prompts = [[5, 6, 7], [8]]
    greedy = generate(m, prompts, 10, temperature=0)
    eot = greedy["tokens"][0, 3 + 2].item()  # make the 3rd generated token of row 0 the end token
    out = generate(m, prompts, 10, temperature=0, eot_id=eot)
    t, g = out["tokens"], out["gen_mask"]
    assert g[:, :3].sum() == 0  # prompt positions are not generated
    first_end = [
        (row == eot).nonzero()[0].item() if (row == eot).any() else None for row in t[:, 3:]
    ]
    for i, fe in enumerate(first_end):
        if fe is not None:  # generated up to and including the end token, masked after it
            assert g[i, 3 : 3 + fe + 1].all() and not g[i, 3 + fe + 1 :].any()
            assert (t[i, 3 + fe :] == eot).all()


def test_sampling_logprobs_match_recomputed_logprobs():
    """The log-probs returned by the sampler are those of a fresh forward pass on the whole
    sequence at the same temperature: what makes PPO's first ratio exactly 1."""
    m = tiny(seed=3)
    prompts = [[1, 2, 3, 4, 5], [9, 8], [7, 7, 7, 7, 7, 7, 7, 7]]
    g = torch.Generator().manual_seed(0)
    out = generate(m, prompts, 12, temperature=0.7, generator=g)
    logits, _ = m(out["tokens"], pad_mask=out["pad_mask"])
    lp = token_logprobs(logits[:, :-1], out["tokens"][:, 1:], temperature=0.7)
    gm = out["gen_mask"][:, 1:]
    assert gm.sum() == 36
    assert (lp[gm] - out["logprobs"][:, 1:][gm]).abs().max().item() < 1e-5


def test_decode_steps_keep_one_shape():
    """The pre-allocated KV cache means every decoding step sees the same tensor shapes."""
    m = tiny()
    shapes = []
    h = m.blocks[0].attn.register_forward_pre_hook(
        lambda mod, args: shapes.append((tuple(args[0].shape), tuple(args[2].shape)))
    )
    generate(m, [[1, 2, 3], [4, 5, 6, 7, 8]], 8, temperature=1.0)
    h.remove()
    decode = shapes[1:]
    assert len(decode) == 7 and len(set(decode)) == 1 and decode[0] == ((2, 1, 32), (2, 1, 1, 13))


def test_filter_logits_against_reference():
    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    out = filter_logits(logits, 0.5, top_k=7, top_p=0.8)
    for row, filt in zip(logits, out, strict=True):
        order = sorted(range(30), key=lambda i: -row[i].item())[:7]  # top-k by hand
        probs = torch.softmax(row[order] / 0.5, 0).tolist()
        keep, mass = [], 0.0
        for i, p in zip(
            order, probs, strict=True
        ):  # nucleus by hand: smallest prefix with mass >= 0.8
            keep.append(i)
            mass += p
            if mass >= 0.8:
                break
        kept = set(torch.isfinite(filt).nonzero().flatten().tolist())
        assert kept == set(keep)
        assert torch.allclose(filt[keep], row[keep] / 0.5)


def test_scalar_head_is_padding_invariant():
    torch.manual_seed(0)
    m = GPT(
        GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=32, scalar_head=True)
    ).eval()
    a, b = [3, 4, 5, 6], list(range(10, 30))
    idx, pad = left_pad([a, b], 0, "cpu")
    s = m.score(idx, pad)
    assert s.shape == (2, 20)
    assert abs(s[0, -1].item() - m.score(torch.tensor([a]))[0, -1].item()) < 1e-5


def test_token_logprobs_reference():
    logits = torch.randn(2, 5, 11)
    toks = torch.randint(0, 11, (2, 5))
    ref = [
        [math.log(torch.softmax(logits[b, t], 0)[toks[b, t]].item()) for t in range(5)]
        for b in range(2)
    ]
    assert torch.allclose(token_logprobs(logits, toks), torch.tensor(ref), atol=1e-5)


def test_smeared_key_with_zero_weight_equals_plain_model():
    plain = tiny(seed=4)
    smeared = GPT(GPTConfig(**{**plain.cfg.__dict__, "smeared_key": True})).eval()
    state = {
        **plain.state_dict(),
        **{f"blocks.{i}.attn.smear": torch.full((4,), -float("inf")) for i in range(2)},
    }
    smeared.load_state_dict(state)
    x = torch.randint(0, 97, (2, 30))
    assert torch.equal(plain(x)[0], smeared(x)[0])
    smeared.blocks[0].attn.smear.data.fill_(0.0)  # and with weight 1/2 it differs
    assert not torch.allclose(plain(x)[0], smeared(x)[0])


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    m = tiny()
    path = str(tmp_path / "ck.pt")
    save_checkpoint(path, m, "world", step=7)
    assert os.listdir(tmp_path) == ["ck.pt"]  # the temp file was renamed away
    m2, ck = load_checkpoint(path)
    x = torch.randint(0, 97, (1, 10))
    assert torch.equal(m(x)[0], m2.eval()(x)[0]) and ck["step"] == 7 and ck["tokenizer"] == "world"
    with pytest.raises(
        SystemExit,
        match=r"ck\.pt: checkpoint and requested config disagree "
        r"\(n_embd: checkpoint has 32, requested 64\)",
    ):
        load_checkpoint(path, expect={"n_embd": 64})
    with pytest.raises(SystemExit, match="tokenizer: checkpoint has 'world', requested 'gpt2'"):
        load_checkpoint(path, tokenizer_name="gpt2")
    pm, _ = load_checkpoint(path, scalar_head=True)  # an LM initialises a PM with a fresh head
    assert pm.score(x).shape == (1, 10)


def test_bad_checkpoints_stop_with_one_line_naming_the_file(tmp_path):
    """Missing, truncated, garbage or foreign files: one line that names the file and says
    what to do, never a traceback from deep inside torch."""
    good = str(tmp_path / "good.pt")
    save_checkpoint(good, tiny(), "world")
    data = open(good, "rb").read()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for name, expected in [
        ("missing.pt", "no such checkpoint"),
        ("truncated.pt", "cannot read it as a checkpoint"),
        ("garbage.pt", "cannot read it as a checkpoint"),
        ("foreign.pt", "not a nanoalign checkpoint"),
    ]:
        with pytest.raises(SystemExit) as e:
            load_checkpoint(str(tmp_path / name))
        msg = str(e.value.code)
        assert msg.startswith(str(tmp_path / name) + ": " + expected) and "\n" not in msg, msg


def test_non_finite_weights_are_never_saved(tmp_path):
    m = tiny()
    path = str(tmp_path / "ck.pt")
    save_checkpoint(path, m, "world", step=1)
    before = open(path, "rb").read()
    with torch.no_grad():
        m.blocks[0].attn.qkv.weight[0, 0] = float("nan")
    with pytest.raises(SystemExit, match="refusing to save non-finite weights"):
        save_checkpoint(path, m, "world", step=2)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["ck.pt"]


def test_optimizer_step_stops_on_non_finite_loss_or_gradient():
    m = tiny()
    opt = configure_optimizer(m, 1e-3)
    x = torch.randint(0, 97, (2, 8))
    _, loss = m(x, x)
    loss.backward()
    w = m.blocks[0].fc.weight.detach().clone()
    assert optimizer_step(opt, m, loss, 1.0, step=1) > 0 and not torch.equal(
        w, m.blocks[0].fc.weight
    )
    _, loss = m(x, x)
    (loss * float("nan")).backward()
    w = m.blocks[0].fc.weight.detach().clone()
    with pytest.raises(SystemExit, match="non-finite loss .* at step 7"):
        optimizer_step(opt, m, loss * float("nan"), 1.0, step=7)
    assert torch.equal(w, m.blocks[0].fc.weight)  # nothing was stepped
    opt.zero_grad(set_to_none=True)
    _, loss = m(x, x)
    loss.backward()
    m.blocks[1].fc.weight.grad[0, 0] = float("inf")  # a finite loss with a non-finite gradient
    with pytest.raises(
        SystemExit, match=r"non-finite gradient \(loss [\d.]+, gradient norm inf\) at step 8"
    ):
        optimizer_step(opt, m, loss, 1.0, step=8)
    assert torch.equal(w, m.blocks[0].fc.weight)


def test_lr_schedule_shape():
    """Linear warm-up to lr, then a half cosine down to min_lr: checked by its landmarks."""
    lr, total, warmup, min_lr = 1e-3, 110, 10, 1e-4
    lrs = [lr_at(s, total, lr, warmup, min_lr) for s in range(total + 20)]
    # linear from lr/warmup
    assert lrs[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup] == pytest.approx(lr)  # the peak
    assert lrs[warmup + 50] == pytest.approx((lr + min_lr) / 2)  # halfway down the cosine: the mean
    assert lrs[warmup + 25] == pytest.approx(min_lr + (lr - min_lr) * (2 + 2**0.5) / 4)  # cos(pi/4)
    assert lrs[total:] == pytest.approx([min_lr] * 20)  # flat at min_lr after the end
    # never rises after the peak (strict=False: each step against the next)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))
    # min_lr = lr: constant after warm-up
    assert lr_at(50, total, lr, warmup, lr) == pytest.approx(lr)
    # warmdown 0.4: constant after warm-up until the last 40% of the steps, then linear to min_lr
    wd = [lr_at(s, 100, lr, warmup, min_lr, warmdown=0.4) for s in range(101)]
    assert wd[warmup:61] == pytest.approx([lr] * (61 - warmup)) and wd[100] == pytest.approx(min_lr)
    assert wd[80] == pytest.approx(min_lr + (lr - min_lr) / 2)


def test_padding_rows_of_the_vocabulary_are_never_sampled():
    torch.manual_seed(0)
    m = GPT(
        GPTConfig(vocab_size=64, vocab_valid=50, block_size=32, n_layer=1, n_head=2, n_embd=16)
    ).eval()
    with torch.no_grad():
        m.wte.weight[50:] = 100.0  # padding rows that would win every argmax if they had logits
    assert m(torch.tensor([[1, 2, 3]]))[0].shape[-1] == 50
    out = generate(m, [[1, 2, 3]] * 8, 10, temperature=1.0)
    assert out["tokens"].max().item() < 50


def test_optimizer_groups():
    m = tiny()
    opt = configure_optimizer(m, 1e-3)
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in m.named_parameters():
        assert (id(p) in decay) == (p.dim() == 2 and "wte" not in name), name


def test_mfu_and_flops():
    cfg = GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    n = GPT(cfg).num_params()
    assert abs(n - 85e6) < 1e6  # GPT-2 small without embeddings
    assert abs(flops_per_token(cfg, n) - (6 * (n + 50304 * 768) + 12 * 12 * 1024 * 768)) < 1
    assert mfu(cfg, n, 1000.0, "cpu") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_fused_matches_explicit():
    m = tiny().cuda()
    x = torch.randint(0, 97, (2, 40), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, _ = m(x)
        b, _ = m(x, explicit=True)
    assert (a.float() - b.float()).abs().max().item() < 5e-2
    fast = generate(m, [[1, 2, 3], [4, 5]], 10, temperature=0)
    slow = generate(m, [[1, 2, 3], [4, 5]], 10, temperature=0, use_cache=False)
    assert torch.equal(fast["tokens"], slow["tokens"])


def test_precision_auto_follows_the_chip(monkeypatch):
    """auto: bf16 only where the CPU computes it natively (emulated bf16 is slower than fp32)."""
    monkeypatch.setattr(model, "PRECISION", {})
    cpu = torch.device("cpu")
    for avx512_bf16, amx, chosen in [(False, False, "fp32"), (True, False, "bf16"), (0, 1, "bf16")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert model.set_precision("auto", cpu) == chosen == model.PRECISION["cpu"]
    assert model.set_precision("fp32", cpu) == "fp32"
    with pytest.raises(SystemExit, match="--precision fp16: choose from auto, bf16, fp32"):
        model.set_precision("fp16", cpu)


def test_bf16_stays_close_to_fp32(monkeypatch):
    """One switch covers training, sampling, scoring and answer letters; the bf16 results
    move, but only a little (the bound on what bf16 may change)."""
    m = tiny(smeared_key=True).eval()
    x = torch.randint(0, 97, (4, 48), generator=torch.Generator().manual_seed(1))
    pm = tiny(seed=2, scalar_head=True).eval()
    enc = SimpleNamespace(encode_ordinary=lambda t: [ord(c) % 97 for c in t])

    def run():
        with model.autocast("cpu"):
            loss = m(x, x)[1].item()
        scores = model.score_sequences(pm, x.tolist())
        letters = model.next_token_logits(m, enc, ["What is it? (", "Answer: ("], [5, 6, 7])
        return loss, scores, letters

    monkeypatch.setattr(model, "PRECISION", {"cpu": "fp32"})
    loss32, scores32, letters32 = run()
    monkeypatch.setattr(model, "PRECISION", {"cpu": "bf16"})
    loss16, scores16, letters16 = run()
    assert loss16 != loss32 and abs(loss16 - loss32) / loss32 < 0.01
    assert not torch.equal(scores16, scores32) and (scores16 - scores32).abs().max() < 0.05
    assert not torch.equal(letters16, letters32) and (letters16 - letters32).abs().max() < 0.1
