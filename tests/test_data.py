"""HH-RLHF loading and prepared token streams."""

import gzip
import json
import os

import numpy as np
import pytest

import data.prepare
import data.tokenizer
from data import hh
from data.prepare import assistant_spans, load_split, prepare, tokenize_docs
from data.tokenizer import eot_id, get_tokenizer

HH_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "hh-rlhf")
needs_hh = pytest.mark.skipif(not os.path.isdir(HH_DIR), reason="needs ../shared/data/hh-rlhf")

GOOD = {
    "chosen": "\n\nHuman: hi\n\nAssistant: hello there",
    "rejected": "\n\nHuman: hi\n\nAssistant: go away",
}


def write_jsonl(path, lines, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return str(path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_pairs_plain_and_gzip(tmp_path, gz):
    p = write_jsonl(
        tmp_path / ("a.jsonl.gz" if gz else "a.jsonl"), [GOOD, "", {**GOOD, "label": 0.7}], gz
    )
    pairs = hh.read_pairs(p)
    assert len(pairs) == 2 and pairs[0]["prompt"] == "\n\nHuman: hi\n\nAssistant:"
    assert pairs[0]["label"] == 1.0 and pairs[1]["label"] == 0.7 and pairs[1]["line"] == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", r"b\.jsonl:2: invalid JSON"),
        ({"chosen": GOOD["chosen"]}, r"b\.jsonl:2: missing field 'rejected'"),
        ({"chosen": 3, "rejected": "x"}, r"b\.jsonl:2: field 'chosen' must be a string"),
        (
            {"chosen": "Human: hi", "rejected": GOOD["rejected"]},
            r"b\.jsonl:2: field 'chosen' has no",
        ),
        ({**GOOD, "label": 1.5}, r"b\.jsonl:2: field 'label'"),
        ("[1, 2]", r"b\.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path, bad, message):
    p = write_jsonl(tmp_path / "b.jsonl", [GOOD, bad])
    with pytest.raises(SystemExit, match=message):
        hh.read_pairs(p)


def test_dialogue_corpus_dedupes_shared_prompts(tmp_path):
    other = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hey",
        "rejected": "\n\nHuman: hi\n\nAssistant: no",
    }
    write_jsonl(
        tmp_path / "c.jsonl",
        [
            GOOD,
            other,
            {
                "chosen": "\n\nHuman: yo\n\nAssistant: a",
                "rejected": "\n\nHuman: yo\n\nAssistant: b",
            },
        ],
    )
    pairs, stats = hh.load_comparisons(str(tmp_path), verbose=False)
    assert stats["pairs"] == 3 and stats["unique_prompts"] == 2
    assert hh.dialogue_corpus(pairs) == [GOOD["chosen"], "\n\nHuman: yo\n\nAssistant: a"]


@needs_hh
def test_real_hh_files_load_and_match_published_hashes():
    pairs, stats = hh.load_comparisons(HH_DIR, verbose=False)
    counts = {os.path.basename(os.path.dirname(f)): n for f, n in stats["files"].items()}
    assert counts == {
        "harmless-base": 2312,
        "helpful-base": 2354,
        "helpful-rejection-sampled": 2749,
    }
    for rel, digest in hh.SHA256.items():
        assert hh._sha256(os.path.join(HH_DIR, rel)) == digest
    assert all(p["chosen"].startswith(p["prompt"]) for p in pairs)


def test_sft_mask_covers_exactly_the_assistant_replies():
    enc = get_tokenizer("world")
    docs = [
        "\n\nHuman: What is 2 + 3?\n\nAssistant: 2 + 3 = 5."
        "\n\nHuman: And 4 + 4?\n\nAssistant: 4 + 4 = 8.",
        "\n\nHuman: Hi\n\nAssistant: Hello!",
    ]
    ids, mask = tokenize_docs(enc, docs, sft=True)
    masked = enc.decode([int(t) for t, m in zip(ids, mask, strict=True) if m])
    assert masked == " 2 + 3 = 5. 4 + 4 = 8.<|endoftext|> Hello!<|endoftext|>"
    assert assistant_spans(docs[1]) == [(len("\n\nHuman: Hi\n\nAssistant:"), len(docs[1]))]


def test_prepared_world_streams():
    d, meta = prepare("world", "world", sft=False, verbose=False)
    ids, mask = load_split(d, "train", meta)
    assert mask is None and ids.dtype == np.uint16 and len(ids) == meta["train_tokens"] > 1_000_000
    assert meta["tokenizer"] == "world" and meta["key"]["world_version"] >= 1
    enc = get_tokenizer("world")
    assert (ids[:5000] == eot_id(enc)).sum() > 10  # documents are joined by end-of-text


@needs_hh
def test_prepare_hh_text(tmp_path, monkeypatch):
    # this test's corpus and tokenizer go to a temporary folder, not the user's out/
    monkeypatch.setattr(data.prepare, "OUT_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(data.tokenizer, "CACHE_DIR", str(tmp_path / "tokenizers"))
    src = tmp_path / "hh"
    os.makedirs(src)
    pairs = hh.read_pairs(os.path.join(HH_DIR, "harmless-base", "test.jsonl.gz"))[:200]
    write_jsonl(
        src / "small.jsonl", [{"chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    )
    d, meta = prepare(str(src), "bpe:test-hh-small", sft=True, verbose=False)
    ids, mask = load_split(d, "train", meta)
    assert meta["kind"] == "hh" and 0.2 < mask.mean() < 0.95
    assert d.startswith(str(tmp_path)) and os.listdir(tmp_path / "tokenizers") == [
        "test-hh-small-4096.tiktoken"
    ]
