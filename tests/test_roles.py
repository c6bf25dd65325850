"""Model roles declared once, and evaluate.py's command line around them: a new role is one entry (its
flag, loading, refusal and run-config record follow), a shipped sweep config narrowed on the command line
runs, a value typed on the command line that no row uses is refused, and renamed flags answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_sweep import save_component, tiny_classifier, tiny_evaluator
from tiny import REPO, tiny_denoiser

import evaluate
import lightning_diffusion.sweep.roles as role_registry
from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance import ClassifierGuidance, GuidanceMethod, get_method, method_names
from lightning_diffusion.guidance import registry as guidance_registry
from lightning_diffusion.sweep import Role, SweepSettings, get_sweep_method, registered_roles


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("roles")
    return {
        "denoiser": save_component(tiny_denoiser(), folder / "denoiser.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
        "classifier": save_component(tiny_classifier(), folder / "classifier.ckpt"),
    }


def quick(checkpoints: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "--denoiser", checkpoints["denoiser"], "--evaluator", checkpoints["evaluator"], "--out", str(out),
        "--cache_dir", str(out.parent / "cache"), "--sampler.steps", "2", "--num_samples", "4",
        "--batch_size", "4", "--num_real", "4", "--wandb", "false", *extra,
    ]  # fmt: skip


def test_every_method_needs_registered_roles_and_every_role_has_a_flag():
    names = {role.name for role in registered_roles()}
    assert {"evaluator", "classifier", "guide", "contrastive", "clip_scorer", "cascade", "unclip"} <= names
    for name in [*method_names(), "cascade", "unclip"]:
        assert set(get_sweep_method(name).needs) <= names
    flags = {action.dest for action in evaluate.build_parser()._actions}
    assert names <= flags


def test_a_new_role_is_one_entry_from_flag_to_guidance(checkpoints, tmp_path, monkeypatch):
    """A "critic" role (a second noisy classifier) and a method guided by it: the flag, the loading, the
    refusal without it and the model reaching the method come from the one register_role call."""
    monkeypatch.setattr(role_registry, "_roles", role_registry._roles.copy())
    monkeypatch.setattr(guidance_registry, "_methods", guidance_registry._methods.copy())
    role_registry.register_role(
        Role("critic", "noisy_classifier", "a critic", "a second noisy classifier", ("image", "classes"))
    )
    received = []

    def build(inputs):
        received.append(inputs.models["critic"])
        return ClassifierGuidance(inputs.critic, inputs.scale)

    guidance_registry.register_method(GuidanceMethod("critic_guided", build, needs=("critic",)))
    args = quick(checkpoints, tmp_path / "a", "--methods", "[critic_guided]", "--scales", "[1]")
    assert "--critic" in evaluate.build_parser().format_help()
    with pytest.raises(
        SystemExit, match=r"method critic_guided needs a critic: pass --critic PATH \(a noisy_"
    ):
        evaluate.main(args)
    rows = evaluate.main([*args, "--critic", checkpoints["classifier"]])
    assert [row["method"] for row in rows] == ["critic_guided"]
    assert received and type(received[0]).__name__ == "NoisyClassifier"


def test_a_method_needing_an_unregistered_role_is_refused_listing_the_roles(monkeypatch):
    monkeypatch.setattr(guidance_registry, "_methods", guidance_registry._methods.copy())
    guidance_registry.register_method(GuidanceMethod("oracle", get_method("cfg").build, needs=("oracel",)))
    with pytest.raises(
        ConfigError, match=r"oracle names unknown model role 'oracel'.*the roles are: evaluator, "
    ):
        get_sweep_method("oracle")


def test_build_guidance_takes_models_by_role_and_the_old_keywords():
    from lightning_diffusion.guidance import build_guidance

    classifier = tiny_classifier()
    by_role = build_guidance("classifier", 2.0, models={"classifier": classifier, "guide": None})
    by_keyword = build_guidance("classifier", 2.0, classifier=classifier)
    assert by_role.classifier is classifier and by_keyword.classifier is classifier
    assert build_guidance("autoguidance", 2.0, guide_model=tiny_denoiser()).guide is not None
    with pytest.raises(ConfigError, match=r"needs a model in the role 'guide'"):
        build_guidance("autoguidance", 2.0, models={"classifier": classifier})


# --- a shipped config narrowed on the command line --------------------------------------------------


@pytest.mark.parametrize("data", ["digits", "fashion_mnist"])
def test_a_shipped_sweep_config_narrowed_to_cfg_runs_with_its_cfg_scales(checkpoints, tmp_path, data):
    config = REPO / "configs" / data / "sweep.yaml"
    rows = evaluate.main(["--config", str(config), *quick(checkpoints, tmp_path / "s", "--methods", "[cfg]")])
    assert [row["scale"] for row in rows] == [0.0, 1.0, 1.5, 2.0, 3.0, 5.0]
    assert {row["method"] for row in rows} == {"cfg"}


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (["--interval", "[0.1, 1]"], "--interval is the guidance interval of the"),
        (["--interval", "[0.3, 5.0]"], "--interval is the guidance interval of the"),  # the config's value
        (["--scales", "{cfg: [1], cgf: [2]}"], r"scales are given for \['cgf'\]"),
        (["--aug_level", "0.1"], "aug_level is a setting of the methods cascade"),
    ],
)
def test_a_typed_value_no_row_uses_is_still_refused(checkpoints, tmp_path, typed, message):
    config = REPO / "configs" / "digits" / "sweep.yaml"
    args = ["--config", str(config), *quick(checkpoints, tmp_path / "s", "--methods", "[cfg]", *typed)]
    with pytest.raises(SystemExit, match=message):
        evaluate.main(args)
    assert not (tmp_path / "s" / "sweep.json").exists()


def test_typed_settings_tell_the_command_line_from_the_config_file(tmp_path):
    config = REPO / "configs" / "digits" / "sweep.yaml"
    argv = ["--conf", str(config), "--denoiser", "d", "--out", "o", "--methods", "[cfg]", "--num_sam", "8"]
    parser = evaluate.build_parser()
    args = parser.parse_args(argv)
    assert evaluate.typed_settings(parser, argv, args) == {"methods", "num_samples"}
    settings = evaluate.sweep_settings(args, evaluate.typed_settings(parser, argv, args))
    assert settings.interval is None and settings.scales == {"cfg": [0.0, 1.0, 1.5, 2.0, 3.0, 5.0]}
    with pytest.raises(ConfigError, match="no row is one"):
        evaluate.sweep_settings(args)  # every value counts as typed


def test_without_unused_keeps_what_a_row_uses_and_what_was_typed():
    settings = SweepSettings(methods=["cfg_interval"], interval=[0.3, 5.0], scales={"cfg_interval": [1.0]})
    assert settings.without_unused(()) == settings
    narrowed = SweepSettings(
        methods=["cfg"], interval=[0.3, 5.0], aug_level=0.2, scales={"cfg": [1.0], "x": [2]}
    )
    dropped = narrowed.without_unused(())
    assert (dropped.interval, dropped.aug_level, dropped.scales) == (None, None, {"cfg": [1.0]})
    assert narrowed.without_unused({"interval"}).interval == [0.3, 5.0]


# --- renamed flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "answer"),
    [
        (["--steps", "10"], "use --sampler.steps 10"),
        (["--steps=10"], "use --sampler.steps 10"),
        (["--eta", "0.5"], "use --sampler.eta 0.5"),
        (["--sampler", "ddim"], "use --sampler.name ddim"),
        (["--sampler=heun"], "use --sampler.name heun"),
    ],
)
def test_renamed_flags_answer_with_the_new_spelling(checkpoints, tmp_path, capsys, old, answer):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(quick(checkpoints, tmp_path / "s", *old))
    message = str(exit_info.value.code)
    assert answer in message and "\n" not in message and "Traceback" not in capsys.readouterr().err


def test_the_sweep_callback_takes_every_role(checkpoints):
    from callbacks import GuidanceSweep

    callback = GuidanceSweep(
        evaluator=checkpoints["evaluator"], models={"clip_scorer": "s.ckpt", "cascade": ["a", "b"]}
    )
    assert callback.paths == {
        "classifier": None,
        "guide": None,
        "clip_scorer": "s.ckpt",
        "cascade": ["a", "b"],
    }
    with pytest.raises(ConfigError, match=r"unknown model role 'contrastiv' \(did you mean contrastive\?\)"):
        GuidanceSweep(evaluator=checkpoints["evaluator"], models={"contrastiv": "c.ckpt"})
    assert torch.is_tensor(next(callback.feature_inputs.evaluator.parameters()))
