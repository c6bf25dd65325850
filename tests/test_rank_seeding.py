"""Under DDP every rank is seeded alike by seed_everything; training draws must still differ per rank."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tiny import tiny_denoiser


def _draws_after_train_start(world_size: int, rank: int) -> torch.Tensor:
    model = tiny_denoiser()
    model._trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    torch.manual_seed(0)
    model.on_train_start()
    return torch.rand(4)


def test_each_rank_draws_its_own_training_noise():
    rank0, rank1 = _draws_after_train_start(2, 0), _draws_after_train_start(2, 1)
    assert not torch.equal(rank0, rank1)
    assert torch.equal(rank0, _draws_after_train_start(2, 0))  # reproducible per rank


def test_a_single_process_keeps_its_seeded_stream():
    torch.manual_seed(0)
    expected = torch.rand(4)
    assert torch.equal(_draws_after_train_start(1, 0), expected)
