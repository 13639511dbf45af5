"""bench.py's GPU suite, run on the CPU at a tiny shape: every measurement and every
script it runs must complete, so the one GPU run a session gets is not wasted on a bug."""

import json

import pytest

import bench
from model import parse_config


def test_suite_defaults_to_gpt2_small_compiled():
    cfg = parse_config(bench.Config, bench.PRESETS, "", ["--suite", "gpu"])
    assert (cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.vocab_size, cfg.compile) == (
        12,
        768,
        1024,
        50304,
        True,
    )


@pytest.mark.slow
def test_gpu_suite_runs_on_cpu_at_a_tiny_shape(tmp_path):
    argv = [
        "--suite",
        "gpu",
        "--n_layer",
        "2",
        "--n_head",
        "2",
        "--n_embd",
        "32",
        "--block_size",
        "64",
        "--vocab_size",
        "128",
        "--batch_size",
        "4",
        "--steps",
        "2",
        "--untimed",
        "1",
        "--sample_batch",
        "4",
        "--new_tokens",
        "8",
        "--script_preset",
        "tiny",
        "--device",
        "cpu",
        "--no-compile",
        "--out_dir",
        str(tmp_path),
    ]
    res = bench.main(parse_config(bench.Config, bench.PRESETS, "", argv))
    saved = json.load(open(tmp_path / "suite" / "results.json"))
    assert {"train_ratio_nanoalign_eager", "sample_speedup", "scripts"} <= set(saved)
    # a CPU's MFU is against its own measured bf16 matmul peak
    assert len(saved["matmul_flops"]) == 4 and saved["peak_flops"] > 0
    assert 0 < saved["train_mfu_nanoalign_eager"] < 1
    runs = [r for r in res["scripts"] if "command" in r]
    assert [r["command"].split()[1] for r in runs] == [
        "train_lm.py",
        "train_lm.py",
        "train_pm.py",
        "ppo.py",
        "induction.py",
    ]
    assert all(r["exit"] == 0 for r in runs), runs
    assert res["train_tokens_per_sec_nanoalign_eager"] > 0 and res["sample_speedup"] > 0
