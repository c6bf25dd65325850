"""The guidance lab through the sweep: the methods that came after the seed (APG, CFG-Zero*, CFG++, PAG,
schedules, multi-condition and composed CFG) registered, swept side by side in one evaluate.py call, and
each misuse refused before the first sample is drawn."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import test_sweep
import yaml
from test_sweep import sweep_args

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.registry import get_method, method_names

checkpoints = test_sweep.checkpoints  # the tiny checkpoints fixture of test_sweep.py


def sweep_config(tmp_path: Path, methods: list, scales: dict) -> str:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"methods": methods, "scales": scales}))
    return str(path)


def refused(checkpoints: dict[str, str], out: Path, *extra: str) -> str:
    """The message a sweep is refused with; nothing of it was written (no row, no curves)."""
    with pytest.raises(SystemExit) as caught:
        evaluate.main(sweep_args(checkpoints, out, *extra))
    assert not (out / "sweep.json").exists() and not (out / "curves.png").exists()
    return str(caught.value.code)


def test_the_methods_after_the_seed_are_registered_with_what_they_need():
    assert {"apg", "cfg_zero_star", "cfgpp", "pag", "multi_cfg", "composed_cfg"} <= set(method_names())
    assert get_method("cfgpp").renoises and get_method("composed_cfg").composes
    assert not get_method("pag").conditional_denoiser  # PAG guides unconditional models too
    assert get_method("apg").options is not None and get_method("pag").options is not None


def test_one_sweep_runs_the_new_methods_side_by_side_and_writes_the_frontier(checkpoints, tmp_path):
    methods = [
        "cfg",
        "apg",
        "cfg_zero_star",
        "cfgpp",
        {"method": "cfg", "label": "cfg_linear", "schedule": {"name": "linear"}},
    ]
    scales = {"cfg": [2.0], "apg": [2.0], "cfg_zero_star": [2.0], "cfgpp": [0.5], "cfg_linear": [2.0]}
    out = tmp_path / "sweep"
    rows = evaluate.main(sweep_args(checkpoints, out, "--config", sweep_config(tmp_path, methods, scales)))
    assert [row["method"] for row in rows] == ["cfg", "apg", "cfg_zero_star", "cfgpp", "cfg_linear"]
    assert all(math.isfinite(row["fid"]) and math.isfinite(row["vendi"]) for row in rows)
    nfe = {row["method"]: row["nfe"] for row in rows}
    # three DDIM steps: CFG-style methods batch conditional + null (2 rows per step); CFG-Zero* zeroes
    # the first step without a network call; the linear ramp starts at scale 0 (one unconditional pass)
    assert nfe == {"cfg": 6, "apg": 6, "cfg_zero_star": 4, "cfgpp": 6, "cfg_linear": 5}
    with open(out / "frontier.csv", newline="") as handle:
        frontier = list(csv.DictReader(handle))
    assert {line["method"] for line in frontier} == set(nfe)


def test_a_pag_layer_that_does_not_exist_is_refused_listing_the_layers(checkpoints, tmp_path):
    config = sweep_config(tmp_path, [{"method": "pag", "options": {"layers": ["nope"]}}], {"pag": [2.0]})
    message = refused(checkpoints, tmp_path / "sweep", "--config", config)
    assert "['nope']" in message and "choose from" in message


def test_cfgpp_with_a_sampler_that_cannot_renoise_is_refused(checkpoints, tmp_path):
    message = refused(
        checkpoints,
        tmp_path / "sweep",
        "--methods",
        "[cfgpp]",
        "--scales",
        "[0.5]",
        "--sampler.name",
        "unipc",
    )
    assert "renoises" in message and "ddim" in message


def test_composed_cfg_without_composed_prompts_is_refused(checkpoints, tmp_path):
    extra = ("--methods", "[composed_cfg]", "--scales", "[2]", "--captions", "[a red circle, a blue square]")
    assert "--compose and" in refused(checkpoints, tmp_path / "sweep", *extra)


def test_a_schedule_under_a_negative_scale_is_refused(checkpoints, tmp_path):
    config = sweep_config(tmp_path, [{"method": "cfg", "schedule": {"name": "linear"}}], {"cfg": [-1.0]})
    assert "scale >= 0" in refused(checkpoints, tmp_path / "sweep", "--config", config)


def test_an_option_a_method_does_not_have_is_refused_naming_its_options(checkpoints, tmp_path):
    config = sweep_config(tmp_path, [{"method": "apg", "options": {"etta": 0.5}}], {"apg": [2.0]})
    message = refused(checkpoints, tmp_path / "sweep", "--config", config)
    assert "etta" in message and "did you mean eta?" in message


def test_methods_without_a_model_they_need_are_refused(checkpoints, tmp_path):
    message = refused(checkpoints, tmp_path / "sweep", "--methods", "[autoguidance]", "--scales", "[2]")
    assert "--guide PATH" in message


def test_a_setting_no_row_uses_is_refused_not_ignored(checkpoints, tmp_path):
    config = sweep_config(
        tmp_path, [{"method": "apg", "interval": [0.3, 5.0]}, "cfg"], {"apg": [2], "cfg": [2]}
    )
    message = refused(checkpoints, tmp_path / "sweep", "--config", config, "--prior_scale", "2")
    assert "prior_scale" in message
    with pytest.raises(ConfigError, match="does not use rescale"):
        get_method("clip").check_modifiers({"rescale": 0.7})
