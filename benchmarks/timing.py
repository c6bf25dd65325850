"""Shared by the benchmarks: build a component from its training config, time interleaved repeats of
several steps, and print medians with ratios against reference steps measured in the same run."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import train  # noqa: E402


def build(config: Path, *overrides: str) -> torch.nn.Module:
    """The component a training config describes (plus command-line ``overrides``), in eval mode and
    fp32, without a Trainer run."""
    cli = train.main(args=["--config", str(config), "--trainer.logger", "false", *overrides], run=False)
    return cli.model.float().eval().requires_grad_(False)


def seconds(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


@torch.no_grad()
def measure(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each step over ``repeats`` rounds, after one untimed round; the steps alternate within
    a round, so drifts in the machine's speed hit them alike."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(seconds(step))
    return times


def print_table(
    times: dict[str, list[float]], references: dict[str, str], first_column: str = "step"
) -> None:
    """Median milliseconds per step and, for each ``references`` column (header: step name), the median
    over repeats of that repeat's ratio to the reference step."""
    width = max(len(first_column), *map(len, times))
    print(f"{first_column:<{width}} {'ms':>9} " + " ".join(f"{header:>9}" for header in references))
    for name, values in times.items():
        ratios = [
            statistics.median(v / r for v, r in zip(values, times[reference], strict=True))
            for reference in references.values()
        ]
        print(
            f"{name:<{width}} {1000 * statistics.median(values):>9.1f} "
            + " ".join(f"{x:>9.2f}" for x in ratios)
        )
