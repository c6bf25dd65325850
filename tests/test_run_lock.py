"""One writer per run folder: sweeps into one ``--out`` and trainings into one ``default_root_dir`` take
turns (``--on_busy wait``, every row kept) or are refused naming the holder (``fail``); a SIGKILLed holder
blocks nobody. Runs synchronise through files (the waiting message, the rows on disk), never through sleeps
of a guessed length, so the tests hold on a machine of any speed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli import fit_args
from test_sweep import save_component, sweep_args, tiny_evaluator
from tiny import REPO, tiny_denoiser

import evaluate
import train
from lightning_diffusion.config import ConfigError
from lightning_diffusion.run_lock import LOCK_NAME, holder_of, run_lock
from lightning_diffusion.sweep import outputs, read_rows, write_rows

pytestmark = pytest.mark.usefixtures("one_thread")

FORK = multiprocessing.get_context("fork")  # children reuse the test's imports
HANG_LIMIT_S = 300  # only a bound on a hang: every wait below ends on an event


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "denoiser": save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
        "classifier": save_component(tiny_evaluator(), folder / "unused.ckpt"),
    }


def cfg_sweep(checkpoints: dict[str, str], out: Path, scales: str, *extra: str) -> list[str]:
    args = sweep_args(checkpoints, out, "--methods", "[cfg]", "--scales", scales, *extra)
    at = args.index("--classifier")
    return args[:at] + args[at + 2 :]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (the event happened); fail only if it never does."""
    deadline = time.monotonic() + HANG_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {HANG_LIMIT_S} s"
        time.sleep(0.01)


def in_child(log: Path, call: Callable[..., Any], *args: Any) -> multiprocessing.Process:
    """Start ``call(*args)`` in a forked process writing its stderr to ``log``."""

    def target() -> None:
        sys.stderr = open(log, "w", buffering=1)  # noqa: SIM115 (the process ends with it)
        call(*args)

    child = FORK.Process(target=target)
    child.start()
    return child


def waiting(log: Path) -> Callable[[], bool]:
    return lambda: log.is_file() and "waiting for" in log.read_text()


def test_rows_written_into_one_folder_by_two_runs_are_merged(tmp_path):
    write_rows(tmp_path, [{"method": "cfg", "scale": 0.0, "fid": 1.0}])
    write_rows(tmp_path, [{"method": "cfg", "scale": 1.0, "fid": 2.0}])  # another run's row
    write_rows(tmp_path, [{"method": "cfg", "scale": 0.0, "fid": 3.0}])  # a row written again replaces it
    assert [(row["scale"], row["fid"]) for row in read_rows(tmp_path)] == [(1.0, 2.0), (0.0, 3.0)]


def test_two_sweeps_started_at_once_into_one_folder_keep_every_row_with_wait(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with run_lock(out):  # held while both start, so that they must queue
        children = [
            in_child(log, evaluate.main, cfg_sweep(checkpoints, out, scales, "--on_busy", "wait"))
            for log, scales in zip(logs, ("[0,1]", "[2,3]"), strict=True)
        ]
        for log in logs:
            wait_until(waiting(log), f"waiting message in {log.name}")
        assert f"pid {os.getpid()}" in logs[0].read_text()  # the waiting run names the holder
    for child in children:
        child.join(timeout=HANG_LIMIT_S)
        assert child.exitcode == 0
    assert sorted(row["scale"] for row in read_rows(out)) == [0.0, 1.0, 2.0, 3.0]


def test_a_sweep_into_a_held_folder_is_refused_naming_the_holder_with_fail(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    with run_lock(out), pytest.raises(SystemExit) as refused:
        evaluate.main(cfg_sweep(checkpoints, out, "[1]"))  # --on_busy fail is the default
    message = str(refused.value.code)
    assert (
        f"--out {str(out)!r} is in use by another run (pid {os.getpid()} on {socket.gethostname()}" in message
    )
    assert "command: " in message and "--on_busy wait" in message
    assert not (out / "sweep.json").exists()


def sweep_then_die_after_one_row(args: list[str]) -> None:
    """A sweep whose process is SIGKILLed right after writing its first row (it holds the folder)."""
    write = outputs.write_rows

    def write_and_die(out: Path, rows: list[dict[str, Any]]) -> Any:
        write(out, rows)
        os.kill(os.getpid(), signal.SIGKILL)

    outputs.write_rows = write_and_die
    evaluate.main(args)


def test_a_sigkilled_sweep_does_not_block_the_next_one(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    args = cfg_sweep(checkpoints, out, "[0,1]")
    killed = in_child(tmp_path / "killed.log", sweep_then_die_after_one_row, args)
    killed.join(timeout=HANG_LIMIT_S)
    assert killed.exitcode == -signal.SIGKILL
    assert f"pid {killed.pid} " in holder_of(out / LOCK_NAME)  # its record stays; its lock went with it
    (first,) = read_rows(out)
    rows = evaluate.main(args)  # --on_busy fail: not refused
    assert [row["scale"] for row in rows] == [0.0, 1.0] and rows[0] == first


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Trainings write relative paths into the test's folder and read ``args=``, not pytest's argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py"])


def test_a_training_into_a_held_root_is_refused_naming_the_holder(tmp_path, in_tmp_dir):
    root = tmp_path / "run"
    with run_lock(root), pytest.raises(ConfigError) as refused:
        train.main(args=fit_args(root, "--trainer.max_steps", "1"))
    message = str(refused.value)
    assert f"--trainer.default_root_dir {str(root)!r} is in use by another run (pid {os.getpid()} " in message
    assert not (root / "checkpoints").exists()


def test_a_training_with_wait_runs_when_the_holder_ends(tmp_path, in_tmp_dir):
    root, log = tmp_path / "run", tmp_path / "train.log"
    with run_lock(root):
        child = in_child(log, train.main, fit_args(root, "--trainer.max_steps", "1", "--on_busy", "wait"))
        wait_until(waiting(log), "waiting message of the training")
        assert not (root / "checkpoints").exists()
    child.join(timeout=HANG_LIMIT_S)
    assert child.exitcode == 0 and (root / "checkpoints" / "last.ckpt").is_file()
