"""Preference models and PPO: each piece against a hand computation or a plain loop, then
tiny end-to-end runs."""

import json
import math
import random

import numpy as np
import pytest
import torch

import ppo
import train_pm
from data import corpora, world
from data.calibration import cluster_se
from data.tokenizer import get_tokenizer, vocab_size_padded
from helpers import tiny_checkpoint
from model import GPT, GPTConfig, generate

# ---------------------------------------------------------------- preference model


def test_pm_loss_hand_computed():
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2
    assert abs(train_pm.pm_loss(rc, rr).item() - expected) < 1e-6
    # soft label 0.7 on a margin of 1: -(0.7 log s(1) + 0.3 log s(-1))
    soft = 0.7 * math.log(1 + math.exp(-1)) + 0.3 * math.log(1 + math.exp(1))
    assert abs(train_pm.pm_loss(rc[:1], rr[:1], torch.tensor([0.7])).item() - soft) < 1e-6
    # a hard label of 1 is the same as no label
    assert abs(train_pm.pm_loss(rc, rr, torch.ones(2)).item() - expected) < 1e-6


def test_longer_reply_baseline():
    pairs = [
        {
            "chosen": "\n\nHuman: q\n\nAssistant: a long reply",
            "rejected": "\n\nHuman: q\n\nAssistant: short",
        },
        {
            "chosen": "\n\nHuman: q\n\nAssistant: no",
            "rejected": "\n\nHuman: q\n\nAssistant: a longer one",
        },
        {
            "chosen": "\n\nHuman: q\n\nAssistant: same",
            "rejected": "\n\nHuman: q\n\nAssistant: four",
        },
    ]
    m = GPT(
        GPTConfig(
            vocab_size=vocab_size_padded(get_tokenizer("world")),
            block_size=32,
            n_layer=1,
            n_head=1,
            n_embd=8,
            scalar_head=True,
        )
    )
    tok = train_pm.tokenize_pairs(get_tokenizer("world"), pairs, 32)
    # 1 + 0 + 1/2 of 3
    assert train_pm.evaluate(m, tok, pairs)["longer_reply_accuracy"] == pytest.approx(0.5)


def test_pm_accuracy_and_calibration():
    acc = train_pm.accuracy(np.array([2.0, 0.0, 1.0]), np.array([1.0, 3.0, 1.0]))
    assert acc == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    d = rng.normal(0, 2, 20000)
    # labels drawn from the PM's own odds
    y = (rng.random(20000) < 1 / (1 + np.exp(-d))).astype(float)
    # orient every pair so that "chosen" is the labelled winner, as in real data
    rc, rr = np.where(y == 1, d, 0.0), np.where(y == 1, 0.0, d)
    table, ece = train_pm.calibration(rc, rr, np.ones_like(d))
    assert ece < 0.02
    # over-confident
    _, ece_over = train_pm.calibration(3 * rc, 3 * rr, np.ones_like(d))
    assert ece_over > 0.08
    assert sum(t["n"] for t in table) == 40000  # both orientations


def test_pm_scores_are_padding_invariant(tmp_path):
    m = tiny_checkpoint(tmp_path / "pm.pt", scalar=True).eval()
    pairs = [([5, 6, 7], [5, 6, 8, 9, 10, 11]), (list(range(20, 60)), [3])]
    # batches mix chosen and rejected of other pairs
    rc, rr = train_pm.pair_scores(m, pairs, batch_size=3)
    for (c, r), a, b in zip(pairs, rc, rr, strict=True):
        assert abs(a - m.score(torch.tensor([c]))[0, -1].item()) < 1e-5
        assert abs(b - m.score(torch.tensor([r]))[0, -1].item()) < 1e-5


def test_train_pm_end_to_end_and_eval(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "lm.pt")
    cfg = train_pm.parse_args(
        [
            "--preset",
            "tiny",
            "--init",
            str(tmp_path / "lm.pt"),
            "--out_dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    res = train_pm.main(cfg)
    d = tmp_path / "tiny"
    saved = json.load(open(d / "results.json"))
    for k in (
        "accuracy",
        "longer_reply_accuracy",
        "ece",
        "gold_accuracy",
        "twin_accuracy",
        "deflection_accuracy",
        "twin_accuracy_train",
        "keyword_baseline_twin_accuracy",
    ):
        assert isinstance(saved[k], float) and saved[k] == res[k], k
    assert saved["n_pairs"] == 64
    assert saved["twin_pairs"] == sum(p["probe"] != "deflection" for p in train_pm.twin_pairs())
    # one record per step (two epochs by default)
    assert len(open(d / "metrics.jsonl").read().splitlines()) == 2 * 64 // 16
    cfg = train_pm.parse_args(
        [
            "--eval",
            str(d / "world_test.jsonl"),
            "--init",
            str(d / "pm.pt"),
            "--out_dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    m = train_pm.main(cfg)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line == f"accuracy {m['accuracy']:.4f} on 64 pairs"
    assert m["accuracy"] == pytest.approx(res["accuracy"])
    evals = list((tmp_path / "eval").glob("*/*/results.json"))
    assert len(evals) == 1
    assert evals[0].parent.name == "tiny-world_test"
    assert evals[0].parent.parent.name.endswith("-tiny")
    assert json.load(open(evals[0]))["n_pairs"] == 64
    # the evaluation did not overwrite the training run
    assert json.load(open(d / "results.json")) == saved


def test_pm_stops_on_divergence_without_saving(tmp_path):
    tiny_checkpoint(tmp_path / "lm.pt")
    cfg = train_pm.parse_args(
        [
            "--preset",
            "tiny",
            "--init",
            str(tmp_path / "lm.pt"),
            "--out_dir",
            str(tmp_path),
            "--quiet",
            "--lr",
            "1e30",
        ]
    )
    with pytest.raises(SystemExit, match=r"^stopped: non-finite .* at step \d+"):
        train_pm.main(cfg)


def test_twin_probe_pairs_are_on_held_out_objects():
    tw = train_pm.twin_pairs()
    assert {p["probe"] for p in tw} == {"harmful", "benign", "deflection"}
    assert sum(p["probe"] == "harmful" for p in tw) >= 200
    for p in tw:
        prompt, chosen = corpora.split_transcript(p["chosen"])
        req, rejected = corpora.last_human(prompt), corpora.split_transcript(p["rejected"])[1]
        task = world.parse_request(req)
        assert task["object"] in world.HELDOUT_OBJECTS  # whole scenarios the PM never saw
        # gold agrees with the probe's label on its axis
        axis = 1 if task["harmful"] else 0
        assert world.gold(req, chosen)[axis] > world.gold(req, rejected)[axis], p
        if p["probe"] == "deflection":
            assert world.reply_category(req, rejected) == "dodge"
            assert world.reply_category(req, chosen) == "explained"


# ---------------------------------------------------------------- PPO pieces


def gae_reference(rewards, values, mask, gamma, lam):
    """The plain loop, one sequence at a time, over its real positions only."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        idx = mask[b].nonzero().flatten().tolist()
        a = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            next_v = values[b, idx[k + 1]].item() if k + 1 < len(idx) else 0.0
            delta = rewards[b, t].item() + gamma * next_v - values[b, t].item()
            a = delta + gamma * lam * a
            adv[b, t] = a
    return adv


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_matches_plain_loop(gamma, lam):
    torch.manual_seed(0)
    r, v = torch.randn(4, 12), torch.randn(4, 12)
    mask = torch.zeros(4, 12)
    mask[0, 3:12] = 1
    mask[1, 5:8] = 1  # ended early
    mask[2, 0:12] = 1
    mask[3, 11:12] = 1  # a one-token reply
    v = v * mask
    adv, ret = ppo.gae(r, v, mask, gamma, lam)
    ref = gae_reference(r, v, mask, gamma, lam)
    assert torch.allclose(adv, ref, atol=1e-5)
    assert torch.allclose(ret, adv + v)
    if lam == 1.0 and gamma == 1.0:  # Monte-Carlo: return = sum of future rewards
        assert abs(ret[2, 0].item() - r[2].sum().item()) < 1e-4


def test_policy_loss_hand_computed():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    old = torch.zeros(1, 3)  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, st = ppo.policy_loss(logp, old, adv, mask, clip=0.2)
    # per token, max(-A r, -A clip(r)): -min(1.5, 1.2) = -1.2; -min(0.5, 0.8) = -0.5;
    # max(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, abs=1e-6)
    assert st["clip_frac"] == pytest.approx(2 / 3)
    masked, _ = ppo.policy_loss(logp, old, adv, torch.tensor([[1.0, 0.0, 0.0]]), clip=0.2)
    assert masked.item() == pytest.approx(-1.2, abs=1e-6)


def test_value_loss_hand_computed():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.3]])
    # token 1: unclipped (1-2)^2 = 1; clipped v = 0.7 -> (0.7-2)^2 = 1.69; max 1.69.  token 2: 0.09
    loss = ppo.value_loss(v, old, ret, torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2, abs=1e-6)


def test_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = ppo.whiten(x, m)
    assert abs(ppo.masked_mean(w, m).item()) < 1e-6
    assert abs(ppo.masked_mean(w**2, m).item() - 1) < 1e-4
    assert w[0, 3].item() == 0.0


def tiny_policy(seed, scalar=False, vocab=16):
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(
            vocab_size=vocab, block_size=48, n_layer=2, n_head=2, n_embd=32, scalar_head=scalar
        )
    )


def test_kl_zero_for_identical_policies_and_first_ratio_is_one():
    cfg = ppo.Config(batch_size=8, minibatch=4, max_new_tokens=10, ppo_epochs=2)
    policy, value = tiny_policy(0), tiny_policy(1, scalar=True)
    ref = tiny_policy(0)
    prompts = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]] * 2
    gen = torch.Generator().manual_seed(0)
    out = generate(policy, prompts, cfg.max_new_tokens, cfg.temperature, eot_id=15, generator=gen)
    exp = ppo.make_experience(policy, ref, value, out, torch.randn(8), cfg, kl_coef=0.1)
    assert exp["kl"].abs().max().item() == 0.0
    # the sampler's own log-probs agree with the recomputed ones (same temperature)
    m = exp["mask"].bool()
    assert (exp["logp"][m] - out["logprobs"][:, 1:][m]).abs().max().item() < 1e-5
    opt_p = torch.optim.AdamW(policy.parameters(), 1e-3)
    opt_v = torch.optim.AdamW(value.parameters(), 1e-3)
    st = ppo.ppo_update(policy, value, opt_p, opt_v, exp, cfg, torch.Generator().manual_seed(0))
    assert st["first_epoch_ratio_max_dev"] == 0.0  # exactly 1
    exp2 = ppo.make_experience(policy, ref, value, out, torch.randn(8), cfg, kl_coef=0.1)
    assert exp2["kl"].abs().max().item() > 0  # after an update the policy has moved


def test_tiny_ppo_run_increases_reward():
    """A toy reward (the share of token 3 in the reply) that PPO must learn to raise. The
    policy learning rate is low enough that the reward climbs smoothly and the run stops
    well before it saturates: near a reward of 1 the whitened advantages are mostly noise,
    and at 3x this rate the policy can collapse there at a step that depends on the CPU's
    floating-point details. A flipped policy-gradient sign or a zero rate fails the test."""
    cfg = ppo.Config(
        batch_size=32,
        minibatch=16,
        max_new_tokens=8,
        ppo_epochs=2,
        lr=1e-3,
        value_lr=3e-3,
        kl_coef=0.01,
    )
    policy, ref, value = tiny_policy(0), tiny_policy(0), tiny_policy(1, scalar=True)
    opt_p = torch.optim.AdamW(policy.parameters(), cfg.lr)
    opt_v = torch.optim.AdamW(value.parameters(), cfg.value_lr)
    gen = torch.Generator().manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(1)
    rewards = []
    for _ in range(20):
        prompts = [
            [int(x) for x in torch.randint(0, 15, (3,), generator=cpu_gen)]
            for _ in range(cfg.batch_size)
        ]
        out = generate(
            policy, prompts, cfg.max_new_tokens, cfg.temperature, eot_id=15, generator=gen
        )
        gm = out["gen_mask"]
        score = ((out["tokens"] == 3) & gm).sum(1).float() / gm.sum(1).clamp(min=1)
        rewards.append(score.mean().item())
        exp = ppo.make_experience(policy, ref, value, out, score * 5, cfg, cfg.kl_coef)
        ppo.ppo_update(policy, value, opt_p, opt_v, exp, cfg, cpu_gen)
    # a working update raises it far past this margin; a broken one leaves it where it started
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.3, rewards


def test_kl_fits_tell_the_true_shape_on_held_out_points():
    kl = [0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0]
    points = [{"kl": k, "pm_reward": 0.3 + 0.5 * math.sqrt(k)} for k in kl]
    fits = ppo.kl_fits(points)
    assert fits["sqrt"]["r2"] == pytest.approx(1.0) and fits["sqrt"]["heldout_r2"] == pytest.approx(
        1.0
    )
    assert fits["sqrt"]["slope"] == pytest.approx(0.5) and fits["sqrt"][
        "intercept"
    ] == pytest.approx(0.3)
    # the true shape predicts the held-out points best; linear is far off, log(1 + KL) close
    # (over KL 0-8 the two concave shapes are hard to tell apart even without noise)
    assert fits["sqrt"]["heldout_r2"] > max(
        fits["linear"]["heldout_r2"], fits["log1p"]["heldout_r2"]
    )
    assert fits["linear"]["heldout_r2"] < 0.8 < 0.99 < fits["log1p"]["heldout_r2"]
    # reward linear in KL: the linear fit wins instead
    fits = ppo.kl_fits([{"kl": k, "pm_reward": 0.1 * k} for k in kl])
    assert fits["linear"]["heldout_r2"] == pytest.approx(1.0) and fits["sqrt"]["heldout_r2"] < 0.99


def test_fit_line():
    slope, intercept, r2 = ppo.fit_line([0, 1, 2, 3], [1, 3, 5, 7])
    assert slope == pytest.approx(2)
    assert intercept == pytest.approx(1)
    assert r2 == pytest.approx(1)
    # no spread in x: no line
    assert ppo.fit_line([0, 0, 0], [1.0, 2.0, 3.0]) == (0.0, 2.0, 0.0)


def tiny_ppo_config(tmp_path, *flags):
    """ppo.py's tiny preset on two untrained checkpoints: the policy (seed 0), the PM (seed 1)."""
    tiny_checkpoint(tmp_path / "sft.pt", seed=0)
    tiny_checkpoint(tmp_path / "pm.pt", scalar=True, seed=1)
    models = ["--policy", str(tmp_path / "sft.pt"), "--pm", str(tmp_path / "pm.pt")]
    out = ["--out_dir", str(tmp_path / "ppo"), "--quiet"]
    return ppo.parse_args(["--preset", "tiny", *models, *out, *flags])


def test_ppo_main_writes_the_results_contract(tmp_path):
    cfg = tiny_ppo_config(tmp_path)
    res = ppo.main(cfg)
    saved = json.load(open(tmp_path / "ppo" / "tiny" / "results.json"))
    keys = {
        "pm_reward",
        "gold_helpfulness",
        "gold_harmlessness",
        "benign_refusal_rate",
        "nontwin_helpfulness",
        "twin_helpfulness",
        "twin_refusal_rate",
        "redteam_refusal_rate",
        "explained_refusal_rate",
        "evasive_refusal_rate",
        "dodge_rate",
        "comply_rate",
        "ended",
        "kl",
    }
    for side in ("before", "after"):
        assert set(saved[side]) >= keys | {k + "_se" for k in keys}
        assert all(isinstance(saved[side][k], float) for k in keys)
        rates = [
            saved[side][k]
            for k in ("comply_rate", "explained_refusal_rate", "evasive_refusal_rate", "dodge_rate")
        ]
        assert sum(rates) == pytest.approx(1.0)
        assert saved[side]["redteam_refusal_rate"] == pytest.approx(rates[1] + rates[2])
    assert set(saved["reward_vs_sqrt_kl"]) >= {"slope", "r2"}
    assert set(saved["kl_fits"]) == {"sqrt", "linear", "log1p"}
    assert saved["after"] == res["after"]
    assert isinstance(saved["kl"], float)
    assert isinstance(saved["seconds"], float)
    assert res["steps"] == 4
    # the held-out evaluations: before, n_evals during training at steps 1, 2, 4, ..., after
    pts = saved["eval_points"]
    assert [p["step"] for p in pts] == [0, 1, 4]
    assert ppo.Config().n_evals >= 5
    point_keys = {"step", "kl", "pm_reward", "gold_helpfulness", "gold_harmlessness"}
    assert all(point_keys <= set(p) for p in pts)
    assert pts[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert pts[0]["pm_reward"] == saved["before"]["pm_reward"]
    lines = [json.loads(x) for x in open(tmp_path / "ppo" / "tiny" / "metrics.jsonl")]
    steps = [m for m in lines if not m.get("eval")]
    assert len(steps) == 4
    assert {"kl", "entropy", "clip_frac", "approx_kl", "value_loss", "time_rollout"} <= set(
        steps[0]
    )
    assert sum(m.get("eval", False) for m in lines) == 3
    samples = [json.loads(x) for x in open(tmp_path / "ppo" / "tiny" / "samples.jsonl")]
    assert len(samples) == 12
    assert {s["group"] for s in samples} == {"redteam", "benign", "twins"}


def test_ppo_resume_continues_exactly(tmp_path):
    """Interrupted after step 3's checkpoint (--stop_after) and resumed, ppo.py ends where
    the uninterrupted run ends: same policy, same evaluations, same metrics.jsonl."""
    every = ["--ckpt_interval", "1", "--steps", "5", "--n_evals", "2"]
    full = ppo.main(tiny_ppo_config(tmp_path / "a", *every))
    assert ppo.main(tiny_ppo_config(tmp_path / "b", *every, "--stop_after", "3")) is None
    resumed = ppo.main(tiny_ppo_config(tmp_path / "b", *every, "--resume"))
    for k in ("before", "after", "eval_points", "change", "reward_vs_sqrt_kl"):
        assert resumed[k] == full[k], k
    a, b = (torch.load(tmp_path / d / "ppo/tiny/policy.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    untimed = [
        [{k: v for k, v in json.loads(x).items() if not k.startswith("time")} for x in open(p)]
        for p in (tmp_path / d / "ppo" / "tiny" / "metrics.jsonl" for d in "ab")
    ]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 5 + 4
    with pytest.raises(SystemExit, match="a finished run; nothing to resume"):
        ppo.main(tiny_ppo_config(tmp_path / "b", *every, "--resume"))


def test_ppo_stops_on_divergence_without_saving(tmp_path):
    """A learning rate that blows the policy up: PPO stops with the step, writes no policy."""
    cfg = tiny_ppo_config(tmp_path, "--value_lr", "1e30")
    with pytest.raises(SystemExit, match=r"^stopped: non-finite .* at step \d+"):
        ppo.main(cfg)


def test_ppo_on_other_data_needs_its_own_models(tmp_path):
    cfg = ppo.parse_args(["--data", str(tmp_path / "hh.jsonl"), "--out_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="pass --policy SFT.pt and --pm PM.pt"):
        ppo.main(cfg)


def tiny_model(seed):
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=16, vocab_valid=13, block_size=16, n_layer=1, n_head=2, n_embd=16)
    ).eval()


def test_exact_kl_matches_a_plain_loop():
    """The evaluation's KL: per token, sum_v p log(p/q) over the full next-token
    distributions, summed over the reply; checked against an explicit loop, and 0 for a
    policy against itself."""
    torch.manual_seed(0)
    p, q = tiny_model(seed=0), tiny_model(seed=1)
    tokens = torch.randint(0, p.cfg.vocab_valid, (3, 7))
    pad = torch.ones(3, 7, dtype=torch.bool)
    mask = torch.tensor(
        [[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]], dtype=torch.float
    )
    got = ppo.exact_kl(p, q, tokens, pad, mask, 1.3, batch_size=2)
    with torch.no_grad():
        lp, lq = (torch.log_softmax(m(tokens)[0].float() / 1.3, -1) for m in (p, q))
    want = torch.zeros(3)
    for b in range(3):
        for t in range(6):
            if mask[b, t]:
                want[b] += sum(
                    lp[b, t, v].exp() * (lp[b, t, v] - lq[b, t, v]) for v in range(lp.size(-1))
                )
    assert torch.allclose(got, want, atol=1e-4)
    assert (got > 0).all()
    assert ppo.exact_kl(p, p, tokens, pad, mask, 1.0, 3).abs().max() < 1e-5


def test_cluster_se():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    # one item per cluster: the usual standard error
    assert cluster_se(x, range(40)) == pytest.approx(x.std(ddof=1) / np.sqrt(40))
    # k identical copies of each item, clustered together, add no information
    assert cluster_se(np.repeat(x, 5), np.repeat(np.arange(40), 5)) == pytest.approx(
        cluster_se(x, range(40))
    )
    # ...while treating the copies as independent would shrink the error by sqrt(5)
    assert cluster_se(np.repeat(x, 5), range(200)) < 0.5 * cluster_se(x, range(40))


def test_training_batches_have_a_fixed_red_team_share():
    cfg = ppo.Config(batch_size=32, harmful_frac=0.5)
    train, sets = ppo.load_prompts(cfg)
    for seed in range(3):
        batch, groups = ppo.batch_prompts(train, cfg, random.Random(seed))
        harmful = [world.parse_request(corpora.last_human(p)) for p in batch]
        assert sum(t["kind"] == "harm" and t["harmful"] for t in harmful) == 16
        assert [g == "redteam" for g in groups] == [
            t["kind"] == "harm" and t["harmful"] for t in harmful
        ]
    assert {k: len(v) for k, v in sets.items()} == {"redteam": 200, "benign": 200, "twins": 100}
    assert not set(train["redteam"]) & set(sets["redteam"])
    assert not set(train["benign"]) & set(sets["benign"] + sets["twins"])


def test_overoptimisation_is_gold_falling_while_the_pm_rises():
    rng = np.random.default_rng(0)
    base = rng.random(100)  # the same 100 prompts at every evaluation, 20 clusters of 5

    def pt(step, kl, pm, shift):
        gold = np.clip(base + shift, 0, 1)
        return {"step": step, "kl": kl, "pm_reward": pm, "gold_reward": float(gold.mean())} | {
            "gold_by_prompt": list(gold)
        }

    clusters = np.repeat(np.arange(20), 5)
    rising = [pt(0, 0, 0.1, 0.0), pt(10, 1, 0.3, 0.1), pt(20, 2, 0.5, 0.2)]
    o = ppo.overoptimisation(rising, clusters)
    assert (o["step"], o["fall"], o["turned_down"]) == (20, 0.0, False)
    turned = ppo.overoptimisation(rising + [pt(30, 3, 0.6, 0.05)], clusters)
    assert (turned["step"], turned["kl"], turned["turned_down"]) == (20, 2, True)
    assert turned["fall"] < 0 < turned["fall_se"]
    # a paired fall is exact: the per-prompt differences, not two means' errors
    g20, g30 = np.clip(base + 0.2, 0, 1), np.clip(base + 0.05, 0, 1)
    assert turned["fall"] == pytest.approx(float(np.mean(g30 - g20)))
    assert turned["fall_se"] == pytest.approx(cluster_se(g30 - g20, clusters))
    # the PM fell too: not over-optimisation
    assert not ppo.overoptimisation(rising + [pt(30, 3, 0.4, 0.05)], clusters)["turned_down"]
    # noise around the peak, no fall: within two standard errors
    noisy = pt(30, 3, 0.6, 0.2 + rng.normal(0, 0.05, 100) - 0.001)
    assert not ppo.overoptimisation(rising + [noisy], clusters)["turned_down"]
    assert ppo.overoptimisation([{"gold_reward": None}], clusters) is None


def test_paired_change_on_the_same_prompts():
    def recs(vals):
        return [
            {
                "group": "redteam",
                "category": "comply",
                "helpful": 0.0,
                "harmless": v,
                "parsed": True,
                "helpful_strict": 0.0,
                "harmless_strict": v,
                "pm": v,
                "kl": 0.0,
                "ended": True,
                "tokens": 5.0,
                "cluster": i // 2,
            }
            for i, v in enumerate(vals)
        ]

    before = recs([0.0, 0.0, 0.5, 0.5])
    after = recs([1.0, 1.0, 0.5, 0.5])
    ch = ppo.paired_change(before, after)
    # two clusters, +1 and 0
    assert ch["gold_harmlessness"] == pytest.approx({"change": 0.5, "se": 0.5})
    assert ppo.paired_change(before, before)["pm_reward"] == {"change": 0.0, "se": 0.0}
