import pytest
import torch

from mucs_pipeline.models.dit import DiT


@pytest.mark.parametrize("strides,resolution", [((1, 1), 8), ((1, 2), 16)])
def test_dit_output_shape_and_zero_init(strides, resolution):
    net = DiT(
        resolution=resolution,
        channels=3,
        cond_dim=10,
        hidden=32,
        depth=2,
        heads=2,
        registers=4,
        conv_channels=(8, 8),
        conv_strides=strides,
        cond_width=16,
        sigma_dim=16,
    )
    x = torch.randn(5, 3, resolution, resolution)
    out = net(x, torch.zeros(5), torch.eye(10)[:5])
    assert out.shape == x.shape
    # adaLN-Zero: every block starts as the identity.
    block = net.blocks[0]
    tokens = torch.randn(5, 20, 32)
    assert torch.equal(block(tokens, torch.randn(5, 16)), tokens)  # c has width cond_width


def test_dit_rejects_incompatible_resolution():
    with pytest.raises(ValueError, match="not divisible"):
        DiT(resolution=10, channels=1, cond_dim=0, hidden=32, depth=1, heads=2, conv_strides=(1, 2))


def test_mlp_parameters_are_named_for_unlearning():
    net = DiT(resolution=8, channels=1, cond_dim=10, hidden=32, depth=2, heads=2)
    names = [n for n, _ in net.named_parameters()]
    assert "blocks.0.mlp.0.weight" in names and "cond_mlp.0.weight" in names
