"""Tiny fits for tests/test_ddp_equivalence.py, run with 1 process or as 2 CPU DDP processes (gloo).

``python tests/ddp_jobs.py OUT DEVICES ENCODER EVALUATOR``: the contrastive encoder, the diffusion
prior (on the frozen encoder at ENCODER) and a denoiser with the GuidanceSweep callback (scored by the
evaluator at EVALUATOR) each train on a global batch of GLOBAL_BATCH, split over DEVICES processes;
every rank saves what it saw to ``OUT/<job>_rank<R>.pt``. Lightning's DDP launcher re-runs this script
once per extra rank, so it must stay a script (never ``ddp_spawn``: it shares metric states).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from test_contrastive import quadrant_items, tiny_contrastive_encoder
from test_unclip import perturbed
from tiny import digits_datamodule, quiet_trainer, tiny_denoiser
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from callbacks import GuidanceSweep
from lightning_diffusion.components import Prior
from lightning_diffusion.diffusion import CosineSchedule, diffusion_loss, randn, sample_generators
from lightning_diffusion.nets import PriorMLP

GLOBAL_BATCH = 16
PRIOR_STEPS = 3
SWEEP_SETTINGS = {"scales": [0, 2], "num_samples": 11, "batch_size": 4, "sampler": {"steps": 2}}


class Recorder(pl.Callback):
    """This rank's training loss and parameter gradients at every step (DDP has averaged them by then)."""

    def __init__(self) -> None:
        self.losses: list[Tensor] = []
        self.gradients: list[dict[str, Tensor]] = []

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        named = pl_module.named_parameters()
        self.gradients.append({name: p.grad.clone() for name, p in named if p.grad is not None})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().clone())


class SampleKeyedPrior(Prior):
    """The prior with each training sample's t and noise drawn from a generator seeded by the sample's
    ``index`` in the data set, so one process and two draw the same numbers for the same global batch."""

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        self.sample_indices = batch["index"].tolist()
        return super().training_step(batch, batch_idx)

    def _losses(self, y: Tensor, cond: Mapping[str, Any], generator=None) -> tuple[Tensor, Tensor]:
        if generator is not None:  # validation's fixed draw
            return super()._losses(y, cond, generator)
        generators = sample_generators(0, self.sample_indices, y.device)
        t = torch.cat([torch.rand(1, generator=g, device=y.device) for g in generators])
        noise = randn(generators, y.shape[1:])
        losses = diffusion_loss(
            lambda z, s: self.denoise(z, s, cond), y, t, noise, self.schedule, self.prediction
        )
        return losses, t


def training_loader(items: list[dict[str, Any]], devices: int) -> DataLoader:
    """Batches of GLOBAL_BATCH // devices. Under DDP, Lightning shuffles training data with a
    DistributedSampler (seed 0) and deals rank r every W-th index of its permutation; one process gets
    the same permutation from the same sampler with one replica, so step k sees the same global batch."""
    if devices == 1:
        sampler = DistributedSampler(items, num_replicas=1, rank=0, shuffle=True, seed=0)
        return DataLoader(items, batch_size=GLOBAL_BATCH, sampler=sampler)
    return DataLoader(items, batch_size=GLOBAL_BATCH // devices, shuffle=True)


def save(out: Path, job: str, record: dict[str, Any]) -> None:
    """Write this rank's ``record`` to ``OUT/<job>_rank<R>.pt``."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save(record, out / f"{job}_rank{rank}.pt")


def contrastive(out: Path, trainer_options: dict[str, Any]) -> None:
    """Validation retrieval, then one training step; every image clean (p_clean = 1) at a log-SNR so high
    that sigma_0 * noise vanishes in float32, so the noise each process draws does not matter. Perturbed
    weights let gradients reach the layers behind zero-initialised outputs."""
    model = perturbed(tiny_contrastive_encoder(p_clean=1.0, schedule=CosineSchedule(logsnr_max=80.0)))
    batch = GLOBAL_BATCH // trainer_options["devices"]
    validation = DataLoader(quadrant_items(2 * GLOBAL_BATCH, seed=1), batch_size=batch)
    metrics = quiet_trainer(**trainer_options).validate(model, validation, verbose=False)[0]
    recorder = Recorder()
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[recorder], **trainer_options)
    trainer.fit(model, training_loader(quadrant_items(GLOBAL_BATCH, seed=0), trainer_options["devices"]))
    logged = trainer.callback_metrics["train/loss"]
    save(
        out,
        "contrastive",
        {
            "validation": metrics,
            "logged_loss": logged,
            "losses": recorder.losses,
            "gradients": recorder.gradients,
        },
    )


def prior(out: Path, encoder: str, trainer_options: dict[str, Any]) -> None:
    """PRIOR_STEPS training steps with per-sample noise and no condition dropout, then validation."""
    torch.manual_seed(0)
    net = perturbed(PriorMLP(embed_dim=16, text_width=16, width=32, layers=2))
    model = SampleKeyedPrior(net, encoder, p_drop_text_embedding=0.0, p_drop_tokens=0.0, warmup_steps=1)
    items = quadrant_items(PRIOR_STEPS * GLOBAL_BATCH, seed=2)
    indexed = [{**item, "index": index} for index, item in enumerate(items)]
    batch = GLOBAL_BATCH // trainer_options["devices"]
    recorder = Recorder()
    trainer = quiet_trainer(
        max_steps=PRIOR_STEPS, num_sanity_val_steps=0, callbacks=[recorder], **trainer_options
    )
    validation = DataLoader(quadrant_items(2 * GLOBAL_BATCH, seed=3), batch_size=batch)
    trainer.fit(model, training_loader(indexed, trainer_options["devices"]), validation)
    parameters = {name: p.detach().clone() for name, p in model.named_parameters()}
    metrics = {name: value.clone() for name, value in trainer.callback_metrics.items()}
    save(
        out,
        "prior",
        {
            "parameters": parameters,
            "validation": metrics,
            "losses": recorder.losses,
            "gradients": recorder.gradients,
        },
    )


def sweep(out: Path, evaluator: str, trainer_options: dict[str, Any]) -> None:
    """One training step at learning rate 0 (the weights stay the same), then the sweep callback."""
    callback = GuidanceSweep(
        evaluator=evaluator, every_n_epochs=1, cache_dir=str(out / "cache"), settings=SWEEP_SETTINGS
    )
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
        callbacks=[callback], default_root_dir=str(out), **trainer_options,
    )  # fmt: skip
    datamodule = digits_datamodule(batch_size=GLOBAL_BATCH // trainer_options["devices"])
    trainer.fit(tiny_denoiser(lr=0.0), datamodule=datamodule)


def main(out: str, devices: str, encoder: str, evaluator: str) -> None:
    torch.set_num_threads(1)
    count = int(devices)
    options = {"devices": count, "strategy": "ddp" if count > 1 else "auto"}
    folder = Path(out)
    contrastive(folder, options)
    prior(folder, encoder, options)
    sweep(folder, evaluator, options)


if __name__ == "__main__":
    main(*sys.argv[1:])
