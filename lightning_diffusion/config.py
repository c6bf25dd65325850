"""Objects that remember how they were built, so checkpoints rebuild them without pickled code.

A class deriving from ``Configurable`` records the arguments of its outermost ``__init__`` call as
a spec ``{"class_path": ..., "init_args": {...}}`` (the same shape LightningCLI uses in YAML).
Arguments that are themselves ``Configurable`` are stored as their specs, so a component spec
holds its network's spec; ``instantiate`` turns a spec back into the object.
"""

from __future__ import annotations

import difflib
import errno
import functools
import importlib
import inspect
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_SPEC_ATTRIBUTE = "_configurable_spec"


class ConfigError(ValueError):
    """A configuration or input the user wrote is wrong; the message says what and how to fix it."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The suffix " (did you mean X?)" naming the known name closest to ``name``, or "" if none is close."""
    match = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def unknown_name(what: str, name: Any, known: Iterable[str]) -> ConfigError:
    """The error for a name that is not among ``known``: the closest one, then all of them."""
    known = list(known)
    closest = did_you_mean(name, known)
    return ConfigError(f"unknown {what} {name!r}{closest}; choose one of {', '.join(known)}.")


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` made a folder to write into (with its parents): a ``ConfigError`` naming it and the fix
    when it cannot be (a file in the way, no permission, a read-only or full disk), before any work."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{option} {str(path)!r} is a file, not a folder; pass a folder to write the outputs in."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # an existing folder may still refuse writes
            pass
    except OSError as error:
        raise cannot_write(option, folder, error) from None
    return folder


def writable_folder(path: str | Path, option: str) -> Path:
    """Check that ``path`` can be made and written into (as ``output_folder`` does) and leave no trace:
    the folders the check made are removed again, so a run refused later leaves nothing behind."""
    folder = Path(path)
    missing = [part for part in (folder, *folder.parents) if not part.exists()]  # deepest first
    output_folder(folder, option)
    for made in missing:
        made.rmdir()
    return folder


def cannot_write(option: str, path: str | Path, error: OSError) -> ConfigError:
    """The message for an output ``path`` the system refused (``error``): what is wrong, and the fix."""
    path = Path(path)
    blocking = next((part for part in (*reversed(path.parents), path) if part.is_file()), None)
    if error.errno in (errno.ENOTDIR, errno.EEXIST) and blocking is not None:
        reason = f"{str(blocking)!r} is a file, not a folder; pass a path with no file on the way"
    elif error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space is left on its disk; free some space or pass a folder on another disk"
    elif error.errno == errno.EROFS:
        reason = "its file system is read-only; pass a folder on a writable disk"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = "you may not write there; pass a folder you can write to (or change its permissions)"
    else:
        reason = f"{error.strerror or error}; pass a folder you can write to"
    return ConfigError(f"{option} {str(path)!r} cannot be written: {reason}.")


def read_config(path: str | Path, option: str = "--config") -> dict[str, Any]:
    """The options a YAML config file holds, as a mapping: a ``ConfigError`` naming the file and the fix
    when it cannot be read, is not UTF-8, is not YAML or holds something other than a mapping."""
    import yaml

    where = f"{option} {str(path)!r}"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(
            f"{where} cannot be read ({error.strerror or error}); pass a readable YAML file."
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); save it as UTF-8 "
            "(YAML files are UTF-8)."
        ) from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        at = f" on line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML ({problem}{at}); correct the syntax there.") from None
    if not isinstance(content, dict):
        held = "nothing" if content is None else f"a {type(content).__name__}"
        raise ConfigError(
            f"{where} holds {held}, not a mapping of options; write one 'option: value' per line."
        )
    return content


def config_paths(args: Sequence[str], option: str = "--config") -> list[str]:
    """The existing files a command line passes to ``option`` (``--config F`` or ``--config=F``)."""
    paths = []
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name == option and not equals:
            value = args[index + 1] if index + 1 < len(args) else ""
        if name == option and value and Path(value).is_file():
            paths.append(value)
    return paths


_RESTATEMENTS = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'")


def parser_reason(error: Exception) -> str:
    """jsonargparse's nested, multi-line error as one line: the reasons, without its restatements of the
    union's subtypes and of the given value."""
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line.removeprefix("- ") for line in lines if line and not line.startswith(_RESTATEMENTS)]
    return " ".join(reasons)


def class_path_of(cls: type) -> str:
    """The dotted import path of a class, as written in ``class_path`` entries."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _to_spec_value(value: Any, owner: str, name: str) -> Any:
    if isinstance(value, Configurable):
        return value.spec
    if isinstance(value, (list, tuple)):
        return [_to_spec_value(v, owner, name) for v in value]
    if isinstance(value, dict):
        return {k: _to_spec_value(v, owner, name) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"{owner} argument {name!r} has type {type(value).__name__}, which a checkpoint cannot record; "
        "pass plain values (numbers, strings, lists, dicts) or Configurable objects."
    )


class Configurable:
    """Mixin recording constructor arguments as a rebuildable spec (see module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if _SPEC_ATTRIBUTE not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                owner = type(self).__name__
                init_args = {}
                for name, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        init_args.update({k: _to_spec_value(v, owner, k) for k, v in value.items()})
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        raise TypeError(f"{owner}: *args cannot be recorded in a spec")
                    else:
                        init_args[name] = _to_spec_value(value, owner, name)
                object.__setattr__(
                    self, _SPEC_ATTRIBUTE, {"class_path": class_path_of(type(self)), "init_args": init_args}
                )
            original_init(self, *args, **kw)

        cls.__init__ = recording_init

    @property
    def spec(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` that ``instantiate`` turns back into an equal object."""
        return self.__dict__[_SPEC_ATTRIBUTE]


def import_class(class_path: str) -> type:
    """Import ``package.module.Class``; a clear ``ConfigError`` if it does not exist."""
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"cannot import {class_path!r}: a class_path is the full dotted path package.module.Class."
        )
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"cannot import {class_path!r} ({error}); is the package that defines it installed?"
        ) from None


def is_spec(value: Any) -> bool:
    """Whether ``value`` looks like ``{"class_path": str, "init_args": dict}``."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("class_path"), str)
        and set(value)
        <= {
            "class_path",
            "init_args",
        }
    )


def _from_spec_value(value: Any) -> Any:
    """Inverse of ``_to_spec_value``: specs (also inside lists and dicts) become objects again."""
    if is_spec(value):
        return instantiate(value)
    if isinstance(value, list):
        return [_from_spec_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_spec_value(v) for k, v in value.items()}
    return value


def instantiate(spec: dict[str, Any]) -> Any:
    """Build the object a spec describes, nested specs first (also those inside lists and dicts)."""
    cls = import_class(spec["class_path"])
    init_args = {name: _from_spec_value(value) for name, value in spec.get("init_args", {}).items()}
    return cls(**init_args)
