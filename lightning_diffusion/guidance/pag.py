"""Perturbed-attention guidance (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with
Perturbed-Attention Guidance").

A second pass replaces the self-attention map Softmax(Q K^T / sqrt(d)) of chosen U-Net layers by the
identity matrix, so each image token attends only to itself and the attention output is the token's own
value projection (I V = V). Guidance steers away from this structurally degraded estimate; the paper's
update is eps~ = eps + s_PAG (eps - eps^), and since D is affine in eps at fixed (z, t) the same holds
for D. In the project's convention (DESIGN.md)

    D~ = D^ + s (D - D^) = D + (s - 1)(D - D^),    s = s_PAG + 1,

so s = 1 is the plain estimate (one pass) and s = 0 the perturbed one. It needs no condition, so it
guides unconditional models too. Combined with CFG as the paper does (both differences added), at
``cfg_scale`` (ours, = Ho & Salimans' w + 1): D~ = D + (cfg_scale - 1)(D - D(∅)) + (s - 1)(D - D^).

Our ``AttentionBlock`` may also attend to context tokens (cross-attention to a caption) in the same
softmax. Only the self-attention part is perturbed: the image-to-image block of the attention map is
the identity, the image-to-context block is kept, so each token attends to itself and to the context
tokens (the softmax runs over those); without context tokens the output is exactly V.

The perturbation is applied through hooks on the blocks' submodules (``qkv``'s output is read,
``proj_out``'s input replaced), for the perturbed rows of a batch only, and removed after the call, so
the network's code and weights are untouched. Both passes run as one forward over the stacked batch
(the hooks act on its second half), as CFG does: one network call per step whose kernels serve both
passes, instead of two calls of half the size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError
from lightning_diffusion.guidance.base import Condition, DiffusionModel, Guidance, Guided
from lightning_diffusion.guidance.passes import denoise_each, weighted_sum
from lightning_diffusion.guidance.registry import GuidanceMethod, register_method, with_options
from lightning_diffusion.nets.blocks import AttentionBlock

# The authors' Stable Diffusion pipeline perturbs the first attention layer of the middle block ("m0");
# in our U-Net that is the middle block's attention, which every UNet has.
DEFAULT_LAYERS = ("down.middle.0.attn",)


@dataclass(frozen=True)
class PAGOptions:
    """PAG's settings: the attention layers to perturb (names in the denoiser network's
    ``named_modules()``) and the CFG scale it is combined with (1: no CFG)."""

    layers: tuple[str, ...] = DEFAULT_LAYERS
    cfg_scale: float = 1.0


def identity_attention(
    qkv: Tensor, num_heads: int, context_kv: Tensor | None = None, context_mask: Tensor | None = None
) -> Tensor:
    """The attention output (B, C, H, W) of an ``AttentionBlock`` whose self-attention map is the identity,
    from its ``qkv`` output (B, 3C, H, W) and, with cross-attention, its ``context_kv`` output (B, L, 2C)
    and mask (B, L): each token's value, mixed only with the context tokens' values it attends to."""
    b, channels, h, w = qkv.shape[0], qkv.shape[1] // 3, qkv.shape[2], qkv.shape[3]
    if context_kv is None:
        return qkv[:, 2 * channels :]
    head_dim = channels // num_heads
    q, k, v = qkv.reshape(b, 3, num_heads, head_dim, h * w).transpose(-1, -2).unbind(dim=1)
    context_k, context_v = (
        context_kv.reshape(b, -1, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4).to(q.dtype).unbind(0)
    )
    scale = head_dim**-0.5
    own_logit = (q * k).sum(-1, keepdim=True) * scale
    context_logits = q @ context_k.transpose(-1, -2) * scale
    if context_mask is not None:
        context_logits = context_logits.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    weights = torch.cat([own_logit, context_logits], dim=-1).softmax(dim=-1)
    out = weights[..., :1] * v + weights[..., 1:] @ context_v
    return out.transpose(-1, -2).reshape(b, channels, h, w)


def _perturb_block(block: AttentionBlock, first_row: int) -> list[Any]:
    """Hooks that give ``block`` identity self-attention for batch rows ``first_row`` onwards."""
    seen: dict[str, Any] = {}

    def read_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.clear()
        seen["mask"] = args[2] if len(args) > 2 else kwargs.get("context_mask")

    def read(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            seen[name] = output[first_row:]

        return hook

    def replace_attention(module: nn.Module, args: tuple) -> tuple[Tensor]:
        (attention,) = args
        mask = seen.get("mask")
        perturbed = identity_attention(
            seen["qkv"], block.num_heads, seen.get("context_kv"), None if mask is None else mask[first_row:]
        )
        return (torch.cat([attention[:first_row], perturbed.to(attention.dtype)]),)

    handles = [
        block.register_forward_pre_hook(read_mask, with_kwargs=True),
        block.qkv.register_forward_hook(read("qkv")),
        block.proj_out.register_forward_pre_hook(replace_attention),
    ]
    if block.context_kv is not None:
        handles.append(block.context_kv.register_forward_hook(read("context_kv")))
    return handles


@contextmanager
def perturbed_attention(blocks: Sequence[AttentionBlock], first_row: int = 0) -> Iterator[None]:
    """Within the block, ``blocks`` compute identity self-attention for batch rows ``first_row`` onwards
    (the rows before are untouched); the hooks are removed on exit, also after an exception."""
    handles = [handle for block in blocks for handle in _perturb_block(block, first_row)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def attention_layers(model: DiffusionModel | nn.Module) -> dict[str, AttentionBlock]:
    """The attention layers of a denoiser's network (``model.net``, or ``model`` itself), by module name."""
    network = getattr(model, "net", model)
    if not isinstance(network, nn.Module):
        raise ConfigError(
            f"perturbed-attention guidance hooks a network's attention layers, but {type(model).__name__} "
            "has no torch network (a `net` attribute); use a Denoiser."
        )
    return {name: module for name, module in network.named_modules() if isinstance(module, AttentionBlock)}


def select_layers(model: DiffusionModel | nn.Module, names: Sequence[str]) -> list[AttentionBlock]:
    """The attention blocks called ``names``; a ConfigError listing the network's attention layers when a
    name is not one of them, or when the network is compiled (a compiled network ignores the hooks)."""
    layers = attention_layers(model)
    unknown = [name for name in names if name not in layers]
    if unknown:
        available = ", ".join(layers) or "none: this network has no attention layers"
        raise ConfigError(
            f"PAG layers {unknown} are not attention layers of the network; choose from {available}."
        )
    network = getattr(model, "net", model)
    if getattr(network, "_compiled_call_impl", None) is not None:
        raise ConfigError(
            "perturbed-attention guidance changes attention layers through hooks, which a compiled network "
            "skips; sample without --compile."
        )
    return [layers[name] for name in names]


class PerturbedAttentionGuidance(Guidance):
    """PAG at scale ``s`` on the attention ``layers`` (default: the middle block's), optionally with CFG
    at ``cfg_scale``: the plain, null (with CFG) and perturbed rows in one batched forward pass, the hooks
    acting on the perturbed rows only. Terms whose coefficient is 0 are not computed: s = cfg_scale = 1
    is one plain pass, s = 0 one perturbed pass. The reference is the plain D (None where not computed)."""

    def __init__(
        self, scale: float, *, layers: Sequence[str] = DEFAULT_LAYERS, cfg_scale: float = 1.0
    ) -> None:
        if isinstance(layers, str) or not layers:
            raise ConfigError(
                f"PAG layers must be a non-empty list of attention layer names, got {layers!r} "
                f"(default {list(DEFAULT_LAYERS)})."
            )
        self.scale = float(scale)
        self.layers = tuple(dict.fromkeys(layers))
        self.cfg_scale = float(cfg_scale)

    def check_model(self, model: DiffusionModel) -> None:
        """Refuse a model whose network lacks one of the layers (listing them), before sampling starts."""
        select_layers(model, self.layers)

    def guide(self, model: DiffusionModel, z: Tensor, t: Tensor, cond: Condition) -> Guided:
        null_keys = model.null_condition(z.shape[0], z.device)
        plain = {**null_keys, **cond}  # a key the condition leaves out means ∅: batch it as such
        terms = [
            (coefficient, condition, perturb)
            for coefficient, condition, perturb in (
                (self.scale + self.cfg_scale - 1.0, plain, False),
                (1.0 - self.cfg_scale, {**cond, **null_keys}, False),
                (1.0 - self.scale, plain, True),  # last: the hooks perturb the rows from its first on
            )
            if coefficient != 0.0
        ]
        perturbing = terms[-1][2]
        blocks = select_layers(model, self.layers) if perturbing else []
        with perturbed_attention(blocks, z.shape[0] * (len(terms) - 1)):
            estimates = denoise_each(model, z, t, [condition for _, condition, _ in terms])
        guided = weighted_sum(estimates, [coefficient for coefficient, _, _ in terms])
        first_is_plain = terms[0][1] is plain and not terms[0][2]
        return Guided(guided, estimates[0] if first_is_plain else None)


register_method(
    GuidanceMethod(
        "pag",
        build=with_options(PerturbedAttentionGuidance),
        options=PAGOptions,
        conditional_denoiser=False,  # the perturbed pass needs no null condition: unconditional models too
    )
)
