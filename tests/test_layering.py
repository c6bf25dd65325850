"""The layers of the library hold (docs/design.md, "Layout"): ``metrics/`` takes tensors and imports nothing
that samples or loads; ``diffusion/`` and ``guidance/`` know no components, callbacks, sweeps or CLI; and
nothing in the library imports the callbacks or the entry points. Imports are read with ``ast`` (every
``import`` statement, function-local ones too) and followed through the library, so an indirect chain
(metrics -> a helper -> components) breaks a rule as a direct import does."""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TOP_LEVEL = ("train.py", "evaluate.py")  # the entry points beside the library
SCANNED = ("lightning_diffusion", "callbacks")  # packages whose modules are nodes of the graph


@dataclass(frozen=True)
class Rule:
    """Modules under ``sources`` import, directly or through other modules, nothing under ``forbidden``."""

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]


SAMPLING_AND_ABOVE = ("components", "pipeline", "sampling", "guidance", "data", "sweep")
RULES = (
    Rule(
        "metrics take tensors",
        ("lightning_diffusion.metrics",),
        tuple(f"lightning_diffusion.{package}" for package in SAMPLING_AND_ABOVE),
    ),
    Rule(
        "the math knows no components, callbacks, sweeps or CLI",
        ("lightning_diffusion.diffusion", "lightning_diffusion.guidance"),
        (
            "lightning_diffusion.components",
            "lightning_diffusion.sweep",
            "lightning_diffusion.__main__",
            "callbacks",
            "train",
            "evaluate",
        ),
    ),
    Rule(
        "the library imports no callbacks or entry points",
        ("lightning_diffusion",),
        ("callbacks", "train", "evaluate"),
    ),
)


def under(module: str, prefixes: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes)


def module_sources(root: Path = REPO) -> dict[str, tuple[str, bool]]:
    """Every scanned module's dotted name -> (its source, whether it is a package ``__init__``)."""
    sources = {}
    for package in SCANNED:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            sources[".".join(parts[:-1] if is_package else parts)] = (path.read_text(), is_package)
    for name in TOP_LEVEL:
        sources[Path(name).stem] = ((root / name).read_text(), False)
    return sources


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """The dotted names every import statement of ``source`` (module ``module``) names: ``a.b`` for ``from
    a import b`` (b a submodule, or an attribute of module ``a``); relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the scanned modules it imports directly (each imported name mapped to the longest scanned
    module it starts with; external modules left out)."""
    graph = {}
    for module, (source, is_package) in sources.items():
        targets = set()
        for name in imported_names(source, module, is_package):
            parts = name.split(".")
            known = next((".".join(parts[:n]) for n in range(len(parts), 0, -1)
                          if ".".join(parts[:n]) in sources), None)  # fmt: skip
            if known is not None and known != module:
                targets.add(known)
        graph[module] = targets
    return graph


def violations(graph: Mapping[str, set[str]], rule: Rule) -> list[list[str]]:
    """For each source module that reaches a forbidden one, the shortest import chain from it (breadth-first
    over the graph)."""
    chains = []
    for start in sorted(module for module in graph if under(module, rule.sources)):
        parents: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            module = queue.popleft()
            if under(module, rule.forbidden) and not under(module, rule.sources):
                chain = [module]
                while parents[chain[-1]] is not None:
                    chain.append(parents[chain[-1]])
                chains.append(chain[::-1])
                break
            for target in sorted(graph.get(module, ())):
                if target not in parents:
                    parents[target] = module
                    queue.append(target)
    return chains


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[str, bool]]:
    return module_sources()


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_the_library_keeps_its_layers(sources, rule):
    broken = violations(import_graph(sources), rule)
    assert not broken, f"{rule.name}: " + "; ".join(" -> ".join(chain) for chain in broken)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("lightning_diffusion.metrics.planted", "from lightning_diffusion.components.prior import Prior\n"),
        ("lightning_diffusion.metrics.planted", "def f():\n    from ..sampling import generate\n"),
        ("lightning_diffusion.metrics.planted", "from lightning_diffusion import pipeline\n"),
        ("lightning_diffusion.guidance.planted", "import train\n"),
        ("lightning_diffusion.diffusion.planted", "from lightning_diffusion.sweep.run import run_sweep\n"),
        ("lightning_diffusion.resampling", "from callbacks.guidance_sweep import GuidanceSweep\n"),
    ],
)
def test_a_planted_import_breaks_its_rule(sources, module, source):
    """The same checker on the real tree plus one planted (or replaced) module: each plant is caught."""
    graph = import_graph({**sources, module: (source, False)})
    assert any(violations(graph, rule) for rule in RULES)


def test_an_indirect_chain_is_caught_and_named(sources):
    """metrics -> a new helper outside metrics -> components: no single import is in a forbidden package,
    the chain is."""
    planted = {
        "lightning_diffusion.metrics.planted": ("from lightning_diffusion import helper\n", False),
        "lightning_diffusion.helper": ("from lightning_diffusion.components import Denoiser\n", False),
    }
    chains = violations(import_graph({**sources, **planted}), RULES[0])
    assert ["lightning_diffusion.metrics.planted", "lightning_diffusion.helper",
            "lightning_diffusion.components"] in chains  # fmt: skip
