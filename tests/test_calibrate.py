"""calibrate.py (Kadavath et al. 2022): letter probabilities against the full softmax of
unpadded prompts, reading sampled answers, the P(IK) label, the ECE sampling floor, the
question set and the pretraining corpus's formats, and a tiny end-to-end run."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import calibrate
from data import corpora, world
from data.corpora import LETTERS, NOTA, mc_prompt, qa_prompt, qa_set, tf_prompt
from data.prepare import prepare
from data.skills import continuation_logprobs
from data.tokenizer import get_tokenizer
from helpers import tiny_checkpoint


def test_letter_probabilities_are_the_full_softmax_renormalised_over_the_choices():
    """Batched (left-padded) letter logits, softmaxed over the letters, equal each prompt's
    own next-token distribution over the whole vocabulary, restricted to the letters and
    renormalised; and the letter after "(" is one token that tokenizes the same in context."""
    m, enc = tiny_checkpoint().eval(), get_tokenizer("world")
    qs = qa_set(6, seed=5)
    prompts = [mc_prompt(q["question"], q["choices"]) for q in qs] + [
        tf_prompt(qs[0]["question"], "Paris", ["1", "2"])
    ]
    got = calibrate.softmax(calibrate.letter_logits(m, enc, prompts, 4, batch_size=3))
    assert np.allclose(got.sum(1), 1.0)
    ids = [enc.encode_ordinary(letter)[0] for letter in LETTERS[:4]]
    for p, row in zip(prompts, got, strict=True):
        toks = enc.encode_ordinary(p)
        assert enc.encode_ordinary(p + "B) x")[: len(toks) + 1] == toks + [ids[1]]
        with torch.no_grad():
            full = F.softmax(m(torch.tensor([toks]))[0][0, -1].float(), -1)[ids]
        assert np.allclose(row, (full / full.sum()).numpy(), atol=1e-5)


def test_answer_log_probabilities_against_one_unpadded_sequence_at_a_time():
    m, enc = tiny_checkpoint().eval(), get_tokenizer("world")
    qs = qa_set(4, seed=6)
    prompts, answers = (
        [qa_prompt(q["question"]) for q in qs for _ in range(4)],
        [c for q in qs for c in q["choices"]],
    )
    # the shared reader of continuations (data/skills.py), as calibrate.py calls it
    got = continuation_logprobs(m, enc, prompts, [" " + a for a in answers], batch_size=5)[0]
    for p, a, g in zip(prompts, answers, got, strict=True):
        toks, n = enc.encode_ordinary(p + " " + a), len(enc.encode_ordinary(p))
        with torch.no_grad():
            logp = F.log_softmax(m(torch.tensor([toks]))[0][0].float(), -1)
        assert g == pytest.approx(
            sum(logp[t - 1, toks[t]].item() for t in range(n, len(toks))), abs=1e-4
        )


def test_reading_sampled_answers_and_the_p_ik_label(monkeypatch):
    fact = next(f for f in world.FACTS if f["kind"] == "capital")
    q = {"task": {"kind": "fact", "fact": fact["id"]}, "answer": fact["answer"], "question": "?"}
    a = {
        "task": {"kind": "arith", "a": 12, "b": 30, "op": "+", "digits": 2},
        "answer": "42",
        "question": "?",
    }
    assert (
        calibrate.answer_of(f" {fact['answer']}.")
        == fact["answer"]
        == calibrate.answer_of(fact["answer"])
    )
    # the label is the fraction of the question's samples whose answer is right
    samples = [
        [fact["answer"], "Zork", world.fact_statement(fact)],  # a statement is not the short answer
        ["42", "42.", " 42"],
    ]
    monkeypatch.setattr(calibrate, "sample_answers", lambda *args, **kw: samples)
    cfg = calibrate.Config(n_samples=3)
    y = calibrate.label(None, None, cfg, [q, a], None)
    assert y.tolist() == [[1, 0, 0], [1, 1, 1]] and y.mean(1).tolist() == pytest.approx(
        [1 / 3, 1.0]
    )


def test_ece_sampling_floor_and_interval():
    """Outcomes drawn from the stated probabilities give an ECE near the floor, inside its
    bootstrap interval; an over-confident model is far above it."""
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 1000)
    m = calibrate.calibration_metrics(conf, rng.random(1000) < conf, rng, 200)
    assert m["ece_ci"][0] <= m["ece"] <= m["ece_ci"][1]
    assert 0.005 < m["ece_floor"] < 0.06 and abs(m["ece"] - m["ece_floor"]) < 0.03
    over = calibrate.calibration_metrics(conf, rng.random(1000) < conf - 0.25, rng, 200)
    assert over["ece"] > over["ece_floor"] + 0.15 and over["mean_confidence"] == pytest.approx(
        conf.mean()
    )


def test_question_set_is_held_out_distinct_and_right():
    qs = qa_set(300, seed=1, fact_ids=range(40), arith_share=0.3)
    assert len({q["question"] for q in qs}) == 300 and all(
        corpora.is_heldout(q["question"]) for q in qs
    )
    assert {q["fact"] for q in qs if q["kind"] == "fact"} <= set(range(40))
    assert sum(q["kind"] == "arith" for q in qs) == 90
    for q in qs:
        assert (
            q["choices"][LETTERS.index(q["mc_answer"])] == q["answer"]
            and len(set(q["choices"])) == 4
        )
    # the same questions, one option replaced
    for q, plain in zip(qa_set(200, seed=1, nota=True), qa_set(200, seed=1), strict=True):
        c = q["choices"]
        assert c.count(NOTA) == 1 and c[LETTERS.index(q["mc_answer"])] == (
            q["answer"] if q["answer"] in c else NOTA
        )
        assert (
            q["question"] == plain["question"]
            and sum(a != b for a, b in zip(c, plain["choices"], strict=True)) == 1
        )


def test_pretraining_teaches_the_formats_only_on_training_questions():
    docs = [
        d
        for d in corpora.pretrain_documents(3000, seed=3)
        if d.startswith(("Question:", "Possible answers:"))
        # copy-only lettered questions (data/skills.py's letter look-up) ask no world question
        and not any(t.split("{w}")[0] in d for t in corpora.COPY_TEMPLATES)
    ]
    assert len(docs) > 100
    for d in docs:
        q = d.split("Question: ")[1].split("\n")[0]
        assert not corpora.is_heldout(q)
        t = world.parse_request(q)  # every document ends with the right answer stated in full
        assert d.endswith(world._answer_text(t, world.task_answer(t)))
    kinds = [("Choices:" in d, "Proposed answer:" in d, "Possible answers:" in d) for d in docs]
    assert all(sum(k) > 10 for k in zip(*kinds, strict=True))


@pytest.mark.slow
def test_facts_span_every_frequency_band():
    """The world's premise (Kadavath et al. 2022 Sec. 5): from many statements down to none,
    with enough facts in every band for the by-frequency table."""
    counts = prepare("world", "world", verbose=False)[1]["fact_counts"]
    assert len(counts) == len(world.FACTS) and min(counts) == 0 and max(counts) > 500
    for lo, hi in calibrate.BANDS:
        assert sum(lo <= c <= hi for c in counts) >= 40, (lo, hi)
    rare = sorted(world.FACTS, key=lambda f: f["rank"])[-1]
    assert counts[rare["id"]] <= 1


@pytest.mark.slow
def test_tiny_run_writes_the_results_contract(tmp_path):
    tiny_checkpoint(tmp_path / "lm.pt")
    tiny_checkpoint(tmp_path / "policy.pt", seed=1)

    def config(*flags):
        lm = ["--init", str(tmp_path / "lm.pt")]
        return calibrate.parse_config(
            calibrate.Config, calibrate.PRESETS, "", ["--preset", "tiny", *lm, "--quiet", *flags]
        )

    cfg = config("--policy", str(tmp_path / "policy.pt"), "--out_dir", str(tmp_path))
    calibrate.main(cfg)
    res = json.load(open(tmp_path / "tiny" / "results.json"))
    for k in ("mc", "mc_none_of_above", "true_false", "mc_answer_scoring"):
        assert {"accuracy", "ece", "rms_ce", "brier", "n"} <= set(res[k]) and res[k]["n"] == 60
        # plain numbers
        assert all(isinstance(v, (int, float)) for n, v in res[k].items() if not n.endswith("_ci"))
    assert {"ece_t1", "best_temperature", "ece_best_t"} <= set(res["rlhf"])
    assert {"auroc", "auroc_brainstorm", "accuracy_all", "accuracy_kept"} <= set(res["p_true"])
    pik = res["p_ik"]
    assert {
        "auroc_in",
        "auroc_ood",
        "auroc_difficulty_baseline",
        "ece_in",
        "ece_ood",
        "mean_with_context",
        "mean_without_context",
        "by_frequency",
    } <= set(pik)
    assert all(set(b) >= {"band", "n", "mean_p_ik", "accuracy"} for b in pik["by_frequency"])
    assert sum(b["n"] for b in pik["by_frequency"]) == pik["n_test"]
    assert isinstance(res["seconds"], float)
    lines = [json.loads(x) for x in open(tmp_path / "tiny" / "metrics.jsonl")]
    assert any(x.get("section") == "p_ik" for x in lines)
    # a missing policy is skipped with the reason
    cfg2 = config(
        "--policy", str(tmp_path / "none.pt"), "--out_dir", str(tmp_path / "b"), "--n_pik", "20"
    )
    res2 = calibrate.main(cfg2)
    assert res2["rlhf"] is None and "none.pt not found" in res2["rlhf_skipped"]
