"""Scale search (``evaluate.py --search``) against the full grid at the same total number of samples.

Run from the repository root with trained Fashion-MNIST checkpoints::

    .venv/bin/python benchmarks/scale_search.py \
        --denoiser runs/fashion_mnist/denoiser/checkpoints/last.ckpt \
        --evaluator runs/fashion_mnist/evaluator/checkpoints/last.ckpt \
        --out runs/fashion_mnist/scale_search -- --config configs/fashion_mnist/sweep.yaml \
        --methods '[cfg]' --scales '[0.5,1,1.5,2,2.5,3,4,5,6]' --num_samples 100

Everything after ``--`` goes to ``evaluate.py`` unchanged (config, methods, scales, sampler, devices,
--classifier or --guide for the methods that need them); ``--num_samples`` is the search's first round.
For each row the search runs first (into ``OUT/search``) and spends S samples; then the grid samples every
scale with the same S samples in all, S / (scales x seed sets) per scale (into ``OUT/grid_n<N>``), with
bootstrap intervals (rows with as many scales spend as much and share one grid run; give the rows the same
number of scales, or run the benchmark per row, to keep it to one). The grid's optimum is its best FID at
class accuracy >= the target with its 95 % interval. The search's scale is judged on the grid's own
samples, where the two scales share their noise: the grid's FID at the search's scale and the paired 95 %
interval of its difference from the optimum (``sweep.compare``); "tie" means the interval holds 0. The
search's own FID comes from its last round, on fresh noise and at a larger N than the grid's, so it is
reported beside, not compared. The table goes to stdout and ``OUT/scale_search.md``
(``OUT/scale_search.json`` with every number).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import evaluate  # noqa: E402
from lightning_diffusion.sweep.compare import PairedRows  # noqa: E402
from lightning_diffusion.sweep.frontier import reaches_accuracy  # noqa: E402
from lightning_diffusion.sweep.settings import DEFAULT_SEARCH_TARGET  # noqa: E402


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--denoiser", required=True, help="denoiser checkpoint")
    parser.add_argument("--evaluator", required=True, help="evaluator checkpoint (class accuracy, features)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--search_target", type=float, default=DEFAULT_SEARCH_TARGET, help="least class accuracy"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of every interval")
    own, _, rest = (
        (argv[: argv.index("--")], "--", argv[argv.index("--") + 1 :]) if "--" in argv else (argv, "", [])
    )
    return parser.parse_args(own), rest


def grid_optimum(rows: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The grid row of lowest FID among those reaching ``target`` class accuracy."""
    qualifying = [row for row in rows if row.get("fid") is not None and reaches_accuracy(row, target)]
    return min(qualifying, key=lambda row: row["fid"], default=None)


def interval(row: dict[str, Any] | None) -> str:
    if row is None or row.get("fid") is None:
        return "-"
    bounds = "" if row.get("fid_lo") is None else f" [{row['fid_lo']:.3g}, {row['fid_hi']:.3g}]"
    return f"{row['fid']:.3g}{bounds}"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args, rest = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    common = ["--denoiser", args.denoiser, "--evaluator", args.evaluator, "--wandb", "false", *rest]
    common += ["--bootstrap", str(args.bootstrap)]
    searched = evaluate.main(
        [*common, "--out", str(out / "search"), "--search", "--search_target", str(args.search_target)]
    )
    paired = PairedRows(args.bootstrap)
    record = json.loads((out / "search" / "search.json").read_text())
    sets = len(record[0]["history"][0]["seed_sets"])
    grids: dict[int, list[dict[str, Any]]] = {}  # samples per scale -> the grid's rows
    results = []
    for found in searched:
        scales = found["scales_searched"]
        per_scale = max(2, found["samples"] // (scales * sets))
        folder = out / f"grid_n{per_scale}"
        if per_scale not in grids:  # every row on this grid; rows of as many scales share it
            grids[per_scale] = evaluate.main([*common, "--out", str(folder), "--num_samples", str(per_scale)])
        rows = [
            row
            for row in grids[per_scale]
            if row["method"] == found["method"] and row.get("ema") == found.get("ema")
        ]
        best = grid_optimum(rows, args.search_target)
        at_search = next((row for row in rows if row["scale"] == found["scale"]), None)
        difference = None
        if best is not None and at_search is not None and best is not at_search:
            first = paired.row(folder, best["method"], best["scale"], best.get("ema"))
            second = paired.row(folder, at_search["method"], at_search["scale"], at_search.get("ema"))
            difference = paired.difference(first, second, only=("fid",)).get("fid")
        tie = True if best is at_search and best is not None else None
        if difference is not None:
            tie = not difference.distinguishable
        results.append(
            {
                "method": found["method"],
                "search_scale": found["scale"],
                "search_fid": found.get("fid"),
                "search_fid_lo": found.get("fid_lo"),
                "search_fid_hi": found.get("fid_hi"),
                "search_samples": found["samples"],
                "search_rounds": found["rounds"],
                "search_last_n": found["num_samples"],
                "grid_samples": per_scale * scales * sets,
                "grid_n": per_scale,
                "grid_scale": None if best is None else best["scale"],
                "grid_fid": None if best is None else best["fid"],
                "grid_fid_lo": None if best is None else best.get("fid_lo"),
                "grid_fid_hi": None if best is None else best.get("fid_hi"),
                "grid_fid_at_search_scale": None if at_search is None else at_search["fid"],
                "difference": None if difference is None else difference.difference,
                "difference_lo": None if difference is None else difference.low,
                "difference_hi": None if difference is None else difference.high,
                "tie": tie,
                "_search": found,
                "_grid": best,
                "_at_search": at_search,
            }
        )
    table = [
        "| row | samples (search / grid) | search: scale, FID [95 %] at N "
        "| grid optimum: scale, FID [95 %] at N | grid FID at the search's scale | paired difference [95 %] "
        "| tie |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in results:
        diff = (
            "-"
            if entry["difference"] is None
            else (
                f"{entry['difference']:+.3g} [{entry['difference_lo']:+.3g}, {entry['difference_hi']:+.3g}]"
            )
        )
        grid_scale = "-" if entry["grid_scale"] is None else f"{entry['grid_scale']:g}"
        table.append(
            f"| {entry['method']} | {entry['search_samples']} / {entry['grid_samples']} "
            f"| {entry['search_scale']:g}, {interval(entry['_search'])} at {entry['search_last_n']} "
            f"| {grid_scale}, {interval(entry['_grid'])} at {entry['grid_n']} "
            f"| {interval(entry['_at_search'])} | {diff} | {entry['tie']} |"
        )
    text = "\n".join(table)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_search.md").write_text(text + "\n", encoding="utf-8")
    plain = [{key: value for key, value in entry.items() if not key.startswith("_")} for entry in results]
    (out / "scale_search.json").write_text(json.dumps(plain, indent=2), encoding="utf-8")
    return plain


if __name__ == "__main__":
    main()
