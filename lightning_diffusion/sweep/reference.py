"""Real-data reference features, computed once by rank 0 and cached on disk, memory-mapped by every rank.

A cache file holds the features (N, D) float32 and the sha256 of their bytes. It is written atomically,
and a file that is truncated, corrupt or of another layout is detected on reading (torch cannot load
it, or the digest differs), logged and rebuilt: never read as numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_diffusion import distributed
from lightning_diffusion.atomic import atomic_write
from lightning_diffusion.metrics import FeatureExtractor

log = logging.getLogger(__name__)


def reference_key(
    source_spec: Any, image_shape: Sequence[int], split: str, extractor: str, count: int
) -> str:
    """Cache key of real-data features: data source, split, image shape, extractor (network and a digest
    of its weights, see ``FeatureExtractor.name``) and count."""
    payload = json.dumps([source_spec, list(image_shape), split, extractor, count], sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def features_digest(features: Tensor) -> str:
    """sha256 of a contiguous CPU tensor's bytes, read in place (a memory-mapped tensor is not copied)."""
    return hashlib.sha256(features.contiguous().numpy().data).hexdigest()


def load_cached(cache_file: Path, verify: bool = True) -> Tensor | None:
    """The cached features, memory-mapped; None (with a warning) when the file cannot be trusted."""
    try:
        record = torch.load(cache_file, weights_only=True, mmap=True)
        features = record["features"]
        valid = features.ndim == 2 and features.dtype == torch.float32
        if valid and verify:
            valid = features_digest(features) == record["sha256"]
    except Exception as error:  # torch raises many kinds for a truncated or foreign file
        log.warning("reference features: %s is unreadable (%s); recomputing it", cache_file, error)
        return None
    if not valid:
        log.warning("reference features: %s does not match its checksum; recomputing it", cache_file)
        return None
    return features


def reference_features(
    real_batches: Callable[[], Iterable[Tensor]],
    extractor: FeatureExtractor,
    cache_file: Path,
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """Real-data features (N, D) in float32, computed once by rank 0 and cached on disk; every rank
    memory-maps the file (50,000 x 2048 Inception features are 400 MB). Rank 0 verifies the file and logs
    how many real images it encoded: 0 on a cache hit."""
    if distributed.rank() == 0:
        if cache_file.is_file() and load_cached(cache_file) is not None:
            log.info("reference features: cache hit (0 real images encoded), %s", cache_file)
        else:
            features = torch.cat(
                [
                    extractor.features_and_logits(chunk.to(device))[0].float().cpu()
                    for batch in real_batches()
                    for chunk in batch.split(batch_size)
                ]
            ).contiguous()
            record = {"features": features, "sha256": features_digest(features)}
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, lambda f: torch.save(record, f), mode="wb")
            log.info(
                "reference features: %d real images encoded with %s, cached in %s",
                len(features),
                extractor.name,
                cache_file,
            )
    distributed.barrier()
    features = load_cached(cache_file, verify=False)
    if features is None:
        raise RuntimeError(f"the reference feature cache {cache_file} changed while the sweep read it")
    return features
