"""
Tokenizers: our own byte-level BPE, trained by our own code, loaded as a tiktoken.Encoding.

Why our own: GPT-2's 50k vocabulary would make a 1M-parameter model mostly embedding.
A few thousand tokens trained on the assistant world keeps tiny models about their layers.

The vocabulary is the 256 bytes plus merges learned greedily (Sennrich et al. 2016; the
byte-level variant of GPT-2, Radford et al. 2019), stored in tiktoken's rank-file format
(one "base64(token) rank" line per token), so tiktoken's fast Rust encoder does the
encoding. Special tokens go after the merges.

  get_tokenizer("world")  our BPE on the assistant world's pretraining corpus (default)
  get_tokenizer("gpt2")   tiktoken's GPT-2
                          (offline with TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache)
  get_tokenizer("bpe:NAME", text_fn=...)  our BPE trained on any text (e.g. HH-RLHF)
  get_tokenizer("bytes")  the 256 bytes, no merges (the repeated-data sweep's language)
"""

import base64
import collections
import heapq
import os
import re

import tiktoken

# Pre-tokenization: words with an optional leading space, single digits (so numbers are
# read digit by digit, which makes arithmetic learnable), punctuation runs, whitespace.
# Written with classes that Python's `re` (used for training) and tiktoken's Rust regex
# (used for encoding) both understand; every character falls into one branch, so the
# encoding is lossless whatever the training saw.
PAT = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|endofcontext|>"]
CACHE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out", "data", "tokenizers"
)


def train_bpe(text, vocab_size, pat=PAT):
    """Greedy byte-level BPE -> {token bytes: rank}. Ranks 0-255 are the single bytes,
    then one rank per merge, in the order learned (tiktoken requires exactly this).

    Works on the multiset of pre-tokens (unique words with counts) and updates pair
    counts incrementally, with a lazy max-heap, so a few thousand merges take seconds."""
    n_merges = vocab_size - 256 - len(SPECIALS)
    assert n_merges >= 0, "vocab_size too small"
    counts = collections.Counter(re.findall(pat, text))
    words = [list(w.encode("utf-8")) for w in counts]  # each word as a list of token ids
    freq = list(counts.values())
    vocab = [bytes([i]) for i in range(256)]
    pair_count = collections.Counter()
    where = collections.defaultdict(set)  # pair -> indices of words containing it
    # (zip(w, w[1:]), strict=False, below: the adjacent pairs of a word)
    for wi, w in enumerate(words):
        for pair in zip(w, w[1:], strict=False):
            pair_count[pair] += freq[wi]
            where[pair].add(wi)
    # ties broken by the pair's bytes, so training is deterministic
    heap = [(-c, vocab[a] + vocab[b], (a, b)) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < 256 + n_merges and heap:
        negc, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale heap entry
        new_id = len(vocab)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        changed = set()
        for wi in list(where[pair]):
            w, f = words[wi], freq[wi]
            for p in zip(w, w[1:], strict=False):  # remove this word's old pairs
                pair_count[p] -= f
                changed.add(p)
            out, i = [], 0
            while i < len(w):
                merge = i + 1 < len(w) and (w[i], w[i + 1]) == pair
                out.append(new_id if merge else w[i])
                i += 2 if merge else 1
            words[wi] = out
            for p in zip(out, out[1:], strict=False):  # add the new pairs
                pair_count[p] += f
                where[p].add(wi)
                changed.add(p)
        del pair_count[pair], where[pair]
        for p in changed:
            if pair_count.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_count[p], vocab[p[0]] + vocab[p[1]], p))
    return {tok: rank for rank, tok in enumerate(vocab)}


def save_ranks(ranks, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(tok).decode()} {rank}\n")
    os.replace(tmp, path)


def load_ranks(path):
    """Parse a tiktoken rank file. (tiktoken.load.load_tiktoken_bpe would cache local
    files by path name, and serve a stale copy after the file changes.)"""
    ranks = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 2:
                raise SystemExit(
                    f"{path}:{lineno}: expected 'base64token rank', got {line.strip()!r}"
                )
            ranks[base64.b64decode(parts[0])] = int(parts[1])
    return ranks


def encoding_from_ranks(name, ranks):
    return tiktoken.Encoding(
        name=name,
        pat_str=PAT,
        mergeable_ranks=ranks,
        special_tokens={s: len(ranks) + i for i, s in enumerate(SPECIALS)},
    )


def _world_text():
    from data.corpora import pretrain_documents

    return "\n".join(pretrain_documents(20000, seed=0))


def get_tokenizer(name="world", text_fn=None, vocab_size=4096):
    """A tiktoken.Encoding by name. Our BPEs are trained on first use (seconds) and cached
    under out/data/tokenizers/; the file name carries the world version and vocab size."""
    if name == "gpt2":
        enc = tiktoken.get_encoding("gpt2")
        # GPT-2 has no end-of-context token; add ours after its vocabulary
        return tiktoken.Encoding(
            name="gpt2",
            pat_str=enc._pat_str,
            mergeable_ranks=enc._mergeable_ranks,
            special_tokens={"<|endoftext|>": enc.eot_token, "<|endofcontext|>": enc.n_vocab},
        )
    if name == "bytes":  # one token per byte (the repeated-data sweep's 256-token language)
        return encoding_from_ranks(name, {bytes([i]): i for i in range(256)})
    if name == "world":
        from data.world import WORLD_VERSION

        text_fn = text_fn or _world_text
        tag = f"world-v{WORLD_VERSION}"
    elif name.startswith("bpe:"):
        if text_fn is None and not os.path.exists(
            os.path.join(CACHE_DIR, f"{name[4:]}-{vocab_size}.tiktoken")
        ):
            raise SystemExit(
                f"tokenizer {name!r} is not trained yet and no text was given to train it"
            )
        tag = name[4:]
    else:
        raise SystemExit(f"unknown tokenizer {name!r}: use 'world', 'gpt2', 'bytes' or 'bpe:NAME'")
    path = os.path.join(CACHE_DIR, f"{tag}-{vocab_size}.tiktoken")
    if not os.path.exists(path):
        save_ranks(train_bpe(text_fn(), vocab_size), path)
    return encoding_from_ranks(name, load_ranks(path))


def eot_id(enc):
    return enc.encode_single_token("<|endoftext|>")


def eoc_id(enc):
    """End-of-context token: the PM reads its score here (Bai et al. 2022, Sec. 4.1)."""
    return enc.encode_single_token("<|endofcontext|>")


def vocab_size_padded(enc, multiple=64):
    """Embedding rows: the encoding's size rounded up (multiples of 64 are faster on GPU)."""
    return (enc.n_vocab + multiple - 1) // multiple * multiple


def encode_transcript(enc, text, max_len):
    """Token ids of an HH transcript for a scalar-head model: the text, then the
    end-of-context token where the score is read (Bai et al. 2022, Sec. 4.1). Long
    transcripts keep their end (the final reply matters most)."""
    return (enc.encode_ordinary(text) + [eoc_id(enc)])[-max_len:]
