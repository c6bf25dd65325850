"""The noisy classifier (classifier guidance), the evaluator (metrics) and the evaluator's ConvClassifier."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import REPO, digits_datamodule, quiet_trainer

import train
from lightning_diffusion.components import Evaluator, NoisyClassifier
from lightning_diffusion.components.base import QuartileMeans, warmup_lambda
from lightning_diffusion.config import ConfigError
from lightning_diffusion.nets import ConvClassifier, EncoderUNet
from lightning_diffusion.registry import load_component

QUARTILE_KEYS = [f"val/{name}_q{q}" for name in ("loss", "accuracy") for q in range(4)]


def tiny_noisy_classifier(num_classes: int = 10, **kwargs) -> NoisyClassifier:
    torch.manual_seed(0)
    net = EncoderUNet(in_channels=1, out_dim=num_classes, channels=(8, 16), num_res_blocks=1)
    return NoisyClassifier(net, num_classes=num_classes, **kwargs)


def tiny_evaluator(num_classes: int = 10, **kwargs) -> Evaluator:
    torch.manual_seed(0)
    net = ConvClassifier(num_classes=num_classes, channels=(16, 32), feature_dim=64)
    return Evaluator(net, num_classes=num_classes, **kwargs)


def images(n: int = 8, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


# --- noisy classifier ---------------------------------------------------------------------------


def test_noisy_classifier_logits_have_a_finite_gradient_with_respect_to_z():
    """What classifier guidance needs: d/dz log p(label | z_t, t), finite and not identically zero."""
    model = tiny_noisy_classifier().eval()
    z = torch.randn(4, 1, 8, 8, requires_grad=True)
    logits = model.logits(z, torch.tensor([0.1, 0.4, 0.7, 0.95]))
    assert logits.shape == (4, 10) and logits.dtype == torch.float32
    log_p = torch.log_softmax(logits, dim=1)[torch.arange(4), torch.tensor([0, 3, 7, 9])]
    (gradient,) = torch.autograd.grad(log_p.sum(), z)
    assert gradient.shape == z.shape and torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_noisy_classifier_validation_logs_loss_and_accuracy_per_quartile_with_fixed_noise():
    model = tiny_noisy_classifier()
    datamodule = digits_datamodule(batch_size=16)
    runs = [
        quiet_trainer(limit_val_batches=2).validate(model, datamodule, verbose=False)[0] for _ in range(2)
    ]
    assert set(runs[0]) == {"val/loss", "val/accuracy", *QUARTILE_KEYS}
    assert 0.0 <= runs[0]["val/accuracy"] <= 1.0
    assert runs[0] == runs[1]


def test_noisy_classifier_refuses_a_network_with_the_wrong_number_of_outputs():
    net = EncoderUNet(out_dim=5, channels=(8, 16), num_res_blocks=1)
    with pytest.raises(ConfigError, match="out_dim=5 but the model needs 10"):
        NoisyClassifier(net, num_classes=10)


@pytest.mark.parametrize("t_max", [0.0, 1.5])
def test_noisy_classifier_refuses_t_max_outside_the_unit_interval(t_max):
    with pytest.raises(ConfigError, match="t_max"):
        tiny_noisy_classifier(t_max=t_max)


@pytest.mark.parametrize("build", [tiny_noisy_classifier, tiny_evaluator])
def test_classifiers_refuse_data_with_other_classes_at_fit_start(build):
    with pytest.raises(ConfigError, match="the data has 10 classes but the model is configured for 5"):
        quiet_trainer(max_steps=1).fit(build(num_classes=5), datamodule=digits_datamodule())


# --- evaluator ------------------------------------------------------------------------------------


def test_evaluator_features_and_logits_shapes_and_head_of_features_is_logits():
    model = tiny_evaluator().eval()
    x = images()
    features = model.features(x)
    assert features.shape == (8, model.feature_dim) and model.feature_dim == 64
    assert model.logits(x).shape == (8, 10)
    torch.testing.assert_close(model.net.head(features), model.logits(x))


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved down by ``dy`` and right by ``dx`` pixels, filled with -1."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (1, 1, 1, 1), value=-1.0)
    return padded[:, 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]


def test_evaluator_augments_by_small_translations_in_training_mode_only():
    model = tiny_evaluator()
    x = images(16)
    torch.manual_seed(0)
    augmented = model.train().augmented(x)
    assert not torch.equal(augmented, x)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for original, moved in zip(x, augmented, strict=True):
        assert any(torch.equal(moved, _shifted(original, dy, dx)) for dy, dx in shifts)
    assert model.eval().augmented(x) is x
    assert tiny_evaluator(augment=False).train().augmented(x) is x


def test_evaluator_refuses_a_network_for_other_images_or_classes():
    with pytest.raises(ConfigError, match="num_classes=10 but the model needs 5"):
        Evaluator(ConvClassifier(num_classes=10), num_classes=5)
    with pytest.raises(ConfigError, match="in_channels=1 but the model needs 3"):
        Evaluator(ConvClassifier(in_channels=1), image_shape=(3, 8, 8))


@pytest.mark.parametrize(
    "kwargs", [{"channels": ()}, {"feature_dim": 0}, {"num_classes": 1}, {"dropout": 1.0}, {"pool_grid": 0}]
)
def test_conv_classifier_refuses_impossible_arguments(kwargs):
    with pytest.raises(ConfigError):
        ConvClassifier(**kwargs)


def test_grid_pooling_tells_where_an_object_is_and_global_pooling_does_not():
    torch.manual_seed(0)
    image = torch.full((1, 1, 16, 16), -1.0)
    left, right = image.clone(), image.clone()
    left[..., 7:9, 4:6], right[..., 7:9, 10:12] = 1.0, 1.0  # one blob, shifted; far from the borders
    for grid, differs in ((1, False), (2, True)):
        net = ConvClassifier(channels=(8,), feature_dim=8, pool_grid=grid).eval()
        with torch.no_grad():
            features = net.features(torch.cat([left, right]))
        assert net.features(left).shape == (1, 8)
        assert (not torch.allclose(features[0], features[1], atol=1e-6)) == differs


def test_short_evaluator_fit_on_digits_is_well_above_chance_on_val_and_test():
    model = tiny_evaluator(lr=3e-3, warmup_steps=10)
    datamodule = digits_datamodule(batch_size=64)
    trainer = quiet_trainer(max_epochs=6, check_val_every_n_epoch=6)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.callback_metrics["val/accuracy"] > 0.5
    (result,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert result["test/accuracy"] > 0.5 and "test/loss" in result


@pytest.fixture(scope="module")
def evaluator_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Evaluator, Path]:
    """A tiny evaluator after two training steps, and the checkpoint its Trainer saved."""
    model = tiny_evaluator()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=digits_datamodule())
    path = tmp_path_factory.mktemp("checkpoint") / "evaluator.ckpt"
    trainer.save_checkpoint(path)
    return model.eval(), path


def test_evaluator_checkpoint_rebuilds_the_same_classifier(evaluator_checkpoint):
    model, path = evaluator_checkpoint
    loaded = load_component(path, kind="evaluator")
    assert type(loaded) is Evaluator and loaded.spec == model.spec
    torch.testing.assert_close(loaded.logits(images()), model.logits(images()), rtol=0, atol=0)


def test_train_py_test_with_ckpt_path_reports_the_test_accuracy_of_that_checkpoint(
    evaluator_checkpoint, tmp_path
):
    """``--ckpt_path`` rebuilds the checkpoint's own (tiny) network over the config's, then tests it."""
    config = REPO / "configs" / "digits" / "evaluator.yaml"
    args = ["test", "--config", str(config), "--ckpt_path", str(evaluator_checkpoint[1])]
    quiet = ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    cli = train.main(args=[*args, *quiet, "--trainer.enable_progress_bar", "false"])
    assert cli.model.spec == evaluator_checkpoint[0].spec
    assert 0.0 <= cli.trainer.callback_metrics["test/accuracy"] <= 1.0


def test_evaluator_checkpoint_is_refused_where_a_denoiser_is_expected(evaluator_checkpoint):
    with pytest.raises(ConfigError, match=r"of kind 'evaluator'.*not of kind 'denoiser'"):
        load_component(evaluator_checkpoint[1], kind="denoiser")


# --- shared helpers -------------------------------------------------------------------------------


def test_quartile_means_bin_values_by_quarters_of_t_max():
    means = QuartileMeans("val/x", t_max=0.5)
    means.update(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.tensor([0.0, 0.2, 0.3, 0.45, 0.5]))
    values = {name: value.item() for name, value in means.compute_and_reset().items()}
    assert values == {"val/x": 3.0, "val/x_q0": 1.0, "val/x_q1": 2.0, "val/x_q2": 3.0, "val/x_q3": 4.5}


def test_warmup_lambda_warms_up_linearly_then_holds_or_decays_along_a_cosine():
    constant = warmup_lambda(10)
    assert [constant(step) for step in (0, 4, 9, 10, 10_000)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    decaying = warmup_lambda(10, total_steps=110)
    assert [decaying(step) for step in (0, 9, 10)] == [0.1, 1.0, 1.0]
    assert decaying(60) == pytest.approx(0.5) and decaying(110) == pytest.approx(0.0, abs=1e-12)
    assert warmup_lambda(0, total_steps=math.inf)(0) == 1.0
