"""DeepGEMM as a peer in the GEMM benches, where its sources are on the GPU machine.

The release and recipe are ../shared/docs/peers.md's: the pure-Python-JIT commit 03d0be3 with
CUTLASS's headers under deep_gemm/include, found at $DEEPGEMM_PATH or _peers/DeepGEMM (an
ignored folder, carried to the device). nvcc compiles each kernel config at its first call,
so a bench calls every shape once (`warm`) before timing anything.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

TREE = os.environ.get("DEEPGEMM_PATH",
                      os.path.join(os.path.dirname(__file__), "..", "_peers", "DeepGEMM"))


def load():
    """The deep_gemm module, or None (with the reason on stderr) where it cannot be used."""
    if not os.path.isdir(os.path.join(TREE, "deep_gemm", "include", "cute")):
        print(f"DeepGEMM not timed: no tree with CUTLASS headers at {TREE}", file=sys.stderr)
        return None
    cuda = os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    os.environ.setdefault("DG_JIT_NVCC_COMPILER", os.path.join(cuda, "bin", "nvcc"))
    os.environ.setdefault("DG_JIT_CACHE_DIR", "/tmp/deep_gemm_cache")
    sys.path.insert(0, os.path.abspath(TREE))
    try:
        import deep_gemm
    except Exception as e:                     # a broken peer must not stop the bench
        print(f"DeepGEMM not timed: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return deep_gemm


def warm(calls) -> None:
    """Runs each call once, in threads: their nvcc compiles overlap."""
    import torch
    from cuda.bindings import runtime

    def current_device():        # DeepGEMM encodes tensor maps: a context must be current
        runtime.cudaSetDevice(torch.cuda.current_device())
    with ThreadPoolExecutor(max_workers=8, initializer=current_device) as pool:
        list(pool.map(lambda call: call(), calls))
    torch.cuda.synchronize()
