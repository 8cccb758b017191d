"""A :class:`~patchpack.training.loader.Split` as a ``keras.utils.PyDataset``: the one Keras adapter.

Nothing but training code imports this module, so ``import patchpack`` never loads Keras::

    from patchpack import open_dataset
    from patchpack.training.keras_adapter import ShardSequence
    from patchpack.training.loader import BatchOptions

    with open_dataset("data/patches") as dataset:
        train = ShardSequence(dataset.split("train"), BatchOptions(64, seed=0))
        model.fit(train, epochs=10, shuffle=False)  # the order is already shuffled, by seed and epoch
"""

from __future__ import annotations

import keras
import numpy as np

from patchpack.training.loader import BatchOptions, Split


class ShardSequence(keras.utils.PyDataset):  # type: ignore[misc]  # Keras ships no type hints
    """Batch ``i`` of the current epoch, by random access, so Keras' worker threads read ahead.

    The groups that neighbouring batches share are read once and cached. It starts at
    ``options.epoch`` and moves to the next epoch's order at each ``on_epoch_end``.
    """

    def __init__(self, split: Split, options: BatchOptions, *, max_queue_size: int = 10) -> None:
        super().__init__(workers=max(1, options.workers), max_queue_size=max_queue_size)
        self.split = split
        self.options = options
        self._source = split.epoch_source(options)

    def __len__(self) -> int:
        return self._source.num_batches

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        return self._source.batch(index)

    def on_epoch_end(self) -> None:
        self.options = self.options.next_epoch()
        self._source = self.split.epoch_source(self.options)
