"""PyTorch access to a dataset (the ``patchpack[torch]`` extra), in exactly the Keras adapter's order::

    from patchpack.torch import dataloader

    train = dataloader("data/patches", "train", batch_size=64, seed=0, num_workers=2)
    for epoch in range(10):
        train.set_epoch(epoch)
        for images, labels in train:  # images: uint8 (n, h, w, c); labels: int64 (n,)
            ...

See :mod:`patchpack.training.torch_adapter` for how the order is kept with any ``num_workers``.
"""

from __future__ import annotations

from patchpack.training.torch_adapter import EpochSampler, PatchLoader, ShardBatches, dataloader

__all__ = ["EpochSampler", "PatchLoader", "ShardBatches", "dataloader"]
