"""DataLoaders over a :class:`~mtrank.data.dataset.ShardStream` that hand over whole shuffle windows.

A worker process hands each item to the main process through shared memory; what that costs is per item, not
per row (a shared-memory segment and a file descriptor per tensor). So the workers hand over whole windows
(tens of thousands of rows, allocated in shared memory as they are gathered, so nothing is copied on the way)
and the main process cuts them into batches: :class:`WindowBatches` is what the DataModule gives Lightning.
Without workers the same path runs in the main process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mtrank.data.dataset import ShardStream


class WindowStream(IterableDataset):
    """The windows of ``stream`` as items: ``{"tensors": {name: tensor}, "sizes": [batch sizes], "slot": [worker,
    slot of the stream's ring the tensors live in, or -1]}``."""

    def __init__(self, stream: ShardStream):
        super().__init__()
        self.stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        shared = info is not None
        for tensors, sizes, slot in self.stream.iter_windows(by_window=True, shared=shared):
            yield {"tensors": tensors, "sizes": sizes, "slot": [info.id if shared else 0, slot]}


class WindowBatches:
    """Batches of a DataLoader over a :class:`WindowStream`: each window cut into its batches (views, no copy).
    A window gathered into a worker's ring slot releases it once the window and all its batches are gone.

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
        ring = self.dataset.ring
        for window in self.loader:
            ring.release_when_dropped(window["tensors"], *window["slot"])
            pos = 0
            for size in window["sizes"]:
                yield {k: v[pos : pos + size] for k, v in window["tensors"].items()}
                pos += size


def window_loader(stream: ShardStream, **loader_kwargs: Any) -> WindowBatches:
    """Batches of ``stream`` through a DataLoader (``loader_kwargs``: num_workers, pin_memory, ...) that takes
    whole windows from its workers."""
    return WindowBatches(DataLoader(WindowStream(stream), batch_size=None, **loader_kwargs))
