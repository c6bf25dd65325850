"""No host-device synchronisation in the per-step sampling and training paths, checked on the CPU.

The meta device stands in for the accelerator: meta tensors have shapes but no values, so any read of a
device value on the host (``.item()``, ``.tolist()``, a tensor in ``if``, ``nonzero``, boolean masks)
fails there, exactly where it would stall a GPU. A dispatch mode also refuses blocking host-to-device
copies (the other thing ``torch.cuda.set_sync_debug_mode("error")`` refuses); asynchronous ones
(``non_blocking=True``, e.g. a host time grid) are allowed. Per-run checks (the label range) run
before the device is swapped in, as they run once at the start of a run.
"""

from __future__ import annotations

import math
import traceback
import warnings

import pytest
import torch
from tiny import tiny_denoiser
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_diffusion.components import Upsampler
from lightning_diffusion.config import ConfigError
from lightning_diffusion.diffusion import SamplerSpec, sample_generators
from lightning_diffusion.guidance import ClassifierFree, GuidanceInterval, GuidedDenoiser
from lightning_diffusion.nets import UNet

pytestmark = pytest.mark.usefixtures("one_thread")

META = torch.device("meta")
BATCH = 4
STEPS = 4


class DeviceTraffic(TorchDispatchMode):
    """Fails on any op that would synchronise the host with the (meta) device, naming where it came from."""

    READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.equal")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        copy = name in ("aten._to_copy", "aten.copy_")
        reads_device = (name in self.READS and any(t.device == META for t in tensors)) or (
            copy and _copies(name, args, kwargs, source="meta", destination="cpu")
        )
        blocking_upload = (
            copy
            and not kwargs.get("non_blocking", False)
            and _copies(name, args, kwargs, source="cpu", destination="meta")
        )
        if reads_device or blocking_upload:
            frames = [frame for frame in traceback.extract_stack() if "lightning_diffusion" in frame.filename]
            where = "".join(traceback.format_list(frames))
            kind = "reads a device value" if reads_device else "copies host data to the device, blocking"
            raise AssertionError(f"{name} {kind} in a per-step path:\n{where}")
        return func(*args, **kwargs)


def _copies(name: str, args: tuple, kwargs: dict, source: str, destination: str) -> bool:
    """Whether a copy op moves a tensor from device type ``source`` to ``destination`` (host scalars,
    0-d tensors on the CPU, travel as kernel arguments and do not count)."""
    if name == "aten._to_copy":
        tensor, target = args[0], getattr(kwargs.get("device"), "type", None)
    else:
        target, tensor = args[0].device.type, args[1]
    host_scalar = tensor.device.type == "cpu" and tensor.ndim == 0
    return tensor.device.type == source and target == destination and not host_scalar


def _to_meta(cond: dict) -> dict:
    return {key: value.to(META) if isinstance(value, torch.Tensor) else value for key, value in cond.items()}


def _guided_on_meta(model, guidance, cond) -> GuidedDenoiser:
    """A GuidedDenoiser built on the CPU (its once-per-run checks read values), then moved to meta."""
    guided = GuidedDenoiser(model, guidance, cond)
    model.to(META)
    guided.cond = _to_meta(cond)
    return guided


def _tiny_upsampler() -> Upsampler:
    torch.manual_seed(0)
    net = UNet(in_channels=2, out_channels=1, channels=(8, 16), num_res_blocks=1, cond_dim=16)
    return Upsampler(net, image_shape=(1, 8, 8), low_res_size=4, num_classes=10)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_cfg_sampling_steps_read_nothing_back_from_the_device(scale):
    model = tiny_denoiser()
    guided = _guided_on_meta(model, ClassifierFree(scale), {"label": torch.tensor([0, 1, 2, 3])})
    noise = torch.randn(BATCH, 1, 8, 8).to(META)
    with DeviceTraffic():
        images = SamplerSpec("ddim", STEPS).sample(guided, noise, model.schedule)
    assert images.shape == (BATCH, 1, 8, 8)


def test_upsampler_sampling_steps_read_nothing_back_from_the_device():
    model = _tiny_upsampler()
    low_res = torch.rand(BATCH, 1, 4, 4) * 2 - 1
    generators = sample_generators(0, range(BATCH))
    cond = {"label": torch.tensor([0, 1, 2, 3]), **model.low_res_condition(low_res, 0.2, generators)}
    guided = _guided_on_meta(model, ClassifierFree(2.0), cond)
    noise = torch.randn(BATCH, 1, 8, 8).to(META)
    with DeviceTraffic():
        images = SamplerSpec("ddim", STEPS).sample(guided, noise, model.schedule)
    assert images.shape == (BATCH, 1, 8, 8)


def test_guidance_interval_decides_on_a_host_time_without_reading_the_device():
    """Inside the interval CFG runs 2B rows, outside B rows; the branch is chosen from t on the host."""
    model = tiny_denoiser()
    guidance = GuidanceInterval(ClassifierFree(2.0), 0.3, 3.0)
    guided = _guided_on_meta(model, guidance, {"label": torch.tensor([0, 1, 2, 3])})
    rows = []
    denoise = model.denoise
    model.denoise = lambda z, t, cond=None: rows.append(z.shape[0]) or denoise(z, t, cond)
    z = torch.randn(BATCH, 1, 8, 8).to(META)
    with DeviceTraffic():
        for t in (0.9, 0.5, 0.1):
            z = guided(z, torch.full((BATCH,), t))
    levels = [math.tan(math.pi / 2 * t) for t in (0.9, 0.5, 0.1)]  # sigma/alpha of the cosine schedule
    expected = [2 * BATCH if 0.3 < level <= 3.0 else BATCH for level in levels]
    assert rows == expected == [BATCH, 2 * BATCH, BATCH]


def test_guidance_interval_in_a_sampler_run_reads_nothing_back():
    model = tiny_denoiser()
    guidance = GuidanceInterval(ClassifierFree(2.0), 0.3, 3.0)
    guided = _guided_on_meta(model, guidance, {"label": torch.tensor([0, 1, 2, 3])})
    noise = torch.randn(BATCH, 1, 8, 8).to(META)
    with DeviceTraffic():
        SamplerSpec("ddim", STEPS).sample(guided, noise, model.schedule)


@pytest.mark.parametrize("build", [tiny_denoiser, _tiny_upsampler], ids=["denoiser", "upsampler"])
def test_training_steps_read_nothing_back_from_the_device(build):
    model = build()
    optimizer = model.configure_optimizers()["optimizer"]
    model.to(META).train()
    batch = {"image": torch.randn(BATCH, 1, 8, 8).to(META), "label": torch.tensor([0, 1, 2, 3]).to(META)}
    with DeviceTraffic(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        for step in range(2):
            optimizer.zero_grad(set_to_none=True)
            model.training_step(batch, step).backward()
            optimizer.step()


def test_a_label_out_of_range_is_refused_once_at_the_first_training_batch():
    model = tiny_denoiser()
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 9\]"):
        model.on_train_batch_start({"label": torch.tensor([0, 11])}, 0)
    model.on_train_batch_start({"label": torch.tensor([0, 11])}, 1)  # later batches are not read back
