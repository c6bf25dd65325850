"""Density, coverage and the Vendi score: closed forms, a hand-computed example, and their place in
SampleMetrics' rows; the metric registry that SampleMetrics, the row keys, the frontier, the curves and W&B
read."""

from __future__ import annotations

import pytest
import torch
from torchmetrics import SumMetric

from lightning_diffusion.metrics import (
    METRIC_KEYS,
    METRICS,
    NON_FINITE,
    Column,
    RowMetric,
    SampleMetrics,
    column,
    columns,
    register_metric,
    trade_offs,
)
from lightning_diffusion.metrics.density_coverage import density_and_coverage, real_ball_radii
from lightning_diffusion.metrics.registry import Gathered
from lightning_diffusion.metrics.sample_metrics import metric_keys
from lightning_diffusion.metrics.vendi import vendi_score


def density_coverage(real: torch.Tensor, generated: torch.Tensor, k: int, block: int) -> tuple[float, float]:
    return density_and_coverage(real, generated, real_ball_radii(real, k, block), k, block)


def test_a_set_against_itself_has_coverage_one_and_density_six_fifths():
    """Each real ball B(X_i, NND_5(X_i)) is closed, so with distinct distances it holds its own centre and
    exactly its 5 nearest neighbours: sum_j sum_i 1[...] = 6 N, density = 6 N / (5 N) = 1.2 exactly, and
    every ball holds a sample (its centre), coverage = 1."""
    real = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    density, coverage = density_coverage(real, real.clone(), k=5, block=16)
    assert coverage == 1.0
    assert density == pytest.approx(6 / 5, abs=1e-12)


def test_density_and_coverage_of_a_hand_computed_2d_example():
    """Real (0,0), (1,0), (4,0) with k = 1: radii 1, 1, 3. Sample (0.5,0) lies in the first two balls,
    (0,1) on the first ball's boundary only, (10,0) in none: density = (2 + 1 + 0) / (1 * 3) = 1, and
    the third ball holds no sample: coverage = 2/3. Blocks of 2 rows split the real set."""
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0]])
    generated = torch.tensor([[0.5, 0.0], [0.0, 1.0], [10.0, 0.0]])
    torch.testing.assert_close(real_ball_radii(real, 1, 2), torch.tensor([1.0, 1.0, 3.0]))
    density, coverage = density_coverage(real, generated, k=1, block=2)
    assert density == pytest.approx(1.0)
    assert coverage == pytest.approx(2 / 3)


def test_samples_far_from_the_data_have_zero_density_and_coverage():
    real = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    assert density_coverage(real, real + 100.0, k=5, block=8) == (0.0, 0.0)


def test_density_and_coverage_are_none_with_too_few_real_images_for_five_neighbours():
    """A smoke sweep with 5 real images still gets its other metrics (precision/recall need only 4)."""
    values = metrics_of(torch.randn(5, 3), torch.randn(8, 3))
    assert values["density"] is None and values["coverage"] is None
    assert values["precision"] is not None and values["vendi"] is not None


def test_vendi_score_of_n_identical_samples_is_one():
    features = torch.tensor([[3.0, -1.0, 2.0]]).repeat(7, 1)
    assert vendi_score(features) == pytest.approx(1.0, abs=1e-9)


def test_vendi_score_of_n_orthogonal_samples_is_n():
    """K = I (cosine kernel: lengths do not matter), K/n has n eigenvalues 1/n: exp(log n) = n."""
    lengths = torch.tensor([1.0, 2.0, 0.5, 7.0, 3.0])[:, None]
    features = torch.eye(5, 9) * lengths
    assert vendi_score(features) == pytest.approx(5.0, abs=1e-9)


@pytest.mark.parametrize(("n", "dim"), [(12, 30), (40, 6)])
def test_vendi_score_from_the_d_by_d_matrix_equals_the_n_by_n_kernel(n, dim):
    """The D x D duality against the definition: eigenvalues of the n x n cosine kernel K / n."""
    features = torch.randn(n, dim, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    unit = features / features.norm(dim=1, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(unit @ unit.T / n).clamp(min=1e-300)
    direct = torch.exp(-(eigenvalues * eigenvalues.log()).sum()).item()
    assert vendi_score(features) == pytest.approx(direct, rel=1e-10)
    assert 1 < direct < min(n, dim)


def metrics_of(real: torch.Tensor, generated: torch.Tensor) -> dict[str, float | None]:
    metrics = SampleMetrics(real.shape[1])
    metrics.update_real(real)
    metrics.update_generated({"features": generated, "logits": torch.randn(len(generated), 10)})
    return metrics.compute()


def test_sample_metrics_rows_carry_every_metric_key_with_density_coverage_and_vendi():
    real = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    values = metrics_of(real, real.clone())
    assert tuple(values) == METRIC_KEYS
    assert values["coverage"] == 1.0 and values["density"] == pytest.approx(1.2)
    assert values["vendi"] == pytest.approx(vendi_score(real))
    assert values["class_accuracy"] is None


def test_density_coverage_and_vendi_do_not_depend_on_the_order_ranks_gather_samples_in():
    generator = torch.Generator().manual_seed(3)
    real, generated = torch.randn(60, 5, generator=generator), torch.randn(45, 5, generator=generator)
    values = metrics_of(real, generated)
    shuffled = metrics_of(real[torch.randperm(60, generator=generator)], generated.flip(0))
    for key in ("density", "coverage", "vendi"):
        assert shuffled[key] == pytest.approx(values[key], rel=1e-9), key


def test_real_ball_radii_are_kept_across_rows_and_refreshed_when_real_features_are_added():
    generator = torch.Generator().manual_seed(4)
    real, more, generated = (torch.randn(size, 4, generator=generator) for size in (20, 20, 30))
    metrics = SampleMetrics(4)
    metrics.update_real(real)
    metrics.update_generated({"features": generated, "logits": torch.randn(30, 10)})
    metrics.compute()
    density_coverage = metrics.metrics["density_coverage"]
    radii = density_coverage.real_radii
    metrics.reset_generated()
    metrics.update_generated({"features": generated, "logits": torch.randn(30, 10)})
    assert metrics.compute()["coverage"] == metrics_of(real, generated)["coverage"]
    assert density_coverage.real_radii is radii
    metrics.update_real(more)
    assert metrics.compute()["density"] == pytest.approx(
        metrics_of(torch.cat([real, more]), generated)["density"]
    )


class LogitSum(RowMetric):
    """A toy metric for the registry tests: the sum of every logit, a sum state over ranks."""

    name = "logit_sum"
    columns = (Column("logit_sum", higher_is_better=True, label="sum of logits"),)
    consumes = ("logits",)
    reduction = "sum"

    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim)
        self.total = SumMetric()

    def update(self, inputs: dict[str, torch.Tensor]) -> None:
        self.total.update(inputs["logits"].double().sum())

    def compute(self, gathered: Gathered) -> dict[str, float | None]:
        return {"logit_sum": float(self.total.compute())}


def test_a_registered_metric_is_a_column_of_every_row(monkeypatch):
    monkeypatch.setitem(METRICS, LogitSum.name, LogitSum)
    assert metric_keys()[-2:] == ("logit_sum", NON_FINITE)
    logits = torch.randn(12, 10, generator=torch.Generator().manual_seed(5))
    metrics = SampleMetrics(3)
    metrics.update_real(torch.randn(8, 3))
    metrics.update_generated({"features": torch.randn(12, 3), "logits": logits})
    assert metrics.compute()["logit_sum"] == pytest.approx(logits.double().sum().item())
    metrics.reset_generated()
    metrics.update_generated({"features": torch.randn(4, 3), "logits": torch.ones(4, 10)})
    assert metrics.compute()["logit_sum"] == 40.0


def test_a_metric_taking_a_column_that_is_already_registered_is_refused():
    twin = type("Twin", (LogitSum,), {"name": "twin", "columns": (column("fid"),)})
    with pytest.raises(ValueError, match=r"repeats columns \['fid'\]"):
        register_metric(twin)
    assert "twin" not in METRICS


def test_inputs_no_metric_consumes_are_refused_and_absent_ones_leave_their_metric_null():
    metrics = SampleMetrics(3)
    metrics.update_real(torch.randn(8, 3))
    with pytest.raises(ValueError, match="no registered metric consumes \\['class_corect'\\]"):
        metrics.update_generated({"features": torch.randn(6, 3), "logits": torch.randn(6, 4),
                                  "class_corect": torch.ones(6)})  # fmt: skip
    metrics.update_generated({"features": torch.randn(6, 3), "logits": torch.randn(6, 4)})
    values = metrics.compute()
    assert values["class_accuracy"] is None and values["clip_score"] is None and values["fid"] is not None


def test_the_frontier_curves_and_wandb_read_their_columns_from_the_registry():
    from lightning_diffusion.sweep.curves import PANELS
    from lightning_diffusion.sweep.frontier import FRONTIER_KEYS, FRONTS
    from lightning_diffusion.sweep.outputs import ROW_KEYS
    from lightning_diffusion.sweep.wandb_logging import PLOTTED

    assert ("method", "scale", *metric_keys(), "nfe", "seconds", "ema") == ROW_KEYS
    assert metric_keys() == PLOTTED
    assert FRONTIER_KEYS[6:-1] == tuple(entry.name for entry in columns() if entry.frontier)
    assert trade_offs() == PANELS and set(FRONTS) == {panel.front for panel in PANELS} - {None}
    assert not FRONTS["fid_accuracy"][1].higher_is_better and FRONTS["precision_recall"][0].name == "recall"
