"""Training linears through oneDNN: the same values and gradients as F.linear, to float32 rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zerokv.model.linear import MLP, ONEDNN_MIN_MACS, Linear, conv2d_gelu, onednn_inference
from zerokv.model.train_linear import OneDNNLinear, onednn_training

ONEDNN = torch.backends.mkldnn.is_available()


@pytest.mark.skipif(not ONEDNN, reason="the path is oneDNN's: this torch build has no mkldnn")
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_match_f_linear(bias):
    torch.manual_seed(0)
    h = torch.randn(6, 10, 96, requires_grad=True)
    x = h[:, 0::2]  # a strided view, as the heads read the observation tokens
    w = torch.randn(80, 96, requires_grad=True)
    b = torch.randn(80, requires_grad=True) if bias else None
    g = torch.randn(6, 5, 80)
    leaves = [t for t in (h, w, b) if t is not None]
    got = OneDNNLinear.apply(x, w, b)
    got_grads = torch.autograd.grad(got, leaves, g)
    want = F.linear(x, w, b)
    want_grads = torch.autograd.grad(want, leaves, g)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, e in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_only_large_float32_autograd_matmuls_take_it():
    layer = Linear(256, 256)
    big = torch.randn(-(-ONEDNN_MIN_MACS // (256 * 256)), 256)
    assert onednn_training(big, layer.weight, ONEDNN_MIN_MACS) == ONEDNN
    assert not onednn_training(big[:1], layer.weight, ONEDNN_MIN_MACS)  # small: MKL
    with torch.no_grad():  # no gradient: the inference path's business
        assert not onednn_training(big, layer.weight, ONEDNN_MIN_MACS)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: F.linear in bfloat16
        assert not onednn_training(big, layer.weight, ONEDNN_MIN_MACS)
        assert layer(big).dtype == torch.bfloat16
    assert not onednn_training(big.double(), layer.weight.double(), ONEDNN_MIN_MACS)


def test_autocast_turns_the_inference_kernels_off_and_runs_bfloat16():
    torch.manual_seed(0)
    mlp = MLP(256, 512, 256)
    conv = torch.nn.Conv2d(3, 8, 4, stride=2, padding=1)
    x = torch.randn(64, 256)
    img = torch.rand(2, 3, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_inference(x, mlp[0].weight)
        y, c = mlp(x), conv2d_gelu(img, conv)
    assert y.dtype == c.dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(y.float(), mlp(x), rtol=0.05, atol=0.05)
        torch.testing.assert_close(c.float(), conv2d_gelu(img, conv), rtol=0.05, atol=0.05)
