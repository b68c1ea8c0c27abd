"""Serving traces (:mod:`recall_core.training.inference`): kept only when they match eager."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from recall_core.native import torch as load_torch
from recall_core.training.batching import pad_histories
from recall_core.training.encoders import EncoderSpec, SequenceEncoder
from recall_core.training import inference
from recall_core.training.inference import (RUNTIME_ENV, TRACE_ENV, OnnxForward, SavedGraphs,
                                            example_histories, serving_forward, serving_runtime)

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


@pytest.mark.parametrize(("runtime", "compiled"), [("onnx", OnnxForward),
                                                   ("trace", torch.jit.ScriptModule)])
def test_the_compiled_encoder_equals_eager_on_unseen_shapes(
        runtime: str, compiled: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUNTIME_ENV, runtime)
    encoder = _encoder()
    forward = serving_forward(encoder, "encode_last", example_histories(50, 30))
    assert isinstance(forward, compiled)
    assert not encoder.training  # exporting must not switch the model's dropout back on
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


def test_a_compiled_pass_that_differs_from_eager_is_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    module = _BatchFrozen().eval()
    with caplog.at_level(logging.WARNING):
        forward = serving_forward(module, "last", example_histories(50, 30))
    assert forward == module.last  # neither the ONNX graph nor the trace was kept
    assert "onnx_forward failed or differs" in caplog.text
    assert "traced_forward failed or differs" in caplog.text and "eagerly" in caplog.text


class _TwoOutputs(torch.nn.Module):
    """A pass answering a tuple with a boolean mask, as the multi-interest models do."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(51, 4)

    def interests(self, inputs: torch.Tensor, lengths: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table(inputs).sum(1), lengths > 1


def test_an_onnx_pass_answers_every_output_with_its_dtype() -> None:
    module = _TwoOutputs().eval().requires_grad_(False)
    forward = serving_forward(module, "interests", example_histories(50, 30))
    assert isinstance(forward, OnnxForward)
    inputs, lengths = example_histories(50, 30, seed=3)[0]
    vectors, valid = forward(inputs, lengths)
    expected_vectors, expected_valid = module.interests(inputs, lengths)
    assert valid.dtype == torch.bool and torch.equal(valid, expected_valid)
    torch.testing.assert_close(vectors, expected_vectors)


def test_the_runtime_switch_refuses_an_unknown_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUNTIME_ENV, "tensorrt")
    with pytest.raises(ValueError, match="choose from onnx, trace, eager"):
        serving_runtime()
    monkeypatch.setenv(RUNTIME_ENV, "EAGER")
    assert serving_runtime() == "eager"


@pytest.mark.parametrize(("name", "value"), [(TRACE_ENV, "0"), (RUNTIME_ENV, "eager")])
def test_the_environment_switch_serves_eagerly(name: str, value: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = _encoder()
    monkeypatch.setenv(name, value)
    forward = serving_forward(encoder, "encode_last", example_histories(50, 30))
    assert forward == encoder.encode_last


def test_an_index_saves_its_graph_and_a_load_reads_it_back_without_exporting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = _encoder()
    examples = example_histories(50, 30)
    saved = serving_forward(encoder, "encode_last", examples,
                            graphs=SavedGraphs(tmp_path, write=True))
    path = SavedGraphs(tmp_path).path(encoder, "encode_last")
    assert isinstance(saved, OnnxForward) and path.read_bytes() == saved.model

    def no_export(*args: object) -> bytes:
        raise AssertionError("a load with a saved graph must not export")

    monkeypatch.setattr(inference, "_export", no_export)
    loaded = serving_forward(encoder, "encode_last", examples, graphs=SavedGraphs(tmp_path))
    assert isinstance(loaded, OnnxForward) and loaded.model == saved.model


def test_a_load_without_a_saved_graph_exports_in_memory_and_writes_nothing(
        tmp_path: Path) -> None:
    encoder = _encoder()
    forward = serving_forward(encoder, "encode_last", example_histories(50, 30),
                              graphs=SavedGraphs(tmp_path))
    assert isinstance(forward, OnnxForward)
    assert not any(tmp_path.iterdir())  # a published index version is never written to


def test_a_graph_that_differs_from_eager_is_not_saved(tmp_path: Path) -> None:
    module = _BatchFrozen().eval()
    forward = serving_forward(module, "last", example_histories(50, 30),
                              graphs=SavedGraphs(tmp_path, write=True))
    assert forward == module.last and not any(tmp_path.iterdir())


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_without_onnx_runtime_or_exporter_the_trace_serves(
        missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # "import <missing>" now raises ImportError
    encoder = _encoder()
    forward = serving_forward(encoder, "encode_last", example_histories(50, 30),
                              graphs=SavedGraphs(tmp_path, write=True))
    assert isinstance(forward, torch.jit.ScriptModule) and not any(tmp_path.iterdir())


def test_a_saved_graph_serves_without_the_exporter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = _encoder()
    examples = example_histories(50, 30)
    serving_forward(encoder, "encode_last", examples, graphs=SavedGraphs(tmp_path, write=True))
    monkeypatch.setitem(sys.modules, "onnx", None)  # a serving host without the exporter
    forward = serving_forward(encoder, "encode_last", examples, graphs=SavedGraphs(tmp_path))
    assert isinstance(forward, OnnxForward)
