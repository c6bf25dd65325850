"""Text encoder: a word-level tokenizer built from the data's captions and a small transformer.

The vocabulary is a constructor argument, so it is saved in every checkpoint that holds the encoder
(``python -m lightning_diffusion vocab --config ...`` prints the one a data set needs). Unknown words
map to ``<unk>`` and captions longer than the context are truncated; both warn once per caption set.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_diffusion.config import ConfigError, Configurable

PAD, START, END, UNKNOWN = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNKNOWN)
WORD_PATTERN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(caption: str) -> list[str]:
    """Lower-case words and single punctuation marks of a caption: what the tokenizer maps to ids."""
    return WORD_PATTERN.findall(caption.lower())


def caption_vocabulary(captions: Sequence[str]) -> list[str]:
    """The sorted distinct words of ``captions``: a vocabulary that tokenizes all of them."""
    return sorted({word for caption in captions for word in split_words(caption)})


class Tokenized(NamedTuple):
    """Token ids (B, L), a mask of real tokens (B, L) and the position of each caption's end token (B,)."""

    ids: Tensor
    mask: Tensor
    end: Tensor


class Tokenizer:
    """Maps captions to ``<start> words <end> <pad>...`` ids of a fixed ``context_length``.

    The empty caption (the null condition ∅ of text models) is ``<start> <end>``."""

    def __init__(self, vocab: Sequence[str], context_length: int) -> None:
        if context_length < 3:
            raise ConfigError(
                f"context_length must be at least 3 (start, a word, end), got {context_length}."
            )
        duplicates = sorted({word for word in vocab if list(vocab).count(word) > 1})
        special = sorted(set(vocab) & set(SPECIAL_TOKENS))
        if duplicates or special:
            raise ConfigError(
                f"the vocabulary must list distinct words without the special tokens {SPECIAL_TOKENS}; "
                f"got duplicates {duplicates} and special tokens {special}."
            )
        self.words = [*SPECIAL_TOKENS, *vocab]
        self.index = {word: i for i, word in enumerate(self.words)}
        self.context_length = context_length

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, captions: Sequence[str], device: torch.device | str = "cpu") -> Tokenized:
        """Token ids of ``captions`` (a list of strings); warns about unknown words and truncation."""
        if isinstance(captions, str):
            raise ConfigError("captions must be a list of strings, got a single string; wrap it in a list.")
        room = self.context_length - 2
        ids = torch.full((len(captions), self.context_length), self.index[PAD], dtype=torch.long)
        unknown: set[str] = set()
        longest = 0
        for row, caption in enumerate(captions):
            words = split_words(caption)
            longest = max(longest, len(words))
            unknown.update(word for word in words if word not in self.index)
            tokens = [START, *words[:room], END]
            unknown_id = self.index[UNKNOWN]
            ids[row, : len(tokens)] = torch.tensor([self.index.get(word, unknown_id) for word in tokens])
        if unknown:
            warnings.warn(
                f"words not in the text encoder's vocabulary were mapped to {UNKNOWN}: "
                f"{sorted(unknown)[:20]}; retrain with a vocabulary that includes them "
                "(python -m lightning_diffusion vocab).",
                stacklevel=2,
            )
        if longest > room:
            warnings.warn(
                f"a caption of {longest} words was truncated to the text encoder's context of {room} words "
                f"(context_length {self.context_length} minus start and end tokens).",
                stacklevel=2,
            )
        mask = ids != self.index[PAD]
        return Tokenized(ids.to(device), mask.to(device), (mask.sum(dim=1) - 1).to(device))


class TextEncoding(NamedTuple):
    """A caption batch encoded: pooled (B, width), per-token (B, L, width) and the real-token mask (B, L)."""

    pooled: Tensor
    tokens: Tensor
    mask: Tensor


class TextTransformer(Configurable, nn.Module):
    """Word-level transformer encoder (pre-norm, bidirectional with a padding mask).

    ``pooled`` is the final-layer state at the end token, as in CLIP's text tower (Radford et al. 2021);
    ``tokens`` feed cross-attention (GLIDE, Nichol et al. 2022, Sec. 3)."""

    def __init__(
        self,
        vocab: Sequence[str],
        context_length: int = 16,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"the text encoder's width {width} must be a multiple of heads={heads}.")
        self.tokenizer = Tokenizer(vocab, context_length)
        self.vocab = list(vocab)
        self.context_length = context_length
        self.width = width
        self.token_embedding = nn.Embedding(len(self.tokenizer), width)
        self.position_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)

    def forward(self, captions: Sequence[str]) -> TextEncoding:
        """Encode a list of captions on the encoder's device."""
        device = self.token_embedding.weight.device
        ids, mask, end = self.tokenizer.encode(captions, device)
        h = self.token_embedding(ids) + self.position_embedding
        h = self.final_norm(self.transformer(h, src_key_padding_mask=~mask))
        pooled = h[torch.arange(len(ids), device=device), end]
        return TextEncoding(pooled, h, mask)
