"""Serving traces (:mod:`recall_core.training.inference`): kept only when they match eager."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recall_core.native import torch as load_torch
from recall_core.training.batching import pad_histories
from recall_core.training.encoders import EncoderSpec, SequenceEncoder
from recall_core.training.inference import TRACE_ENV, example_histories, serving_forward

torch = load_torch()


def _encoder(max_len: int = 30) -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(EncoderSpec(50, max_len, 16, 2, heads=2)).eval().requires_grad_(False)


def test_examples_cover_several_batch_sizes_widths_and_empty_histories() -> None:
    examples = example_histories(50, 30)
    assert len({tuple(inputs.shape) for inputs, _ in examples}) == len(examples)
    assert any((lengths == 0).all() for _, lengths in examples)
    for inputs, lengths in examples:
        assert inputs.max() <= 50 and inputs.shape[1] <= 30
        assert ((inputs > 0).sum(1) == lengths).all()  # right-padded, ids + 1


def test_the_traced_encoder_equals_eager_on_unseen_shapes() -> None:
    encoder = _encoder()
    forward = serving_forward(encoder, "encode_last", example_histories(50, 30))
    assert isinstance(forward, torch.jit.ScriptModule)
    rng = np.random.default_rng(1)
    for batch, longest in ((1, 30), (9, 12), (64, 30), (4, 1)):
        histories = [rng.integers(0, 50, rng.integers(0, longest + 1)) for _ in range(batch)]
        inputs, lengths = (torch.from_numpy(a) for a in pad_histories(histories, 30, 50))
        with torch.inference_mode():
            torch.testing.assert_close(forward(inputs, lengths),
                                       encoder.encode_last(inputs, lengths))


class _BatchFrozen(torch.nn.Module):
    """A forward whose trace is wrong for other batch sizes (``len`` is a constant there)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def last(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(inputs))
        return inputs[rows, (lengths - 1).clamp(min=0)].float()[:, None] * self.weight


def test_a_trace_that_differs_from_eager_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    module = _BatchFrozen().eval()
    with caplog.at_level(logging.WARNING):
        forward = serving_forward(module, "last", example_histories(50, 30))
    assert not isinstance(forward, torch.jit.ScriptModule)
    assert forward == module.last and "eagerly" in caplog.text


def test_the_environment_switch_serves_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = _encoder()
    monkeypatch.setenv(TRACE_ENV, "0")
    forward = serving_forward(encoder, "encode_last", example_histories(50, 30))
    assert forward == encoder.encode_last
