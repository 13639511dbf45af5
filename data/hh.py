"""
Anthropic HH-RLHF comparisons (Bai et al. 2022), in their original jsonl(.gz) format:
one JSON object per line, {"chosen": transcript, "rejected": transcript}, each transcript
"\\n\\nHuman: ...\\n\\nAssistant: ..." with the two sharing everything but the final reply.

Loads from a local file or directory (../shared/data/hh-rlhf in development and CI) or,
for users online, downloads from the public repository and checks a SHA-256. Optional
extra key "label": the probability that "chosen" is better (AI-labelled comparisons from
critique_revise.py); absent means 1.0 (a hard human label).

A malformed line is an error naming the file, the line and the field.
"""

import gzip
import hashlib
import json
import os
import urllib.request

from data.corpora import split_transcript

HH_URL = "https://raw.githubusercontent.com/anthropics/hh-rlhf/master/{subset}/{split}.jsonl.gz"
SUBSETS = [
    "harmless-base",
    "helpful-base",
    "helpful-online",
    "helpful-rejection-sampled",
    "red-team-attempts",
]
# SHA-256 of the published files, measured on the copies in ../shared/data/hh-rlhf. Train
# splits are not listed: their hash is printed on first download and checked against the
# .sha256 file written beside them afterwards (trust on first use).
SHA256 = {  # (a digest cannot be wrapped: E501 is off for these lines)
    "harmless-base/test.jsonl.gz": "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",  # noqa: E501
    "helpful-base/test.jsonl.gz": "8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b",  # noqa: E501
    "helpful-rejection-sampled/test.jsonl.gz": "6186fc698c638dd5c6bbb33e0c115762d6fdfac0a18969ff4901545307f89a54",  # noqa: E501
}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(subset, split, dest_dir):
    """Fetch one HH-RLHF file into dest_dir/subset/split.jsonl.gz and verify its hash."""
    rel = f"{subset}/{split}.jsonl.gz"
    path = os.path.join(dest_dir, rel)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        url = HH_URL.format(subset=subset, split=split)
        print(f"downloading {url}")
        urllib.request.urlretrieve(url, path + ".part")
        os.replace(path + ".part", path)
    digest = _sha256(path)
    want = SHA256.get(rel)
    if want is None and os.path.exists(path + ".sha256"):
        want = open(path + ".sha256").read().strip()
    if want is None:
        with open(path + ".sha256", "w") as f:
            f.write(digest)
        print(f"{path}: sha256 {digest} (no published hash; recorded for later checks)")
    elif digest != want:
        raise SystemExit(
            f"{path}: sha256 {digest} does not match the expected {want}; "
            "delete it and download again"
        )
    return path


def find_files(path):
    """A jsonl(.gz) file, or every *.jsonl(.gz) under a directory, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f"{path}: no such file or directory")
    out = sorted(
        os.path.join(r, f)
        for r, _, fs in os.walk(path)
        for f in fs
        if f.endswith((".jsonl", ".jsonl.gz"))
    )
    if not out:
        raise SystemExit(f"{path}: no .jsonl or .jsonl.gz files")
    return out


def _open(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_pairs(path):
    """All comparisons of one file: [{"chosen", "rejected", "label", "prompt", "file", "line"}]."""
    out = []
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise SystemExit(f"{where}: expected a JSON object with 'chosen' and 'rejected'")
            for field in ("chosen", "rejected"):
                if field not in rec:
                    raise SystemExit(f"{where}: missing field '{field}'")
                if not isinstance(rec[field], str):
                    raise SystemExit(f"{where}: field '{field}' must be a string")
                if "\n\nAssistant:" not in rec[field]:
                    raise SystemExit(f"{where}: field '{field}' has no '\\n\\nAssistant:' turn")
            label = rec.get("label", 1.0)
            if not isinstance(label, (int, float)) or not 0.0 <= label <= 1.0:
                raise SystemExit(f"{where}: field 'label' must be a probability in [0, 1]")
            out.append(
                {
                    "chosen": rec["chosen"],
                    "rejected": rec["rejected"],
                    "label": float(label),
                    "prompt": split_transcript(rec["chosen"])[0],
                    "file": path,
                    "line": lineno,
                    **{k: rec[k] for k in ("axis", "twin") if k in rec},
                }
            )
    return out


def load_comparisons(path, verbose=True):
    """Comparisons from a file or directory -> (pairs, stats)."""
    try:
        per_file = {fp: read_pairs(fp) for fp in find_files(path)}
    except (UnicodeDecodeError, EOFError, OSError) as e:  # binary, or a broken .gz
        raise SystemExit(f"{path}: not readable as HH-RLHF jsonl ({e})") from None
    pairs = [p for ps in per_file.values() for p in ps]
    if not pairs:
        raise SystemExit(f"{path}: no comparisons in it")
    stats = {
        "files": {fp: len(ps) for fp, ps in per_file.items()},
        "pairs": len(pairs),
        "prompt_mismatch": sum(split_transcript(p["rejected"])[0] != p["prompt"] for p in pairs),
        "unique_prompts": len({p["prompt"] for p in pairs}),
    }
    if verbose:
        print(
            f"HH comparisons from {path}: {stats['pairs']} pairs, {stats['unique_prompts']} "
            f"unique prompts, {stats['prompt_mismatch']} with differing prompts, in "
            f"{len(stats['files'])} files"
        )
    return pairs, stats


def write_jsonl(path, records):
    """Comparisons (or any records) as jsonl, written atomically."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(path + ".tmp", path)


def dialogue_corpus(pairs):
    """Language-model documents from comparisons. The chosen and rejected transcripts
    share their whole prefix, and many prompts recur across pairs, so we dedupe: every
    distinct prompt appears once, followed by its (first) chosen reply."""
    first = {}
    for p in pairs:
        first.setdefault(p["prompt"], p["chosen"])
    return list(first.values())
