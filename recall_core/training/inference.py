"""Serving forward passes traced into TorchScript graphs.

A served request encodes one user or a few, and there eager PyTorch spends most of its
time in Python between small kernels, holding the GIL: the engine's lanes, which run
sources side by side, then serialise on it. A traced graph runs in C++ with the GIL
released. ``benchmarks/serve_load.py`` (seven sources, one client, k = 500, two cores)
measures the difference: ``results/serve_load.md`` traced, ``results/serve_load_eager.md``
with ``RECALL_TRACE=0``.

A trace records one path through the Python code, so it is kept only after it matched the
eager forward on inputs of several batch sizes and widths (an empty history among them);
otherwise, or with ``RECALL_TRACE=0``, the eager module serves. Training never uses it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recall_core.native import torch as load_torch

torch = load_torch()
Tensor = torch.Tensor
logger = logging.getLogger(__name__)

TRACE_ENV = "RECALL_TRACE"
"""``0`` serves every encoder eagerly (for debugging a model the trace gets wrong)."""
EXAMPLE_SHAPES = ((2, 7), (1, 1), (5, 0), (3, 3))
"""(batch, longest history) of the example batches: the first is traced, all are checked;
the tracer's profiling executor specialises on the first calls, so checking also warms."""


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


class _Method(torch.nn.Module):
    """``module.<name>(*inputs)`` as a module's forward (what :func:`torch.jit.trace` takes)."""

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.module, self.name = module, name

    def forward(self, *inputs: Tensor) -> Any:
        return getattr(self.module, self.name)(*inputs)


def is_traced(forward: Callable[..., Any]) -> bool:
    """Whether ``forward`` is a traced graph (not the eager method it fell back to)."""
    return isinstance(forward, torch.jit.ScriptModule)


def serving_forward(module: torch.nn.Module, name: str, examples: Sequence[tuple[Tensor, ...]],
                    trace: bool = True) -> Callable[..., Any]:
    """``module.<name>`` as a traced graph when the trace reproduces it, else the method.

    ``module`` must be in eval mode; ``examples`` are argument tuples of different shapes
    (the first is traced). Outputs: a tensor or a tuple of tensors. ``trace=False`` (a
    validation handle, rebuilt every round while the weights train) gives the method.
    """
    eager = getattr(module, name)
    if not trace or os.environ.get(TRACE_ENV, "1").strip() == "0":
        return eager
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings are what the check checks
            traced = torch.jit.trace(_Method(module, name), tuple(examples[0]), check_trace=False)
        with torch.inference_mode():
            for example in examples:
                torch.testing.assert_close(traced(*example), eager(*example),
                                           rtol=1e-4, atol=1e-5)
    except Exception as error:  # noqa: BLE001 - any failure keeps the eager forward
        logger.warning("serving %s.%s eagerly: its trace failed or differs (%s)",
                       type(module).__name__, name, str(error).splitlines()[0][:200])
        return eager
    return traced
