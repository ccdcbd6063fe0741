"""DataLoaders over a :class:`~mtrank.data.dataset.ShardStream` that hand over whole shuffle windows.

A worker gathers each whole window (tens of thousands of rows) into a slot of the stream's shared-memory ring, made
by the main process before the workers start (:mod:`mtrank.data.shared_ring`), and hands over only where the
window lies there; nothing is copied on the way. The main process cuts windows into batches:
:class:`WindowBatches` is what the DataModule gives Lightning. Without workers the same path runs in the main
process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mtrank.data.dataset import ShardStream
from mtrank.data.shared_ring import SharedRing, SlotWindow


class WindowStream(IterableDataset):
    """The windows of ``stream`` as items: ``{"tensors": {name: tensor}, "sizes": [batch sizes]}``. In a worker,
    ``"tensors"`` of a window gathered into a ring slot is a :class:`SlotWindow`, which the main process unpickles
    into the tensors."""

    def __init__(self, stream: ShardStream):
        super().__init__()
        self.stream = stream
        self.ring = SharedRing()  # the buffers are made before the loader's workers start (WindowBatches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        ring = self.ring if info is not None else None
        for tensors, sizes, slot in self.stream.iter_windows(by_window=True, ring=ring):
            yield {"tensors": SlotWindow(ring, info.id, slot, tensors) if slot >= 0 else tensors, "sizes": sizes}


class WindowBatches:
    """Batches of a DataLoader over a :class:`WindowStream`: each window cut into its batches (views, no copy).
    A window in a ring slot releases it once the window and all its batches are gone.

    ``dataset`` is the ShardStream (the training module sets its epoch), ``len()`` its number of batches."""

    def __init__(self, loader: DataLoader):
        if not isinstance(loader.dataset, WindowStream):
            raise TypeError("WindowBatches needs a DataLoader over a WindowStream")
        self.loader = loader

    @property
    def dataset(self) -> ShardStream:
        return self.loader.dataset.stream

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.loader.num_workers > 0:  # the ring's buffers, made before the workers start (kept once made)
            self.loader.dataset.ring.allocate(self.loader.num_workers, self.dataset.window_bytes())
        for window in self.loader:
            pos = 0
            for size in window["sizes"]:
                yield {k: v[pos : pos + size] for k, v in window["tensors"].items()}
                pos += size


def window_loader(stream: ShardStream, **loader_kwargs: Any) -> WindowBatches:
    """Batches of ``stream`` through a DataLoader (``loader_kwargs``: num_workers, pin_memory, ...) that takes
    whole windows from its workers."""
    return WindowBatches(DataLoader(WindowStream(stream), batch_size=None, **loader_kwargs))
