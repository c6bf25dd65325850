"""train.py (LightningCLI) and ``python -m lightning_diffusion`` on tiny runs in temporary folders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny import REPO, run_module

import train
from callbacks import sample_grid
from lightning_diffusion import registry
from lightning_diffusion.__main__ import main as lightning_diffusion_main
from lightning_diffusion.__main__ import training_datamodule
from lightning_diffusion.components import ContrastiveEncoder, Denoiser, DistilledDenoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.nets import EncoderUNet, TextTransformer, UNet
from lightning_diffusion.registry import CHECKPOINT_KEY, check_component_name

RECIPE_DIRS = ("cifar10", "imagenet64")  # their data cannot be downloaded here: tests/test_recipes.py
CONFIGS = sorted(path for path in REPO.glob("configs/**/*.yaml") if path.parent.name not in RECIPE_DIRS)
DIGITS = REPO / "configs" / "digits" / "denoiser.yaml"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# top-level keys of train.py's parser: a YAML with only these (and no model) is an overlay for a run config
TRAIN_KEYS = {"seed_everything", "trainer", "data", "checkpoint", "optimizer", "lr_scheduler", "ckpt_path"}
SMALL_NET = [
    "--model.init_args.net.init_args.channels=[8, 16]",
    "--model.init_args.net.init_args.num_res_blocks=1",
    "--model.init_args.net.init_args.attention_levels=[1]",
]


def quiet(root: Path, logger: bool = False) -> list[str]:
    """Arguments that keep a run inside ``root``, without W&B (unless ``logger``) or a progress bar."""
    args = ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    return args if logger else [*args, "--trainer.logger", "false"]


def fit_args(root: Path, *extra: str, overlays: tuple[Path, ...] = ()) -> list[str]:
    """``fit`` on the digits config (plus overlays) with a small net, one validation batch, in ``root``."""
    configs = [arg for path in (DIGITS, *overlays) for arg in ("--config", str(path))]
    return ["fit", *configs, *quiet(root), *SMALL_NET, "--trainer.limit_val_batches", "1", *extra]


def global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Runs write relative paths (runs/, wandb/) into the test's own folder, never the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))  # class paths such as callbacks.SampleGrid import from the repo
    monkeypatch.setattr(sys, "argv", ["train.py"])  # LightningCLI reads args=..., not pytest's own argv


# --- every YAML config parses and instantiates ----------------------------------------------------


def _config_id(path: Path) -> str:
    return str(path.relative_to(REPO / "configs"))


def check_sweep_config(config: Path) -> None:
    """An evaluate.py config: it parses with evaluate.py's parser and gives valid sweep settings."""
    import evaluate

    args = evaluate.build_parser().parse_args(["--config", str(config), "--denoiser", "d.ckpt", "--out", "o"])
    settings = evaluate.sweep_settings(args)
    assert all(plan.scales for plan in settings.plans())


def encoder_checkpoint_for(config: Path, model_args: dict, path: Path) -> str:
    """A small untrained contrastive encoder checkpoint for the data of ``config``, as wide as its model
    needs (the prior network's embed_dim and text_width), for configs naming a frozen ``encoder``."""
    datamodule = training_datamodule(str(config))
    net_args = model_args.get("net", {}).get("init_args", {})
    embed_dim, width = net_args.get("embed_dim", 16), net_args.get("text_width", 16)
    image_net = EncoderUNet(
        in_channels=datamodule.image_shape[0],
        out_dim=embed_dim,
        channels=(8,),
        num_res_blocks=1,
        attention_levels=(),
    )
    text = TextTransformer(datamodule.vocabulary(), context_length=16, width=width, layers=1, heads=2)
    encoder = ContrastiveEncoder(image_net, text, image_shape=datamodule.image_shape, embed_dim=embed_dim)
    checkpoint = {
        "state_dict": encoder.state_dict(),
        CHECKPOINT_KEY: {"kind": encoder.component_kind, "spec": encoder.spec},
    }
    torch.save(checkpoint, path)
    return str(path)


def teacher_checkpoint_for(config: Path, model: dict, path: Path, datamodule=None) -> str:
    """A small untrained CFG teacher checkpoint for the data of ``config`` (or ``datamodule``), for configs
    naming a distilled student's ``teacher`` (a progressive round's teacher is a stage-1 student of it)."""
    datamodule = datamodule or training_datamodule(str(config))
    net = UNet(in_channels=datamodule.image_shape[0], channels=(8, 16), num_res_blocks=1, cond_dim=16)
    teacher = Denoiser(net, image_shape=datamodule.image_shape, num_classes=datamodule.num_classes)
    if model["class_path"].endswith("ProgressiveDenoiser"):
        teacher = DistilledDenoiser(teacher)
    record = {"kind": teacher.component_kind, "spec": teacher.spec}
    torch.save({"state_dict": teacher.state_dict(), CHECKPOINT_KEY: record}, path)
    return str(path)


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_config_parses_and_instantiates(config, tmp_path):
    content = yaml.safe_load(config.read_text()) or {}
    if "model" in content:
        configs = ["--config", str(config)]
    elif set(content) <= TRAIN_KEYS:  # a trainer overlay: combine it with a run config
        configs = ["--config", str(DIGITS), "--config", str(config)]
    else:
        check_sweep_config(config)
        return
    uses_fashion_mnist = "FashionMNIST" in config.read_text()
    if uses_fashion_mnist and not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"needs Fashion-MNIST at {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)")
    overrides = []
    if content.get("trainer", {}).get("accelerator") == "gpu" and not torch.cuda.is_available():
        overrides = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]  # parsed, built on the CPU

    if "encoder" in content.get("model", {}).get("init_args", {}):  # a frozen encoder's checkpoint
        encoder = encoder_checkpoint_for(config, content["model"]["init_args"], tmp_path / "encoder.ckpt")
        overrides += ["--model.init_args.encoder", encoder]
    if "teacher" in content.get("model", {}).get("init_args", {}):  # a distilled student's teacher
        teacher = teacher_checkpoint_for(config, content["model"], tmp_path / "teacher.ckpt")
        overrides += ["--model.init_args.teacher", teacher]

    cli = train.main(args=[*configs, *quiet(tmp_path), *overrides], run=False)

    assert cli.model is not None and cli.datamodule is not None
    assert cli.trainer.default_root_dir == str(tmp_path)
    assert cli.model.component_kind in registry.KINDS
    if hasattr(cli.model, "image_shape"):  # every image component: the data must fit the model
        assert tuple(cli.datamodule.image_shape) == tuple(cli.model.image_shape)
    if getattr(cli.model, "num_classes", None) is not None:
        assert cli.model.num_classes == cli.datamodule.num_classes
    text_encoder = getattr(cli.model, "text_encoder", None)
    if text_encoder is not None:  # the vocabulary covers every training caption: no <unk> tokens
        assert set(cli.datamodule.vocabulary()) <= set(text_encoder.vocab)


def test_trainer_overlay_changes_the_trainer_of_the_run_config(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("trainer:\n  max_epochs: 7\n  log_every_n_steps: 3\n")
    cli = train.main(args=["--config", str(DIGITS), "--config", str(overlay), *quiet(tmp_path)], run=False)
    assert cli.trainer.max_epochs == 7 and cli.trainer.log_every_n_steps == 3
    assert isinstance(cli.model, Denoiser)


# --- fit and resume -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    """The run folder of a 3-step fit of the digits config with a small net."""
    folder = tmp_path_factory.mktemp("fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["train.py"])
        train.main(args=fit_args(folder / "run", "--trainer.max_steps", "3"))
    return folder / "run"


def test_fit_writes_last_checkpoint_of_the_denoiser(fitted_run):
    last = fitted_run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["lightning_diffusion"]["kind"] == "denoiser"
    assert checkpoint["lightning_diffusion"]["spec"]["init_args"]["net"]["init_args"]["channels"] == [8, 16]
    assert (fitted_run / "config.yaml").is_file()


def test_fit_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "run"
    last = root / "checkpoints" / "last.ckpt"
    train.main(args=fit_args(root, "--trainer.max_steps", "3"))
    assert global_step(last) == 3
    steps: list[int] = []
    original = Denoiser.training_step

    def counting_training_step(self, batch, batch_idx):
        steps.append(batch_idx)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Denoiser, "training_step", counting_training_step)

    cli = train.main(args=fit_args(root, "--trainer.max_steps", "6", "--ckpt_path", "last"))

    assert Path(cli.trainer.ckpt_path) == last
    assert len(steps) == 3  # continued from step 3 to 6 rather than starting again
    assert global_step(last) == 6


def test_a_fit_stopped_between_validations_leaves_its_final_step_in_last_checkpoint(tmp_path):
    root = tmp_path / "run"
    train.main(args=fit_args(root, "--trainer.val_check_interval", "0.5", "--trainer.max_steps", "13"))
    assert global_step(root / "checkpoints" / "last.ckpt") == 13


# --- argument handling ----------------------------------------------------------------------------


def test_print_config_prints_yaml_with_class_paths_and_exits_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(args=["fit", "--config", str(DIGITS), *quiet(tmp_path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith("Denoiser")
    assert printed["model"]["init_args"]["net"]["class_path"] == "lightning_diffusion.nets.UNet"
    assert printed["trainer"]["default_root_dir"] == str(tmp_path)


def test_unknown_model_key_fails_and_names_the_key(tmp_path, capsys):
    content = yaml.safe_load(DIGITS.read_text())
    content["model"]["init_args"]["learning_rate_typo"] = 0.1
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump(content))
    with pytest.raises(SystemExit) as exit_info:
        train.main(args=["fit", "--config", str(config), *quiet(tmp_path)])
    assert exit_info.value.code not in (0, None)
    assert "learning_rate_typo" in capsys.readouterr().err


# --- logging and callbacks ------------------------------------------------------------------------


@pytest.fixture
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()


def test_fit_with_the_default_wandb_logger_writes_an_offline_run(tmp_path, offline_wandb):
    save_dir = tmp_path / "logs"
    args = [
        "fit",
        "--config",
        str(DIGITS),
        *quiet(tmp_path / "run", logger=True),
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        *SMALL_NET,
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    cli = train.main(args=args)
    assert type(cli.trainer.logger).__name__ == "AutoWandbLogger"
    assert list((save_dir / "wandb").glob("offline-run-*")), "no offline W&B run under save_dir/wandb"


@pytest.mark.parametrize(
    ("every_n_epochs", "max_epochs", "expected"), [(1, 1, "epoch0000.png"), (2, 2, "epoch0001.png")]
)
def test_sample_grid_writes_a_png_every_n_epochs_and_not_in_the_sanity_check(
    tmp_path, monkeypatch, every_n_epochs, max_epochs, expected
):
    saved: list[Path] = []
    original = sample_grid.save_grid

    def recording_save_grid(image, path):
        saved.append(Path(path))
        return original(image, path)

    monkeypatch.setattr(sample_grid, "save_grid", recording_save_grid)
    overlay = tmp_path / "grid.yaml"
    overlay.write_text(
        "trainer:\n  callbacks:\n    - class_path: callbacks.SampleGrid\n      init_args:\n"
        f"        every_n_epochs: {every_n_epochs}\n        sampler: {{name: ddim, steps: 2}}\n"
        "        scales: [0.0, 1.0]\n"
    )
    root = tmp_path / "run"
    train.main(
        args=[
            *fit_args(root, overlays=(overlay,)),
            "--trainer.max_epochs",
            str(max_epochs),
            "--trainer.limit_train_batches",
            "2",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.num_sanity_val_steps",
            "1",
        ]
    )
    assert saved == [root / "samples" / expected]  # one grid: none during the sanity check
    assert sorted(p.name for p in (root / "samples").iterdir()) == [expected]


# --- python -m lightning_diffusion sample -------------------------------------------------------------


def test_sample_command_writes_grid_and_npz_batches(fitted_run, tmp_path):
    out = tmp_path / "samples"
    checkpoint = fitted_run / "checkpoints" / "last.ckpt"
    result = run_module(
        "sample",
        str(checkpoint),
        "--out",
        str(out),
        "--scales",
        "0",
        "1",
        "--per_class",
        "1",
        "--sampler.steps",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "samples.png").is_file()
    for tag in ("s0", "s1"):
        with np.load(out / f"samples_{tag}.npz") as batch:
            images, labels = batch["arr_0"], batch["arr_1"]
        assert images.dtype == np.uint8 and images.shape == (10, 8, 8, 1)
        assert labels.tolist() == list(range(10))


def test_sample_command_on_a_missing_checkpoint_exits_with_one_error_line(tmp_path):
    """In-process (a subprocess costs seconds): ``sys.exit(message)`` prints the message to stderr and
    exits with status 1, and no other exception means no traceback."""
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        lightning_diffusion_main(["sample", str(missing), "--out", str(tmp_path / "out")])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    assert str(missing) in message and "does not exist" in message
    assert not (tmp_path / "out").exists()


def test_a_mistyped_component_name_in_a_config_lists_the_registered_ones_and_the_closest(tmp_path):
    typo = tmp_path / "typo.yaml"
    config = (REPO / "configs" / "digits" / "denoiser.yaml").read_text()
    typo.write_text(config.replace("Denoiser", "Denoisr"))
    expected = r"no component is named 'Denoisr' \(did you mean Denoiser\?\)"
    with pytest.raises(ConfigError, match=expected) as error:
        train.main(args=["fit", "--config", str(typo)], run=False)
    assert "NoisyClassifier" in str(error.value) and "Upsampler" in str(error.value)


def test_a_mistyped_model_flag_is_refused_and_class_paths_are_taken():
    with pytest.raises(ConfigError, match=r"no component is named 'Evalutor' \(did you mean Evaluator\?\)"):
        train.main(args=["fit", "--model=Evalutor"], run=False)
    full_path = "lightning_diffusion.components.Denoiser"
    args = ["fit", "--model.class_path", full_path, "--model", "NoisyClassifier"]
    assert train.configured_names(args).models == [full_path, "NoisyClassifier"]
    for name in train.configured_names(args).models:
        check_component_name(name)  # importable or registered: accepted
