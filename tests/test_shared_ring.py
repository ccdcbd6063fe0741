import gc

import torch

from mtrank.data.shared_ring import SharedRing


def test_a_slot_is_released_only_when_every_tensor_and_view_of_its_window_is_gone():
    ring = SharedRing(slots=2, wait_s=0.0)
    slot = ring.claim(0)
    assert slot == 0 and int(ring.free[0, 0]) == 0
    window = {"a": ring.buffer(0, slot, "a", (6, 2), torch.float32), "b": ring.buffer(0, slot, "b", (6,), torch.int64)}
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
    # the slots go round; a slot still in use is not waited for: the window gets a fresh segment (-1)
    assert ring.claim(0) == 1
    assert ring.claim(0) == 0
    assert ring.claim(0) == -1  # slot 1 was never released
    fresh = ring.buffer(0, -1, "a", (3, 2), torch.float32)
    assert fresh.is_shared() and fresh.shape == (3, 2)


def test_a_slots_buffer_is_reused_and_grows_when_a_window_is_larger():
    ring = SharedRing(slots=1, wait_s=0.0)
    a = ring.buffer(0, 0, "x", (4, 3), torch.float32)
    b = ring.buffer(0, 0, "x", (2, 3), torch.float32)
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    c = ring.buffer(0, 0, "x", (8, 3), torch.float32)
    assert c.shape == (8, 3) and c.untyped_storage().nbytes() >= 8 * 3 * 4
