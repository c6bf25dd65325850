"""Two CPU DDP processes (gloo, one thread each) with batch B give the numbers one process gives with
batch 2B: the contrastive encoder's loss and gradients (global InfoNCE negatives), the diffusion prior's
training, and the GuidanceSweep callback's rows. tests/ddp_jobs.py runs the fits; each launch costs
about 7 s of start-up, so one launch per process count serves every test here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_contrastive import tiny_contrastive_encoder
from test_sweep import save_component, tiny_evaluator
from tiny import REPO

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.sweep import read_rows

GRADIENT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32 sums in another order


def run_jobs(out: Path, devices: int, encoder: str, evaluator: str) -> None:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    script = REPO / "tests" / "ddp_jobs.py"
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(devices), encoder, evaluator],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The jobs' output folders for 1 and for 2 processes."""
    folder = tmp_path_factory.mktemp("ddp")
    encoder = save_component(tiny_contrastive_encoder(), folder / "encoder.ckpt")
    evaluator = save_component(tiny_evaluator(), folder / "evaluator.ckpt")
    outs = {devices: folder / f"devices{devices}" for devices in (1, 2)}
    for devices, out in outs.items():
        run_jobs(out, devices, encoder, evaluator)
    return outs


def records(out: Path, job: str, devices: int) -> list[dict]:
    return [torch.load(out / f"{job}_rank{rank}.pt", weights_only=False) for rank in range(devices)]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def test_contrastive_loss_and_gradients_are_those_of_the_global_batch(runs):
    """Each rank's loss is its own queries' mean against the gathered keys; their mean is the 1-process
    loss, and DDP's averaged gradient is the 1-process gradient (the gather's backward sums ranks)."""
    (one,) = records(runs[1], "contrastive", 1)
    two = records(runs[2], "contrastive", 2)
    global_loss = one["losses"][0]
    per_rank = torch.stack([record["losses"][0] for record in two])
    assert not torch.allclose(per_rank[0], per_rank[1])  # each rank's queries differ
    torch.testing.assert_close(per_rank.mean(), global_loss, rtol=1e-6, atol=1e-6)
    for record in two:
        torch.testing.assert_close(record["logged_loss"], global_loss, rtol=1e-6, atol=1e-6)
    gradients = one["gradients"][0]
    for part in ("image_net.", "text_encoder.", "text_projection.", "log_scale"):
        assert sum(g.abs().sum() for name, g in gradients.items() if name.startswith(part)) > 0, part
    for record in two:
        torch.testing.assert_close(record["gradients"][0], gradients, **GRADIENT_TOLERANCE)
    print(
        f"contrastive: |loss_2 - loss_1| = {(per_rank.mean() - global_loss).abs().item():.3g}, "
        f"max |grad_2 - grad_1| = {max_difference(two[0]['gradients'][0], gradients):.3g} "
        f"(max |grad_1| = {max(g.abs().max().item() for g in gradients.values()):.3g})"
    )


def test_contrastive_validation_retrieval_is_over_the_global_batch(runs):
    """Clean retrieval (no noise draw) scores each query against all 2B candidates on both counts."""
    (one,) = records(runs[1], "contrastive", 1)
    for record in records(runs[2], "contrastive", 2):
        for key in ("val/i2t_clean", "val/t2i_clean"):
            assert record["validation"][key] == pytest.approx(one["validation"][key], abs=1e-6), key


def test_prior_trains_the_same_under_ddp(runs):
    """Same global batch and per-sample noise: same losses, gradients and parameters after 3 steps, the
    frozen encoder untouched, and the same deterministic validation metric."""
    (one,) = records(runs[1], "prior", 1)
    two = records(runs[2], "prior", 2)
    for step in range(len(one["losses"])):
        torch.testing.assert_close(
            torch.stack([record["losses"][step] for record in two]).mean(), one["losses"][step]
        )
        for record in two:
            torch.testing.assert_close(
                record["gradients"][step], one["gradients"][step], **GRADIENT_TOLERANCE
            )
    assert not any(name.startswith("encoder.") for name in one["gradients"][0])
    for record in two:
        torch.testing.assert_close(record["parameters"], one["parameters"], **GRADIENT_TOLERANCE)
        cosine = record["validation"]["val/cosine_text"]
        torch.testing.assert_close(cosine, one["validation"]["val/cosine_text"], rtol=1e-6, atol=1e-6)
    gradient_gap = max(
        max_difference(a, b) for a, b in zip(two[0]["gradients"], one["gradients"], strict=True)
    )
    parameter_gap = max_difference(two[0]["parameters"], one["parameters"])
    print(f"prior: max |grad_2 - grad_1| = {gradient_gap:.3g}, max |param_2 - param_1| = {parameter_gap:.3g}")


def test_guidance_sweep_callback_writes_the_same_rows_under_ddp(runs):
    """The callback inside Trainer.fit: 11 samples sharded over 2 ranks, every registered metric (and the
    non-finite count) reduced over both."""
    one, two = (read_rows(runs[devices] / "sweeps" / "epoch0000") for devices in (1, 2))
    assert [(row["method"], row["scale"]) for row in one] == [("cfg", 0.0), ("cfg", 2.0)]
    assert len(two) == len(one)
    for row_one, row_two in zip(one, two, strict=True):
        assert (row_one["method"], row_one["scale"]) == (row_two["method"], row_two["scale"])
        for key in (*METRIC_KEYS, "nfe"):
            if row_one[key] is None:  # not measured (CLIP score of label rows): not on two ranks either
                assert row_two[key] is None, key
            else:
                assert row_two[key] == pytest.approx(row_one[key], abs=1e-6, rel=1e-6), key
