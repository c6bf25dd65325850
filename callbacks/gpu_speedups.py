"""GPUSpeedups: torch.compile, channels-last weights and TF32 matmuls for the component being trained."""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_diffusion.compilation import apply_speedups, check_compile_mode, check_matmul_precision


class GPUSpeedups(pl.Callback):
    """At setup (before the strategy moves and wraps the model): sets the float32 matmul precision
    (``"high"`` lets matmuls and convolutions use TF32), stores the convolutional networks' weights
    channels-last, and compiles the component's networks in place (``compile_mode`` is torch.compile's
    ``mode``; shapes are static). Checkpoints keep their plain keys, so they load with or without it.

    With ``compile: true`` on a machine where torch.compile cannot build code (no C++ compiler, no
    triton, ...) fit stops at its start with a ConfigError saying what to install or to set
    ``compile: false``. CPU configs do not list this callback."""

    def __init__(
        self,
        compile: bool = True,
        compile_mode: str = "default",
        channels_last: bool = True,
        matmul_precision: str = "high",
    ) -> None:
        self.compile = compile
        self.compile_mode = check_compile_mode(compile_mode)
        self.channels_last = channels_last
        self.matmul_precision = check_matmul_precision(matmul_precision)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        apply_speedups(
            pl_module,
            self.compile,
            self.compile_mode,
            self.channels_last,
            self.matmul_precision,
            device=trainer.strategy.root_device,
        )
