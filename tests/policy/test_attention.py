"""BatchFirstAttention: the transformer stacks' attention computes what `nn.MultiheadAttention` does, from the same
parameters, in training and inference, and falls back to it where it does not apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fleet.policy.config import VLAConfig
from fleet.policy.encoders import BatchFirstAttention, decoder_stack, encoder_stack


def _pair(width: int = 32, heads: int = 4) -> tuple[nn.MultiheadAttention, BatchFirstAttention]:
    torch.manual_seed(0)
    stock = nn.MultiheadAttention(width, heads, batch_first=True)
    ours = BatchFirstAttention(width, heads, batch_first=True)
    ours.load_state_dict(stock.state_dict())  # the same parameter names: checkpoints load either way
    return stock, ours


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_same_outputs_and_gradients_as_the_stock_module(cross: bool) -> None:
    stock, ours = _pair()
    x = torch.randn(3, 7, 32, requires_grad=True)
    memory = torch.randn(3, 11, 32, requires_grad=True) if cross else x
    outputs, grads = [], []
    for module in (stock, ours):
        out, weights = module(x, memory, memory, need_weights=False)
        assert weights is None
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in (x, memory, *module.parameters()) if p.grad is not None])
        x.grad = memory.grad = None
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_masks_and_weights_take_the_stock_path() -> None:
    stock, ours = _pair()
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    for kwargs in ({"key_padding_mask": mask, "need_weights": False}, {"need_weights": True}):
        expected, expected_weights = stock(x, x, x, **kwargs)
        out, weights = ours(x, x, x, **kwargs)
        torch.testing.assert_close(out, expected)
        if kwargs["need_weights"]:
            torch.testing.assert_close(weights, expected_weights)


def test_the_stacks_use_it(tiny_config: VLAConfig) -> None:
    for stack in (encoder_stack(tiny_config, 2), decoder_stack(tiny_config, 2)):
        kinds = {type(m) for m in stack.modules() if isinstance(m, nn.MultiheadAttention)}
        assert kinds == {BatchFirstAttention}
