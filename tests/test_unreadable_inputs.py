"""Unreadable inputs named, from every entry point (``train.py``, ``evaluate.py``, ``python -m
lightning_diffusion``): a config file that is not UTF-8, not YAML or not a mapping, and an output folder
that cannot be made (a file on the way, a read-only disk, no space left), each one paragraph with the path
and the fix. The disk faults are the OSErrors ``mkdir`` raises there, injected for the one path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bad_input import DIGITS, _in_tmp_dir, assert_says, paths_fixture, refusal  # noqa: F401
from test_bad_input_train import SMALL_FIT
from tiny import run_module

import evaluate
import train
from lightning_diffusion.__main__ import main as lightning_diffusion_main

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {
    "not-utf8": (b"model: caf\xe9\n", ["not UTF-8 text", "byte 0xe9 on line 1", "save it as UTF-8"]),
    "not-yaml": (b"trainer:\n  max_steps: [1,\n", ["not valid YAML", "line 3", "correct the syntax"]),
    "a-list": (b"- model\n- data\n", ["holds a list, not a mapping of options", "'option: value'"]),
    "empty": (b"", ["holds nothing, not a mapping of options"]),
}


def evaluate_args(paths: dict[str, str], out: str, *extra: str) -> list[str]:
    return [
        "--denoiser", paths["denoiser"], "--evaluator", paths["evaluator"], "--out", out,
        "--methods", "[cfg]", "--scales", "[1]", "--num_samples", "4", "--sampler.steps", "2",
        "--wandb", "false", *extra,
    ]  # fmt: skip


ENTRY_POINTS_WITH_CONFIG: dict[str, Callable[[dict[str, str], str], Callable[[], Any]]] = {
    "train.py": lambda paths, config: lambda: train.main(args=["fit", "--config", config], run=False),
    "evaluate.py": lambda paths, config: (
        lambda: evaluate.main(["--config", config, "--denoiser", "x", "--out", "o"])
    ),
    "python -m lightning_diffusion vocab": lambda paths, config: (
        lambda: lightning_diffusion_main(["vocab", "--config", config])
    ),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS_WITH_CONFIG)
@pytest.mark.parametrize("fault", CONFIGS)
def test_a_config_that_cannot_be_read_is_named_with_the_fix(paths, tmp_path, capsys, entry, fault):
    content, phrases = CONFIGS[fault]
    config = tmp_path / f"{fault}.yaml"
    config.write_bytes(content)
    message = refusal(ENTRY_POINTS_WITH_CONFIG[entry](paths, str(config)), capsys)
    assert_says(message, f"--config {str(config)!r}", *phrases)


ENTRY_POINTS_WITH_OUTPUT: dict[str, tuple[str, Callable[[dict[str, str], str], Callable[[], Any]]]] = {
    "evaluate.py --out": ("--out", lambda paths, out: lambda: evaluate.main(evaluate_args(paths, out))),
    "evaluate.py --cache_dir": (
        "--cache_dir",
        lambda paths, out: lambda: evaluate.main(evaluate_args(paths, "sweep", "--cache_dir", out)),
    ),
    "train.py": (
        "--trainer.default_root_dir",
        lambda paths, out: (
            lambda: train.main(
                args=["fit", "--config", str(DIGITS), *SMALL_FIT, "--trainer.default_root_dir", out]
            )
        ),
    ),
    "sample": (
        "--out",
        lambda paths, out: lambda: lightning_diffusion_main(["sample", paths["denoiser"], "--out", out]),
    ),
    "variations": (
        "--out",
        lambda paths, out: lambda: lightning_diffusion_main(["variations", paths["denoiser"], "--out", out]),
    ),
}
FOLDER_FAULTS = {
    "under-a-file": (None, ["is a file, not a folder", "pass a path with no file on the way"]),
    "read-only": (errno.EROFS, ["its file system is read-only", "pass a folder on a writable disk"]),
    "no-permission": (errno.EACCES, ["you may not write there", "pass a folder you can write to"]),
    "no-space": (errno.ENOSPC, ["no space is left on its disk", "free some space or pass a folder"]),
}


def refuse_mkdir(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int) -> None:
    """Make creating ``folder`` fail as the system does with ``code`` (other folders are made)."""
    mkdir = Path.mkdir

    def failing_mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.absolute() == folder:
            raise OSError(code, os.strerror(code), str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", failing_mkdir)


@pytest.mark.parametrize("entry", ENTRY_POINTS_WITH_OUTPUT)
@pytest.mark.parametrize("fault", FOLDER_FAULTS)
def test_an_output_folder_that_cannot_be_made_is_named_with_the_fix(
    paths, tmp_path, capsys, monkeypatch, entry, fault
):
    code, phrases = FOLDER_FAULTS[fault]
    (tmp_path / "a_file").write_text("not a folder")
    folder = tmp_path / "a_file" / "out" if code is None else tmp_path / "out"
    if code is not None:
        refuse_mkdir(monkeypatch, folder, code)
    option, call = ENTRY_POINTS_WITH_OUTPUT[entry]
    message = refusal(call(paths, str(folder)), capsys)
    assert_says(message, f"{option} {str(folder)!r} cannot be written", *phrases)


def test_sample_into_a_folder_under_a_file_is_one_line_without_a_traceback(paths, tmp_path):
    """The issue's example as a user runs it: ``python -m lightning_diffusion sample CKPT --out FILE/sub``."""
    (tmp_path / "a_file").write_text("not a folder")
    done = run_module("sample", paths["denoiser"], "--out", str(tmp_path / "a_file" / "sub"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: --out {str(tmp_path / 'a_file' / 'sub')!r} cannot be written: "
        f"{str(tmp_path / 'a_file')!r} is a file, not a folder; pass a path with no file on the way."
    )
