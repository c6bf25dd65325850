"""Kernel time of CPU sampling, sweeps and training with and without the project's malloc tuning
(``lightning_diffusion/allocator.py``): each workload runs in fresh subprocesses, once per variant.

Run from the repository root (the default workload takes a few minutes on 2 cores)::

    .venv/bin/python benchmarks/cpu_allocator.py
    .venv/bin/python benchmarks/cpu_allocator.py --workloads sweep --samples 1000 --repeats 3
    .venv/bin/python benchmarks/cpu_allocator.py \
        --variant 'mmap threshold only:LIGHTNING_DIFFUSION_TUNE_MALLOC=0,MALLOC_MMAP_THRESHOLD_=1073741824'

Workloads: ``sample`` (``python -m lightning_diffusion sample``, CFG s = 3, on the Fashion-MNIST
denoiser), ``sweep`` (``evaluate.py``, method cfg at s = 3, with the Fashion-MNIST evaluator),
``demo-train`` and ``demo-sample`` (the two ``make demo`` commands, training for a fixed number of
steps instead of a fixed time). Variants: ``glibc defaults`` (the tuning switched off through
``LIGHTNING_DIFFUSION_TUNE_MALLOC=0``, the reference), ``tuned`` (the project's default) and any
``--variant 'NAME:VAR=VALUE,...'`` (extra environment variables). Within a repeat the variants of a
workload run back to back; the table shows medians over repeats of wall, user and system seconds
(``wait4``'s resource usage of the subprocess), sys/user, peak resident memory, and wall time as a
ratio to the reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path("/work/assets")
REFERENCE = "glibc defaults"
TARGET_SYS_PER_USER = 0.15

Command = Callable[[argparse.Namespace, Path], list[str]]


def sample_command(args: argparse.Namespace, scratch: Path) -> list[str]:
    return [
        "-m", "lightning_diffusion", "sample", str(args.fashion_denoiser), "--out", str(scratch),
        "--scales", "3", "--per_class", str(max(1, args.samples // 10)), "--steps", str(args.steps),
    ]  # fmt: skip


def sweep_command(args: argparse.Namespace, scratch: Path) -> list[str]:
    return [
        "evaluate.py", "--config", "configs/fashion_mnist/sweep.yaml",
        "--denoiser", str(args.fashion_denoiser), "--evaluator", str(args.fashion_evaluator),
        "--methods", "[cfg]", "--scales", "[3.0]", "--num_samples", str(args.samples),
        "--num_real", str(args.samples), "--steps", str(args.steps),
        "--out", str(scratch / "sweep"), "--cache_dir", str(scratch / "cache"),
    ]  # fmt: skip


def demo_train_command(args: argparse.Namespace, scratch: Path) -> list[str]:
    return [
        "train.py", "fit", "--config", "configs/digits/denoiser.yaml",
        "--trainer.default_root_dir", str(scratch), "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "-1", "--trainer.max_steps", str(args.train_steps),
    ]  # fmt: skip


def demo_sample_command(args: argparse.Namespace, scratch: Path) -> list[str]:
    return [
        "-m", "lightning_diffusion", "sample", str(args.digits_denoiser), "--out", str(scratch),
        "--scales", "0", "1", "2", "3", "5", "--per_class", "10", "--check_labels",
    ]  # fmt: skip


WORKLOADS: dict[str, Command] = {
    "sample": sample_command,
    "sweep": sweep_command,
    "demo-train": demo_train_command,
    "demo-sample": demo_sample_command,
}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``'NAME:VAR=VALUE,VAR=VALUE'`` -> (NAME, {VAR: VALUE})."""
    name, _, assignments = text.partition(":")
    pairs = [item.split("=", 1) for item in assignments.split(",") if item]
    if not name or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--variant {text!r}: write it as 'NAME:VAR=VALUE,VAR=VALUE'")
    return name, dict(pairs)


def run_once(arguments: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float, float]:
    """Wall, user and system seconds and peak resident GiB of one ``python ARGUMENTS`` subprocess and the
    processes it waited for (``wait4``'s resource usage); its output goes to ``log``."""
    start = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, *arguments], cwd=REPO, env=env, stdout=output, stderr=output
        )
        _, status, usage = os.wait4(process.pid, 0)
    wall, process.returncode = time.perf_counter() - start, os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(
            f"exit code {process.returncode}: python {' '.join(arguments)}\n{log.read_text()[-3000:]}"
        )
    return wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 2**20  # Linux: ru_maxrss in KiB


Results = dict[tuple[str, str], list[tuple[float, float, float, float]]]


def measure(args: argparse.Namespace, variants: dict[str, dict[str, str]]) -> Results:
    """(workload, variant) -> (wall, user, sys seconds, peak GiB) of each repeat, each in a fresh folder."""
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="cpu_allocator_") as folder:
        base = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
        base.setdefault("MPLCONFIGDIR", str(Path(folder) / "matplotlib"))
        runs = [(r, w, v) for r in range(args.repeats) for w in args.workloads for v in variants]
        for repeat, workload, variant in runs:
            scratch = Path(folder) / f"{workload}-{variant}-{repeat}".replace(" ", "_")
            scratch.mkdir()
            arguments = WORKLOADS[workload](args, scratch)
            run = run_once(arguments, {**base, **variants[variant]}, scratch / "output.log")
            results.setdefault((workload, variant), []).append(run)
            print(f"  {workload} / {variant}: wall {run[0]:.1f} s, user {run[1]:.1f} s, sys {run[2]:.1f} s")
    return results


def print_table(results: Results, workloads: list[str], variants: list[str]) -> None:
    """Medians over repeats of wall, user and sys seconds, sys/user, peak memory, and wall against the
    reference."""
    width = max(map(len, variants))
    print(f"{'workload':<12} {'variant':<{width}} {'wall s':>7} {'user s':>7} {'sys s':>7} {'sys/user':>8} "
          f"{'peak GiB':>8} {'x wall':>7}")  # fmt: skip
    for workload in workloads:
        reference = results[(workload, REFERENCE)]
        for variant in variants:
            runs = results[(workload, variant)]
            wall, user, system, peak = (statistics.median(column) for column in zip(*runs, strict=True))
            ratio = statistics.median(run[0] / ref[0] for run, ref in zip(runs, reference, strict=True))
            print(
                f"{workload:<12} {variant:<{width}} {wall:>7.1f} {user:>7.1f} {system:>7.1f} "
                f"{system / user:>8.3f} {peak:>8.2f} {ratio:>7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--samples", type=int, default=100, help="images per sample/sweep run")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps of the sample/sweep runs")
    parser.add_argument("--train_steps", type=int, default=100, help="optimizer steps of demo-train")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE,... (repeatable)")
    parser.add_argument(
        "--fashion_denoiser", type=Path, default=ASSETS / "fashion_mnist/denoiser/checkpoints/last.ckpt"
    )
    parser.add_argument(
        "--fashion_evaluator", type=Path, default=ASSETS / "fashion_mnist/evaluator/checkpoints/last.ckpt"
    )
    parser.add_argument(
        "--digits_denoiser", type=Path, default=ASSETS / "digits/denoiser/checkpoints/last.ckpt"
    )
    args = parser.parse_args()
    variants = {REFERENCE: {"LIGHTNING_DIFFUSION_TUNE_MALLOC": "0"}, "tuned": {}}
    variants.update(parse_variant(text) for text in args.variant)
    results = measure(args, variants)
    print(
        f"{os.cpu_count()} cores; samples {args.samples}, steps {args.steps}, train steps "
        f"{args.train_steps}; medians of {args.repeats} repeat(s); target sys/user <= {TARGET_SYS_PER_USER}"
    )
    print_table(results, args.workloads, list(variants))


if __name__ == "__main__":
    main()
