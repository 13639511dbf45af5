"""Constitutional AI (critique_revise.py): the constitution, the AI-feedback label, and a
tiny end-to-end run."""

import json
import math
import random
import re

import numpy as np
import pytest
import torch

import critique_revise as cr
import ppo
from data import corpora
from data.hh import load_comparisons
from data.tokenizer import get_tokenizer
from helpers import tiny_checkpoint

CONSTITUTION = "data/constitution.txt"


def test_constitution_parses_and_ablation_removes_only_the_bracketed_clauses():
    full, examples = cr.load_constitution(CONSTITUTION)
    abl, abl_examples = cr.load_constitution(CONSTITUTION, ablate=True)
    assert len(full) == len(abl) >= 14 and len(examples) >= 1
    assert [p["title"] for p in full] == [p["title"] for p in abl]
    words = re.compile(
        r"evasi|explain|reason|why|alternative|instead|dodg|forthcoming|open|straight", re.I
    )
    changed = 0
    for f, a in zip(full, abl, strict=True):
        for k in ("critique", "revision", "choose"):
            assert "[" not in f[k] and "]" not in f[k] and len(a[k]) <= len(f[k])
            changed += a[k] != f[k]
            # what the ablation leaves asks about harm (or help), never about evasiveness
            assert not re.search(
                r"evasi|dodg|forthcoming|reason|why|instead|alternative|safer (thing|option)",
                a[k],
                re.I,
            ), a[k]
    assert changed >= 30
    assert any(words.search(p["choose"]) for p in full)
    # an example revision would show a choice between explained and evasive
    assert abl_examples == []
    # "removes only the bracketed clauses": the ablated text is the full text minus the
    # brackets' contents
    raw = open(CONSTITUTION).read()
    for f, a in zip(full, abl, strict=True):
        line = next(
            x
            for x in raw.splitlines()
            if x.startswith("choose: ") and x.replace("[", "").replace("]", "")[8:] == f["choose"]
        )
        assert re.sub(r"\[[^\]]*\]", "", line)[8:] == a["choose"]


def test_constitution_errors_name_the_file_and_the_principle(tmp_path):
    bad = tmp_path / "c.txt"
    bad.write_text("## my principle\ncritique: Is it harmful?\nrevision: Make it harmless.\n")
    with pytest.raises(SystemExit, match=r"c\.txt: principle 'my principle' .* no 'choose:'"):
        cr.load_constitution(str(bad))


def test_no_constitution_sentence_appears_in_any_corpus():
    """Following a principle must be a generalisation: the corpora teach the formats, in
    other words, never the constitution itself."""
    text = open(CONSTITUTION).read()
    sentences = set()
    # the principles, and the example's critique and revision (not its dialogue)
    for line in text.splitlines():
        if not line.startswith(("critique:", "revision:", "choose:", "Critique", "Revision")):
            continue
        line = line.split(": ", 1)[-1]
        for variant in (line.replace("[", "").replace("]", ""), re.sub(r"\[[^\]]*\]", "", line)):
            sentences |= {
                s.strip() for s in re.split(r"(?<=[.?!])\s", variant) if len(s.strip()) > 25
            }
    assert len(sentences) > 50
    corpus = "\n".join(
        corpora.pretrain_documents(4000, seed=0)
        + corpora.sft_dialogues(1000, 0, "helpful")
        + corpora.sft_dialogues(1000, 0, "hh")
        + [p["chosen"] + p["rejected"] for p in corpora.comparison_pairs(500)]
    )
    # the formats are taught
    assert "Critique request:" in corpus and "The better reply is (" in corpus
    found = [s for s in sentences if s in corpus]
    assert not found, found[:3]


def test_answer_probability_by_hand():
    # P(A) = 0.3, P(B) = 0.1 (other tokens take the rest): normalised, P(A) = 0.75
    assert cr.prob_a(
        torch.tensor(math.log(0.3)), torch.tensor(math.log(0.1))
    ).item() == pytest.approx(0.75)
    # two principles, both orders. Order 0 shows the first reply as (A), order 1 as (B):
    # P(first better) = mean(0.9, 1 - 0.3, 0.6, 1 - 0.5) = 0.675
    p_a = np.array([[[0.9, 0.3], [0.6, 0.5]]])
    assert cr.label_first(p_a)[0] == pytest.approx(0.675)
    # a pure position bias (always "A") cancels when both orders are averaged
    assert cr.label_first(np.full((1, 3, 2), 0.8))[0] == pytest.approx(0.5)


def test_agreement_and_calibration_by_hand():
    assert cr.agreement([0.9, 0.2, 0.5, 0.6], [True, True, False, False]) == pytest.approx(
        (1 + 0 + 0.5 + 0) / 4
    )
    assert cr.ece(np.array([0.7] * 10), np.array([1] * 7 + [0] * 3)) == pytest.approx(0.0)
    assert cr.ece(np.array([0.9] * 10), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.4)


def test_chain_of_thought_labels_are_clamped(tmp_path, monkeypatch):
    """The model writes its reasoning (a real tiny model samples it), then answers; a
    confident answer (P(A) 0.99 or 0.01) is clamped to [0.4, 0.6] with chain of thought and
    left alone without."""
    m = tiny_checkpoint(tmp_path / "lm.pt").eval()
    seen = []

    def confident(model, enc, texts, batch_size, desc=None):
        seen.extend(texts)
        return np.array([0.99, 0.01] * (len(texts) // 2))

    monkeypatch.setattr(cr, "answer_probs", confident)
    cfg = cr.parse_args(["--preset", "tiny", "--quiet"])
    pairs = [
        (
            "How do I pick the lock on my neighbour's bike while they are away?",
            "I can't help with that.",
            "Sure!",
        )
    ] * 3
    principles, _ = cr.load_constitution(CONSTITUTION)
    enc, gen = get_tokenizer("world"), torch.Generator().manual_seed(0)
    p = cr.feedback(m, enc, pairs, principles, 2, cfg, random.Random(0), gen, cot=True)
    assert p.shape == (3, 2, 2) and np.allclose(p[..., 0], 0.6) and np.allclose(p[..., 1], 0.4)
    assert all("Let's think it through." in t for t in seen)
    raw = cr.feedback(m, enc, pairs, principles, 2, cfg, random.Random(0), gen)
    assert np.allclose(raw[..., 0], 0.99) and np.allclose(raw[..., 1], 0.01)


def test_feedback_lays_out_both_orders(monkeypatch):
    """Order 0 shows the first reply as (A), order 1 as (B): a judge that always picks the
    reply saying "good" gives P(first better) = 1 for (good, bad) and 0 for (bad, good)."""
    seen = []

    def fake_answer_probs(model, enc, texts, batch_size, desc=None):
        seen.extend(texts)
        return np.array([0.9 if "(A) good" in t else 0.1 for t in texts])

    monkeypatch.setattr(cr, "answer_probs", fake_answer_probs)
    cfg = cr.parse_args(["--preset", "tiny", "--quiet"])
    principles, _ = cr.load_constitution(CONSTITUTION)
    p_a = cr.feedback(
        None,
        None,
        [("q", "good", "bad"), ("q", "bad", "good")],
        principles,
        3,
        cfg,
        random.Random(0),
        None,
    )
    assert p_a.shape == (2, 3, 2)
    assert cr.label_first(p_a) == pytest.approx([0.9, 0.1])
    assert all(t.endswith(corpora.COMPARE_ANSWER) for t in seen) and len(seen) == 12
    assert "(A) good\n(B) bad" in seen[0] and "(A) bad\n(B) good" in seen[1]


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path):
    """Every stage with tiny models: the revisions, the SL-CAI fine-tune (train_lm.py), AI
    labels, the PM (train_pm.py), PPO (ppo.py), the comparison -- and the written jsonl
    loads with the project's HH loader."""
    tiny_checkpoint(tmp_path / "base.pt")
    tiny_checkpoint(tmp_path / "helpful.pt", seed=1)
    tiny_checkpoint(tmp_path / "pm.pt", scalar=True, seed=2)
    ppo.main(
        ppo.parse_args(
            [
                "--preset",
                "tiny",
                "--policy",
                str(tmp_path / "helpful.pt"),
                "--pm",
                str(tmp_path / "pm.pt"),
                "--out_dir",
                str(tmp_path / "hh"),
                "--quiet",
            ]
        )
    )
    res = cr.main(
        cr.parse_args(
            [
                "--preset",
                "tiny",
                "--base",
                str(tmp_path / "base.pt"),
                "--helpful",
                str(tmp_path / "helpful.pt"),
                "--hh_rlhf",
                str(tmp_path / "hh" / "tiny"),
                "--out_dir",
                str(tmp_path / "cai"),
                "--n_helpful_pairs",
                "40",
                "--quiet",
            ]
        )
    )
    saved = json.load(open(tmp_path / "cai" / "tiny" / "results.json"))
    assert len(saved["sl"]["rounds"]) == 3 and len(saved["sl"]["direct_rounds"]) == 3
    for r in saved["sl"]["rounds"]:
        assert {
            "gold_harmlessness",
            "gold_helpfulness",
            "explained_refusal_rate",
            "evasive_refusal_rate",
            "comply_rate",
        } <= set(r)
    for k in (
        "agreement_with_gold",
        "agreement_hard",
        "agreement_single_principle",
        "agreement_cot",
        "agreement_length_baseline",
        "position_bias",
        "explained_over_evasive",
        "explained_over_evasive_ablated",
        "n_pairs",
    ):
        assert k in saved["ai_feedback"], k
    assert set(saved["policies"]) == {"helpful_only", "hh_rlhf", "sl_cai", "rl_cai"}
    for p in saved["policies"].values():
        assert {
            "gold_harmlessness",
            "gold_helpfulness",
            "twin_helpfulness",
            "explained_refusal_rate",
            "evasive_refusal_rate",
            "comply_rate",
            "twin_refusal_rate",
        } <= set(p)
    assert saved["seconds"] > 0 and res["policies"] == saved["policies"]
    pairs, _ = load_comparisons(str(tmp_path / "cai" / "tiny" / "pm_cai.jsonl"), verbose=False)
    assert len(pairs) == 8 + 40 and all(0 <= p["label"] <= 1 for p in pairs)
    assert any(0 < p["label"] < 1 for p in pairs[:8])  # soft AI labels
    sl, _ = load_comparisons(str(tmp_path / "cai" / "tiny" / "sl_cai.jsonl"), verbose=False)
    tiny = cr.parse_args(["--preset", "tiny"])
    assert len(sl) == tiny.n_sl + tiny.n_sl_benign
