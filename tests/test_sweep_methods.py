"""Sweep methods as plug-ins: the method registry, variant rows with options and modifiers, a third-party
method through the entry-point group, and settings no row would use refused before any sample."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import test_sweep
import torch
from test_sweep import sweep_args
from tiny import REPO

import evaluate
from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance import registry
from lightning_diffusion.guidance.registry import get_method
from lightning_diffusion.sweep import SweepSettings, read_rows, reference_features

PLUGIN = "sweep_method_plugin"
checkpoints = test_sweep.checkpoints  # the tiny checkpoints fixture of test_sweep.py


# --- the registry -------------------------------------------------------------------------------------


def test_builtin_methods_and_their_interval_variants_are_registered():
    assert {"cfg", "classifier", "autoguidance", "clip"} <= set(registry.method_names())
    for name in ("cfg", "classifier", "autoguidance", "clip"):
        variant = get_method(f"{name}_interval")
        assert variant.required == ("interval",) and variant.needs == get_method(name).needs


def test_an_unknown_method_names_the_closest_and_lists_them_all():
    with pytest.raises(ConfigError, match=r"'clasifier' \(did you mean classifier\?\).*autoguidance, "):
        get_method("clasifier")


def test_a_method_requiring_an_interval_is_refused_without_one():
    with pytest.raises(ConfigError, match="cfg_interval needs the interval"):
        get_method("cfg_interval").check_modifiers({"interval": None})


# --- a third-party method through the entry-point group -----------------------------------------------


def write_plugin(root: Path) -> Path:
    """A package outside lightning_diffusion: CFG at scale s * weight, with ``weight`` as its option."""
    root.mkdir()
    (root / f"{PLUGIN}.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            from lightning_diffusion.guidance import ClassifierFree, GuidanceMethod


            @dataclass(frozen=True)
            class WeightOptions:
                weight: float = 1.0


            WEIGHTED_CFG = GuidanceMethod(
                "weighted_cfg",
                build=lambda inputs: ClassifierFree(inputs.scale * inputs.options.weight),
                options=WeightOptions,
            )
            """
        )
    )
    dist_info = root / f"{PLUGIN}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        f"[lightning_diffusion.methods]\nweighted_cfg = {PLUGIN}:WEIGHTED_CFG\n"
    )
    return root


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The plug-in importable and discovery run afresh on a copy of the registry (restored after)."""
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "plugin_root")))
    monkeypatch.setattr(registry, "_methods", registry._methods.copy())
    monkeypatch.setattr(registry, "_discovered", False)
    yield
    import sys

    sys.modules.pop(PLUGIN, None)


def test_a_third_party_method_sweeps_next_to_cfg_with_its_options_and_variant_rows(
    plugin,
    checkpoints,
    tmp_path,
):
    """weighted_cfg at s = 4 with weight 0.5 is CFG at s = 2, sample for sample; cfg and cfg with an
    interval are two rows of the same sweep."""
    out = tmp_path / "sweep"
    methods = (
        "[cfg, {method: cfg, label: cfg_limited, interval: [0.5, 3.0]},"
        " {method: weighted_cfg, label: half, options: {weight: 0.5}}]"
    )
    scales = "{cfg: [2], cfg_limited: [2], half: [4]}"
    rows = evaluate.main(
        sweep_args(checkpoints, out, "--methods", methods, "--scales", scales, "--save_samples")
    )
    assert [(row["method"], row["scale"]) for row in rows] == [
        ("cfg", 2.0),
        ("cfg_limited", 2.0),
        ("half", 4.0),
    ]
    nfe = {row["method"]: row["nfe"] for row in rows}
    assert nfe["cfg"] == nfe["half"] == 6 and 3 < nfe["cfg_limited"] < 6
    cfg, half = np.load(out / "samples_cfg_s2.npz"), np.load(out / "samples_half_s4.npz")
    np.testing.assert_array_equal(cfg["arr_0"], half["arr_0"])


def test_options_the_plugin_does_not_have_are_refused_with_its_options(plugin):
    settings = SweepSettings(methods=[{"method": "weighted_cfg", "options": {"wieght": 2}}])
    with pytest.raises(ConfigError, match=r"no option\(s\) \['wieght'\] \(did you mean weight\?\).*weight"):
        settings.validate()


# --- everything is checked before the first sample ----------------------------------------------------


def test_a_sweep_lacking_a_model_stops_before_any_sample(checkpoints, tmp_path, capsys):
    """The digits config without --classifier: refused at the classifier row before sampling the cfg rows
    before it, or encoding a real image: no table, no curves, no feature cache."""
    out = tmp_path / "sweep"
    args = sweep_args(checkpoints, out, "--guide", checkpoints["guide"])
    del args[args.index("--classifier") : args.index("--classifier") + 2]
    with pytest.raises(SystemExit, match=r"classifier needs a noisy classifier: pass --classifier PATH"):
        evaluate.main(["--config", str(REPO / "configs" / "digits" / "sweep.yaml"), *args])
    assert not (out / "sweep.json").exists() and not (out / "curves.png").exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"methods": ["cascade"], "interval": [0.3, 5.0]}, "--interval is the guidance interval of the"),
        ({"methods": ["cascade"], "rescale": 0.7}, "cascade does not use rescale: its stages sample"),
        ({"methods": ["cfg", "cascade"], "threshold": 0.99}, "cascade does not use threshold"),
        ({"methods": ["clip"], "rescale": 0.7}, "clip does not use rescale: its base is the unconditional"),
        ({"methods": ["cfg"], "interval": [0.3, 5.0]}, "no row is one"),
        ({"methods": ["cfg"], "prior_scale": 2.0}, "prior_scale is a setting of the methods unclip"),
        ({"methods": ["cfg"], "prior_candidates": 2}, "prior_candidates is a setting of the methods unclip"),
        ({"methods": ["cfg"], "aug_level": 0.1}, "aug_level is a setting of the methods cascade"),
        (
            {"methods": ["cfg"], "upsampler_scale": 2.0},
            "upsampler_scale is a setting of the methods cascade, unclip",
        ),
        ({"methods": ["cfg_interval"]}, "cfg_interval needs the interval"),
        ({"methods": [{"method": "cascade", "interval": [0.3, 5.0]}]}, "cascade does not use interval"),
        ({"methods": [{"method": "cfg", "rate": 1}]}, r"unknown key\(s\) \['rate'\].*method, label, options"),
        ({"methods": [{"method": "cfg", "options": {"eta": 0}}]}, "cfg takes no options"),
        ({"methods": [{"method": "cascade", "options": {"aug_levl": 0}}]}, r"did you mean aug_level\?"),
        ({"methods": ["cfg", {"method": "cfg"}]}, r"two sweep rows are labelled \['cfg'\]"),
        ({"methods": ["cfg"], "scales": {"cfg": [1], "cgf": [2]}}, r"scales are given for \['cgf'\]"),
        ({"methods": ["cgf"]}, r"did you mean cfg\?"),
    ],
)
def test_settings_no_row_uses_are_refused_with_the_reason(settings, message):
    with pytest.raises(ConfigError, match=message):
        SweepSettings(**{"scales": [1.0], **settings}).validate()


def test_row_options_and_sweep_wide_method_settings_combine():
    settings = SweepSettings(
        methods=["cascade", {"method": "cascade", "label": "cascade_clean", "options": {"aug_level": 0.0}}],
        scales=[1.0],
        aug_level=0.2,
        upsampler_scale=2.0,
    )
    settings.validate()
    first, clean = (plan.options for plan in settings.plans())
    assert (first.aug_level, first.upsampler_scale) == (0.2, 2.0)
    assert (clean.aug_level, clean.upsampler_scale) == (0.0, 2.0)


# --- evaluate.py names and flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler.name", "dpmpp2m"], r"unknown sampler 'dpmpp2m' \(did you mean dpmpp_2m\?\)"),
        (["--features", "evalutor"], r"unknown features 'evalutor' \(did you mean evaluator\?\)"),
        (["--methods", "[autoguidence]"], r"did you mean autoguidance\?"),
    ],
)
def test_mistyped_names_get_the_closest(checkpoints, tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        evaluate.main(sweep_args(checkpoints, tmp_path / "sweep", *extra))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"save_samples": False, "wandb": True, "compile": False}),
        (
            ["--save_samples", "--wandb", "false", "--compile"],
            {"save_samples": True, "wandb": False, "compile": True},
        ),
        (
            ["--save_samples", "true", "--compile", "false"],
            {"save_samples": True, "wandb": True, "compile": False},
        ),
        (["--wandb", "--save_samples=false"], {"save_samples": False, "wandb": True, "compile": False}),
    ],
)
def test_boolean_options_work_as_bare_flags_and_with_values(argv, expected):
    args = evaluate.build_parser().parse_args(["--denoiser", "d.ckpt", "--out", "o", *argv])
    assert {key: args[key] for key in expected} == expected
    assert evaluate.sweep_settings(args).save_samples is expected["save_samples"]


# --- the reference feature cache ----------------------------------------------------------------------


class FlatFeatures:
    """Features = the flattened image, counting the images it encodes."""

    name = "flat"

    def __init__(self) -> None:
        self.encoded = 0

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.encoded += len(images)
        return images.flatten(1), images.flatten(1)[:, :2]


def cached(extractor: FlatFeatures, cache_file: Path) -> torch.Tensor:
    images = torch.arange(6 * 16, dtype=torch.float32).reshape(6, 1, 4, 4)
    return reference_features(lambda: [images], extractor, cache_file, 4, torch.device("cpu"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_feature_cache_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    cache_file = tmp_path / "real.pt"
    extractor = FlatFeatures()
    expected = cached(extractor, cache_file).clone()
    data = cache_file.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one byte of the features themselves, the file's layout intact
        at = data.index(expected.numpy().tobytes()) + 37
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    cache_file.write_bytes(data)
    with caplog.at_level("WARNING", logger="lightning_diffusion.sweep"):
        features = cached(extractor, cache_file)
    assert extractor.encoded == 12  # encoded again, not read as numbers
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert "recomputing" in caplog.text
    assert not list(tmp_path.glob(".*.tmp"))  # the rewrite went through a renamed temporary file
    cached(extractor, cache_file)
    assert extractor.encoded == 12  # and the rebuilt file is a cache hit


# --- the sweep callback and EMA -----------------------------------------------------------------------


def test_the_sweep_callback_samples_the_averaged_weights_whatever_the_callback_order(
    checkpoints,
    tmp_path,
    monkeypatch,
):
    """GuidanceSweep listed before or after EMAWeightAveraging: the same averaged weights, the same rows."""
    from lightning.pytorch import seed_everything
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from tiny import digits_datamodule, quiet_trainer, tiny_denoiser

    import callbacks.guidance_sweep as callback_module
    from callbacks import GuidanceSweep

    swept = []
    real_run_sweep = callback_module.run_sweep

    def recording_run_sweep(models, *args, **kwargs):
        swept.append([p.detach().clone() for p in models.denoiser.parameters()])
        return real_run_sweep(models, *args, **kwargs)

    monkeypatch.setattr(callback_module, "run_sweep", recording_run_sweep)
    rows = {}
    for sweep_first in (True, False):
        seed_everything(0)
        sweep = GuidanceSweep(
            evaluator=checkpoints["evaluator"], every_n_epochs=1, cache_dir=str(tmp_path / "cache"),
            settings={"scales": [2], "num_samples": 4, "batch_size": 4, "sampler": {"steps": 2}},
        )  # fmt: skip
        ema = EMAWeightAveraging(decay=0.5)
        root = tmp_path / f"sweep_first_{sweep_first}"
        trainer = quiet_trainer(
            max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
            callbacks=[sweep, ema] if sweep_first else [ema, sweep], default_root_dir=str(root),
        )  # fmt: skip
        trainer.fit(tiny_denoiser(), datamodule=digits_datamodule())
        for used, average in zip(swept[-1], ema._average_model.module.parameters(), strict=True):
            torch.testing.assert_close(used, average, rtol=0, atol=0)
        (row,) = read_rows(root / "sweeps" / "epoch0000")
        rows[sweep_first] = {key: value for key, value in row.items() if key != "seconds"}
    assert rows[True] == rows[False]
