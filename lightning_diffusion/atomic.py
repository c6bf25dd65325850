"""Crash-safe file writes: a reader (or a run killed mid-write) sees the old file or the new one, whole.

The content goes to a temporary file ``.<name>.<pid>-<token>.tmp`` in the destination's folder, is flushed
to disk (fsync), and then replaces the destination with one ``os.replace``, which is atomic on POSIX and
Windows within a folder. The temporary files a killed writer left are removed by the next write to the
same path, once their writer's process is gone (a live concurrent writer keeps its own).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], mode: str = "wb") -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path`` opened with ``mode`` ("wb" or "w"),
    fsync it and rename it onto ``path``; on any error the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    text_options = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # permissions as umask says
    try:
        with open(descriptor, mode, **text_options) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of writes to ``path`` whose writer process no longer runs (killed
    mid-write); return them. A file whose writer still runs, or whose name is not ours, is kept."""
    prefix, removed = f".{path.name}.", []
    for candidate in path.parent.iterdir():
        name = candidate.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid, dash, _ = name[len(prefix) : -len(".tmp")].partition("-")
        if dash and pid.isdigit() and not _process_runs(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_runs(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    """Flush the folder entry of a rename to disk (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
