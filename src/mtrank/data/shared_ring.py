"""Shared-memory buffers that DataLoader workers gather windows into, reused once the main process is done.

A fresh shared-memory segment costs page faults on every first touch (~1.7 ms for a 65,536-row window on the
2-core machine of README "Performance", against 0.2 ms for reused heap memory): more than handing the window over.
So each worker keeps a ring of ``slots`` buffers. A worker claims the next slot before it gathers a window into it
(waiting until the main process has released it); the main process releases a slot when every tensor of the window
that lives in it, and every batch cut from them, has been garbage-collected (``weakref.finalize``), so a batch a
consumer keeps is never overwritten. A slot still in use after ``wait_s`` is not waited for: the window gets a
fresh segment of its own, so a consumer that holds on to windows costs memory, never a stall.

The release flags are one small shared tensor made in the main process before the workers start (it travels to
spawned workers with the dataset); the buffers themselves belong to the worker process that made them.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Mapping

import torch

SLOTS = (
    8  # buffers per worker: the loader's prefetch (2 per worker) + the window in use + one gathered ahead, with room
)
MAX_WORKERS = 64  # workers with a ring; more workers get fresh segments
WAIT_S = 0.01  # how long a worker waits for its next slot before it takes a fresh segment


class SharedRing:
    def __init__(self, slots: int = SLOTS, max_workers: int = MAX_WORKERS, wait_s: float = WAIT_S):
        self.slots, self.max_workers, self.wait_s = int(slots), int(max_workers), float(wait_s)
        self.free = torch.ones((self.max_workers, self.slots), dtype=torch.uint8).share_memory_()
        self._buffers: dict[tuple[int, int, str], torch.Tensor] = {}  # this process's buffers
        self._next: dict[int, int] = {}  # worker -> its next slot

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_buffers"], state["_next"] = {}, {}  # a process's buffers stay in it
        return state

    def claim(self, worker: int) -> int:
        """The worker's next slot, marked in use, or -1 (no ring for this worker, or the slot was not released in
        time)."""
        if not 0 <= worker < self.max_workers:
            return -1
        slot = self._next.get(worker, 0)
        self._next[worker] = (slot + 1) % self.slots
        deadline = time.monotonic() + self.wait_s
        while not int(self.free[worker, slot]):
            if time.monotonic() > deadline:
                return -1
            time.sleep(0.0002)
        self.free[worker, slot] = 0
        return slot

    def buffer(self, worker: int, slot: int, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor of ``shape`` in shared memory: slot ``slot``'s buffer ``name`` (grown when too small), or a
        fresh segment for slot -1."""
        numel = math.prod(shape)
        if slot < 0:
            return torch.empty(shape, dtype=dtype).share_memory_()
        key = (worker, slot, name)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self._buffers[key] = torch.empty(max(numel, 1), dtype=dtype).share_memory_()
        # a tensor of its own over the buffer's storage (not a view of the buffer): batches cut from it keep it
        # alive, as they keep a window received from a worker alive in the main process
        return torch.empty(0, dtype=dtype).set_(buf.untyped_storage(), 0, shape)

    def release_when_dropped(self, tensors: Mapping[str, torch.Tensor], worker: int, slot: int) -> None:
        """Release ``slot`` of ``worker`` once every one of ``tensors`` (and every view of them) is gone."""
        if slot < 0:
            return
        left = [len(tensors)]

        def dropped() -> None:
            left[0] -= 1
            if left[0] == 0:
                self.free[worker, slot] = 1

        for t in tensors.values():
            weakref.finalize(t, dropped)
