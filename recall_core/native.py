"""The one place torch and faiss are imported, in a fixed order, with thread counts set.

torch and faiss each bundle an OpenMP runtime. Importing them in varying
orders from different modules invites duplicate-runtime crashes and
oversubscription (2 libraries x N threads on N cores), so every module that
needs them calls :func:`torch` / :func:`faiss` here instead of importing them
at module level — which also keeps ``recall --help`` fast. The CLI (every command) and
the server also call :func:`retain_freed_memory` here, the other process-wide native setting.
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType

THREADS_ENV = "RECALL_THREADS"
BLAS_THREADS_ENV = "RECALL_BLAS_THREADS"


def _positive_env(name: str) -> int | None:
    """``$name`` as a positive integer, None when unset or not one."""
    configured = os.environ.get(name, "").strip()
    return int(configured) if configured.isdigit() and int(configured) > 0 else None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def thread_count() -> int:
    """Threads for numeric kernels: ``$RECALL_THREADS``, else the usable CPU count."""
    configured = _positive_env(THREADS_ENV)
    return configured if configured is not None else usable_cpus()


@cache
def torch() -> ModuleType:
    """Import torch (always before faiss) with its thread pools sized once."""
    threads = thread_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    # Two OpenMP runtimes (torch's and faiss's) whose idle workers spin by default steal
    # the cores from each other: on 2 cores a 1-user comirec retrieval took 8.0 ms with
    # spinning workers and 1.3 ms with sleeping ones. Set it to ACTIVE to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch as torch_module

    torch_module.set_num_threads(threads)
    try:
        torch_module.set_num_interop_threads(max(1, min(threads, 2)))
    except RuntimeError:
        pass  # already set: interop threads can only be configured before first use
    limit_blas()
    return torch_module


def limit_blas() -> None:
    """Cap spinning BLAS pools (``$RECALL_BLAS_THREADS``, default 1) once torch/faiss are in.

    numpy's OpenBLAS runs its own pthreads pool whose workers spin after each call,
    and numpy's BLAS only does small products here (a batch of user vectors against
    a catalogue) while torch and faiss own the cores: alternating a 64-user encoder
    pass with a numpy exact search made the encoder 60% slower (57 ms against 35 ms)
    until numpy's BLAS ran single-threaded. OpenMP-layered BLAS (faiss's) sleeps
    under ``OMP_WAIT_POLICY=PASSIVE`` and keeps its threads.
    """
    threads = _positive_env(BLAS_THREADS_ENV) or 1
    from threadpoolctl import ThreadpoolController

    for library in ThreadpoolController().lib_controllers:
        if library.user_api == "blas" and getattr(library, "threading_layer", "") == "pthreads":
            library.set_num_threads(threads)


def limit_torch_threads(threads: int) -> None:
    """Cap torch's intra-op threads at ``threads`` if torch is loaded (no import otherwise).

    For a server: its sources already run concurrently (one pool task each) and small
    encoder passes gain little from intra-op threads, so two per call on two cores put
    four neural sources' eight OpenMP threads on two cores (measured on ml-1m-3k: one
    thread per call answered 8 concurrent clients at 271 req/s instead of 227-257).
    """
    if torch.cache_info().currsize:  # torch() ran: torch is loaded and configured
        torch().set_num_threads(max(1, threads))


@cache
def faiss() -> ModuleType:
    """Import faiss after torch (the fixed order) and size its OpenMP pool."""
    torch()
    import faiss as faiss_module

    faiss_module.omp_set_num_threads(thread_count())
    limit_blas()
    return faiss_module


HEAP_TUNING_ENV = "RECALL_HEAP_TUNING"
# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64 bits.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20


@cache
def retain_freed_memory() -> bool:
    """Keep freed heap memory for reuse instead of handing it back to the kernel (glibc).

    A served batch allocates and frees megabytes of short-lived arrays (the merge
    stacks every source's candidates: 8 layers x 64 users x 500 items x 3 arrays).
    By default glibc returns such blocks to the kernel on free (mmap, or a heap trim
    past 2x the last freed block), so every batch page-faults them in again: the
    ml-1m-3k merge of a 64-user batch took 8.7 ms that way and 4.8 ms with freed
    memory kept. Training batches churn the same way: a prompted dnc_ebr epoch on ml-1m-3k
    (row 6s, 2 threads) took 13-17 s, half of it in the kernel, and 10.4 s with it. Raises
    the mmap threshold to glibc's maximum (32 MiB) and the trim
    threshold to 256 MiB, so the cost is at most that much idle heap per arena (measured:
    a served ml-1m-3k project's resident memory after a load test, 656 MB against 642 MB).
    Returns whether it applied: False off glibc or with ``$RECALL_HEAP_TUNING=0``.
    """
    if os.environ.get(HEAP_TUNING_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # no libc to load, or one without mallopt (not glibc)
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting either also stops glibc's dynamic adjustment.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
