"""Serving forward passes compiled out of Python: ONNX Runtime, else a TorchScript trace.

A served request encodes one user or a few, and there eager PyTorch spends most of its
time in Python between small kernels, holding the GIL: the engine's lanes, which run
sources side by side, then serialise on it. :func:`serving_forward` therefore compiles
each serving pass once, when a handle loads:

1. **ONNX Runtime** (the default when ``onnxruntime`` and ``onnx`` are installed): the pass
   is exported to an ONNX graph in memory and run by ORT, which fuses the small ops and
   holds the GIL once per call. On ml-1m-3k a batch-1 SASRec pass took 0.15-0.25 ms
   against 0.32-0.44 ms traced (histories of 10-50 items).
2. **TorchScript trace**: runs in C++ too, but re-enters the interpreter's Python side a
   few times per call, so under load it waits for the GIL between ops.
3. **Eager**, when neither reproduces the module, or with ``RECALL_SERVING_RUNTIME=eager``
   (``RECALL_TRACE=0`` too): for debugging a model the compilers get wrong.

A compiled pass records one path through the Python code, so it is kept only after it
matched the eager forward on inputs of several batch sizes and widths (an empty history
among them); otherwise the next option serves. Training never uses it.

Exporting takes 0.2-0.4 s per pass on ml-1m-3k (and 3-4 s for the exporter's first
import), so ``recall index`` saves each graph in the source's index version
(:class:`SavedGraphs`, checksummed with the rest of it) and a load or reload only reads it
back; an index made before graphs were saved is exported on load.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recall_core.native import thread_count
from recall_core.native import torch as load_torch

torch = load_torch()
Tensor = torch.Tensor
logger = logging.getLogger(__name__)

RUNTIME_ENV = "RECALL_SERVING_RUNTIME"
"""``onnx`` (default: ONNX Runtime, else the trace), ``trace`` or ``eager``."""
RUNTIMES = ("onnx", "trace", "eager")
TRACE_ENV = "RECALL_TRACE"
"""``0`` serves every encoder eagerly (the older switch: ``RECALL_SERVING_RUNTIME=eager``)."""
EXAMPLE_SHAPES = ((2, 7), (1, 1), (5, 0), (3, 3))
"""(batch, longest history) of the example batches: the first is exported or traced, all
are checked; the tracer's profiling executor specialises on the first calls, so checking
also warms."""
ONNX_OPSET = 17
"""Opset of the exported graphs (17: LayerNormalization is one node)."""


def example_histories(num_items: int, max_len: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Padded model inputs ``(inputs, lengths)`` shaped as :data:`EXAMPLE_SHAPES`.

    Widths are capped at ``max_len``; a longest history of 0 gives a batch of empty
    histories (all padding, length 0), which serving sends for users with no known item.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for batch, longest in EXAMPLE_SHAPES:
        longest = min(longest, max_len)
        lengths = rng.integers(min(1, longest), longest + 1, batch)
        lengths[0] = longest
        inputs = np.zeros((batch, max(1, longest)), np.int64)
        for row, length in enumerate(lengths):
            inputs[row, :length] = rng.integers(1, num_items + 1, length)
        batches.append((torch.from_numpy(inputs), torch.from_numpy(lengths)))
    return batches


@dataclass(frozen=True)
class SavedGraphs:
    """Where a handle's ONNX graphs are kept: its index directory. ``write=True`` while
    ``recall_index`` assembles that directory (graphs are exported and saved there);
    ``False`` on load (a saved graph is read, a missing one exported in memory only)."""

    directory: Path
    write: bool = False

    def path(self, module: torch.nn.Module, name: str) -> Path:
        return Path(self.directory) / f"{type(module).__name__}.{name}.onnx"


class _Method(torch.nn.Module):
    """``module.<name>(*inputs)`` as a module's forward (what the tracer and exporter take)."""

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.module, self.name = module, name
        # A new module is in training mode, and the exporter restores the wrapper's mode
        # after exporting, which would switch the wrapped model's dropout back on.
        self.train(module.training)

    def forward(self, *inputs: Tensor) -> Any:
        return getattr(self.module, self.name)(*inputs)


POOLED_FROM_ROWS = 32
"""Batches of at least this many rows run on every core; smaller ones on one thread."""


class OnnxForward:
    """A serving pass run by ONNX Runtime: called with tensors, answers tensors like the
    module's method (one tensor, or a tuple).

    Two sessions of the graph: a one-thread one for the small batches single requests
    bring, where waking a second thread costs more than it saves (a batch-1 SASRec pass:
    0.25 ms alone, 0.35-0.52 ms with a sleeping second thread), and one with a thread per
    core (``RECALL_THREADS``) for batches of :data:`POOLED_FROM_ROWS` rows or more (64
    rows: 6.3-6.7 ms against 8.7-8.8 ms). Idle pool threads sleep rather than spin, which
    would take the core from the source running beside them.
    """

    def __init__(self, model: bytes) -> None:
        self.model = model  # the serialised graph, for SavedGraphs to keep
        self.session = _session(model, 1)
        threads = thread_count()
        self.pooled = _session(model, threads) if threads > 1 else self.session
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.single = len(self.session.get_outputs()) == 1

    def __call__(self, *inputs: Tensor) -> Any:
        feeds = {name: tensor.numpy() for name, tensor in zip(self.input_names, inputs)}
        session = self.pooled if len(inputs[0]) >= POOLED_FROM_ROWS else self.session
        answers = tuple(torch.from_numpy(array) for array in session.run(None, feeds))
        return answers[0] if self.single else answers


def _session(model: bytes, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its optimiser's notes are not ours
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def is_compiled(forward: Callable[..., Any]) -> bool:
    """Whether ``forward`` runs compiled (ONNX Runtime or a trace), not the eager method."""
    return isinstance(forward, (OnnxForward, torch.jit.ScriptModule))


def serving_runtime() -> str:
    """The runtime ``$RECALL_SERVING_RUNTIME`` asks for (``RECALL_TRACE=0`` means eager)."""
    if os.environ.get(TRACE_ENV, "1").strip() == "0":
        return "eager"
    chosen = os.environ.get(RUNTIME_ENV, "onnx").strip().lower() or "onnx"
    if chosen not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={chosen!r}: choose from {', '.join(RUNTIMES)}")
    return chosen


def serving_forward(module: torch.nn.Module, name: str, examples: Sequence[tuple[Tensor, ...]],
                    trace: bool = True, graphs: SavedGraphs | None = None) -> Callable[..., Any]:
    """``module.<name>`` compiled for serving when a compiled form reproduces it, else the method.

    ``module`` must be in eval mode; ``examples`` are argument tuples of different shapes
    (the first is compiled). Outputs: a tensor or a tuple of tensors. ``trace=False`` (a
    validation handle, rebuilt every round while the weights train) gives the method.
    ``graphs``: where the ONNX graph is saved (``recall_index``) or read back (load).
    """
    eager = getattr(module, name)
    runtime = serving_runtime() if trace else "eager"
    if runtime == "eager":
        return eager
    compilers = ([_onnx_forward] if runtime == "onnx" else []) + [_traced_forward]
    for compile_forward in compilers:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the compilers' warnings are what the check checks
                compiled = compile_forward(module, name, examples, graphs)
            if compiled is None:
                continue
            with torch.inference_mode():
                for example in examples:
                    torch.testing.assert_close(compiled(*example), eager(*example),
                                               rtol=1e-4, atol=1e-5)
        except Exception as error:  # noqa: BLE001 - any failure falls back to the next form
            logger.warning("serving %s.%s: %s failed or differs (%s)", type(module).__name__,
                           name, compile_forward.__name__.strip("_"),
                           str(error).splitlines()[0][:200])
            continue
        if isinstance(compiled, OnnxForward) and graphs is not None and graphs.write:
            from recall_core.files import write_bytes_atomically

            write_bytes_atomically(graphs.path(module, name), compiled.model)  # checked first
        return compiled
    logger.warning("serving %s.%s eagerly", type(module).__name__, name)
    return eager


def _traced_forward(module: torch.nn.Module, name: str, examples: Sequence[tuple[Tensor, ...]],
                    graphs: SavedGraphs | None) -> Callable[..., Any]:
    return torch.jit.trace(_Method(module, name), tuple(examples[0]), check_trace=False)


def _onnx_forward(module: torch.nn.Module, name: str, examples: Sequence[tuple[Tensor, ...]],
                  graphs: SavedGraphs | None) -> OnnxForward | None:
    """The pass as an ORT session: its saved graph read back, or exported; None without
    onnxruntime, or without onnx where it must export."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    path = None if graphs is None else graphs.path(module, name)
    if path is not None and not graphs.write and path.is_file():
        return OnnxForward(path.read_bytes())
    try:
        import onnx  # noqa: F401 - the exporter writes with it
    except ImportError:
        return None
    return OnnxForward(_export(module, name, tuple(examples[0])))


def _export(module: torch.nn.Module, name: str, example: tuple[Tensor, ...]) -> bytes:
    """``module.<name>`` as an ONNX graph whose every input axis may vary."""
    inputs = [f"input{i}" for i in range(len(example))]
    # Every axis of every input varies (batch, history width), so each gets a name.
    dynamic = {label: {axis: f"{label}_axis{axis}" for axis in range(tensor.dim())}
               for label, tensor in zip(inputs, example)}
    buffer = io.BytesIO()
    torch.onnx.export(_Method(module, name), example, buffer, input_names=inputs,
                      dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)
    return buffer.getvalue()
