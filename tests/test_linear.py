"""zerokv.model.linear: the oneDNN inference matmul agrees with F.linear and leaves training alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zerokv.model.config import WorldModelConfig
from zerokv.model.encoders import ImageEncoder
from zerokv.model.linear import MLP, ONEDNN_MIN_MACS, Linear, conv2d_gelu, linear, uses_onednn


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
        big = torch.randn(ONEDNN_MIN_MACS // 64 // 64, 64)
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
