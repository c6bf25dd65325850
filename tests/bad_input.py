"""Shared set-up of the bad-input suites (tests/test_bad_input_*.py, one per entry point): tiny
checkpoints of each kind and files that are not checkpoints, and how a refusal is read and checked.

Hostile input at every public entry point is refused with one clear paragraph that names what was wrong
and what to do (a ConfigError, the text an entry point exits with, or the argument parser's error), never
a traceback from deep inside torch; or it works. Issue 12, item 7: the ids are the list of inputs tried.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sweep import save_component, tiny_evaluator
from tiny import REPO, tiny_denoiser

from lightning_diffusion.config import ConfigError

DIGITS = REPO / "configs" / "digits" / "denoiser.yaml"


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Runs write relative paths (runs/, config.yaml) into the test's own folder; LightningCLI reads
    ``args=``, not pytest's own argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


@pytest.fixture(scope="module", name="paths")
def paths_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny checkpoints of each kind, and files that are not checkpoints."""
    folder = tmp_path_factory.mktemp("bad_input")
    denoiser = save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True)
    content = Path(denoiser).read_bytes()
    (folder / "truncated.ckpt").write_bytes(content[: len(content) // 2])
    (folder / "text.ckpt").write_text("a text file, not a checkpoint\n")
    (folder / "folder.ckpt").mkdir()
    (folder / "broken.yaml").write_text("model: [\n")
    (folder / "no_data.yaml").write_text("trainer:\n  max_steps: 1\n")
    (folder / "bad_data.yaml").write_text(
        "data:\n  class_path: DiffusionDataModule\n  init_args:\n    batch_sise: 3\n"
    )
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, folder / "plain.ckpt")
    return {
        "denoiser": denoiser,
        "no_data": save_component(tiny_denoiser(), folder / "no_data.ckpt"),
        "unconditional": save_component(tiny_denoiser(None), folder / "unconditional.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
        "truncated_ckpt": str(folder / "truncated.ckpt"),
        "text_ckpt": str(folder / "text.ckpt"),
        "plain_ckpt": str(folder / "plain.ckpt"),
        "folder": str(folder / "folder.ckpt"),
        "missing": str(folder / "missing.ckpt"),
        "broken_yaml": str(folder / "broken.yaml"),
        "no_data_yaml": str(folder / "no_data.yaml"),
        "bad_data_yaml": str(folder / "bad_data.yaml"),
    }


def refusal(call: Callable[[], Any], capsys: pytest.CaptureFixture[str]) -> str:
    """The message ``call`` refuses its input with: a ConfigError's text or the text an entry point exits
    with (one line, no chained traceback), or the argument parser's error after its usage (status 2)."""
    with pytest.raises((ConfigError, SystemExit)) as caught:
        call()
    error = caught.value
    if isinstance(error, ConfigError):
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
        message = str(error)
    elif isinstance(error.code, str):
        message = error.code.removeprefix("error: ")
    else:
        assert error.code == 2, f"exit status {error.code!r} without a message"
        printed = capsys.readouterr().err
        assert "Traceback" not in printed, printed
        return printed.split("error: ", 1)[1]
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message


def with_paths(args: Sequence[str], paths: dict[str, str]) -> list[str]:
    """``args`` with each ``{name}`` replaced by the path ``paths[name]``."""
    return [
        paths.get(arg.removeprefix("{").removesuffix("}"), arg) if arg.startswith("{") else arg
        for arg in args
    ]


def assert_says(message: str, *phrases: str) -> None:
    """Each key phrase is in the message (what was wrong, what to do)."""
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
