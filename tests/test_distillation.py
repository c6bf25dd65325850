"""Guidance distillation, stage 1 (Meng et al. 2023): the scale condition, the student carrying its CFG
teacher, the closed-form Gaussian check, the sweep method ``distilled`` and the refusals."""

from __future__ import annotations

import pytest
import torch
from gaussian import SHAPE, GaussianData, GaussianMeanNet
from test_sweep import save_component, tiny_evaluator
from tiny import digits_datamodule, quiet_trainer, tiny_denoiser

import evaluate
from lightning_diffusion.components import Denoiser, DistilledDenoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import noised, sample_generators, score_from_denoised
from lightning_diffusion.guidance import ClassifierFree
from lightning_diffusion.registry import load_component
from lightning_diffusion.sampling import generate

SCALES = (1.0, 2.0, 3.0, 4.0, 5.0)
SHIFT = torch.tensor([0.6, -0.4, 0.3, 0.2], dtype=torch.float64)
# RMS of D_student - D~_s over held-out (z, t) (data std 0.4-0.9 per pixel; the untrained student is off by
# 0.5 at s = 5): within the range, and at its ends, which the uniform draws of s reach least
D_TOLERANCE, D_TOLERANCE_AT_ENDS = 0.01, 0.06
SCORE_TOLERANCE = 0.02  # relative L2 error of the student's guided score at t in [0.2, 0.9], s in (1, 5)


def gaussian_classes() -> tuple[list[GaussianData], GaussianData]:
    """Two classes N(mu -+ shift, Sigma) and the teacher's unconditional branch N(mu, Sigma)."""
    base = GaussianData.example()
    classes = [GaussianData(base.mean + sign * SHIFT, base.covariance, base.schedule) for sign in (1, -1)]
    return classes, base


def gaussian_teacher() -> Denoiser:
    """A CFG teacher that is exact for the Gaussian classes and ∅: D(z, t, c) = E[y | z_t] of each."""
    classes, null = gaussian_classes()
    torch.manual_seed(0)
    net = GaussianMeanNet(null.covariance.tolist())
    teacher = Denoiser(net, image_shape=SHAPE, num_classes=2, prediction="x0", p_uncond=0.1)
    means = torch.stack([classes[0].mean, classes[1].mean, null.mean])
    net.fit_means(teacher.label_embedding.weight.detach(), means)
    return teacher


def exact_guided(z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """D~_s = D(∅) + s (D(c) - D(∅)) from the closed forms (float64)."""
    classes, null = gaussian_classes()
    conditional = torch.where(
        labels.reshape(-1, 1, 1, 1) == 0, classes[0].denoise(z.double(), t), classes[1].denoise(z.double(), t)
    )
    unconditional = null.denoise(z.double(), t)
    return unconditional + scale * (conditional - unconditional)


def held_out(n: int = 512, low: float = 0.05, high: float = 0.95) -> tuple[torch.Tensor, ...]:
    """Held-out labels, times and noised samples z_t of the class data (a seed no training draw uses)."""
    generator = torch.Generator().manual_seed(1234)
    classes, null = gaussian_classes()
    labels = torch.randint(2, (n,), generator=generator)
    y = torch.where(
        labels.reshape(-1, 1, 1, 1) == 0, classes[0].sample(n, generator), classes[1].sample(n, generator)
    )
    t = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
    z = noised(y, torch.randn(y.shape, generator=generator, dtype=torch.float64), t, null.schedule)
    return labels, t.float(), z.float()


def student_errors(student: DistilledDenoiser) -> dict[float, float]:
    """RMS of the student's D against the exact guided D per scale on held-out noise."""
    labels, t, z = held_out()
    errors = {}
    with torch.no_grad():
        for scale in SCALES:
            estimate = student.denoise(z, t, {"label": labels, "guidance_scale": scale}).double()
            errors[scale] = float((estimate - exact_guided(z, t, labels, scale)).square().mean().sqrt())
    return errors


def train_student(student: DistilledDenoiser, steps: int = 600, batch: int = 256) -> None:
    """Adam, its rate decaying linearly to 0, on the distillation loss (the component's own) over Gaussian
    class batches."""
    classes, _ = gaussian_classes()
    generator = torch.Generator().manual_seed(0)
    parameters = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    for _ in range(steps):
        labels = torch.randint(2, (batch,), generator=generator)
        samples = [data.sample(batch, generator) for data in classes]
        images = torch.where(labels.reshape(-1, 1, 1, 1) == 0, samples[0], samples[1]).float()
        loss = student.distillation_losses({"image": images, "label": labels})[0].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def test_the_teacher_of_the_closed_form_test_is_exact():
    labels, t, z = held_out(64)
    teacher = gaussian_teacher()
    with torch.no_grad():
        guided = ClassifierFree(3.0)(teacher, z, t, {"label": labels}).double()
    assert torch.allclose(guided, exact_guided(z, t, labels, 3.0), atol=1e-4)


def test_a_student_learns_the_exact_guided_denoiser_and_score_of_gaussian_classes():
    """The guided D of a Gaussian teacher is linear in s; the student, one pass with s as its condition,
    learns it over [1, 5] to D_TOLERANCE (D_TOLERANCE_AT_ENDS at the ends) and reproduces the exact guided
    score s grad ln p_t(z|c) - (s - 1) grad ln p_t(z|∅)."""
    student = DistilledDenoiser(gaussian_teacher(), scale_range=(1.0, 5.0), scale_features=16)
    before = student_errors(student)
    assert before[1.0] < 1e-4 and before[5.0] > 0.3  # it starts as the conditional teacher
    train_student(student)
    after = student_errors(student)
    print("RMS error of D per scale on held-out noise:", after)
    assert max(after[scale] for scale in SCALES[1:-1]) < D_TOLERANCE, after
    assert max(after.values()) < D_TOLERANCE_AT_ENDS, after
    classes, null = gaussian_classes()
    labels, t, z = held_out(256, 0.2, 0.9)
    alpha, sigma = null.schedule.alpha_sigma(t.double())
    conditional = torch.where(
        labels.reshape(-1, 1, 1, 1) == 0, classes[0].denoise(z.double(), t), classes[1].denoise(z.double(), t)
    )
    for scale in (2.0, 3.0, 4.0):
        exact = scale * score_from_denoised(conditional, z.double(), alpha, sigma) - (
            scale - 1
        ) * score_from_denoised(null.denoise(z.double(), t), z.double(), alpha, sigma)
        with torch.no_grad():
            estimate = student.denoise(z, t, {"label": labels, "guidance_scale": scale}).double()
        score = score_from_denoised(estimate, z.double(), alpha, sigma)
        print(
            f"relative error of the guided score at s = {scale}:",
            float((score - exact).norm() / exact.norm()),
        )
        assert float((score - exact).norm() / exact.norm()) < SCORE_TOLERANCE


def test_the_initial_student_is_the_conditional_teacher_at_every_scale():
    teacher = tiny_denoiser()
    student = DistilledDenoiser(teacher)
    z, t, labels = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 3, 7, 10])
    with torch.no_grad():
        expected = teacher.denoise(z, t, {"label": labels})
        for scale in (1.0, 2.5, 5.0):
            assert torch.equal(student.denoise(z, t, {"label": labels, "guidance_scale": scale}), expected)
    assert all(not p.requires_grad for p in student.teacher.parameters())
    assert any(p.requires_grad for p in student.conditioner["guidance_scale"].parameters())


def test_the_student_carries_its_teacher_and_loads_after_the_teachers_file_is_gone(tmp_path):
    teacher_path = tmp_path / "teacher.ckpt"
    save_component(tiny_denoiser(), teacher_path)
    student = DistilledDenoiser(str(teacher_path), scale_range=[1.0, 4.0])
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(student, datamodule=digits_datamodule())
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    teacher_path.unlink()
    loaded = load_component(tmp_path / "student.ckpt", kind="denoiser")
    assert isinstance(loaded, DistilledDenoiser) and loaded.scale_range == (1.0, 4.0)
    assert loaded.spec["init_args"]["teacher"]["trained_from"] == str(teacher_path)
    z, t, labels = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])
    cond = {"label": labels, "guidance_scale": 2.0}
    with torch.no_grad():
        assert torch.equal(loaded.denoise(z, t, cond), student.eval().denoise(z, t, cond))
        assert torch.equal(loaded.teacher.denoise(z, t, cond), student.teacher.denoise(z, t, cond))


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (lambda: tiny_denoiser(num_classes=None), r"is not a class-conditional Denoiser .*num_classes None"),
        (lambda: tiny_denoiser(p_uncond=0.0), r"without condition dropout \(p_uncond 0\).*p_uncond > 0"),
        (lambda: DistilledDenoiser(tiny_denoiser()), r"is a distilled student already.*ProgressiveDenoiser"),
        (lambda: "missing/teacher.ckpt", r"teacher checkpoint 'missing/teacher.ckpt', which does not exist"),
    ],
)
def test_a_teacher_without_a_guided_estimate_is_refused_with_the_fix(teacher, message):
    with pytest.raises(ConfigError, match=message):
        DistilledDenoiser(teacher())


@pytest.mark.parametrize("scale_range", [(5.0, 1.0), (-1.0, 2.0), (1.0, float("inf")), (1.0,)])
def test_a_scale_range_that_is_no_interval_is_refused(scale_range):
    with pytest.raises(ConfigError, match=r"scale_range is the interval \[low, high\]"):
        DistilledDenoiser(tiny_denoiser(), scale_range=scale_range)


def test_sampling_outside_the_trained_range_or_without_a_scale_is_refused():
    student = DistilledDenoiser(tiny_denoiser(), scale_range=(1.0, 3.0))
    generators = sample_generators(0, range(2))
    labels = torch.tensor([1, 2])
    with pytest.raises(ConfigError, match=r"trained for guidance scales in \[1, 3\].*got s = 4"):
        generate(student, ClassifierFree(1.0), generators, {"label": labels, "guidance_scale": 4.0}, "ddim")
    with pytest.raises(ConfigError, match=r"takes the guidance scale as its condition"):
        generate(student, ClassifierFree(1.0), generators, {"label": labels}, "ddim")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("distilled")
    teacher = tiny_denoiser()
    return {
        "denoiser": save_component(teacher, folder / "teacher.ckpt", with_data=True),
        "student": save_component(DistilledDenoiser(teacher), folder / "student.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), folder / "evaluator.ckpt"),
    }


def sweep_args(checkpoints: dict[str, str], out, *extra: str) -> list[str]:
    return [
        "--denoiser", checkpoints["denoiser"], "--evaluator", checkpoints["evaluator"], "--out", str(out),
        "--cache_dir", str(out.parent / "cache"), "--sampler.steps", "3", "--num_samples", "6",
        "--batch_size", "3", "--num_real", "6", "--wandb", "false", *extra,
    ]  # fmt: skip


def test_the_student_sits_in_the_teachers_sweep_on_the_same_noise_at_half_the_passes(checkpoints, tmp_path):
    args = sweep_args(checkpoints, tmp_path / "out", "--methods", "[cfg, distilled]", "--scales", "[1, 3]")
    rows = {
        (row["method"], row["scale"]): row
        for row in evaluate.main([*args, "--student", checkpoints["student"]])
    }
    assert set(rows) == {("cfg", 1.0), ("cfg", 3.0), ("distilled", 1.0), ("distilled", 3.0)}
    assert rows["distilled", 3.0]["nfe"] == 3 and rows["cfg", 3.0]["nfe"] == 6
    # the untrained student is the conditional teacher: at s = 1 both rows draw the same samples
    assert rows["distilled", 1.0]["fid"] == rows["cfg", 1.0]["fid"]
    assert rows["distilled", 1.0]["class_accuracy"] == rows["cfg", 1.0]["class_accuracy"]


def test_the_sweep_refuses_a_scale_outside_the_students_range_before_sampling(checkpoints, tmp_path):
    args = sweep_args(checkpoints, tmp_path / "out", "--methods", "[distilled]", "--scales", "[2, 7]")
    with pytest.raises(
        SystemExit, match=r"row 'distilled', --student .*trained for guidance scales in \[1, 5\]"
    ):
        evaluate.main([*args, "--student", checkpoints["student"]])
    assert not (tmp_path / "out" / "sweep.json").exists()
    with pytest.raises(
        SystemExit, match=r"method distilled needs a guidance-distilled student: pass --student"
    ):
        evaluate.main(args)
    with pytest.raises(SystemExit, match=r"--student .* is a Denoiser, not a guidance-distilled student"):
        evaluate.main([*args, "--student", checkpoints["denoiser"]])
