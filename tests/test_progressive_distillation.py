"""Guidance distillation, stage 2: progressive distillation rounds (Salimans & Ho 2022, Algorithm 2) of a
scale-conditioned student, their step counts and the sampler check."""

from __future__ import annotations

import pytest
import torch
from test_distillation import sweep_args
from test_sweep import save_component, tiny_evaluator
from tiny import tiny_denoiser

import evaluate
from lightning_diffusion.components import DistilledDenoiser, ProgressiveDenoiser
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec
from lightning_diffusion.registry import load_component


@pytest.fixture(scope="module")
def stage_one() -> DistilledDenoiser:
    return DistilledDenoiser(tiny_denoiser(), scale_range=(1.0, 4.0))


def test_rounds_halve_the_steps_and_refuse_a_count_that_is_not_half(stage_one):
    first = ProgressiveDenoiser(stage_one, steps=8)
    second = ProgressiveDenoiser(first)
    assert (first.steps, second.steps, second.scale_range) == (8, 4, (1.0, 4.0))
    with pytest.raises(ConfigError, match=r"halves its teacher's 8 steps to 4, got steps 3"):
        ProgressiveDenoiser(first, steps=3)
    with pytest.raises(ConfigError, match=r"needs the student's DDIM step count: set steps"):
        ProgressiveDenoiser(stage_one)
    with pytest.raises(ConfigError, match=r"distilled for 1 DDIM steps, which cannot be halved"):
        ProgressiveDenoiser(ProgressiveDenoiser(stage_one, steps=1))
    with pytest.raises(ConfigError, match=r"must be a distilled student .*got a Denoiser"):
        ProgressiveDenoiser(tiny_denoiser(), steps=4)


def test_one_student_step_to_the_target_lands_where_two_teacher_ddim_steps_do(stage_one):
    """Algorithm 2's x~: a DDIM step t -> t'' with D = x~ reaches the teacher's two-step z_t''."""
    student = ProgressiveDenoiser(stage_one, steps=4)
    grid = student.teacher_grid
    z, labels, scales = torch.randn(3, 1, 8, 8), torch.tensor([1, 4, 9]), torch.tensor([1.0, 2.0, 4.0])
    cond = {"label": labels, "guidance_scale": scales}

    def level(time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # the grid's last point is clean
        alpha, sigma = student.schedule.alpha_sigma(time.reshape(1))
        return (alpha, sigma) if float(time) > 0 else (torch.ones(1), torch.zeros(1))

    for i in range(4):
        t, t_mid, t_next = grid[2 * i : 2 * i + 3]
        with torch.no_grad():
            target = student.target(z, t.expand(3), {"label": labels}, scales)
            two_steps = z
            for start, end in ((t, t_mid), (t_mid, t_next)):  # DDIM, eta 0 (Song et al. 2021, eq. 12)
                (alpha, sigma), (alpha_end, sigma_end) = level(start), level(end)
                denoised = stage_one.denoise(two_steps, start.expand(3), cond)
                two_steps = alpha_end * denoised + sigma_end * (two_steps - alpha * denoised) / sigma
        (alpha, sigma), (alpha_next, sigma_next) = level(t), level(t_next)
        one_step = alpha_next * target + sigma_next * (z - alpha * target) / sigma
        assert torch.allclose(one_step, two_steps, atol=1e-4)


def test_a_round_records_its_steps_and_loads_after_every_earlier_file_is_gone(stage_one, tmp_path):
    path = save_component(ProgressiveDenoiser(ProgressiveDenoiser(stage_one, steps=8)), tmp_path / "r2.ckpt")
    loaded = load_component(path, kind="denoiser")
    assert isinstance(loaded, ProgressiveDenoiser) and loaded.steps == 4
    assert loaded.spec["init_args"]["steps"] == 4 and loaded.teacher.steps == 8
    assert isinstance(loaded.teacher.teacher, DistilledDenoiser)


def test_a_round_is_sampled_only_with_its_own_ddim_steps(stage_one, tmp_path):
    student = ProgressiveDenoiser(stage_one, steps=4)
    student.check_sampler(SamplerSpec("ddim", 4))
    with pytest.raises(ConfigError, match=r"distilled for 4 DDIM steps, and the sampler asks for 8"):
        student.check_sampler(SamplerSpec("ddim", 8))
    with pytest.raises(ConfigError, match=r"deterministic DDIM at 4 steps on the uniform_t grid"):
        student.check_sampler(SamplerSpec("unipc", 4))
    checkpoints = {
        "denoiser": save_component(stage_one.teacher, tmp_path / "teacher.ckpt", with_data=True),
        "evaluator": save_component(tiny_evaluator(), tmp_path / "evaluator.ckpt"),
    }
    student_path = save_component(student, tmp_path / "student.ckpt", with_data=True)
    args = sweep_args(checkpoints, tmp_path / "out", "--methods", "[distilled]", "--scales", "[2]")
    with pytest.raises(SystemExit, match=r"distilled for 4 DDIM steps, and the sampler asks for 3"):
        evaluate.main([*args, "--student", student_path])
    rows = evaluate.main([*args, "--student", student_path, "--sampler.steps", "4"])
    assert rows[0]["nfe"] == 4
