"""Networks of the DALL-E 2 diffusion prior: map a noised image embedding, its noise level, the caption's
text embedding C_T and the caption's token states to a prediction of the clean image embedding.

Both take ``forward(z, noise_level, text_embedding, tokens, token_mask)`` with z and text_embedding
(B, embed_dim), tokens (B, L, text_width) and token_mask (B, L) True on real tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError, Configurable
from lightning_diffusion.nets.blocks import NoiseLevelEmbedding

SPECIAL_INPUTS = 4  # text embedding, noise level, noised image embedding, output query


class PriorTransformer(Configurable, nn.Module):
    """DALL-E 2's prior network (Ramesh et al. 2022, Sec. 2.2): a transformer over the sequence
    [caption tokens, C_T, noise-level embedding, noised C_I, learned query]; the query's final state,
    projected, is the output. Padding tokens are masked out."""

    def __init__(
        self, embed_dim: int = 64, text_width: int = 64, width: int = 128, layers: int = 4, heads: int = 4
    ) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"the prior's width {width} must be a multiple of heads={heads}.")
        self.embed_dim, self.text_width = embed_dim, text_width
        self.token_in = nn.Linear(text_width, width)
        self.text_embedding_in = nn.Linear(embed_dim, width)
        self.noise_embed = NoiseLevelEmbedding(width, width)
        self.z_in = nn.Linear(embed_dim, width)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.input_type = nn.Parameter(torch.randn(SPECIAL_INPUTS + 1, width) * 0.02)  # last: tokens
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, 0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))

    def forward(
        self, z: Tensor, noise_level: Tensor, text_embedding: Tensor, tokens: Tensor, token_mask: Tensor
    ) -> Tensor:
        batch = z.shape[0]
        dtype = self.query.dtype
        special = torch.stack(
            [
                self.text_embedding_in(text_embedding.to(dtype)),
                self.noise_embed(noise_level),
                self.z_in(z.to(dtype)),
                self.query.expand(batch, -1),
            ],
            dim=1,
        )
        sequence = torch.cat(
            [self.token_in(tokens.to(dtype)) + self.input_type[-1], special + self.input_type[:-1]], dim=1
        )
        keep = torch.cat([token_mask, token_mask.new_ones(batch, SPECIAL_INPUTS)], dim=1)
        h = self.transformer(sequence, src_key_padding_mask=~keep)
        return self.out(h[:, -1])


class PriorMLP(Configurable, nn.Module):
    """A small prior for tiny settings: an MLP on [noised C_I, C_T, mean of the caption's token states,
    noise-level embedding] with residual blocks."""

    def __init__(self, embed_dim: int = 64, text_width: int = 64, width: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.embed_dim, self.text_width = embed_dim, text_width
        self.noise_embed = NoiseLevelEmbedding(width, width)
        self.inputs = nn.Linear(2 * embed_dim + text_width, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(layers)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))

    def forward(
        self, z: Tensor, noise_level: Tensor, text_embedding: Tensor, tokens: Tensor, token_mask: Tensor
    ) -> Tensor:
        dtype = self.out[1].weight.dtype
        weights = token_mask.to(dtype)[..., None]
        pooled = (tokens.to(dtype) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        h = self.inputs(torch.cat([z.to(dtype), text_embedding.to(dtype), pooled], dim=1))
        h = h + self.noise_embed(noise_level)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)
