"""What a sweep runs (``SweepSettings``), validated before anything is loaded, and resolved once into a
plan per row (``RowPlan``) that the methods and the run loop read.

A sweep's ``methods`` list holds registered method names, or mappings describing a row of its own
(``{method: cfg, label: cfg_rescaled, options: {...}, rescale: 0.7}``). A setting given but used by no
row is refused with the reason, never ignored: settings left unset are None. ``without_unused`` drops
such values where they came from a config file the command line narrowed (the user did not type them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_diffusion.components.prior import check_candidates
from lightning_diffusion.config import ConfigError, did_you_mean
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.ema.profiles import gamma_of
from lightning_diffusion.metrics import columns as metric_columns
from lightning_diffusion.resampling import check_aug_level
from lightning_diffusion.sweep.bootstrap import check_resamples
from lightning_diffusion.sweep.methods import get_sweep_method, methods_taking
from lightning_diffusion.sweep.plans import RowPlan

ROW_MODIFIERS = ("interval", "rescale", "threshold", "schedule")
ROW_FIELDS = ("method", "label", "options", *ROW_MODIFIERS)
METHOD_SETTINGS = ("aug_level", "upsampler_scale", "prior_scale", "prior_candidates")
SEARCH_SETTINGS = ("search_target", "search_metric", "search_budget")
DEFAULT_SEARCH_TARGET = 0.95  # the least class accuracy of a plain --search (the lab's threshold)


@dataclass
class SweepSettings:
    """What a sweep runs: methods x scales, N samples each, sampler (a spec; in YAML
    ``sampler: {name: ddim, steps: 50}``, on the command line ``--sampler.steps 25``) and seeds.

    ``methods``: registered names or row mappings (``{method, label, options, interval, rescale,
    threshold, schedule}``); ``scales``: one list for all rows, or a mapping by row label (or method name).
    ``interval`` is the noise-level interval (sigma_min, sigma_max] of the rows whose method requires one
    (``*_interval``); ``rescale`` and ``threshold`` apply to every row, so every row's method must use them.
    ``aug_level`` (cascade), ``upsampler_scale`` (cascade, unclip), ``prior_scale`` and
    ``prior_candidates`` (unclip) are defaults of those methods' options.

    ``seed_sets`` K draws K disjoint noise sets per row (``sweep.seed_sets``): each metric column is then the
    mean over the sets, with ``<column>_mean``, ``_sd`` and ``_min`` beside it, and ``frontier.csv`` chooses
    each method's scale on one set and reports it on the others. ``bootstrap`` B (at least 100; 0 or None:
    off) gives each metric a 95 % bootstrap interval (``<column>_lo``, ``_hi``) from B resamples of the
    samples' features (``sweep.bootstrap``), writes the per-sample features the ``compare`` command reads
    and marks ties in ``frontier.csv``. ``search`` runs a successive-halving search over each row's scales
    (``sweep.search``) for the best ``search_metric`` (default fid) at class accuracy >= ``search_target``
    (default 0.95 when neither is given; a metric without a target is optimised alone) within
    ``search_budget`` generated samples per row (None: until one scale is left)."""

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
    share_trajectories: bool = True
    grid_size: int = 64
    aug_level: float | None = None
    upsampler_scale: float | None = None
    prior_scale: float | None = None
    prior_candidates: int | None = None
    ema_lengths: list[float] | None = None  # sigma_rel: every row once per EMA length of a snapshot denoiser
    seed_sets: int = 1
    bootstrap: int | None = None
    search: bool = False
    search_target: float | None = None
    search_metric: str | None = None
    search_budget: int | None = None

    def __post_init__(self) -> None:
        self.sampler = SamplerSpec.of(self.sampler)

    def plans(self) -> list[RowPlan]:
        """The sweep's rows resolved: method, parsed options, modifiers (the sweep-wide ones it uses filled
        in), scales and sampler; a row's unknown key, option or modifier is refused."""
        return [self._plan(entry, ema) for ema in self.ema_lengths or [None] for entry in self.methods]

    def _plan(self, entry: str | Mapping[str, Any], ema: float | None = None) -> RowPlan:
        entry = _row_entry(entry)
        method = get_sweep_method(entry["method"])
        interval = entry.get("interval")
        if interval is None and "interval" in method.required:
            interval = self.interval
        modifiers = {
            "interval": None if interval is None else _interval(interval),
            "rescale": entry.get("rescale", self.rescale),
            "threshold": entry.get("threshold", self.threshold),
            "schedule": entry.get("schedule"),
        }
        method.check_modifiers(modifiers)
        label = str(entry.get("label", entry["method"]))
        defaults = {
            name: getattr(self, name)
            for name in method.option_names
            if name in METHOD_SETTINGS and getattr(self, name) is not None
        }
        return RowPlan(
            label=label,
            method=method,
            options=method.parse_options({**defaults, **(entry.get("options") or {})}),
            modifiers=modifiers,
            scales=tuple(float(scale) for scale in self._scales(label, entry["method"])),
            sampler=self.sampler,
            ema=ema,
            seed_sets=tuple(range(self.seed_sets)),
        )

    def _scales(self, label: str, method: str) -> list[float]:
        """``scales`` is one list for all rows or a mapping by label (or method name)."""
        if not isinstance(self.scales, dict):
            return list(self.scales)
        return list(self.scales.get(label, self.scales.get(method, [])))

    def validate(self) -> None:
        """Refuse settings that cannot make a sweep, or that no row would use, with the fix."""
        self._check_numbers()
        plans = self.plans()
        labels = [plan.label for plan in plans if plan.ema == plans[0].ema]  # rows repeat per EMA length
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ConfigError(
                f"two sweep rows are labelled {duplicates}; give each variant its own label "
                "({method: cfg, label: cfg_rescaled, ...})."
            )
        for plan in plans:
            if not plan.scales:
                raise ConfigError(
                    f"the list of guidance scales for {plan.label!r} is empty; give at least one, "
                    "e.g. --scales '[0,1,3]'."
                )
        unused = self._unused(plans)
        if unused:
            raise ConfigError(next(iter(unused.values())))

    def without_unused(self, typed: Collection[str]) -> SweepSettings:
        """A copy without the sweep-wide values that no row uses, except those named in ``typed`` (what the
        user typed, refused by ``validate`` as ever): a shipped config narrowed on the command line to fewer
        rows keeps working; its per-row scales are a lookup, entries for absent rows go quietly."""
        plans = self.plans()
        dropped = {name: None for name in self._unused(plans) if name not in typed}
        if "scales" in dropped:
            named = {plan.label for plan in plans} | {plan.method.name for plan in plans}
            dropped["scales"] = {key: value for key, value in self.scales.items() if key in named}
        return dataclasses.replace(self, **dropped)

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
        if self.ema_lengths is not None:
            if not self.ema_lengths or len(set(self.ema_lengths)) != len(self.ema_lengths):
                raise ConfigError(
                    f"ema_lengths must be distinct EMA lengths sigma_rel, got {self.ema_lengths}; e.g. "
                    "--ema_lengths '[0.025, 0.05, 0.1, 0.2]'."
                )
            for sigma_rel in self.ema_lengths:
                gamma_of(sigma_rel)
        if isinstance(self.seed_sets, bool) or not isinstance(self.seed_sets, int) or self.seed_sets < 1:
            raise ConfigError(
                f"seed_sets (disjoint noise sets sampled per row) must be a whole number of at least 1, got "
                f"{self.seed_sets!r}; 1 draws the sweep's usual noise, 3 is what EDM and EDM2 report over."
            )
        check_resamples(self.bootstrap)
        self._check_search()

    @property
    def resamples(self) -> int:
        """Bootstrap resamples per row: ``bootstrap``, 0 when intervals are off."""
        return self.bootstrap or 0

    def search_objective(self) -> tuple[str, float | None]:
        """What ``search`` optimises: a metric column and the least class accuracy (None: no constraint)."""
        if self.search_metric is None and self.search_target is None:
            return "fid", DEFAULT_SEARCH_TARGET
        return self.search_metric or "fid", self.search_target

    def _check_search(self) -> None:
        if self.search_target is not None and not 0 < self.search_target <= 1:
            raise ConfigError(
                f"search_target is the least class accuracy a scale must reach, in (0, 1], got "
                f"{self.search_target}; e.g. --search_target 0.95."
            )
        if self.search_metric is not None:
            names = [entry.name for entry in metric_columns()]
            if self.search_metric not in names:
                raise ConfigError(
                    f"search_metric {self.search_metric!r} is not a metric column"
                    f"{did_you_mean(self.search_metric, names)}; the columns: {', '.join(names)}."
                )
        if self.search_budget is not None and self.search:
            for plan in self.plans():
                first = len(plan.scales) * self.num_samples * self.seed_sets
                if self.search_budget < first:
                    raise ConfigError(
                        f"search_budget {self.search_budget} is less than the search's first round of row "
                        f"{plan.label!r} ({len(plan.scales)} scales x {self.num_samples} samples x "
                        f"{self.seed_sets} seed sets = {first}); raise it or lower num_samples."
                    )

    def _unused(self, plans: list[RowPlan]) -> dict[str, str]:
        """Each sweep-wide setting that no row uses, with the reason to refuse it: the interval without an
        ``*_interval`` row, a method setting without a row of a method taking it, and scales of a label
        that names no row."""
        unused = {}
        if self.interval is not None and not any("interval" in plan.method.required for plan in plans):
            unused["interval"] = (
                "--interval is the guidance interval of the *_interval methods, and no row is one; "
                "add e.g. cfg_interval, give a row its own interval ({method: cfg, interval: [..]}), or "
                "remove it."
            )
        if not self.search:
            for name in SEARCH_SETTINGS:
                if getattr(self, name) is not None:
                    unused[name] = (
                        f"{name} is a setting of the scale search, and search is off; add --search (in "
                        "YAML, search: true) or remove it."
                    )
        entries = [_row_entry(entry) for entry in self.methods]
        for name in METHOD_SETTINGS:
            if getattr(self, name) is None:
                continue
            users = [
                plan
                for plan, entry in zip(plans, entries, strict=True)
                if name in plan.method.option_names and name not in (entry.get("options") or {})
            ]
            if not users:
                takers = ", ".join(methods_taking(name)) or "none"
                unused[name] = (
                    f"{name} is a setting of the methods {takers}, and no row of this sweep uses it; "
                    "add such a method or remove it."
                )
        if isinstance(self.scales, dict):
            named = {plan.label for plan in plans} | {plan.method.name for plan in plans}
            stray = sorted(set(self.scales) - named)
            if stray:
                unused["scales"] = (
                    f"scales are given for {stray}{did_you_mean(stray[0], named)}, which no row of "
                    f"this sweep is called; the rows are: {', '.join(plan.label for plan in plans)}."
                )
        return unused


def _row_entry(entry: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """A row of ``methods`` as a mapping with a 'method' key and only the known keys."""
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
    return entry


def _interval(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"an interval is two noise levels [sigma_min, sigma_max], got {value!r}.")
    return float(value[0]), float(value[1])
