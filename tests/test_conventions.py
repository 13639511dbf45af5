"""The conventions every script shares (model.py's last section): config flags with help
text and one preset mechanism, run folders that never clobber each other, metrics and
results files. Exercise: add a field to a script's Config and watch these tests."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, fields

import pytest
import torch

import bench
import calibrate
import induction
import ppo
import train_lm
import train_pm
from data.prepare import data_name
from model import (
    config_help,
    ensure_checkpoint,
    handoff,
    log_metrics,
    metrics_bytes,
    parse_config,
    run_dir,
    run_path,
    write_json,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {
    "train_lm": train_lm,
    "train_pm": train_pm,
    "ppo": ppo,
    "induction": induction,
    "calibrate": calibrate,
    "bench": bench,
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_help_text(name):
    cfg_cls = SCRIPTS[name].Config
    helps = config_help(cfg_cls)
    missing = [f.name for f in fields(cfg_cls) if len(helps.get(f.name, "")) < 8]
    assert not missing, f"{name}.py: fields without a help comment: {missing}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_output_lists_every_flag_with_its_text(name):
    r = subprocess.run(
        [sys.executable, f"{name}.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    # the module docstring is the description
    assert SCRIPTS[name].__doc__.strip().splitlines()[0] in r.stdout
    for f in fields(SCRIPTS[name].Config):
        assert f"--{f.name}" in r.stdout, f.name
    for preset in SCRIPTS[name].PRESETS:  # --preset lists what each preset sets
        assert f"{preset}:" in r.stdout, preset


@dataclass
class Toy:
    preset: str = "cpu"  # which scale
    mode: str = "a"  # which mode
    lr: float = 1.0  # learning rate
    steps: int = 10  # how many steps
    fast: bool = False  # go fast


TOY_PRESETS = {
    "cpu": {},
    "big": {"steps": 100, "lr": 0.5},
    "fast": {"fast": True},
    "mode=b": {"lr": 0.1, "steps": 5},
}


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], Toy()),
        (["--preset", "big"], Toy(preset="big", steps=100, lr=0.5)),
        (
            ["--preset", "big+fast", "--steps", "7"],
            Toy(preset="big+fast", steps=7, lr=0.5, fast=True),
        ),  # flags win
        (["--mode", "b"], Toy(mode="b", lr=0.1, steps=5)),  # a field=value preset follows the field
        (
            ["--preset", "big", "--mode", "b", "--lr", "2"],
            Toy(preset="big", mode="b", lr=2.0, steps=5),
        ),
        (["--no-fast", "--preset", "fast"], Toy(preset="fast", fast=False)),
    ],
)
def test_parse_config_order(argv, expected):
    assert parse_config(Toy, TOY_PRESETS, "toy", argv) == expected


def test_unknown_preset_is_an_error():
    with pytest.raises(SystemExit, match="unknown preset 'huge': choose from cpu, big, fast"):
        parse_config(Toy, TOY_PRESETS, "toy", ["--preset", "huge"])


def test_run_dir_metrics_and_results(tmp_path):
    d = run_dir(str(tmp_path), "sft")
    log_metrics(d, {"step": 1})
    seen = metrics_bytes(d)  # what a checkpoint written now has seen
    log_metrics(d, {"step": 2})
    metrics = os.path.join(d, "metrics.jsonl")
    assert len(open(metrics).readlines()) == 2
    # a resume keeps what the checkpoint saw; what came after it will be logged again
    assert run_dir(str(tmp_path), "sft", resume=seen) == d
    assert [json.loads(line) for line in open(metrics)] == [{"step": 1}]
    run_dir(str(tmp_path), "sft", resume=10**9)  # never longer than it was
    assert len(open(metrics).read()) == seen
    run_dir(str(tmp_path), "sft")  # a new run starts a new metrics.jsonl
    assert open(metrics).read() == ""
    write_json(os.path.join(d, "results.json"), {"a": 1.5})
    assert json.load(open(os.path.join(d, "results.json"))) == {"a": 1.5}
    assert sorted(os.listdir(d)) == ["metrics.jsonl", "results.json"]
    assert (
        data_name("../shared/data/hh-rlhf/") == "hh-rlhf"
        and data_name("x/tinyshakespeare.txt") == "tinyshakespeare"
    )
    assert data_name("world") == "" and data_name("synthetic", default="synthetic") == ""


@pytest.mark.parametrize(
    "argv, folder, init",
    [
        ([], "out/train_lm", ""),
        (["--mode", "sft"], "out/train_lm/sft_hh", "out/train_lm/pretrain.pt"),
        (
            ["--mode", "sft", "--sft_mix", "helpful"],
            "out/train_lm/sft_helpful",
            "out/train_lm/pretrain.pt",
        ),
        (["--preset", "gpu"], "out/train_lm/gpu", ""),
        (
            ["--preset", "gpu", "--mode", "sft"],
            "out/train_lm/gpu/sft_hh",
            "out/train_lm/gpu/pretrain.pt",
        ),
        (["--data", "../shared/data/hh-rlhf"], "out/train_lm/hh-rlhf", ""),
        (
            ["--data", "a/b.txt", "--mode", "sft", "--preset", "tiny"],
            "out/train_lm/b/tiny/sft",
            "out/train_lm/b/tiny/pretrain.pt",
        ),
    ],
)
def test_each_kind_of_run_has_its_own_folder(argv, folder, init):
    cfg = train_lm.parse_args(argv)
    assert (cfg.out_dir, cfg.init) == (folder, init)


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_handoffs_are_where_the_scripts_write(preset):
    """ppo.py and train_pm.py find each stage's checkpoint where that stage's run writes it."""
    pre, sft = (
        train_lm.parse_args(["--preset", preset]),
        train_lm.parse_args(["--preset", preset, "--mode", "sft"]),
    )
    assert handoff("pretrain", preset)[0] == os.path.join(pre.out_dir, "pretrain.pt") == sft.init
    assert handoff("sft", preset)[0] == os.path.join(sft.out_dir, "sft.pt")
    assert handoff("pm", preset)[0] == os.path.join(
        run_path("out/train_pm", data_name("world"), preset), "pm.pt"
    )
    assert handoff("sft", preset)[1] == ["train_lm.py", "--preset", preset, "--mode", "sft"]
    helpful = train_lm.parse_args(handoff("sft_helpful", preset)[1][1:])
    assert (
        handoff("sft_helpful", preset)[0] == os.path.join(helpful.out_dir, "sft.pt")
        and helpful.sft_mix == "helpful"
    )


@pytest.mark.slow
def test_ensure_checkpoint_builds_once_and_reports_failure(tmp_path, capsys):
    ckpt = str(tmp_path / "tiny" / "pretrain.pt")
    argv = [
        "train_lm.py",
        "--preset",
        "tiny",
        "--steps",
        "4",
        "--samples",
        "0",
        "--out_dir",
        str(tmp_path),
        "--quiet",
    ]
    assert ensure_checkpoint(ckpt, argv, "a tiny LM") == ckpt and os.path.exists(ckpt)
    assert (
        f">>> {ckpt} not found: building a tiny LM with `python train_lm.py --preset tiny"
        in capsys.readouterr().out
    )
    mtime = os.path.getmtime(ckpt)
    ensure_checkpoint(ckpt, ["train_lm.py", "--no-such-flag"], "a tiny LM")  # present: nothing runs
    assert os.path.getmtime(ckpt) == mtime
    with pytest.raises(SystemExit, match="`python train_lm.py --no-such-flag` failed"):
        ensure_checkpoint(str(tmp_path / "other.pt"), ["train_lm.py", "--no-such-flag"], "nothing")


def test_ensure_checkpoint_resumes_an_unfinished_one(tmp_path):
    """A chain interrupted mid-run (ppo.py building train_lm.py's checkpoint) picks up the
    half-trained checkpoint with --resume instead of taking it as finished."""
    argv = ["train_lm.py", "--preset", "tiny", "--samples", "0", "--out_dir", str(tmp_path)]
    ckpt = tmp_path / "tiny" / "pretrain.pt"
    subprocess.run([sys.executable, *argv, "--stop_after", "20"], cwd=ROOT, check=True)
    assert torch.load(ckpt, weights_only=True)["step"] == 20
    ensure_checkpoint(str(ckpt), argv + ["--quiet"], "a tiny LM")
    assert torch.load(ckpt, weights_only=True)["step"] == 40
    rows = [json.loads(line) for line in open(tmp_path / "tiny" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 41))
