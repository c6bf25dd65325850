"""One writer per run folder: a sweep's ``--out`` or a training's ``default_root_dir`` is held by one run
at a time through an OS lock (``fcntl.flock``) on ``<folder>/.lock``.

The kernel drops the lock when its holder exits, however it exits (a SIGKILL, a crash, a lost node), so a
dead run never blocks the next one. A flock belongs to the open file, which ``fork`` shares, so a forked
child (a DataLoader worker) closes its copy at once: the lock lives exactly as long as its holder. The file
itself stays; while held it records its holder (pid, host, start time, command line), which a refused run
names. A second run on a held folder waits for it (``on_busy="wait"``) or is refused at once (``"fail"``).
DDP ranks of one run are one writer: only the process that is global rank 0 before its ranks start takes
the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_diffusion.config import ConfigError, cannot_write, output_folder

LOCK_NAME = ".lock"
ON_BUSY = ("wait", "fail")
_held: set[int] = set()  # descriptors of the locks this process holds


def _close_held_in_child() -> None:
    """After ``fork``: drop the child's copies of the held lock files (the parent keeps the locks)."""
    for descriptor in _held:
        os.close(descriptor)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


@contextmanager
def run_lock(
    folder: str | Path, on_busy: str = "fail", option: str = "--out", take: bool = True
) -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for this run while the block runs; ``take=False`` (ranks other
    than 0) only creates it. A folder another run holds is waited for or refused, as ``on_busy`` says."""
    if on_busy not in ON_BUSY:
        raise ConfigError(f"--on_busy {on_busy!r} is not one of {', '.join(ON_BUSY)}.")
    folder = output_folder(folder, option)
    if not take:
        yield folder
        return
    path = folder / LOCK_NAME
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise cannot_write(option, path, error) from None
    held = False
    try:
        if not _try_lock(descriptor):
            if on_busy == "fail":
                raise ConfigError(
                    f"{option} {str(folder)!r} is in use by another run ({holder_of(path)}); wait for it to "
                    "end, pass --on_busy wait to start when it ends, or choose another folder."
                )
            print(f"waiting for {folder} to be free: {holder_of(path)} holds it", file=sys.stderr, flush=True)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        held = True
        _held.add(descriptor)
        _record_holder(descriptor)
        yield folder
    finally:
        if held:
            _held.discard(descriptor)
            os.ftruncate(descriptor, 0)  # a free folder names no holder
        os.close(descriptor)  # releases the lock


def holder_of(path: Path) -> str:
    """Who holds the lock file ``path``, as its holder recorded it: pid, host, start time and command."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"pid {record['pid']} on {record['host']}, started {record['started']}, "
            f"command: {record['command']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _record_holder(descriptor: int) -> None:
    """Write this process's pid, host, start time and command line into the held lock file."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(record).encode("utf-8"), 0)
