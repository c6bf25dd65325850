"""What a sweep runs (``SweepSettings``) and its rows (``MethodRow``), validated before anything is loaded.

A sweep's ``methods`` list holds registered method names, or mappings describing a row of its own
(``{method: cfg, label: cfg_rescaled, options: {...}, rescale: 0.7}``). A setting given but used by no
row is refused with the reason, never ignored: settings left unset are None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_diffusion.components.prior import check_candidates
from lightning_diffusion.config import ConfigError, did_you_mean
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.resampling import check_aug_level
from lightning_diffusion.sweep.methods import SweepMethod, get_sweep_method, methods_taking

ROW_MODIFIERS = ("interval", "rescale", "threshold", "schedule")
ROW_FIELDS = ("method", "label", "options", *ROW_MODIFIERS)
METHOD_SETTINGS = ("aug_level", "upsampler_scale", "prior_scale", "prior_candidates")


@dataclass(frozen=True)
class MethodRow:
    """One method of a sweep: its ``label`` in sweep.json (default: the method's name), the registered
    ``method``, its ``options`` (a mapping of the method's option fields) and the shared modifiers."""

    label: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    interval: tuple[float, float] | None = None
    rescale: float | None = None
    threshold: float | None = None
    schedule: Any = None

    @property
    def sweep_method(self) -> SweepMethod:
        return get_sweep_method(self.method)

    @property
    def modifiers(self) -> dict[str, Any]:
        """The shared modifiers of the row by name (None where not given)."""
        return {name: getattr(self, name) for name in ROW_MODIFIERS}


@dataclass
class SweepSettings:
    """What a sweep runs: methods x scales, N samples each, sampler (a spec; in YAML
    ``sampler: {name: ddim, steps: 50}``, on the command line ``--sampler.steps 25``) and seeds.

    ``methods``: registered names or row mappings (``{method, label, options, interval, rescale,
    threshold, schedule}``); ``scales``: one list for all rows, or a mapping by row label (or method name).
    ``interval`` is the noise-level interval (sigma_min, sigma_max] of the rows whose method requires one
    (``*_interval``); ``rescale`` and ``threshold`` apply to every row, so every row's method must use them.
    ``aug_level`` (cascade), ``upsampler_scale`` (cascade, unclip), ``prior_scale`` and
    ``prior_candidates`` (unclip) are defaults of those methods' options."""

    methods: list[str | dict[str, Any]] = field(default_factory=lambda: ["cfg"])
    scales: list[float] | dict[str, list[float]] = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])
    num_samples: int = 500
    batch_size: int = 100
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    seed: int = 0
    num_real: int | None = None
    real_split: str = "train"  # the reference set papers use; the small CPU configs hold out "test"
    interval: list[float] | None = None
    rescale: float | None = None
    threshold: float | None = None
    save_samples: bool = False
    grid_size: int = 64
    aug_level: float | None = None
    upsampler_scale: float | None = None
    prior_scale: float | None = None
    prior_candidates: int | None = None

    def __post_init__(self) -> None:
        self.sampler = SamplerSpec.of(self.sampler)

    def rows(self) -> list[MethodRow]:
        """The sweep's rows, each with the sweep-wide modifiers it uses filled in."""
        return [self._row(entry) for entry in self.methods]

    def _row(self, entry: str | Mapping[str, Any]) -> MethodRow:
        if isinstance(entry, str):
            entry = {"method": entry}
        if not isinstance(entry, Mapping) or "method" not in entry:
            raise ConfigError(
                f"a sweep method is a registered name or a mapping with a 'method' key, got {entry!r}."
            )
        unknown = sorted(set(entry) - set(ROW_FIELDS))
        if unknown:
            raise ConfigError(
                f"sweep row {entry['method']!r} has unknown key(s) {unknown}"
                f"{did_you_mean(unknown[0], ROW_FIELDS)}; a row takes: {', '.join(ROW_FIELDS)}."
            )
        method = get_sweep_method(entry["method"])
        interval = entry.get("interval")
        if interval is None and "interval" in method.required:
            interval = self.interval
        return MethodRow(
            label=str(entry.get("label", entry["method"])),
            method=entry["method"],
            options=dict(entry.get("options") or {}),
            interval=None if interval is None else _interval(interval),
            rescale=entry.get("rescale", self.rescale),
            threshold=entry.get("threshold", self.threshold),
            schedule=entry.get("schedule"),
        )

    def scales_for(self, row: MethodRow | str) -> list[float]:
        """The scales of one row: ``scales`` is one list for all rows or a mapping by label or method."""
        if not isinstance(self.scales, dict):
            return list(self.scales)
        if isinstance(row, str):
            return list(self.scales.get(row, []))
        return list(self.scales.get(row.label, self.scales.get(row.method, [])))

    def method_options(self, row: MethodRow) -> Any:
        """The row's method options: the row's own, the sweep-wide method settings for the rest."""
        method = row.sweep_method
        defaults = {
            name: getattr(self, name)
            for name in method.option_names
            if name in METHOD_SETTINGS and getattr(self, name) is not None
        }
        return method.parse_options({**defaults, **row.options})

    def validate(self) -> None:
        """Refuse settings that cannot make a sweep, or that no row would use, with the fix."""
        self._check_numbers()
        rows = self.rows()
        labels = [row.label for row in rows]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ConfigError(
                f"two sweep rows are labelled {duplicates}; give each variant its own label "
                "({method: cfg, label: cfg_rescaled, ...})."
            )
        for row in rows:
            method = row.sweep_method
            method.check_modifiers(row.modifiers)
            self.method_options(row)
            if not self.scales_for(row):
                raise ConfigError(
                    f"the list of guidance scales for {row.label!r} is empty; give at least one, "
                    "e.g. --scales '[0,1,3]'."
                )
        self._check_used(rows)

    def _check_numbers(self) -> None:
        if not self.methods:
            raise ConfigError("the list of methods is empty; name at least one, e.g. --methods '[cfg]'.")
        if self.num_samples < 2:
            raise ConfigError(
                f"num_samples must be at least 2 (FID needs two samples), got {self.num_samples}."
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.grid_size < 1:
            raise ConfigError(
                f"grid_size (samples drawn in each row's grid) must be at least 1, got {self.grid_size}."
            )
        scale_lists = self.scales.values() if isinstance(self.scales, dict) else [self.scales]
        bad = [scale for scales in scale_lists for scale in scales if not math.isfinite(scale)]
        if bad:
            raise ConfigError(f"every guidance scale must be a finite number, got {bad}.")
        if self.num_real is not None and self.num_real < 2:
            raise ConfigError(f"num_real must be at least 2, got {self.num_real}.")
        if self.aug_level is not None:
            check_aug_level(self.aug_level)
        if self.prior_candidates is not None:
            check_candidates(self.prior_candidates)

    def _check_used(self, rows: list[MethodRow]) -> None:
        """Refuse a sweep-wide setting that no row uses (or, for rescale and threshold, that some row
        cannot use), and scales of a label that names no row."""
        if self.interval is not None and not any("interval" in row.sweep_method.required for row in rows):
            raise ConfigError(
                "--interval is the guidance interval of the *_interval methods, and no row is one; "
                "add e.g. cfg_interval, give a row its own interval ({method: cfg, interval: [..]}), or "
                "remove it."
            )
        for name in METHOD_SETTINGS:
            if getattr(self, name) is None:
                continue
            users = [row for row in rows if name in row.sweep_method.option_names and name not in row.options]
            if not users:
                takers = ", ".join(methods_taking(name)) or "none"
                raise ConfigError(
                    f"{name} is a setting of the methods {takers}, and no row of this sweep uses it; "
                    "add such a method or remove it."
                )
        if isinstance(self.scales, dict):
            named = {row.label for row in rows} | {row.method for row in rows}
            stray = sorted(set(self.scales) - named)
            if stray:
                raise ConfigError(
                    f"scales are given for {stray}{did_you_mean(stray[0], named)}, which no row of "
                    f"this sweep is called; the rows are: {', '.join(row.label for row in rows)}."
                )


def _interval(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"an interval is two noise levels [sigma_min, sigma_max], got {value!r}.")
    return float(value[0]), float(value[1])
