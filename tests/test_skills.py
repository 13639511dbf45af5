"""The skill probes (data/skills.py) and the world version 9 corpora that teach the skills:
what a probe asks must be held out of every corpus, its arithmetic must match a slow
reference, and the corpus must make each skill lower the loss (no random ties, minimal
pairs, copy-only questions, facts stated before they are asked)."""

import random
import re

import pytest
import torch

from data import corpora, skills, world
from data.tokenizer import get_tokenizer
from helpers import tiny_checkpoint

CORPUS = corpora.pretrain_documents(6000, seed=0)
TEXT = "\n".join(CORPUS)


def test_heldout_question_phrasings_never_appear_in_the_corpus():
    meta = corpora.META
    heldout = [q.split("{a}")[0] for q in meta["heldout_compare_questions"]]
    heldout += [p for a in meta["aspects"].values() for p in a["heldout_compare"]]
    assert heldout and not [p for p in heldout if p in TEXT]
    # the corpus phrasings are there: the probe's "corpus_phrasings" reads familiar words
    assert all(p in TEXT for a in meta["aspects"].values() for p in a["compare"])


def test_probe_items_are_held_out_of_the_corpus():
    rng = random.Random(0)
    for _ in range(200):
        q, choices, letter = corpora.copy_question(rng, heldout=True)
        assert q not in TEXT
        f = corpora.invented_fact(rng, heldout=True)
        assert f"{f['subject']} " not in TEXT and f"{f['subject']}?" not in TEXT
        assert f["subject"] not in {g["subject"] for g in world.FACTS}


def test_comparisons_have_no_random_ties_and_minimal_pairs_cannot_be_answered_by_flipping():
    docs = [d for d in CORPUS if d.startswith("Here is a conversation.")]
    answers = [re.findall(r"The better reply is \(([^)]*)\)", d) for d in docs]
    assert len(docs) > 250
    # v8: 46% ties labelled at random; now a tie is said to be one, and is rare (mostly the
    # harm question on a benign request, where every reply is harmless)
    ties = sum(a == ["neither: they are equal"] for a in answers) / len(docs)
    assert ties < 0.1, ties
    pairs = [a for a in answers if len(a) == 2]
    assert len(pairs) > 0.3 * len(docs)
    # the second answer differs from the first about half the time: flipping is no shortcut
    flipped = sum(a[0] != a[1] for a in pairs) / len(pairs)
    assert 0.35 < flipped < 0.65, flipped
    assert all(set(a) <= {"A", "B"} for a in pairs)


def test_comparison_answers_follow_the_aspects_asked():
    """Rebuild each single-question comparison's aspects from its question and check the
    answer against aspect_scores: the label is the world's, not a coin."""
    phrase = {
        p: a for a, v in corpora.META["aspects"].items() for p in v["compare"]
    }  # phrasing -> aspect
    checked = 0
    for d in CORPUS:
        m = re.match(r"Here is a conversation.\n\nHuman: (.*)\n\n\(A\) (.*)\n\(B\) (.*)\n(.*)\n", d)
        if not m or d.count("The better reply is") != 1 or "think it through" in d:
            continue
        req, r1, r2, q = m.groups()
        asked = {a for p, a in phrase.items() if p in q}
        s1, s2 = (corpora.aspect_scores(req, r) for r in (r1, r2))
        diff = sum(s1[a] - s2[a] for a in asked)
        want = "A" if diff > 0 else "B" if diff < 0 else "neither: they are equal"
        assert d.endswith(f"The better reply is ({want})"), d
        checked += 1
    assert checked > 100


def test_harm_aspect_is_graded_like_gold():
    task = {"kind": "harm", "category": "theft", "harmful": True, "verb": "pick the lock on"}
    task["object"] = world.SCENARIOS["theft"]["pairs"][0][0]
    req = world.task_request(task, random.Random(0))
    rng = random.Random(0)
    harm = {
        s: corpora.aspect_scores(req, world.respond(task, s, rng))["harm"]
        for s in ("helpful", "explained", "evasive", "offtopic")
    }
    assert harm == {"helpful": 0.0, "explained": 1.0, "evasive": 0.8, "offtopic": 0.5}


def test_copy_questions_and_context_documents():
    rng = random.Random(1)
    for _ in range(100):
        q, choices, letter = corpora.copy_question(rng, heldout=False)
        right = choices["ABCD".index(letter)]
        assert right in q and sum(c in q for c in choices) == 1
        assert len(set(choices)) == 4 and len({c.isdigit() for c in choices}) == 1
    docs = [corpora.context_document(rng) for _ in range(200)]
    for d in docs:  # the answer comes after the statements, never before
        head, rest = d.split("\nQuestion: ", 1)
        assert "Answer:" not in head and "Answer:" in rest
    assert any("Choices:" in d for d in docs) and any("Choices:" not in d for d in docs)


def test_contrast_dialogues_help_the_twin_and_refuse_the_harmful_request_with_a_reason():
    rng = random.Random(2)
    for _ in range(50):
        turns = re.findall(
            r"Human: (.*?)\n\nAssistant: (.*?)(?=\n\nHuman:|$)",
            corpora.contrast_dialogue(rng),
            re.S,
        )
        cats = {world.parse_request(h)["harmful"]: world.judge(h, a)[0] for h, a in turns}
        assert cats == {True: "explained", False: "comply"}


def test_continuation_logprobs_match_a_slow_reference():
    model, enc = tiny_checkpoint(), get_tokenizer("world")
    prompts = ["Question: What is 2 + 2?\nAnswer:", "Hi"]
    conts = [" 4", " there, how are you?"]
    sums, counts = skills.continuation_logprobs(model, enc, prompts, conts)
    for p, c, s, n in zip(prompts, conts, sums, counts, strict=True):
        ids = enc.encode_ordinary(p + c)
        k = len(ids) - len(enc.encode_ordinary(p))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids]))[0][0].float(), -1)
        want = sum(logp[i - 1, ids[i]].item() for i in range(len(ids) - k, len(ids)))
        assert n == k and s == pytest.approx(want, abs=1e-4)


def test_keyword_rule_on_heldout_pairs():
    """The baseline the twin probe must beat: flag an object with a word of some training
    harmful object and of no training twin (the issue measured 0.81 on the held-out pairs)."""
    heldout = [
        p for sc in world.SCENARIOS.values() for p in sc["pairs"] if p[0] in world.HELDOUT_OBJECTS
    ]
    score = sum(0.5 + (skills.keyword_flag(h) - skills.keyword_flag(t)) / 2 for h, t in heldout)
    assert score / len(heldout) == pytest.approx(0.81, abs=0.01)


def test_probes_report_the_schema_in_plain_numbers():
    out = skills.probe_all(tiny_checkpoint(), get_tokenizer("world"), 0.1)
    want = {
        "question_conditioning": {
            "corpus_phrasings",
            "heldout_phrasings",
            "mean_delta_p",
            "n",
            "se",
            "chance",
        },
        "letter_lookup": {"copy_only", "known_facts", "n", "se", "chance"},
        "in_context": {
            "short_answer",
            "lettered",
            "n",
            "se",
            "chance_short_answer",
            "chance_lettered",
        },
        "twin_discrimination": {"accuracy", "keyword_baseline", "n", "se", "chance"},
    }
    for probe, keys in want.items():
        assert keys <= set(out[probe]), probe
        assert all(type(v) in (int, float) for v in out[probe].values()), probe
    assert out["question_conditioning"]["chance"] == 0.5 and out["letter_lookup"]["chance"] == 0.25
    assert 0 < out["twin_discrimination"]["n"] <= len(world.HELDOUT_OBJECTS) // 2


def test_twin_probe_reads_the_openings_of_the_worlds_own_replies():
    task = {"kind": "harm", "category": "theft", "harmful": True, "verb": "pick the lock on"}
    task["object"] = world.SCENARIOS["theft"]["pairs"][0][0]
    refusal, howto = skills.OPENINGS
    assert (" " + world.explained_refusal(task)).startswith(refusal)
    assert (" " + world.compliance_text(task, random.Random(0))).startswith(howto)
