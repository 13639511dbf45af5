import os
import random

import pytest

from data.corpora import pretrain_documents
from data.tokenizer import (
    SPECIALS,
    encoding_from_ranks,
    eoc_id,
    eot_id,
    get_tokenizer,
    load_ranks,
    save_ranks,
    train_bpe,
)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def random_unicode(rng, n):
    pools = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x300, 0x36F),
        (0x370, 0x3FF),
        (0x4E00, 0x4E80),
        (0x1F600, 0x1F64F),
        (0x0600, 0x06FF),
        (0x2150, 0x218F),
    ]
    out = []
    for _ in range(n):
        a, b = rng.choice(pools)
        out.append(chr(rng.randint(a, b)))
        if rng.random() < 0.15:
            out.append(rng.choice([" ", "  ", "\n", "\t", "'s", "'ll", "_", "123"]))
    return "".join(out)


def test_bpe_roundtrip_arbitrary_unicode():
    ranks = train_bpe("the cat sat on the mat. the hat! 12 + 34 = 46\n" * 50 + "héllo wörld", 300)
    enc = encoding_from_ranks("t", ranks)
    rng = random.Random(0)
    for _ in range(200):
        s = random_unicode(rng, rng.randint(0, 60))
        assert enc.decode(enc.encode_ordinary(s)) == s
    s = "Human: hi<|endoftext|>"
    assert enc.decode(enc.encode(s, allowed_special="all")) == s


def test_bpe_ranks_are_merges_of_lower_ranks():
    ranks = train_bpe("abababab abab cdcd abcd " * 20, 280)
    by_rank = {r: t for t, r in ranks.items()}
    assert sorted(ranks.values()) == list(range(len(ranks)))
    assert all(by_rank[i] == bytes([i]) for i in range(256))
    for r in range(256, len(ranks)):
        tok = by_rank[r]  # every merged token splits into two tokens of lower rank
        assert any(
            tok[:k] in ranks and tok[k:] in ranks and ranks[tok[:k]] < r and ranks[tok[k:]] < r
            for k in range(1, len(tok))
        )
    assert ranks[b"ab"] == 256  # the most frequent pair is merged first


def test_rank_file_roundtrip_and_errors(tmp_path):
    ranks = train_bpe("hello hello world " * 10, 270)
    p = str(tmp_path / "r.tiktoken")
    save_ranks(ranks, p)
    assert load_ranks(p) == ranks
    with open(p, "a") as f:
        f.write("garbage\n")
    with pytest.raises(SystemExit, match=r"r\.tiktoken:\d+: expected"):
        load_ranks(p)


def test_world_tokenizer_compresses_the_corpus():
    enc = get_tokenizer("world")
    assert 1000 < enc.n_vocab < 5000  # a few thousand tokens
    assert eot_id(enc) == enc.n_vocab - len(SPECIALS) and eoc_id(enc) == eot_id(enc) + 1
    text = "".join(pretrain_documents(500, seed=99))  # held-out documents (another seed)
    bpt = len(text.encode()) / len(enc.encode_ordinary(text))
    print(
        f"world tokenizer: {enc.n_vocab} tokens, {bpt:.2f} bytes per token on held-out world text"
    )
    assert bpt > 3.0
    assert enc.decode(enc.encode_ordinary(text)) == text


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED, "tiktoken_cache")), reason="needs ../shared/data"
)
def test_gpt2_tokenizer_offline(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", os.path.join(SHARED, "tiktoken_cache"))
    enc = get_tokenizer("gpt2")
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert eot_id(enc) == 50256 and eoc_id(enc) == 50257
