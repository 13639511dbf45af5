"""The conventions every script shares (model.py's last section): config flags with help
text and one preset mechanism, run folders that never clobber each other, metrics and
results files. Exercise: add a field to a script's Config and watch these tests."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, fields

import pytest

import bench
import induction
import ppo
import train_lm
import train_pm
from data.prepare import data_name
from model import config_help, ensure_checkpoint, log_metrics, parse_config, run_dir, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"train_lm": train_lm, "train_pm": train_pm, "ppo": ppo, "induction": induction, "bench": bench}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_help_text(name):
    cfg_cls = SCRIPTS[name].Config
    helps = config_help(cfg_cls)
    missing = [f.name for f in fields(cfg_cls) if len(helps.get(f.name, "")) < 8]
    assert not missing, f"{name}.py: fields without a help comment: {missing}"


def test_help_output_lists_every_flag_with_its_text():
    out = subprocess.run([sys.executable, "ppo.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "RLHF with PPO" in out  # the module docstring is the description
    assert "--kl_coef KL_COEF" in out and "beta in r = PM - beta * KL" in out and "--preset PRESET" in out


@dataclass
class Toy:
    mode: str = "a"     # which mode
    lr: float = 1.0     # learning rate
    steps: int = 10     # how many steps
    fast: bool = False  # go fast


TOY_PRESETS = {"cpu": {}, "big": {"steps": 100, "lr": 0.5}, "fast": {"fast": True}, "mode=b": {"lr": 0.1, "steps": 5}}


@pytest.mark.parametrize("argv, expected", [
    ([], Toy()),
    (["--preset", "big"], Toy(steps=100, lr=0.5)),
    (["--preset", "big+fast", "--steps", "7"], Toy(steps=7, lr=0.5, fast=True)),  # explicit flags win
    (["--mode", "b"], Toy(mode="b", lr=0.1, steps=5)),  # a field=value preset follows the field
    (["--preset", "big", "--mode", "b", "--lr", "2"], Toy(mode="b", lr=2.0, steps=5)),
    (["--no-fast", "--preset", "fast"], Toy(fast=False)),
])
def test_parse_config_order(argv, expected):
    assert parse_config(Toy, TOY_PRESETS, "toy", argv) == expected


def test_unknown_preset_is_an_error(capsys):
    with pytest.raises(SystemExit):
        parse_config(Toy, TOY_PRESETS, "toy", ["--preset", "huge"])
    assert "unknown preset 'huge': choose from cpu, big, fast" in capsys.readouterr().err


def test_run_dir_metrics_and_results(tmp_path):
    d = run_dir(str(tmp_path), "sft")
    log_metrics(d, {"step": 1})
    log_metrics(d, {"step": 2})
    assert run_dir(str(tmp_path), "sft", resume=True) == d and len(open(os.path.join(d, "metrics.jsonl")).readlines()) == 2
    run_dir(str(tmp_path), "sft")  # a new run starts a new metrics.jsonl
    assert not os.path.exists(os.path.join(d, "metrics.jsonl"))
    write_json(os.path.join(d, "results.json"), {"a": 1.5})
    assert json.load(open(os.path.join(d, "results.json"))) == {"a": 1.5} and os.listdir(d) == ["results.json"]
    assert data_name("../shared/data/hh-rlhf/") == "hh-rlhf" and data_name("x/tinyshakespeare.txt") == "tinyshakespeare"


@pytest.mark.parametrize("argv, folder", [
    ([], "out/train_lm"), (["--mode", "sft"], "out/train_lm/sft"),
    (["--data", "../shared/data/hh-rlhf"], "out/train_lm/hh-rlhf"),
    (["--data", "a/b.txt", "--mode", "sft"], "out/train_lm/b/sft"),
])
def test_each_kind_of_run_has_its_own_folder(argv, folder):
    assert train_lm.parse_args(argv).out_dir == folder


def test_ensure_checkpoint_builds_once_and_reports_failure(tmp_path, capsys):
    ckpt = str(tmp_path / "pretrain.pt")
    argv = ["train_lm.py", "--preset", "tiny", "--max_iters", "4", "--samples", "0", "--out_dir", str(tmp_path), "--quiet"]
    assert ensure_checkpoint(ckpt, argv, "a tiny LM") == ckpt and os.path.exists(ckpt)
    assert f">>> {ckpt} not found: building a tiny LM with `python train_lm.py --preset tiny" in capsys.readouterr().out
    mtime = os.path.getmtime(ckpt)
    ensure_checkpoint(ckpt, ["train_lm.py", "--no-such-flag"], "a tiny LM")  # present: nothing runs
    assert os.path.getmtime(ckpt) == mtime
    with pytest.raises(SystemExit, match="`python train_lm.py --no-such-flag` failed"):
        ensure_checkpoint(str(tmp_path / "other.pt"), ["train_lm.py", "--no-such-flag"], "nothing")
