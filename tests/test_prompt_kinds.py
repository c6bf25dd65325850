"""Prompt kinds: a condition a sweep can prompt with is one registered entry. A made-up "colour" kind, read
from a tiny data module and consumed by a colour condition part, both defined here only, is picked from the
denoiser's condition parts, drawn per sample, checked against each method's declared kinds and swept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from test_sweep import tiny_evaluator
from tiny import COND_DIM, tiny_denoiser, tiny_unet
from torch import Tensor, nn

from lightning_diffusion.components import Denoiser
from lightning_diffusion.components.conditions import Condition, NetConditions, NetworkSlots
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.metrics import EvaluatorFeatures
from lightning_diffusion.sweep import SweepContext, SweepModels, SweepSettings, get_sweep_method, run_sweep
from lightning_diffusion.sweep import prompt_kinds as registry
from lightning_diffusion.sweep.prompt_kinds import Pool, PromptKind, choose_kind, register_prompt_kind
from lightning_diffusion.sweep.prompts import Prompts, data_prompts

COLOURS = 3


class ColourData:
    """A tiny data module whose images each have a colour (an index below ``COLOURS``)."""

    has_captions = False

    def colours(self, split: str) -> list[int]:
        return {"train": [0, 2, 2, 1], "test": [1]}[split]


class Colour(Condition):
    """Key ``"colour"``: long (B,); index ``COLOURS`` is ∅. An embedding added to the condition vector."""

    keys = ("colour",)
    gives_vector = True
    droppable = True

    def __init__(self, p_drop: float = 0.1) -> None:
        super().__init__(p_drop, "prompt")

    def build(self, slots: NetworkSlots) -> None:
        self.embedding = nn.Embedding(COLOURS + 1, slots.cond_dim)

    def null(self, batch_size: int, device: torch.device) -> dict[str, Any]:
        return {"colour": torch.full((batch_size,), COLOURS, dtype=torch.long, device=device)}

    def read(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"colour": batch["colour"]}

    def drop(self, cond: dict[str, Any], mask: Tensor) -> None:
        cond["colour"] = torch.where(mask, COLOURS, cond["colour"])

    def inputs(self, cond: Mapping[str, Any], batch_size: int) -> NetConditions:
        colours = cond.get("colour")
        if colours is None:
            colours = self.null(batch_size, self.embedding.weight.device)["colour"]
        return NetConditions(vector=self.embedding(colours))


COLOUR = PromptKind(
    "colour",
    "colours",
    read=lambda source: Pool(source.datamodule.colours(source.split)),
    collate=lambda colours, device: torch.tensor(colours, dtype=torch.long, device=device),
)


@pytest.fixture
def colour_kind(monkeypatch: pytest.MonkeyPatch) -> PromptKind:
    """The colour kind registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_kinds", registry._kinds.copy())
    return register_prompt_kind(COLOUR)


def colour_denoiser() -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(tiny_unet(COND_DIM), image_shape=(1, 8, 8), num_classes=None, conditions=[Colour()])


def plans(*methods: str) -> list[Any]:
    return SweepSettings(methods=list(methods), scales=[2.0]).plans()


def test_the_kind_comes_from_the_denoisers_condition_parts_and_the_rows(colour_kind):
    label, caption = registry.get_prompt_kind("label"), registry.get_prompt_kind("caption")
    assert choose_kind(colour_denoiser(), [None]) is colour_kind
    assert choose_kind(tiny_denoiser(), [None]) is label
    assert choose_kind(tiny_denoiser(num_classes=None), [None]) is label  # nothing asks: class labels
    assert choose_kind(tiny_denoiser(), [None, ("caption",)]) is caption  # a row follows captions alone
    assert choose_kind(tiny_denoiser(), [None], asked="caption") is caption


def test_colours_are_drawn_per_sample_whatever_the_batch(colour_kind):
    models = SweepModels(colour_denoiser(), None)
    prompts = data_prompts(models, ColourData(), "train", plans("cfg"))
    assert prompts.kind == "colour" and prompts.values == [0, 2, 2, 1]
    whole = prompts.draw(sample_generators(0, range(6), torch.device("cpu")))
    halves = [
        prompts.draw(sample_generators(0, part, torch.device("cpu"))) for part in (range(4), range(4, 6))
    ]
    assert torch.equal(whole.cond["colour"], torch.cat([half.cond["colour"] for half in halves]))
    # the same generator draws as a class-label sweep over the pool's four entries
    index = Prompts(num_classes=4).draw(sample_generators(0, range(6), torch.device("cpu"))).labels
    assert whole.cond["colour"].tolist() == [[0, 2, 2, 1][i] for i in index.tolist()]
    assert whole.labels is None and whole.captions is None and whole.attributes is None


def test_methods_are_checked_against_the_colour_kind(colour_kind):
    models = SweepModels(colour_denoiser(), None)
    prompts = Prompts("colour", [0, 1])
    cfg, classifier = plans("cfg", "classifier")
    cfg.method.check(models, cfg, prompts)  # cfg follows any kind the denoiser takes
    refusal = (
        r"guides towards class labels only, and this sweep samples colours; with colours use one of: .*cfg"
    )
    with pytest.raises(ConfigError, match=refusal):
        classifier.method.check(models, classifier, prompts)
    label_only = SweepModels(tiny_denoiser(), None)
    with pytest.raises(
        ConfigError, match="cfg on colours needs a denoiser with a condition part reading 'colour'"
    ):
        cfg.method.check(label_only, cfg, prompts)
    assert get_sweep_method("cfg").conditioned(models)


def test_unknown_kinds_are_refused_with_the_registered_ones():
    with pytest.raises(
        ConfigError, match=r"names unknown prompt kind 'colour'.*prompt kinds are: label, caption"
    ):
        Prompts("colour", [0, 1])
    method = get_sweep_method("cfg")
    method.prompts = ("lable",)
    plan = plans("cfg")[0]
    with pytest.raises(
        ConfigError, match=r"method cfg names unknown prompt kind 'lable'.*did you mean label\?"
    ):
        method.check(SweepModels(tiny_denoiser(), None), plan, Prompts(num_classes=10))


def test_a_tiny_sweep_prompts_with_colours(colour_kind, tmp_path):
    evaluator = tiny_evaluator()
    models = SweepModels(colour_denoiser(), EvaluatorFeatures(evaluator, "tiny"), {"evaluator": evaluator})
    settings = SweepSettings(
        methods=["cfg"], scales=[0.0, 2.0], num_samples=6, batch_size=4, sampler=SamplerSpec(steps=2)
    )
    prompts = data_prompts(models, ColourData(), "train", settings.plans())
    real = torch.rand(8, 1, 8, 8) * 2 - 1
    context = SweepContext(lambda n: [real[:n]], "colour-data", tmp_path / "cache", prompts, progress=False)
    rows = run_sweep(models, settings, tmp_path / "sweep", context)
    assert [(row["method"], row["scale"], row["nfe"]) for row in rows] == [("cfg", 0.0, 2), ("cfg", 2.0, 4)]
    assert all(row["fid"] is not None and row["class_accuracy"] is None for row in rows)
