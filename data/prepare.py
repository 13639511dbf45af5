"""
Prepared token streams, nanoGPT style: each split is a flat uint16 memmap of token ids
(documents joined by <|endoftext|>), with an optional uint8 loss mask beside it (SFT: 1 on
assistant tokens) and a sidecar meta.json saying tokenizer, source and sizes. A stream is
rebuilt when its sidecar no longer matches (new world version, tokenizer or source file).

  python -m data.prepare                       # the assistant world, both corpora
  python -m data.prepare --source PATH         # a text file, or HH-RLHF jsonl(.gz) file/dir
"""

import argparse
import hashlib
import json
import os
import re

import numpy as np
import torch

from data import corpora, hh, world
from data.tokenizer import eot_id, get_tokenizer

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out", "data")
N_PRETRAIN_DOCS = 60000  # ~2.5M tokens: a tiny model sees each a few times in 3 CPU minutes
N_SFT_DOCS = 20000
N_SYNTHETIC_DOCS = 40000  # sequences of 128 random tokens with copies: ~5M tokens
# the repeated-data sweep's language (prepare("markov")): tokens, successors per token, tokens
# per document, the share of documents that repeat themselves, documents per split
MARKOV = {"vocab": 256, "successors": 16, "length": 128, "p_copy": 0.5, "train": 40000, "val": 2048}


def data_name(data, default="world"):
    """'../shared/data/hh-rlhf' -> 'hh-rlhf', 'x/tinyshakespeare.txt' -> 'tinyshakespeare';
    the script's default data -> '' (it adds no level to a run's folder)."""
    return "" if data == default else os.path.basename(os.path.normpath(data)).split(".")[0]


def default_tokenizer(data):
    """Our world BPE on the world (and on synthetic data, whose ids are its first 64), bytes
    for the Markov language, our BPE trained on the data itself otherwise."""
    if data == "markov":
        return "bytes"
    return "world" if data in ("world", "synthetic") else "bpe:" + data_name(data)


def assistant_spans(text):
    """Character spans of assistant replies in an HH transcript: from after each
    'Assistant:' to the next '\\n\\nHuman:' (or the end)."""
    spans = []
    for m in re.finditer(r"\n\nAssistant:", text):
        end = text.find("\n\nHuman:", m.end())
        spans.append((m.end(), len(text) if end < 0 else end))
    return spans


def tokenize_docs(enc, docs, sft=False):
    """-> (ids uint16, mask uint8 or None). With sft, mask=1 on tokens that start inside an
    assistant reply and on the end-of-text token after a document (learning to stop)."""
    eot = eot_id(enc)
    if docs and not isinstance(docs[0], str):  # documents given as token ids
        ids_all = list(docs)
    else:
        ids_all = enc.encode_ordinary_batch(docs)
    ids, mask = [], []
    for doc, toks in zip(docs, ids_all, strict=True):
        ids += toks + [eot]
        if sft:
            _, offsets = enc.decode_with_offsets(toks)
            spans = assistant_spans(doc)
            mask += [int(any(a <= o < b for a, b in spans)) for o in offsets] + [1]
    dtype = np.uint16 if enc.n_vocab <= 65535 else np.uint32
    return np.array(ids, dtype=dtype), (np.array(mask, dtype=np.uint8) if sft else None)


def _write(path, arr):
    tmp = path + ".tmp"
    arr.tofile(tmp)
    os.replace(tmp, path)


def write_stream(name, enc, splits, meta, sft=False):
    """splits: {"train": docs, "val": docs} -> out/data/<name>/<split>.bin (+ .mask.bin)."""
    d = os.path.join(OUT_DIR, name)
    os.makedirs(d, exist_ok=True)
    for split, docs in splits.items():
        ids, mask = tokenize_docs(enc, docs, sft)
        _write(os.path.join(d, f"{split}.bin"), ids)
        if mask is not None:
            _write(os.path.join(d, f"{split}.mask.bin"), mask)
        meta[f"{split}_tokens"], meta[f"{split}_docs"] = int(len(ids)), len(docs)
        meta["dtype"] = str(ids.dtype)
    meta["sft_mask"] = sft
    with open(os.path.join(d, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(d, "meta.json.tmp"), os.path.join(d, "meta.json"))
    return d


def _fresh(name, key):
    p = os.path.join(OUT_DIR, name, "meta.json")
    if not os.path.exists(p):
        return False
    with open(p) as f:
        return json.load(f).get("key") == key


def _source_key(path):
    files = (
        hh.find_files(path)
        if not os.path.isfile(path) or path.endswith((".jsonl", ".jsonl.gz"))
        else [path]
    )
    return [(os.path.abspath(f), os.path.getsize(f), int(os.path.getmtime(f))) for f in files]


def read_text(path):
    """A plain-text training file, checked before anything is cached: one line if it is
    empty or not text."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SystemExit(
            f"--data {path}: not UTF-8 text (byte {e.start}); give a text file"
        ) from None
    if "\0" in text:
        raise SystemExit(f"--data {path}: a binary file (NUL bytes); give a text file")
    if not text.strip():
        raise SystemExit(f"--data {path}: empty; give a text file with some paragraphs")
    return text


def _synthetic_docs(n, seed):
    x, _ = synthetic_batch(n, 127, 64, torch.Generator().manual_seed(seed))
    return x.tolist()


def markov_table(vocab, successors, seed):
    """A sparse random language: each token is followed by one of `successors` tokens drawn at
    random, with Dirichlet(1) probabilities (all others impossible) -> (vocab, vocab)
    transition matrix. Far more to learn than a small model can hold (vocab x successors
    probabilities), so learning it competes for capacity (the repeated-data sweep)."""
    rng = np.random.default_rng(seed)
    P = np.zeros((vocab, vocab))
    for row in P:
        row[rng.choice(vocab, successors, replace=False)] = rng.dirichlet(np.ones(successors))
    return P


def markov_documents(P, n, length, p_copy, seed):
    """n documents of `length` tokens from the chain P, the first token uniform; in a share
    p_copy of them the second half repeats the first half from a random point, wrapping
    around (text that repeats a passage of itself: only looking back for the current
    token's earlier occurrence predicts it -- what induction heads do -- as the repeat's
    offset is random); in the others the chain goes on. Vectorised over documents ->
    (n, length) int64."""
    rng = np.random.default_rng(seed)
    successors = np.nonzero(P)[1].reshape(len(P), -1)  # each row's possible next tokens
    cum = np.take_along_axis(P, successors, 1).cumsum(1)
    x = np.zeros((n, length), dtype=np.int64)
    x[:, 0] = rng.integers(0, len(P), n)
    for t in range(1, length):
        k = (rng.random(n)[:, None] > cum[x[:, t - 1]]).sum(1)  # inverse CDF of the row
        x[:, t] = successors[x[:, t - 1], np.minimum(k, successors.shape[1] - 1)]
    half = length // 2
    copy = np.nonzero(rng.random(n) < p_copy)[0]
    start = rng.integers(0, half, len(copy))
    source = (start[:, None] + np.arange(length - half)) % half
    x[copy, half:] = np.take_along_axis(x[copy, :half], source, 1)
    return x


def markov_floor(P, docs, p_copy, targets=None):
    """The entropy floor: the loss per token of the Bayes-optimal predictor on documents
    (n, length), or on their first `targets` tokens; it knows the table, the document's
    start and p_copy. The first token costs log(vocab); the first half, the table's own
    loss; in the second half it mixes "chain" and "copy from each starting point" by their
    posterior given the tokens seen so far."""
    n, length = docs.shape
    half = length // 2
    prob = np.ones((n, length)) / len(P)
    prob[:, 1:half] = P[docs[:, : half - 1], docs[:, 1:half]]
    chain = np.full(n, 1 - p_copy)  # posterior weights: the chain goes on,
    copy = np.full((n, half), p_copy / half)  # or the second half copies from each point
    for j in range(length - half):
        source = docs[:, (np.arange(half) + j) % half]  # the token each starting point predicts
        copied = copy * (source == docs[:, half + j, None])
        chained = chain * P[docs[:, half + j - 1], docs[:, half + j]]
        prob[:, half + j] = copied.sum(1) + chained
        copy, chain = copied / prob[:, half + j, None], chained / prob[:, half + j]
    return float(-np.log(prob[:, :targets]).mean())


def markov_heldout_floor(n_docs, targets):
    """The entropy floor of prepare("markov")'s first n_docs held-out documents (those that
    train_lm.py evaluates), on their first `targets` tokens."""
    d, meta = prepare("markov", "bytes", verbose=False)
    windows = np.asarray(load_split(d, "val", meta)[0][: n_docs * meta["period"]])
    docs = windows.reshape(n_docs, meta["period"])[:, 1:].astype(np.int64)
    P = markov_table(MARKOV["vocab"], MARKOV["successors"], seed=0)
    return markov_floor(P, docs, MARKOV["p_copy"], targets)


def _world_docs(n, seed, sft, mix):
    if sft:
        return corpora.sft_dialogues(n, seed, mix)
    return corpora.pretrain_documents(n, seed=seed)


def prepare(source="world", tokenizer="world", sft=False, verbose=True, mix="hh", frac=1.0):
    """Build (or reuse) the token stream for a source -> (directory, meta dict).

    source: "world" (the assistant world: pretraining mixture, or with sft=True the SFT data
    of mixture `mix`, corpora.SFT_MIXES), "synthetic" (synthetic_batch's sequences as
    documents of token ids), a plain text file, or an HH-RLHF jsonl(.gz) file or directory
    (deduped dialogues; with sft=True the loss mask covers the assistant replies). frac: the
    share of the world's documents to generate (tiny runs: a corpus built in a second)."""
    if source == "synthetic":
        name = f"synthetic-{tokenizer}"
        key = {"synthetic": N_SYNTHETIC_DOCS, "tokenizer": tokenizer}
        if not _fresh(name, key):
            splits = {
                "train": _synthetic_docs(N_SYNTHETIC_DOCS, 0),
                "val": _synthetic_docs(N_SYNTHETIC_DOCS // 20, 1),
            }
            write_stream(
                name,
                get_tokenizer(tokenizer),
                splits,
                {"key": key, "source": "synthetic", "tokenizer": tokenizer, "vocab": 64},
            )
    elif source == "markov":
        name = f"markov-{tokenizer}"
        key = {"markov": MARKOV, "tokenizer": tokenizer}
        if not _fresh(name, key):
            P = markov_table(MARKOV["vocab"], MARKOV["successors"], seed=0)
            length, p_copy = MARKOV["length"], MARKOV["p_copy"]
            # an empty first document: each split starts with <|endoftext|>, so that window k
            # (period tokens from k x period) is <|endoftext|> and document k
            splits = {
                split: [[]] + markov_documents(P, n, length, p_copy, seed).tolist()
                for split, n, seed in (("train", MARKOV["train"], 1), ("val", MARKOV["val"], 2))
            }
            meta = {"key": key, "source": "markov", "tokenizer": tokenizer}
            meta.update(vocab=MARKOV["vocab"], period=length + 1)
            write_stream(name, get_tokenizer(tokenizer), splits, meta)
    elif source == "world":
        name = f"world-{'sft-' + mix if sft else 'pretrain'}-{tokenizer}"
        name += f"-{frac:g}" if frac != 1 else ""
        key = {
            "world_version": world.WORLD_VERSION,
            "tokenizer": tokenizer,
            "sft": sft,
            "docs": round((N_SFT_DOCS if sft else N_PRETRAIN_DOCS) * frac),
            **({"mix": mix} if sft else {}),
        }
        if not _fresh(name, key):
            if verbose:
                corpus = "SFT" if sft else "pretraining"
                print(f"preparing the assistant world ({corpus} corpus) ...", flush=True)
            enc = get_tokenizer(tokenizer)
            n = key["docs"]
            splits = {
                "train": _world_docs(n, 0, sft, mix),
                "val": _world_docs(max(n // 20, 200), 1, sft, mix),
            }
            # each fact's frequency: how often the training split states it (calibrate.py's bands)
            text = "\n".join(splits["train"])
            counts = [text.count(world.fact_statement(f)) for f in world.FACTS]
            write_stream(
                name,
                enc,
                splits,
                {
                    "key": key,
                    "source": "assistant world",
                    "tokenizer": tokenizer,
                    "vocab": enc.n_vocab,
                    "fact_counts": counts,
                },
                sft,
            )
    else:
        if not os.path.exists(source):
            raise SystemExit(f"--data {source}: no such file or directory")
        src_key = _source_key(source)
        tag = hashlib.md5(json.dumps(src_key).encode()).hexdigest()[:8]
        name = f"{data_name(source)}-{tag}-{'sft' if sft else 'lm'}-{tokenizer.replace(':', '_')}"
        key = {"source": src_key, "tokenizer": tokenizer, "sft": sft}
        if not _fresh(name, key):
            if os.path.isfile(source) and not source.endswith((".jsonl", ".jsonl.gz")):
                text = read_text(source)
                # plain text: paragraphs are documents (so the val split cuts no paragraph)
                docs = [p for p in text.split("\n\n") if p.strip()]
                kind = "text"
            else:
                pairs, _ = hh.load_comparisons(source, verbose)
                docs = hh.dialogue_corpus(pairs)
                kind = "hh"
            if len(docs) < 2:  # one for each split at least
                raise SystemExit(
                    f"--data {source}: {len(docs)} document; paragraphs (separated by blank "
                    f"lines) are the documents, and training and validation need one each"
                )
            enc = get_tokenizer(tokenizer, text_fn=lambda: "\n".join(docs))
            n_val = max(len(docs) // 20, 1)
            # every 20th document to val: a deterministic split that spans all files
            splits = {
                "train": [d for i, d in enumerate(docs) if i % 20 != 0],
                "val": docs[::20][:n_val],
            }
            write_stream(
                name,
                enc,
                splits,
                {
                    "key": key,
                    "source": os.path.abspath(source),
                    "kind": kind,
                    "tokenizer": tokenizer,
                    "vocab": enc.n_vocab,
                },
                sft,
            )
    d = os.path.join(OUT_DIR, name)
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    if verbose:
        print(
            f"data {d}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, "
            f"tokenizer {tokenizer}"
        )
    return d, meta


def load_split(d, split, meta):
    ids = np.memmap(os.path.join(d, f"{split}.bin"), dtype=meta["dtype"], mode="r")
    mask = (
        np.memmap(os.path.join(d, f"{split}.mask.bin"), dtype=np.uint8, mode="r")
        if meta["sft_mask"]
        else None
    )
    return ids, mask


def synthetic_batch(batch, T, vocab, gen, p_repeat=0.7):
    """Uniform random tokens written in chunks of 4-12 tokens; each chunk is, with
    probability p_repeat, a copy of an earlier stretch of the same sequence taken from a
    random offset. Random offsets mean position alone cannot predict a repeat: only looking
    back for the previous occurrence of the current token does (induction.py's data; the
    repeated-data sweep's). Drawn with numpy, seeded from the torch.Generator gen (scalar
    torch draws dominated a training step) -> (x, y) of shape (batch, T)."""
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
    x = rng.integers(0, vocab, (batch, T + 1))
    n = (T + 1) // 4 + 2  # enough chunks to fill a sequence; drawn in bulk, used in order
    lengths = rng.integers(4, 13, (batch, n))
    copy = rng.random((batch, n)) < p_repeat
    where = rng.random((batch, n))
    for b in range(batch):
        t, c = int(lengths[b, 0]), 1
        while t < T + 1:
            L = min(int(lengths[b, c]), T + 1 - t)
            if copy[b, c] and t >= L + 1:
                src = int(where[b, c] * (t - L + 1))
                x[b, t : t + L] = x[b, src : src + L]
            t, c = t + L, c + 1
    x = torch.from_numpy(x)
    return x[:, :-1], x[:, 1:]


def copy_spans(windows, frac, gen):
    """In-context repeats for natural text: in a share `frac` of the windows (B, T), an
    earlier span of the window (T/8 to T/4 tokens, from its first half) is copied to a later
    place in the same window, in place, so that late tokens can be predicted from early ones
    (the copying that induction heads do; Olsson et al. 2022; induction.py's natural-text
    data). gen: a torch.Generator."""
    if frac <= 0:  # draws nothing: runs without repeats keep their batches
        return windows
    T = windows.shape[1]
    for b in range(windows.shape[0]):
        if float(torch.rand(1, generator=gen)) < frac:
            L = int(torch.randint(T // 8, T // 4 + 1, (1,), generator=gen))
            src = int(torch.randint(0, T // 2 - L + 1, (1,), generator=gen))
            dst = int(torch.randint(src + L, T + 1 - L, (1,), generator=gen))
            windows[b, dst : dst + L] = windows[b, src : src + L].clone()
    return windows


def get_batch(ids, mask, block_size, batch_size, gen, device, synthetic=0, vocab=0, starts=None):
    """Random windows of block_size + 1 tokens (nanoGPT), or those starting at `starts`; the
    first `synthetic` rows are instead random tokens below `vocab` with in-context copies
    (synthetic_batch), on which nothing but copying pays, so induction heads form within a
    short CPU run and stay (train_lm.py's --synthetic_frac). With an SFT mask, targets
    outside assistant replies are -1 (ignored by the loss)."""
    ix = starts
    if ix is None:
        ix = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=gen).tolist()
    w = torch.from_numpy(np.stack([ids[i : i + block_size + 1].astype(np.int64) for i in ix]))
    x, y = w[:, :-1], w[:, 1:]
    if mask is not None:
        targets = np.stack([mask[i + 1 : i + 1 + block_size] for i in ix])
        y = y.masked_fill(~torch.from_numpy(targets).bool(), -1)
    if synthetic:
        sx, sy = synthetic_batch(synthetic, block_size, vocab, gen)
        x, y = torch.cat([sx, x[synthetic:]]), torch.cat([sy, y[synthetic:]])
    return x.to(device), y.to(device)


def document_mask(x, sep):
    """Attention mask (B, 1, T, T) for packed windows (B, T) of documents that end in the
    token `sep`: causal, and within one document, so that a model cannot learn to copy from
    an unrelated earlier document of the window (a shortcut that cost the world's SFT
    models open-question helpfulness; docs/log.md). The separator belongs to the document
    it ends."""
    end = x == sep
    doc = torch.cumsum(end, 1) - end.long()
    causal = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device).tril()
    return (doc[:, None, :, None] == doc[:, None, None, :]) & causal


def fill_repeated(x, y, slots, windows):
    """Replace the batch rows whose slot holds a subset window (slots >= 0) with that window."""
    rows = torch.from_numpy(slots >= 0).to(x.device)
    w = torch.from_numpy(windows[slots[slots >= 0]]).to(x.device)
    x[rows], y[rows] = w[:, :-1], w[:, 1:]
    return x, y


def repeated_subset(ids, block_size, iters, batch, frac, count, seed, period=None):
    """The repeated-data experiment's split of a training stream (Hernandez et al. 2022):
    a share `frac` of the iters x batch training windows comes from a subset at the start
    of the stream, each of its windows seen exactly `count` times at random slots; the rest
    from the rest of the stream -> (the unique ids, the subset's windows (n, block_size + 1),
    schedule (iters, batch): the subset window each slot takes, -1 for a unique window).
    period: documents of a fixed length (the Markov language): each subset window starts at a
    document and the rest of the stream starts at the next one, whatever the block size."""
    T1 = block_size + 1
    stride = period or T1
    slots = iters * batch
    n_win = round(frac * slots / count)
    if n_win < 1 or n_win * stride > len(ids) // 2:
        raise SystemExit(
            f"--repeat_frac {frac} with --repeat_count {count} gives a subset of {n_win} windows: "
            f"need at least 1 and at most half the training split"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.repeat(np.arange(n_win), count))
    schedule = np.full(slots, -1)
    schedule[rng.choice(slots, len(order), replace=False)] = order
    starts = stride * np.arange(n_win)[:, None] + np.arange(T1)
    windows = np.asarray(ids[: n_win * stride], dtype=np.int64)[starts]
    return ids[n_win * stride :], windows, schedule.reshape(iters, batch)


def bytes_per_token(enc, ids, mask):
    """UTF-8 bytes of text per counted token (every token, or the SFT mask's): the factor from
    nats per token to bits per byte, a loss that does not depend on the tokenizer. Special
    tokens count as zero bytes (they are not text) but their loss is counted."""
    special = {enc.encode_single_token(t) for t in enc.special_tokens_set}
    lens = np.array(
        [0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]
    )
    counted = ids if mask is None else ids[mask.astype(bool)]
    return float(lens[counted].sum() / max(len(counted), 1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--source",
        default="world",
        help="'world', a text file, or HH-RLHF jsonl(.gz) file or directory",
    )
    ap.add_argument(
        "--tokenizer",
        default="world",
        help="'world', 'gpt2', or 'bpe:NAME' (our BPE trained on the source)",
    )
    args = ap.parse_args()
    prepare(args.source, args.tokenizer, sft=False)
    for mix in corpora.SFT_MIXES if args.source == "world" else ("hh",):
        prepare(args.source, args.tokenizer, sft=True, mix=mix)
