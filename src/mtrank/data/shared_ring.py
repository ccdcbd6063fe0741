"""Shared-memory buffers that DataLoader workers gather windows into, made once by the main process and reused.

Handing a tensor from a worker to the main process the ordinary way (torch's shared-memory reductions) costs a
socket connection and a file-descriptor transfer per tensor, about 0.8 ms on the 2-core machine of README
"Performance": more than gathering a 65,536-row window. A fresh shared-memory segment also costs page faults on
every first touch. So :meth:`SharedRing.allocate` makes, in the main process and before the workers start, one
flat byte buffer per (worker, slot), big enough for the largest window; the buffers travel to the workers once,
with the dataset. A worker claims its next slot, gathers a window into views of that slot's buffer, and hands over
only a :class:`SlotWindow`: the slot and where each tensor lies in it (a few hundred bytes of pickle). Unpickled in
the main process, it becomes the same tensors again, as views of the main process's mapping of the same buffer: no
copy, no descriptor.

The main process releases a slot when every tensor of the window, and every batch cut from them, has been
garbage-collected (``weakref.finalize``), so a batch a consumer keeps is never overwritten. A worker whose slot is
still in use after ``wait_s`` does not wait: the window gets fresh tensors (handed over the ordinary way), so a
consumer that holds on to windows costs memory, never a stall. Workers beyond those allocated do the same.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Mapping, Sequence

import torch

SLOTS = (
    6  # buffers per worker: the loader's prefetch (2 per worker) + the window in use + one gathered ahead, with room
)
WAIT_S = 0.01  # how long a worker waits for its next slot before it takes fresh tensors
ALIGN = 64  # byte alignment of each tensor in a slot

# this process's rings by id, so that a SlotWindow unpickled here finds the buffers it points into
_RINGS: weakref.WeakValueDictionary[str, SharedRing] = weakref.WeakValueDictionary()

# (name, byte offset, shape, strides in elements, dtype) per tensor
Layout = Sequence[tuple[str, int, tuple[int, ...], tuple[int, ...], torch.dtype]]


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class SharedRing:
    def __init__(self, slots: int = SLOTS, wait_s: float = WAIT_S):
        self.id = uuid.uuid4().hex
        self.slots, self.wait_s = int(slots), float(wait_s)
        self.workers, self.slot_bytes = 0, 0
        self.free = torch.ones((0, self.slots), dtype=torch.uint8)  # 1: the main process is done with the slot
        self.buffers: list[torch.Tensor] = []  # flat uint8, worker-major
        self._next: dict[int, int] = {}  # worker -> its next slot (in the worker's process)
        _RINGS[self.id] = self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_next"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        _RINGS.setdefault(self.id, self)  # a copy made in the process that holds the ring does not replace it

    def allocate(self, workers: int, slot_bytes: int) -> None:
        """Buffers for ``workers`` workers of ``slot_bytes`` bytes per slot, in shared memory; call it in the main
        process before the workers start. Buffers at least that large are kept."""
        if workers <= self.workers and slot_bytes <= self.slot_bytes:
            return
        self.workers, self.slot_bytes = max(workers, self.workers), max(aligned(slot_bytes), self.slot_bytes)
        self.free = torch.ones((self.workers, self.slots), dtype=torch.uint8).share_memory_()
        self.buffers = [
            torch.empty(self.slot_bytes, dtype=torch.uint8).share_memory_() for _ in range(self.workers * self.slots)
        ]

    def claim(self, worker: int, nbytes: int) -> int:
        """The worker's next slot for a window of ``nbytes`` bytes, marked in use, or -1 (no buffer for this worker
        or this size, or the slot was not released in time)."""
        if not 0 <= worker < self.workers or nbytes > self.slot_bytes:
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

    def view(
        self,
        worker: int,
        slot: int,
        offset: int,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        strides: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """A tensor of ``shape`` at byte ``offset`` of the slot's buffer, C-contiguous unless ``strides`` (in
        elements) are given (a tensor of its own over the buffer's storage, not a view of the flat buffer: batches
        cut from it keep it alive)."""
        storage = self.buffers[worker * self.slots + slot].untyped_storage()
        size = dtype.itemsize
        if strides is None:
            strides = torch.empty(shape, device="meta").stride()
        return torch.empty(0, dtype=dtype).set_(storage, offset // size, shape, strides)

    def window(self, worker: int, slot: int, layout: Layout) -> dict[str, torch.Tensor]:
        return {
            name: self.view(worker, slot, offset, shape, dtype, strides)
            for name, offset, shape, strides, dtype in layout
        }

    def release_when_dropped(self, tensors: Mapping[str, torch.Tensor], worker: int, slot: int) -> None:
        """Release ``slot`` of ``worker`` once every one of ``tensors`` (and every view of them) is gone."""
        if slot < 0:
            return
        free, left = self.free, [len(tensors)]

        def dropped() -> None:
            left[0] -= 1
            if left[0] == 0:
                free[worker, slot] = 1

        for t in tensors.values():
            weakref.finalize(t, dropped)


class SlotWindow:
    """A window gathered into a ring slot, as a worker hands it over: pickled, it is the ring's id, the slot and
    the layout; unpickled in the main process, it is the window's tensors (:func:`_rebuild`)."""

    def __init__(self, ring: SharedRing, worker: int, slot: int, tensors: Mapping[str, torch.Tensor]):
        self.key = (ring.id, worker, slot)
        self.layout = [
            (name, t.storage_offset() * t.element_size(), tuple(t.shape), tuple(t.stride()), t.dtype)
            for name, t in tensors.items()
        ]

    def __reduce__(self):
        return _rebuild, (*self.key, self.layout)


def _rebuild(ring_id: str, worker: int, slot: int, layout: Layout) -> dict[str, torch.Tensor]:
    ring = _RINGS.get(ring_id)
    if ring is None:
        raise RuntimeError(f"a window of shared-memory ring {ring_id} reached a process that does not hold the ring")
    tensors = ring.window(worker, slot, layout)
    ring.release_when_dropped(tensors, worker, slot)
    return tensors
