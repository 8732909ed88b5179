"""KeysValues / KVCache: append by position, capacity checks, private clones, in-place refresh."""

import pytest
import torch

from zerokv.cache import KeysValues, KVCache

SPEC = (1, 2, 4, 8, 2)  # n, num_heads, max_tokens, embed_dim, num_layers -> head_dim 4


def tokens(t: int, value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, 2, t, 4), value)


def test_update_get_size():
    kv = KeysValues(*SPEC)
    assert kv.size == 0 and kv.spec == SPEC and len(kv) == 2
    for layer in kv:
        layer.update(tokens(1, 1.0), tokens(1, -1.0))
    kv[0].update(tokens(2, 2.0), tokens(2, -2.0))
    assert kv.size == 3 and kv[1].size == 1
    k, v = kv[0].get()
    assert k.shape == (1, 2, 3, 4) and kv[0].shape == (1, 2, 3, 4)
    assert k[0, 0, :, 0].tolist() == [1.0, 2.0, 2.0]
    assert v[0, 1, :, 3].tolist() == [-1.0, -2.0, -2.0]


def test_overflow_names_both_sizes():
    layer = KVCache(1, 2, 4, 4)
    layer.update(tokens(3, 0.0), tokens(3, 0.0))
    with pytest.raises(ValueError, match=r"3 tokens stored \+ 2 new > capacity 4"):
        layer.update(tokens(2, 0.0), tokens(2, 0.0))
    assert layer.size == 3  # checked before writing


@pytest.mark.parametrize("k_shape,v_shape", [
    ((1, 3, 1, 4), (1, 3, 1, 4)),   # wrong heads
    ((1, 2, 1, 5), (1, 2, 1, 5)),   # wrong head_dim
    ((2, 2, 1, 4), (2, 2, 1, 4)),   # wrong n
    ((1, 2, 1, 4), (1, 2, 2, 4)),   # k and v differ
    ((2, 1, 4), (2, 1, 4)),         # not 4-d
])
def test_wrong_shape_raises(k_shape, v_shape):
    layer = KVCache(1, 2, 4, 4)
    with pytest.raises(ValueError, match="do not fit"):
        layer.update(torch.zeros(k_shape), torch.zeros(v_shape))
    assert layer.size == 0


@pytest.mark.parametrize("args,bad", [
    ((0, 2, 4, 8, 2), "n=0"), ((1, 2, -4, 8, 2), "max_tokens=-4"), ((1, 2, 4, 8, 0), "num_layers=0"),
    ((1, 3, 4, 8, 2), "embed_dim=8 is not divisible by num_heads=3"),
])
def test_bad_constructor_args(args, bad):
    with pytest.raises(ValueError, match=bad):
        KeysValues(*args)


def test_reset():
    kv = KeysValues(*SPEC)
    for layer in kv:
        layer.update(tokens(2, 1.0), tokens(2, 1.0))
    kv.start_position = 7
    kv.reset()
    assert kv.size == 0 and all(layer.size == 0 for layer in kv) and kv.start_position == 0
    kv[0].update(tokens(4, 3.0), tokens(4, 3.0))  # full capacity again
    assert kv[0].size == 4


def test_prune_keeps_masked_rows():
    kv = KeysValues(3, 2, 4, 8, 2)
    rows = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 2, 4)
    for layer in kv:
        layer.update(rows, -rows)
    kv.prune(torch.tensor([True, False, True]))
    assert kv.spec == (2, 2, 4, 8, 2) and kv.size == 2
    k, v = kv[1].get()
    assert k[:, 0, 0, 0].tolist() == [0.0, 2.0] and v[:, 0, 0, 0].tolist() == [-0.0, -2.0]
    with pytest.raises(ValueError, match=r"prune mask of shape \(3,\); expected \(2,\)"):
        kv.prune(torch.tensor([True, True, False]))


def test_clone_is_private():
    kv = KeysValues(*SPEC)
    for layer in kv:
        layer.update(tokens(1, 1.0), tokens(1, 1.0))
    kv.start_position = 5
    twin = kv.clone()
    assert twin.spec == kv.spec and twin.size == 1 and twin.start_position == 5
    assert not set(twin.data_ptrs()) & set(kv.data_ptrs())
    kv[0].update(tokens(1, 9.0), tokens(1, 9.0))
    kv[1].get()[0].fill_(42.0)
    assert twin.size == 1 and twin[0].size == 1
    assert twin[1].get()[0].eq(1.0).all()


def test_copy_from_allocates_nothing_and_copies_start_position():
    src, dst = KeysValues(*SPEC), KeysValues(*SPEC)
    for layer in src:
        layer.update(tokens(3, 2.5), tokens(3, -2.5))
    src.start_position = 11
    ptrs, nbytes = dst.data_ptrs(), dst.nbytes
    dst.copy_from(src)
    assert dst.data_ptrs() == ptrs and dst.nbytes == nbytes
    assert dst.size == 3 and dst.start_position == 11
    assert torch.equal(dst[1].get()[1], src[1].get()[1])
    # A shorter source shrinks the valid part: stale tokens beyond it are never visible.
    short = KeysValues(*SPEC)
    for layer in short:
        layer.update(tokens(1, 7.0), tokens(1, 7.0))
    dst.copy_from(short)
    assert dst.size == 1 and dst[0].get()[0].eq(7.0).all() and dst.start_position == 0


def test_copy_from_spec_mismatch_names_both_specs():
    with pytest.raises(ValueError, match=r"spec \(1, 2, 5, 8, 2\) into one of spec \(1, 2, 4, 8, 2\)"):
        KeysValues(*SPEC).copy_from(KeysValues(1, 2, 5, 8, 2))


def test_nbytes_and_data_ptrs():
    kv = KeysValues(*SPEC)
    # 2 layers x (k, v) x 1*2*4*4 float32
    assert kv.nbytes == 2 * 2 * 32 * 4
    assert len(kv.data_ptrs()) == 4 and len(set(kv.data_ptrs())) == 4
    assert kv.device == torch.device("cpu")
