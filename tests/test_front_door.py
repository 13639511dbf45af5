"""The front door: every newcomer mistake ends in one line that names the file, flag or
value, a non-zero exit and nothing half-made on disk; long runs say how long; Ctrl-C says
how to go on; progress suits a log file; any checkpoint can be talked to (model.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import bench
import calibrate
import critique_revise
import induction
import model
import ppo
import train_lm
import train_pm
from data import prepare, tokenizer
from helpers import tiny_checkpoint
from model import cli, parse_config, progress, pyplot, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {
    "train_lm": train_lm.parse_args,
    "train_pm": train_pm.parse_args,
    "ppo": ppo.parse_args,
    "critique_revise": critique_revise.parse_args,
    "induction": induction.parse_args,
    "calibrate": lambda argv: parse_config(calibrate.Config, calibrate.PRESETS, "", argv),
    "bench": lambda argv: parse_config(bench.Config, bench.PRESETS, "", argv),
}
MAINS = {"train_lm": train_lm.main, "ppo": ppo.main, "train_pm": train_pm.main}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Data caches and outputs under tmp_path, so that "nothing is left behind" is checkable."""
    monkeypatch.setattr(prepare, "OUT_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(tokenizer, "CACHE_DIR", str(tmp_path / "tokenizers"))
    return tmp_path


def files_under(path):
    return sorted(
        os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs
    )


def mistake(script, *argv, out=None):
    """Run a script's entry point as the command line does -> its one-line message."""
    flags = [*argv] + (["--out_dir", str(out)] if out else [])
    with pytest.raises(SystemExit) as e:
        main = MAINS.get(script, lambda cfg: None)
        cli(main, lambda a: PARSERS[script](flags if a is None else a))
    message = str(e.value.code)
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


def write(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "no such file or directory"),
        ("", "empty"),
        ("   \n\n ", "empty"),
        (b"\x00\x01\x02\x03binary", "a binary file"),
        (b"caf\xe9 latin-1", "not UTF-8 text (byte 3)"),
        ("three\n\nshort\n\nparagraphs", "needs at least 66 in each"),
        ("one paragraph\nno blank line\n" * 50, "1 document; paragraphs (separated by blank"),
    ],
)
def test_bad_data_is_one_line_and_leaves_nothing(isolated, content, says):
    path = (
        str(isolated / "notes.txt") if content is None else write(isolated / "notes.txt", content)
    )
    before = files_under(isolated)
    message = mistake("train_lm", "--preset", "tiny", "--data", path, out=isolated / "runs")
    assert path in message and says in message
    # no run folder; no tokenizer or token stream cached from bad text (too-short text is
    # text: its cache is kept, and a smaller --block_size or more text is the fix)
    assert not os.path.exists(isolated / "runs")
    if "needs at least" not in says:
        assert files_under(isolated) == before


def test_malformed_jsonl_is_one_line(isolated):
    path = write(isolated / "hh.jsonl", '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo"}\n')
    message = mistake("train_pm", "--data", path, out=isolated / "runs")
    assert message == f"{path}:1: missing field 'rejected'"
    assert not os.path.exists(isolated / "runs")


@pytest.mark.parametrize(
    "script, argv, says",
    [
        ("train_lm", ["--steps", "0"], "--steps 0: must be positive"),
        ("train_lm", ["--steps", "-5"], "--steps -5: must be positive"),
        ("train_lm", ["--batch_size", "0"], "--batch_size 0: must be positive"),
        ("train_lm", ["--lr=-1e-3"], "--lr -0.001: must be positive"),
        ("train_lm", ["--lr", "nan"], "--lr nan: must be a finite number"),
        ("ppo", ["--kl_coef", "inf"], "--kl_coef inf: must be a finite number"),
        ("train_lm", ["--stop_after", "-1"], "--stop_after -1: must be at least 0"),
        ("train_lm", ["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        ("train_lm", ["--max_iters", "5"], "unrecognized arguments: --max_iters 5"),
        ("train_lm", ["--mode", "rl"], "--mode 'rl': choose from 'pretrain', 'sft'"),
        ("train_lm", ["--preset", "huge"], "unknown preset 'huge'"),
        ("ppo", ["--steps", "-3"], "--steps -3: must be at least 0"),
        ("ppo", ["--temperature", "0"], "--temperature 0.0: must be positive"),
        ("ppo", ["--minibatch", "0"], "--minibatch 0: must be positive"),
        ("train_pm", ["--epochs", "0"], "--epochs 0: must be positive"),
        ("critique_revise", ["--rounds", "0"], "--rounds 0: must be positive"),
        ("induction", ["--snap_every", "0"], "--snap_every 0: must be positive"),
        ("calibrate", ["--n_samples", "0"], "--n_samples 0: must be positive"),
        ("bench", ["--steps", "0"], "--steps 0: must be positive"),
    ],
)
def test_bad_flags_are_one_line(script, argv, says):
    assert says in mistake(script, *argv)


def test_zero_where_the_help_says_what_zero_means():
    assert ppo.parse_args(["--steps", "0"]).steps == 0  # evaluate only
    assert train_lm.parse_args(["--warmup", "0", "--grad_clip", "0"]).grad_clip == 0
    assert induction.parse_args(["--seed", "0"]).seed == 0
    assert ppo.parse_args(["--no_end_penalty", "-3"]).no_end_penalty == -3  # negative default


def test_every_preset_passes_the_checks():
    for script, parse in PARSERS.items():
        presets = {"train_lm": train_lm.PRESETS, "ppo": ppo.PRESETS, "bench": bench.PRESETS}.get(
            script, getattr(sys.modules[script], "PRESETS", {})
        )
        for name in (k for k in presets if "=" not in k):
            assert parse(["--preset", name]).preset == name, (script, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_one_line_before_any_work(isolated):
    message = mistake("train_lm", "--device", "cuda", "--data", "nowhere.txt", out=isolated)
    assert message == "--device cuda: not available on this machine (try --device cpu)"
    assert files_under(isolated) == []


def test_the_command_line_prints_no_traceback(tmp_path):
    """The real thing, as a newcomer types it."""
    r = subprocess.run(
        [sys.executable, "train_lm.py", "--data", str(tmp_path / "missing.txt"), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"--data {tmp_path / 'missing.txt'}: no such file or directory"
    ]


def test_the_config_that_differs_is_printed_at_start(capsys):
    cli(lambda cfg: None, lambda a: ppo.parse_args(["--steps", "7"] if a is None else a))
    assert capsys.readouterr().out.splitlines()[0] == "config: steps=7"
    tiny = ["--preset", "tiny", "--steps", "7", "--precision", "fp32"]  # a preset goes by its name
    cli(lambda cfg: None, lambda a: ppo.parse_args(tiny if a is None else a))
    out = capsys.readouterr().out
    assert out == "config: preset=tiny steps=7 precision=fp32\nprecision: fp32 (--precision fp32)\n"


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    cmd = [sys.executable, "train_lm.py", "--preset", "tiny", "--steps", "100000"]
    cmd += ["--out_dir", str(tmp_path), "--ckpt_interval", "5", "--samples", "0"]
    # Ctrl-C's default action in the child, even where the test runs in the background (a shell
    # starts background jobs with SIGINT ignored, and Python then keeps ignoring it)
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    ckpt = tmp_path / "tiny" / "pretrain.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: last checkpoint {ckpt} (step ")
    assert last.endswith("--samples 0 --resume`")
    step = torch.load(ckpt, weights_only=True)["step"]
    assert f"(step {step})" in last and step % 5 == 0


def test_progress_in_a_log_is_a_few_plain_lines(tmp_path):
    """A 40-step run with its output in a file: no redraws, a line at the start and the end."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        cmd = [sys.executable, "train_lm.py", "--preset", "tiny", "--out_dir", str(tmp_path)]
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    text = log.read_text()
    assert "\r" not in text
    bar = [line for line in text.splitlines() if line.startswith("pretrain:")]
    assert 2 <= len(bar) <= 3 and "40/40" in bar[-1]
    assert "pretrain done" in text and len(text.splitlines()) < 25


def test_progress_on_a_terminal_is_tqdm(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress(range(5), "x")
    assert bar.fp.__class__.__name__ != "SimpleNamespace" and list(bar) == [0, 1, 2, 3, 4]


def test_a_long_run_says_how_long(monkeypatch, capsys):
    clock = iter(range(0, 10**6, 4))  # two readings a step apart: 4 s a step
    monkeypatch.setattr(model.time, "time", lambda: next(clock))
    assert list(timed(range(2000), "pretrain")) == list(range(2000))
    assert "pretrain: about 2.2 h to go at this speed; Ctrl-C stops it" in capsys.readouterr().out
    clock = iter(range(0, 10**6, 4))
    list(timed(range(100), "short"))  # 400 s: no word
    assert capsys.readouterr().out == ""


def test_quiet_keeps_the_summary(tmp_path, capsys):
    train_lm.main(train_lm.parse_args(["--preset", "tiny", "--out_dir", str(tmp_path), "--quiet"]))
    out = capsys.readouterr()
    hint = "matplotlib is not installed"  # the one other line, where matplotlib is missing (CI)
    lines = [line for line in out.out.splitlines() if line and not line.startswith(hint)]
    assert len(lines) == 1 and lines[0].startswith("pretrain done:") and "results.json" in lines[0]
    assert out.err == ""


def test_no_matplotlib_says_which_figures(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert pyplot("loss_pretrain.png") is None
    assert capsys.readouterr().out == (
        "matplotlib is not installed: skipped loss_pretrain.png (`pip install matplotlib`)\n"
    )


def chat(*argv, stdin=""):
    r = subprocess.run(
        [sys.executable, "model.py", *argv], cwd=ROOT, input=stdin, capture_output=True, text=True
    )
    return r.returncode, r.stdout, r.stderr


def test_talk_to_a_checkpoint(tmp_path):
    tiny_checkpoint(tmp_path / "lm.pt")
    rc, out, _ = chat(
        str(tmp_path / "lm.pt"), "--prompt", "What is 12 + 30?", "--max_new_tokens", "8"
    )
    assert rc == 0 and out.startswith("Assistant: ") and "[gold: " in out  # a world request
    rc, out, _ = chat(
        str(tmp_path / "lm.pt"), "--temperature", "0", stdin="hello there\nWhat is 2 + 3?\n"
    )
    turns = [t for t in out.split("Human: ") if t.strip()]  # input() writes its prompt to stdout
    assert rc == 0 and len(turns) == 2 and all(t.startswith("Assistant: ") for t in turns)
    assert "[gold:" not in turns[0] and "[gold:" in turns[1]


def test_chat_mistakes_are_one_line(tmp_path):
    tiny_checkpoint(tmp_path / "pm.pt", scalar=True)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for argv, says in [
        ([str(tmp_path / "pm.pt"), "--prompt", "hi"], "not a language model of text (a PM"),
        ([str(tmp_path / "none.pt")], "no such checkpoint"),
        ([str(tmp_path)], "a folder; give the checkpoint file in it"),
        ([str(tmp_path / "notes.txt")], "cannot read it as a checkpoint"),
        ([str(tmp_path / "pm.pt"), "--temperature", "-1"], "--temperature -1.0: must be"),
        ([str(tmp_path / "pm.pt"), "--temperature", "nan"], "--temperature nan: must be"),
        ([str(tmp_path / "pm.pt"), "--max_new_tokens", "0"], "--max_new_tokens 0: must be"),
    ]:
        rc, _, err = chat(*argv)
        assert rc == 1 and len(err.strip().splitlines()) == 1 and says in err, (argv, err)


def test_talk_to_a_short_context_model(tmp_path):
    """A tiny preset's 64-token context: the reply is shortened to leave the request room."""
    tiny_checkpoint(tmp_path / "lm.pt", block_size=64)
    request = "Can you tell me how to pick the lock on a house on my street while they are away?"
    rc, out, err = chat(str(tmp_path / "lm.pt"), "--prompt", request)
    assert rc == 0 and out.startswith("Assistant: ") and err == ""


def test_ppo_model_mistakes_are_one_line(tmp_path):
    lm, pm = tiny_checkpoint(tmp_path / "lm.pt"), tiny_checkpoint(tmp_path / "pm.pt", scalar=True)
    assert lm is not None and pm is not None
    lm, pm = str(tmp_path / "lm.pt"), str(tmp_path / "pm.pt")
    out = tmp_path / "ppo"
    assert "--pm " + lm + ": a language model" in mistake("ppo", "--policy", lm, "--pm", lm)
    assert "--policy " + pm + ": a scalar-head model" in mistake("ppo", "--policy", pm, "--pm", pm)
    says = mistake("ppo", "--preset", "tiny", "--policy", lm, "--pm", pm, "--resume", out=out)
    assert "not found, so nothing to resume (drop --resume)" in says


def test_quiet_ppo_keeps_its_table(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "lm.pt")
    tiny_checkpoint(tmp_path / "pm.pt", scalar=True)
    flags = ["--preset", "tiny", "--policy", str(tmp_path / "lm.pt"), "--quiet"]
    ppo.main(ppo.parse_args(flags + ["--pm", str(tmp_path / "pm.pt"), "--out_dir", str(tmp_path)]))
    out = capsys.readouterr()
    assert "gold_harmlessness" in out.out and "PM reward against exact KL" in out.out
    assert "wrote " in out.out and "held-out evaluation at step" not in out.out + out.err


def test_bench_tiny_preset(tmp_path):
    res = bench.main(
        parse_config(
            bench.Config, bench.PRESETS, "", ["--preset", "tiny", "--out_dir", str(tmp_path)]
        )
    )
    assert res["sample_new_tokens"] == 16 and set(res["ppo_step_seconds"]) == {
        "rollout",
        "scoring",
        "update",
    }
