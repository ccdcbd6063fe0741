import gc
import pickle

import pytest
import torch

from mtrank.data.shared_ring import SharedRing, SlotWindow


def _window(ring: SharedRing, worker: int, slot: int) -> dict[str, torch.Tensor]:
    """A window as a worker gathers it: a float matrix and an int64 vector, one after the other in the slot, and a
    [6, 2] matrix laid out column by column (the transpose of a C-contiguous [2, 6] one, as the stream makes)."""
    a = ring.view(worker, slot, 0, (6, 2), torch.float32)
    b = ring.view(worker, slot, 64, (6,), torch.int64)
    c = ring.view(worker, slot, 128, (2, 6), torch.int64).T
    a.copy_(torch.arange(12, dtype=torch.float32).reshape(6, 2))
    b.copy_(torch.arange(6) * 10)
    c.copy_(torch.arange(12).reshape(6, 2) + 100)
    return {"a": a, "b": b, "c": c}


def test_a_slot_is_released_only_when_every_tensor_and_view_of_its_window_is_gone():
    ring = SharedRing(slots=2, wait_s=0.0)
    ring.allocate(workers=1, slot_bytes=256)
    slot = ring.claim(0, 112)
    assert slot == 0 and int(ring.free[0, 0]) == 0
    window = _window(ring, 0, slot)
    assert window["a"].is_shared() and window["a"].is_contiguous()
    ring.release_when_dropped(window, 0, slot)
    batch = {k: v[2:4] for k, v in window.items()}
    del window
    gc.collect()
    assert int(ring.free[0, 0]) == 0  # a batch (a view) is still alive
    keep_b = batch["b"]
    del batch
    gc.collect()
    assert int(ring.free[0, 0]) == 0  # one tensor of the window still is
    del keep_b
    gc.collect()
    assert int(ring.free[0, 0]) == 1
    # the slots go round; a slot still in use is not waited for: the window gets fresh tensors (-1)
    assert ring.claim(0, 112) == 1
    assert ring.claim(0, 112) == 0
    assert ring.claim(0, 112) == -1  # slot 1 was never released


def test_no_slot_for_a_window_too_large_or_a_worker_without_buffers():
    ring = SharedRing(slots=2, wait_s=0.0)
    assert ring.claim(0, 8) == -1  # nothing allocated yet
    ring.allocate(workers=2, slot_bytes=100)
    assert ring.slot_bytes == 128  # rounded up to the alignment
    assert ring.claim(1, 128) == 0
    assert ring.claim(0, 129) == -1
    assert ring.claim(2, 8) == -1
    before = ring.buffers
    ring.allocate(workers=1, slot_bytes=64)  # smaller: the buffers are kept
    assert ring.buffers is before


def test_a_slot_window_pickles_to_its_place_and_unpickles_to_the_same_memory():
    """A worker hands over only where the window lies; the receiving process's tensors are views of the same
    shared buffer (no copy), and dropping them releases the slot."""
    ring = SharedRing(slots=2, wait_s=0.0)
    ring.allocate(workers=1, slot_bytes=256)
    slot = ring.claim(0, 224)
    sent = _window(ring, 0, slot)
    payload = pickle.dumps({"tensors": SlotWindow(ring, 0, slot, sent), "sizes": [3, 3]})
    assert len(payload) < 1000
    got = pickle.loads(payload)["tensors"]
    assert set(got) == {"a", "b", "c"}
    for k in sent:
        assert torch.equal(got[k], sent[k]) and got[k].data_ptr() == sent[k].data_ptr()
        assert got[k].stride() == sent[k].stride()
    assert got["c"].stride() == (1, 6)  # column by column, as sent
    assert int(ring.free[0, slot]) == 0
    del got
    gc.collect()
    assert int(ring.free[0, slot]) == 1


def test_a_slot_window_from_an_unknown_ring_is_an_error():
    ring = SharedRing(slots=1, wait_s=0.0)
    ring.allocate(workers=1, slot_bytes=256)
    payload = pickle.dumps(SlotWindow(ring, 0, 0, _window(ring, 0, 0)))
    del ring
    gc.collect()
    with pytest.raises(RuntimeError, match="does not hold the ring"):
        pickle.loads(payload)
