"""zerokv.model.linear: the oneDNN inference matmul agrees with F.linear and leaves training alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zerokv.model.config import WorldModelConfig
from zerokv.model.encoders import ImageEncoder
from zerokv.model.linear import (
    MLP,
    ONEDNN_MIN_MACS,
    Linear,
    conv2d_gelu,
    forget_packed_weights,
    linear,
    packed_weight,
    uses_onednn,
)

ONEDNN = torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("rows", [1, 8, 257])
@pytest.mark.parametrize("gelu", [False, True])
def test_inference_path_matches_f_linear(rows, gelu):
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 3, 256, generator=gen)
    w, b = torch.randn(1024, 256, generator=gen) / 16, torch.randn(1024, generator=gen)
    with torch.no_grad():
        assert uses_onednn(x, w) == (torch.backends.mkldnn.is_available() and x.numel() * 1024 >= ONEDNN_MIN_MACS)
        fast = linear(x, w, b, gelu=gelu)
    expected = F.linear(x, w, b)
    expected = F.gelu(expected) if gelu else expected
    assert fast.shape == (rows, 3, 1024)
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)


def test_small_float32_matmuls_stay_on_f_linear_and_bfloat16_always_takes_onednn():
    w = torch.randn(64, 64)
    with torch.no_grad():
        assert not uses_onednn(torch.randn(8, 64), w)  # CartPole-sized: oneDNN's call overhead loses
        assert uses_onednn(torch.randn(8, 64).bfloat16(), w.bfloat16()) == torch.backends.mkldnn.is_available()
        big = torch.randn(-(-ONEDNN_MIN_MACS // (64 * 64)), 64)  # the fewest rows at the threshold
        assert uses_onednn(big, w) == torch.backends.mkldnn.is_available()
        assert not uses_onednn(big[1:], w)


def test_bias_free_and_bfloat16():
    x, w = torch.randn(8, 32), torch.randn(16, 32)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
        xb, wb = x.bfloat16(), w.bfloat16()
        out = linear(xb, wb, gelu=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.gelu(F.linear(x, w)), rtol=0.05, atol=0.1)


@pytest.mark.skipif(not ONEDNN, reason="packing is oneDNN's: this torch build has no mkldnn")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_weight_gives_the_plain_weights_result_bit_for_bit_at_any_row_count(dtype):
    w, b = (torch.randn(768, 384) / 20).to(dtype), torch.randn(768).to(dtype)
    packed = packed_weight(w)
    assert packed.is_mkldnn and packed_weight(w) is packed  # made once, then reused
    with torch.no_grad():
        for rows in (8, 64, 300):
            x = torch.randn(rows, 384).to(dtype)
            assert uses_onednn(x, w)
            plain = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
            assert torch.equal(linear(x, w, b), plain)


@pytest.mark.skipif(not ONEDNN, reason="packing is oneDNN's: this torch build has no mkldnn")
def test_packed_weights_follow_every_kind_of_weight_update():
    torch.manual_seed(0)
    layer = Linear(512, 512)
    x = torch.randn(8, 512)

    def check():  # the inference path equals autograd's F.linear on the current weights
        with torch.no_grad():
            fast = layer(x)
        torch.testing.assert_close(fast, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        return fast

    first = check()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(x).square().sum().backward()
    optimizer.step()  # in place: bumps the weight's version
    assert not torch.allclose(check(), first)
    with torch.no_grad():
        layer.load_state_dict({"weight": torch.randn(512, 512) / 20, "bias": torch.zeros(512)})
    check()
    layer.weight.data = torch.randn(512, 512) / 20  # a new tensor: a new data pointer
    check()
    fused = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)  # writes without bumping versions
    before = check()
    for _ in range(2):  # the step's own hook drops the stale packed copy: nobody has to remember
        layer(x).square().sum().backward()
        fused.step()
        assert not torch.allclose(check(), before)
        before = check()
    with torch.no_grad():
        layer.weight.lerp_(torch.zeros(512, 512), 0.5)  # a target-network style in-place update
    check()
    layer.weight.data.copy_(torch.randn(512, 512) / 20)  # bypasses the version counter...
    forget_packed_weights(layer)  # ...so the caller says so
    check()
    with torch.inference_mode():  # inference tensors have no version: never packed, still right
        layer.weight = nn.Parameter(torch.randn(512, 512) / 20)
        assert packed_weight(layer.weight) is layer.weight
    check()


def test_training_keeps_autograd_and_plain_f_linear():
    layer = Linear(12, 5)
    x = torch.randn(4, 12)
    assert not uses_onednn(x, layer.weight)  # weights require grad and grad mode is on
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert not uses_onednn(x.double(), layer.weight.double())  # other dtypes: F.linear


def test_mlp_has_the_sequential_parameter_names_and_function():
    torch.manual_seed(0)
    mlp = MLP(10, 20, 3)
    reference = nn.Sequential(nn.Linear(10, 20), nn.GELU(), nn.Linear(20, 3))
    assert list(mlp.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(mlp.state_dict())
    x = torch.randn(6, 10)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mlp(x), reference(x))  # with grad: the same F.linear/F.gelu calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_conv_gelu_matches_conv_then_gelu(dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 4, stride=2, padding=1).to(dtype)
    x = torch.rand(5, 3, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused = conv2d_gelu(x, conv)
        expected = F.gelu(conv(x))
    assert fused.shape == (5, 8, 8, 8)
    # bfloat16: the fused kernel skips one rounding of the convolution's output (one ulp apart).
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused.float(), expected.float(), rtol=tol, atol=tol)


def test_image_encoder_inference_equals_its_training_path_and_trains():
    cfg = WorldModelConfig(observation_shape=(3, 64, 64), action_space_size=4, embed_dim=64, num_heads=2)
    torch.manual_seed(0)
    enc = ImageEncoder(cfg)
    obs = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        fast = enc(obs)
    slow = enc.norm(enc.net(obs))  # the Sequential itself: nn.Conv2d, nn.GELU, …, Linear (autograd path)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-6)
    (slow**2).sum().backward()  # gradients still reach the first convolution (SimNorm rows sum to 1: not .sum())
    assert enc.net[0].weight.grad is not None and enc.net[0].weight.grad.abs().sum() > 0
