"""Samplers per network evaluation (NFE) on trained class-conditional denoisers: ODE error against a
1000-step solution, diffusers' multistep schedulers on the same network, and sample quality per NFE.

Run from the repository root (``--root`` holds ``<data>/denoiser/checkpoints/last.ckpt`` and
``fashion_mnist/evaluator/checkpoints/last.ckpt``, as train.py writes them under runs/)::

    .venv/bin/python benchmarks/samplers.py                        # quick: digits (a), (b), (d); minutes
    .venv/bin/python benchmarks/samplers.py --data digits --samples 16 --sigma-max max 80 20 --sigma-min 0.05
    .venv/bin/python benchmarks/samplers.py --data fashion_mnist --sigma-min 0.05 --fid-samples 500
    .venv/bin/python benchmarks/samplers.py --help

Everything runs in fp32 on the CPU under ``torch.no_grad()``; sample i has noise from generator i
(``sample_generators(seed, i)``) and label i mod 10, so every sampler starts from the same noise.

(a) ODE error: the RMS distance (pixel units, images in [-1, 1]) of each deterministic sampler's images
    to a reference solution of the probability-flow ODE from the same noise and the same highest
    level sigma_max (sigma / alpha at the first step; ``--sigma-max``, and ``--sigma-min``, the last
    level before the jump to 0 on the logsnr and edm grids): ``dpmpp_2m`` with ``--reference-steps`` steps
    on the ``logsnr`` grid. The reference is checked against ``heun`` with half as many steps (same
    NFE) on the first ``--check-samples`` samples. Steps are chosen so that NFE <= the column's value
    (heun: NFE = 2 steps - 1, e.g. 9 for the 10 column; the cell then shows its NFE). Unguided means
    the conditional model (s = 1); guided is classifier-free guidance at ``--scale``.
(b) diffusers' ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2) and ``UniPCMultistepScheduler``
    (bh2, predict_x0), both with "trailing" spacing and a final step to sigma = 0, driven by the same
    guided D as a "sample" prediction on our schedule (``diffusers_schedule``), from the same noise,
    against the reference from the schedule's highest level (their start). Each library runs its own
    default grid: diffusers' is uniform in t over its 1000 training steps (our ``uniform_t`` grid).
(c) Fashion-MNIST quality per NFE: FID, class accuracy, precision and recall (evaluator features, real
    test images) of ``--fid-samples`` guided samples for the two best samplers of (a) (each with its
    best grid and sigma_max at the ``--fid-nfe`` values) against DDIM at 50 steps on the seed's grid,
    with each configuration's sampling wall time and its ratio to DDIM-50's.
(d) Heun on the uniform_t grid, 25 steps, s = 1: its error and the spread of its samples (RMS about
    the per-pixel mean over samples) against the reference's, with the first step alone coarse (the
    rest ``--fine-steps`` logsnr steps) to isolate that step, and on the other grids and levels.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script from a checkout: make the repository root importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from diffusers_schedule import run_scheduler, scheduler_on
from torch import Tensor

from lightning_diffusion.components import Denoiser
from lightning_diffusion.data import DiffusionDataModule
from lightning_diffusion.diffusion import randn, sample_generators
from lightning_diffusion.diffusion.grids import GRIDS, noise_grid, schedule_levels
from lightning_diffusion.diffusion.samplers import SOLVERS
from lightning_diffusion.diffusion.spec import SamplerSpec
from lightning_diffusion.guidance import ClassifierFree, GuidedDenoiser
from lightning_diffusion.metrics import EvaluatorFeatures, SampleMetrics
from lightning_diffusion.registry import load_component, read_checkpoint

try:  # the optional ``benchmark`` extra
    import diffusers
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
except ImportError:
    diffusers = None

DETERMINISTIC = ("ddim", "heun", "dpmpp_2m", "unipc")
DATASETS = ("digits", "fashion_mnist")
QUALITY_DATA = "fashion_mnist"
BASELINE = SamplerSpec(name="ddim", steps=50)
HEUN_CASE_STEPS = 25
TARGET_NFE = (10, 20)
TIE = 1.001  # equal up to float rounding
Denoise = Callable[[Tensor, Tensor], Tensor]


def rms(images: Tensor, reference: Tensor) -> float:
    """Root-mean-square pixel difference over all samples and pixels."""
    return (images.double() - reference.double()).pow(2).mean().sqrt().item()


def spread(images: Tensor) -> float:
    """RMS about the per-pixel mean over samples: the samples' standard deviation."""
    return (images.double() - images.double().mean(0)).pow(2).mean().sqrt().item()


def steps_for(name: str, nfe: int) -> int:
    """The most steps whose NFE does not exceed ``nfe`` (heun: NFE = 2 steps - 1), at least the order."""
    solver = SOLVERS[name]
    return max(solver.order, (nfe + solver.evaluations_per_step - 1) // solver.evaluations_per_step)


def configured(name: str, nfe: int, grid: str, level: float | None, level_min: float | None) -> SamplerSpec:
    """The spec of solver ``name`` with at most ``nfe`` evaluations on a grid."""
    return SamplerSpec(name=name, steps=steps_for(name, nfe), grid=grid, sigma_max=level, sigma_min=level_min)


def config_label(name: str, grid: str, level: float | None, level_min: float | None, schedule: Any) -> str:
    lowest = "" if level_min is None else f" · min {level_min:g}"
    return f"{name} · {grid} · {level_name(level, schedule)}{lowest}"


def level_name(level: float | None, schedule: Any) -> str:
    return f"{schedule_levels(schedule)[1]:.0f}" if level is None else f"{level:g}"


@dataclass
class Problem:
    """One network, guidance scale, noise and labels: what every sampler solves from the same start."""

    data: str
    model: Denoiser
    scale: float
    noise: Tensor
    labels: Tensor

    def denoise(self, rows: slice = slice(None)) -> Denoise:
        return GuidedDenoiser(self.model, ClassifierFree(self.scale), {"label": self.labels[rows]})

    @torch.no_grad()
    def solve(self, spec: SamplerSpec, rows: slice = slice(None)) -> Tensor:
        return spec.sample(self.denoise(rows), self.noise[rows], self.model.schedule)

    @torch.no_grad()
    def solve_on(self, name: str, times: Tensor) -> Tensor:
        """A solver on an explicit grid of times (for grids no ``SamplerSpec`` describes)."""
        return SOLVERS[name].function(self.denoise(), self.noise, self.model.schedule, times)

    @torch.no_grad()
    def diffusers(self, scheduler: Any, steps: int) -> Tensor:
        """diffusers' loop with our guided D as its "sample" prediction."""
        return run_scheduler(scheduler, self.denoise(), self.noise, steps)


def diffusers_schedulers(model: Denoiser) -> dict[str, Any]:
    common = {"prediction_type": "sample", "timestep_spacing": "trailing", "final_sigmas_type": "zero"}
    return {
        "diffusers DPMSolver++ 2M": scheduler_on(
            DPMSolverMultistepScheduler,
            model.schedule,
            algorithm_type="dpmsolver++",
            solver_order=2,
            **common,
        ),
        "diffusers UniPC bh2": scheduler_on(
            UniPCMultistepScheduler, model.schedule, solver_type="bh2", predict_x0=True, **common
        ),
    }


class References:
    """Reference solutions per (problem, sigma_max), solved once."""

    def __init__(self, steps: int, check_samples: int) -> None:
        self.steps, self.check_samples = steps, check_samples
        self.solutions: dict[tuple[int, float | None], Tensor] = {}

    def spec(self, level: float | None, name: str = "dpmpp_2m", steps: int | None = None) -> SamplerSpec:
        return SamplerSpec(name=name, steps=steps or self.steps, grid="logsnr", sigma_max=level)

    def get(self, problem: Problem, level: float | None) -> Tensor:
        key = (id(problem), level)
        if key not in self.solutions:
            self.solutions[key] = problem.solve(self.spec(level))
        return self.solutions[key]

    def check(self, problem: Problem, level: float | None) -> str:
        """The reference against heun at the same NFE on the first samples."""
        rows = slice(0, self.check_samples)
        other = problem.solve(self.spec(level, "heun", (self.steps + 1) // 2), rows)
        return (
            f"reference: dpmpp_2m, {self.steps} steps, logsnr grid from sigma_max="
            f"{level_name(level, problem.model.schedule)}; vs heun {(self.steps + 1) // 2} steps (same NFE) "
            f"on {other.shape[0]} samples: RMS {rms(other, self.get(problem, level)[rows]):.2e}"
        )


@dataclass
class Row:
    label: str
    sampler: str
    grid: str
    level: float | None
    level_min: float | None
    errors: dict[int, tuple[float, int]]  # column NFE -> (RMS, actual NFE)


def ode_table(problem: Problem, args: argparse.Namespace, references: References) -> list[Row]:
    """(a) and (b) for one problem: print the markdown table and return its rows."""
    schedule = problem.model.schedule
    for level in args.sigma_max:
        print(references.check(problem, level))
    if len(args.sigma_max) > 1:
        base = references.get(problem, args.sigma_max[0])
        for level in args.sigma_max[1:]:
            print(
                f"references from sigma_max={level_name(level, schedule)} vs from "
                f"{level_name(args.sigma_max[0], schedule)} (a different start, not an error): "
                f"RMS {rms(references.get(problem, level), base):.3f}"
            )
    rows: list[Row] = []
    for name in args.samplers:
        for grid in args.grids:
            for level in args.sigma_max:
                for level_min in [None] if grid == "uniform_t" else args.sigma_min:
                    errors = {}
                    for nfe in args.nfe:
                        spec = configured(name, nfe, grid, level, level_min)
                        errors[nfe] = (rms(problem.solve(spec), references.get(problem, level)), spec.nfe)
                    label = config_label(name, grid, level, level_min, schedule)
                    rows.append(Row(label, name, grid, level, level_min, errors))
    if not args.skip_diffusers and diffusers is not None:
        for label, scheduler in diffusers_schedulers(problem.model).items():
            errors = {
                nfe: (rms(problem.diffusers(scheduler, nfe), references.get(problem, None)), nfe)
                for nfe in args.nfe
            }
            rows.append(Row(label, label, "own", None, None, errors))
    print()
    print("| sampler · grid · sigma_max | " + " | ".join(f"NFE {nfe}" for nfe in args.nfe) + " |")
    print("|---|" + "---:|" * len(args.nfe))
    for row in rows:
        cells = [f"{e:.4f}" + ("" if n == nfe else f" ({n})") for nfe, (e, n) in row.errors.items()]
        print(f"| {row.label} | " + " | ".join(cells) + " |")
    print()
    return rows


def target_check(results: dict[tuple[str, float], list[Row]]) -> None:
    """Issue 11's target: at 10 and 20 NFE our best is at least as accurate as the better diffusers
    (ratio <= 1 up to float rounding, 1.001)."""
    print(
        "### Target: our best vs the better of diffusers' two (RMS to the reference; ratio ours / theirs)\n"
    )
    print("| data | s | NFE | better diffusers | our best | ratio | ours from the top | ratio | met |")
    print("|---|---:|---:|---|---|---:|---|---:|---|")
    for (data, scale), rows in results.items():
        ours = [row for row in rows if row.grid != "own"]
        theirs = [row for row in rows if row.grid == "own"]
        for nfe in TARGET_NFE:
            if not theirs or nfe not in theirs[0].errors:
                continue
            rival = min(theirs, key=lambda row: row.errors[nfe][0])
            best = min(ours, key=lambda row: row.errors[nfe][0])
            top = min((row for row in ours if row.level is None), key=lambda row: row.errors[nfe][0])
            ratios = [row.errors[nfe][0] / rival.errors[nfe][0] for row in (best, top)]
            print(
                f"| {data} | {scale:g} | {nfe} | {rival.label} {rival.errors[nfe][0]:.4f} | "
                f"{best.label} {best.errors[nfe][0]:.4f} | {ratios[0]:.3f} | "
                f"{top.label} {top.errors[nfe][0]:.4f} | {ratios[1]:.3f} | "
                f"{'yes' if ratios[0] <= TIE else 'NO'} |"
            )
    print()


def best_two(rows: list[Row], nfes: list[int]) -> list[Row]:
    """The best configuration of each of the two solvers with the lowest mean log RMS over ``nfes``."""

    def score(row: Row) -> float:
        return sum(math.log(row.errors[nfe][0]) for nfe in nfes) / len(nfes)

    best: dict[str, Row] = {}
    for row in sorted((row for row in rows if row.grid != "own"), key=score):
        best.setdefault(row.sampler, row)
    return list(best.values())[:2]


def heun_case(problem: Problem, args: argparse.Namespace, references: References) -> None:
    """(d): where Heun's error on the uniform_t grid comes from, and the spread it gives."""
    schedule = problem.model.schedule
    uniform = noise_grid(schedule, HEUN_CASE_STEPS, "uniform_t")
    alpha, sigma = schedule.alpha_sigma(uniform[:2].double())
    first, second = (sigma / alpha).tolist()
    fine = noise_grid(schedule, args.fine_steps, "logsnr", sigma_max=second)
    first_coarse = torch.cat([uniform[:1], fine])
    cases: list[tuple[str, Callable[[], Tensor], float | None]] = [
        ("ddim · uniform_t · 25 steps", lambda: problem.solve(SamplerSpec("ddim", HEUN_CASE_STEPS)), None),
        ("heun · uniform_t · 25 steps", lambda: problem.solve(SamplerSpec("heun", HEUN_CASE_STEPS)), None),
    ]
    for name in ("ddim", "heun"):
        label = f"{name} · first step uniform_t, then {args.fine_steps} logsnr"
        cases.append((label, lambda name=name: problem.solve_on(name, first_coarse), None))
    for grid, level in (("uniform_t", 80.0), ("logsnr", None), ("edm", None), ("edm", 80.0)):
        spec = SamplerSpec("heun", HEUN_CASE_STEPS, grid, sigma_max=level)
        label = f"heun · {grid} · {level_name(level, schedule)} · 25 steps"
        cases.append((label, lambda spec=spec: problem.solve(spec), level))
    print(
        f"### (d) Heun, {problem.data}, s = {problem.scale:g}: the uniform_t grid's first step goes from "
        f"sigma/alpha {first:.0f} to {second:.1f}\n"
    )
    print("| run | RMS to reference | spread | spread / reference's |")
    print("|---|---:|---:|---:|")
    for label, run, level in cases:
        images = run()
        target = references.get(problem, level)
        print(
            f"| {label} | {rms(images, target):.4f} | {spread(images):.4f} | "
            f"{spread(images) / spread(target):.3f} |"
        )
    print()


@torch.no_grad()
def features_of(extractor: EvaluatorFeatures, images: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    parts = [extractor.features_and_logits(chunk) for chunk in images.split(batch)]
    return torch.cat([f for f, _ in parts]), torch.cat([logits for _, logits in parts])


def quality_table(model: Denoiser, args: argparse.Namespace, candidates: list[Row]) -> None:
    """(c): FID / class accuracy / precision / recall and wall time per configuration."""
    denoiser_path = args.root / QUALITY_DATA / "denoiser/checkpoints/last.ckpt"
    evaluator_path = args.root / QUALITY_DATA / "evaluator/checkpoints/last.ckpt"
    evaluator = load_component(evaluator_path, kind="evaluator", map_location="cpu").float().eval()
    extractor = EvaluatorFeatures(evaluator, str(evaluator_path))
    hparams = read_checkpoint(denoiser_path)["datamodule_hyper_parameters"]
    real = DiffusionDataModule.from_hparams(hparams).real_images("test", args.fid_samples)
    real_features, _ = features_of(extractor, real, args.batch)
    metrics = SampleMetrics(real_features.shape[1])
    metrics.update_real(real_features)
    n = args.fid_samples
    problem = Problem(
        QUALITY_DATA,
        model,
        args.scale,
        randn(sample_generators(args.seed, range(n)), model.image_shape),
        torch.arange(n) % model.num_classes,
    )
    specs = [
        configured(row.sampler, nfe, row.grid, row.level, row.level_min)
        for row in candidates
        for nfe in args.fid_nfe
    ] + [BASELINE]
    print(f"### (c) {QUALITY_DATA}, {n} samples, CFG s = {args.scale:g}, {len(real)} real test images\n")
    print("| sampler · grid · sigma_max | NFE | FID | class acc | precision | recall | wall s | vs DDIM-50 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    walls: list[tuple[SamplerSpec, dict[str, float], float]] = []
    for spec in specs:
        start = time.perf_counter()
        images = torch.cat([problem.solve(spec, slice(i, i + args.batch)) for i in range(0, n, args.batch)])
        wall = time.perf_counter() - start
        features, logits = features_of(extractor, images, args.batch)
        metrics.reset_generated()
        correct = (logits.argmax(dim=1) == problem.labels).float()
        metrics.update_generated({"features": features, "logits": logits, "class_correct": correct})
        walls.append((spec, metrics.compute(), wall))
    baseline_wall = walls[-1][2]
    for spec, values, wall in walls:
        label = config_label(spec.name, spec.grid, spec.sigma_max, spec.sigma_min, model.schedule)
        print(
            f"| {label} | {spec.nfe} | {values['fid']:.2f} | {values['class_accuracy']:.3f} | "
            f"{values['precision']:.3f} | {values['recall']:.3f} | {wall:.1f} | {wall / baseline_wall:.2f} |"
        )
    print()


def sigma_level(text: str) -> float | None:
    return None if text in ("max", "default") else float(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ODE error per NFE of our samplers and diffusers', and quality per NFE.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--root", type=Path, default=Path("runs"), help="holds <data>/denoiser/... checkpoints"
    )
    parser.add_argument("--data", choices=(*DATASETS, "both"), default="digits")
    parser.add_argument("--samples", type=int, default=32, help="samples per ODE-error problem, digits")
    parser.add_argument("--fashion-samples", type=int, default=8, help="same, Fashion-MNIST (32x32, slower)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--samplers", nargs="+", choices=DETERMINISTIC, default=list(DETERMINISTIC))
    parser.add_argument("--grids", nargs="+", choices=tuple(GRIDS), default=list(GRIDS))
    parser.add_argument(
        "--sigma-max",
        type=sigma_level,
        nargs="+",
        default=[None, 80.0],
        help="highest levels sigma/alpha to start from; 'max' is the schedule's (first: the diffusers one)",
    )
    parser.add_argument(
        "--sigma-min",
        type=sigma_level,
        nargs="+",
        default=[None],
        help="lowest levels before the jump to 0 on the logsnr and edm grids; 'default' is EDM's 0.002",
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0], help="CFG scales for (a)")
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--check-samples", type=int, default=4, help="samples the reference is checked on")
    parser.add_argument("--skip-diffusers", action="store_true", help="leave out (b)")
    parser.add_argument("--fid-samples", type=int, default=0, help="(c) on Fashion-MNIST when > 0")
    parser.add_argument("--fid-nfe", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--scale", type=float, default=3.0, help="CFG scale for (c)")
    parser.add_argument("--fine-steps", type=int, default=200, help="(d): logsnr steps after Heun's first")
    parser.add_argument("--skip-heun-case", action="store_true", help="leave out (d)")
    parser.add_argument("--batch", type=int, default=100, help="samples per batch in (c)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.samples, args.fashion_samples, args.reference_steps, args.batch, *args.nfe) < 1:
        parser.error("--samples, --fashion-samples, --reference-steps, --batch and --nfe must be positive")
    if args.sigma_max[0] is not None:
        parser.error("the first --sigma-max must be 'max' (the level diffusers starts from)")
    return args


def quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_diffusion", "diffusers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # Inception Score over one split (SampleMetrics) has no spread; it is not reported here.
    warnings.filterwarnings("ignore", message=".*degrees of freedom is <= 0.*")
    warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    datasets = DATASETS if args.data == "both" else (args.data,)
    references = References(args.reference_steps, args.check_samples)
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__ if diffusers else 'not installed'}, "
        f"CPU fp32, {torch.get_num_threads()} threads; RMS in pixel units (images in [-1, 1])\n"
    )
    results: dict[tuple[str, float], list[Row]] = {}
    models: dict[str, Denoiser] = {}
    for data in datasets:
        path = args.root / data / "denoiser/checkpoints/last.ckpt"
        model = models[data] = load_component(path, kind="denoiser", map_location="cpu").float().eval()
        n = args.samples if data == "digits" else args.fashion_samples
        noise = randn(sample_generators(args.seed, range(n)), model.image_shape)
        labels = torch.arange(n) % model.num_classes
        for scale in args.scales:
            problem = Problem(data, model, scale, noise, labels)
            start = time.perf_counter()
            print(
                f"### (a, b) ODE error, {data} ({path}), {n} samples, "
                f"{'conditional s = 1' if scale == 1 else f'CFG s = {scale:g}'}\n"
            )
            results[data, scale] = ode_table(problem, args, references)
            print(f"({time.perf_counter() - start:.0f} s)\n")
            if scale == 1 and data == datasets[0] and not args.skip_heun_case:
                heun_case(problem, args, references)
    target_check(results)
    if args.fid_samples > 0:
        model = (
            models.get(QUALITY_DATA)
            or load_component(
                args.root / QUALITY_DATA / "denoiser/checkpoints/last.ckpt",
                kind="denoiser",
                map_location="cpu",
            )
            .float()
            .eval()
        )
        ranked = results.get((QUALITY_DATA, args.scale)) or next(iter(results.values()))
        quality_table(
            model, args, best_two(ranked, [nfe for nfe in args.fid_nfe if nfe in args.nfe] or args.nfe)
        )


if __name__ == "__main__":
    main()
