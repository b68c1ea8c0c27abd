"""The one import point of torch and faiss: order, thread pools, spinning BLAS capped; the heap."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest


def run(code: str, drop: tuple[str, ...] = (), **env: str) -> str:
    """``code``'s stdout in a fresh interpreter (imports and pools start clean)."""
    import os

    environment = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True, env={**environment, **env}).stdout.strip()


def test_numpys_spinning_blas_pool_is_capped_once_torch_is_loaded() -> None:
    probe = """
        import numpy, threadpoolctl
        from recall_core import native
        def spinning():
            return sorted({lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                           if lib["user_api"] == "blas" and lib.get("threading_layer") == "pthreads"})
        native.torch()
        print(spinning())
    """
    found = run(probe, drop=("RECALL_BLAS_THREADS",))
    if found == "[]":
        return  # this numpy's BLAS is not a pthreads OpenBLAS: nothing spins
    assert found == "[1]"
    assert run(probe, RECALL_BLAS_THREADS="2") == "[2]"


def test_torch_is_imported_before_faiss_and_passive_waiting_is_the_default() -> None:
    out = run("""
        import os, sys
        from recall_core import native
        native.faiss()
        print(list(sys.modules).index("torch") < list(sys.modules).index("faiss"),
              os.environ["OMP_WAIT_POLICY"])
    """, drop=("OMP_WAIT_POLICY",))
    assert out == "True PASSIVE"


def test_limit_torch_threads_caps_a_loaded_torch_and_never_imports_it() -> None:
    probe = """
        import sys
        from recall_core import native
        native.limit_torch_threads(1)
        print("torch" in sys.modules, end=" ")
        torch = native.torch()
        native.limit_torch_threads(1)
        print(torch.get_num_threads())
    """
    assert run(probe, RECALL_THREADS="2") == "False 1"


HEAP_PROBE = """
    import ctypes, numpy as np
    from recall_core import native

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    applied = native.retain_freed_memory()
    block = np.ones(8 << 20, np.uint8)  # 8 MiB, well over glibc's default mmap threshold
    mapped = libc.mallinfo2().hblkhd >= 8 << 20
    del block
    kept = libc.mallinfo2().fordblks >= 8 << 20  # freed, still held by the heap
    print(applied, mapped, kept)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_freed_block_stays_in_the_heap_for_the_next_batch() -> None:
    assert run(HEAP_PROBE) == "True False True"
    # Off: the block is mapped on its own and handed back to the kernel when freed.
    assert run(HEAP_PROBE, RECALL_HEAP_TUNING="0") == "False True False"
