"""The component registry, plug-in discovery through entry points, checkpoints and Configurable specs."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tiny import digits_datamodule, quiet_trainer, run_module, tiny_denoiser, tiny_unet

from lightning_diffusion import registry
from lightning_diffusion.components import Denoiser
from lightning_diffusion.config import ConfigError, Configurable, instantiate
from lightning_diffusion.diffusion import CosineSchedule
from lightning_diffusion.registry import ComponentInfo, get_component, list_components, load_component

DENOISER_PATH = "lightning_diffusion.components.denoiser.Denoiser"
PLUGIN = "ld_test_plugin"
PLUGIN_CLASS_PATH = f"{PLUGIN}.TinyDenoiser"


def write_plugin(root: Path) -> Path:
    """An installed-looking plug-in: a package and its dist-info with a components entry point."""
    package = root / PLUGIN
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''\
            """A third-party denoiser registered through the lightning_diffusion.components entry point."""

            from lightning_diffusion.components import Denoiser


            class TinyDenoiser(Denoiser):
                """The built-in denoiser under another name."""
            '''
        )
    )
    dist_info = root / f"{PLUGIN}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        f"[lightning_diffusion.components]\ntiny = {PLUGIN}:TinyDenoiser\n"
    )
    return root


def printed_rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def plugin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture(scope="module")
def components_output(plugin_root: Path) -> subprocess.CompletedProcess[str]:
    """One run of ``python -m lightning_diffusion components`` with the plug-in importable."""
    return run_module("components", extra_path=plugin_root)


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch):
    """Let discovery run again on a copy of the registry; restore both (and drop the plug-in) after."""
    monkeypatch.setattr(registry, "_registry", copy.deepcopy(registry._registry))
    monkeypatch.setattr(registry, "_discovered", False)
    yield registry
    sys.modules.pop(PLUGIN, None)


# --- listing and lookup ---------------------------------------------------------------------------


def test_list_components_includes_the_builtin_denoiser():
    assert ComponentInfo("denoiser", "Denoiser", DENOISER_PATH) in list_components()


def test_components_command_prints_kind_name_and_class_path(components_output):
    assert components_output.returncode == 0, components_output.stderr
    assert ["denoiser", "Denoiser", DENOISER_PATH] in printed_rows(components_output.stdout)


def test_get_component_finds_a_class_by_name_or_class_path():
    assert get_component("denoiser", "Denoiser") is Denoiser
    assert get_component("denoiser", DENOISER_PATH) is Denoiser


def test_unknown_component_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="Nope") as error:
        get_component("denoiser", "Nope")
    registered = ", ".join(sorted(registry._registry["denoiser"]))
    assert "Denoiser" in registered
    assert f"registered denoiser components are: {registered}." in str(error.value)


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(ConfigError, match="unknown component kind 'generator'") as error:
        get_component("generator", "Denoiser")
    assert all(kind in str(error.value) for kind in registry.KINDS)


def test_registering_a_second_class_under_a_taken_name_is_refused(fresh_registry):
    impostor = type("Denoiser", (Denoiser,), {})  # same name, different class
    with pytest.raises(ConfigError, match="two denoiser components are named 'Denoiser'"):
        registry.register("denoiser")(impostor)


# --- plug-ins -------------------------------------------------------------------------------------


def test_entry_point_plugin_is_registered_under_its_entry_point_name(
    fresh_registry, plugin_root, monkeypatch
):
    monkeypatch.syspath_prepend(str(plugin_root))
    assert ComponentInfo("denoiser", "tiny", PLUGIN_CLASS_PATH) in list_components()
    plugin_class = get_component("denoiser", "tiny")
    assert plugin_class.__module__ == PLUGIN and issubclass(plugin_class, Denoiser)
    assert plugin_class.component_kind == "denoiser"


def test_entry_point_plugin_is_built_from_its_class_path(fresh_registry, plugin_root, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_root))
    model = get_component("denoiser", "tiny")(tiny_unet(), image_shape=(1, 8, 8))
    assert model.spec["class_path"] == PLUGIN_CLASS_PATH
    assert type(instantiate(model.spec)) is type(model)


def test_components_command_prints_the_plugin(components_output):
    assert components_output.returncode == 0, components_output.stderr
    assert ["denoiser", "tiny", PLUGIN_CLASS_PATH] in printed_rows(components_output.stdout)


def test_entry_point_naming_a_class_without_a_kind_is_refused(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "ld_bad_plugin.py").write_text("class NotAComponent:\n    pass\n")
    dist_info = tmp_path / "ld_bad_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: ld_bad_plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[lightning_diffusion.components]\nbad = ld_bad_plugin:NotAComponent\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"'bad'.*without a component kind"):
            list_components()
    finally:
        sys.modules.pop("ld_bad_plugin", None)


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Denoiser, Path]:
    """A tiny denoiser after two real training steps, and the checkpoint its Trainer saved."""
    model = tiny_denoiser()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=digits_datamodule(batch_size=16))
    path = tmp_path_factory.mktemp("checkpoint") / "denoiser.ckpt"
    trainer.save_checkpoint(path)
    return model.eval(), path


def _denoise_probe(model: Denoiser) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(4, 1, 8, 8, generator=generator)
    t = torch.tensor([0.1, 0.4, 0.7, 0.9])
    with torch.no_grad():
        return model.denoise(z, t, {"label": torch.tensor([0, 3, 7, 10])})


@pytest.mark.parametrize("kind", [None, "denoiser"])
def test_load_component_rebuilds_an_identical_denoiser(trained, kind):
    model, path = trained
    loaded = load_component(path, kind=kind)
    assert type(loaded) is Denoiser and not loaded.training
    assert loaded.spec == model.spec
    torch.testing.assert_close(_denoise_probe(loaded), _denoise_probe(model), rtol=0, atol=0)


def test_load_component_refuses_the_wrong_kind_and_names_the_checkpoint_kind(trained):
    _, path = trained
    with pytest.raises(ConfigError, match="kind 'denoiser'") as error:
        load_component(path, kind="evaluator")
    assert "not of kind 'evaluator'" in str(error.value)


def test_load_component_refuses_an_unknown_kind(trained):
    with pytest.raises(ConfigError, match="unknown component kind 'denoisr'"):
        load_component(trained[1], kind="denoisr")


def _assert_one_paragraph(error: ConfigError, *phrases: str) -> None:
    message = str(error)
    assert "\n" not in message.strip() and "Traceback" not in message and "\x1b" not in message
    for phrase in phrases:
        assert phrase in message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_plain_dict_checkpoint_is_not_a_component_checkpoint(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)
    with pytest.raises(ConfigError) as error:
        load_component(path)
    _assert_one_paragraph(error.value, str(path), "is not a lightning-diffusion component checkpoint")


def test_missing_checkpoint_says_it_does_not_exist(tmp_path):
    path = tmp_path / "nowhere.ckpt"
    with pytest.raises(ConfigError) as error:
        load_component(path)
    _assert_one_paragraph(error.value, str(path), "does not exist")


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"not a checkpoint \x00\x01\x02" * 10])
def test_garbage_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_component(path)
    _assert_one_paragraph(error.value, str(path), "cannot read checkpoint", "not a PyTorch checkpoint")


class _Pickled:
    """An arbitrary Python object: checkpoints that pickle code are refused by weights-only loading."""


def test_checkpoint_with_pickled_objects_gives_a_one_paragraph_error(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"object": _Pickled()}, path)
    with pytest.raises(ConfigError) as error:
        load_component(path)
    _assert_one_paragraph(error.value, str(path), "cannot read checkpoint", "pickled Python objects")


# --- Configurable specs ---------------------------------------------------------------------------


class Leaf(Configurable):
    def __init__(self, value: float = 1.0, name: str = "leaf") -> None:
        self.value, self.name = value, name


class Branch(Configurable):
    def __init__(self, first: Leaf, others: list[Leaf], options: dict | None = None, **extra: int) -> None:
        self.first, self.others, self.options, self.extra = first, others, options, extra


class Twig(Leaf):
    def __init__(self, value: float = 2.0) -> None:
        super().__init__(value=value, name="twig")


def test_nested_spec_records_arguments_defaults_and_inner_specs():
    branch = Branch(Leaf(3.0), [Leaf(name="a"), Twig()], options={"k": [1, 2]}, depth=4)
    assert branch.spec == {
        "class_path": f"{Branch.__module__}.Branch",
        "init_args": {
            "first": {"class_path": f"{Leaf.__module__}.Leaf", "init_args": {"value": 3.0, "name": "leaf"}},
            "others": [
                {"class_path": f"{Leaf.__module__}.Leaf", "init_args": {"value": 1.0, "name": "a"}},
                {"class_path": f"{Twig.__module__}.Twig", "init_args": {"value": 2.0}},
            ],
            "options": {"k": [1, 2]},
            "depth": 4,
        },
    }


def test_nested_spec_round_trips_through_instantiate():
    branch = Branch(Leaf(3.0), [Leaf(name="a"), Twig(5.0)], options={"inner": Leaf(7.0)}, depth=4)
    rebuilt = instantiate(branch.spec)
    assert rebuilt.spec == branch.spec
    assert isinstance(rebuilt.first, Leaf) and rebuilt.first.value == 3.0
    assert [type(other) for other in rebuilt.others] == [Leaf, Twig]
    assert rebuilt.others[1].value == 5.0 and rebuilt.others[1].name == "twig"
    assert isinstance(rebuilt.options["inner"], Leaf) and rebuilt.options["inner"].value == 7.0
    assert rebuilt.extra == {"depth": 4}


def test_component_spec_round_trips_with_its_network_and_schedule():
    model = Denoiser(tiny_unet(), image_shape=(1, 8, 8), schedule=CosineSchedule(-10.0, 12.0), p_uncond=0.2)
    rebuilt = instantiate(model.spec)
    assert rebuilt.spec == model.spec
    assert rebuilt.net.spec == model.net.spec and rebuilt.net.cond_dim == 16
    assert (rebuilt.schedule.logsnr_min, rebuilt.schedule.logsnr_max) == (-10.0, 12.0)
    assert rebuilt.p_uncond == 0.2


def test_non_recordable_argument_type_raises_a_clear_type_error():
    with pytest.raises(TypeError, match="argument 'value' has type Tensor, which a checkpoint cannot record"):
        Leaf(torch.zeros(1))


def test_unimportable_class_path_is_a_config_error():
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_module\.Thing'"):
        instantiate({"class_path": "no_such_module.Thing", "init_args": {}})
