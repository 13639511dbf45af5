"""train_lm.py end to end on tiny settings: results contract, exact resume, SFT masking,
DDP on CPU with gloo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tmp_path, *extra):
    cfg = train_lm.parse_args(["--preset", "tiny", "--out_dir", str(tmp_path), "--quiet", *extra])
    return train_lm.main(cfg)


def losses(tmp_path):
    return {m["step"]: m["loss"] for m in map(json.loads, open(tmp_path / "metrics.jsonl")) if "loss" in m}


def test_pretrain_results_contract(tmp_path):
    res = run(tmp_path)
    for key in ("val_loss", "train_tokens", "tokens_per_sec", "seconds"):
        assert isinstance(res[key], (int, float)) and res[key] > 0, key
    assert res == json.load(open(tmp_path / "results.json"))
    ls = losses(tmp_path)
    assert ls[max(ls)] < ls[1] - 1.0  # it learns
    assert os.path.exists(tmp_path / "pretrain.pt")


def test_resume_continues_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a)
    assert run(b, "--stop_after", "20") is None  # interrupted after the step-20 checkpoint
    run(b, "--resume")
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) and all(la[s] == lb[s] for s in la), "resumed losses differ"


def test_resume_with_other_shape_is_a_clear_error(tmp_path):
    run(tmp_path, "--stop_after", "20")
    with pytest.raises(ValueError, match="n_embd: checkpoint has 32, requested 48"):
        run(tmp_path, "--resume", "--n_embd", "48")


def test_sft_targets_only_assistant_tokens():
    ids = np.arange(100, dtype=np.uint16)
    mask = np.zeros(100, dtype=np.uint8)
    mask[40:60] = 1
    gen = torch.Generator().manual_seed(0)
    x, y = train_lm.get_batch(ids, mask, 30, 64, gen, "cpu")
    assert torch.equal(y[y != -1] >= 40, torch.ones_like(y[y != -1], dtype=torch.bool))
    assert ((y >= 40) & (y < 60) | (y == -1)).all() and (y == x + 1)[y != -1].all()


def test_sft_from_pretrained(tmp_path):
    run(tmp_path)
    res = run(tmp_path, "--mode", "sft", "--max_iters", "10")
    assert res["mode"] == "sft" and os.path.exists(tmp_path / "sft.pt")


def test_ddp_two_processes_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "train_lm.py", "--preset", "tiny", "--max_iters", "10", "--out_dir", str(tmp_path), "--quiet"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=300)
    res = json.load(open(tmp_path / "results.json"))
    assert res["world_size"] == 2 and res["ddp_in_sync"] is True
    ck = torch.load(tmp_path / "pretrain.pt", weights_only=True)
    assert len(ck["rng"]) == 2  # each rank's data stream is saved for --resume
