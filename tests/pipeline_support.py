"""What passes/pipeline.py lowers yet, for tests of examples that need more of it.

The masked grouped GEMM's ragged persistent loop is scheduled with a scan over the groups
per tile (passes/schedule.py), a loop its TMA coordinates depend on. Until the pipeline
pass copies such a loop into its TMA producer, the example stops at that pass with a located
error, and the tests of its later stages are skipped (`needs_group_scans`; import
`pipeline_copies_group_scans` beside it, which the marker's condition calls).
"""
from __future__ import annotations

import functools
import os

import pytest

MASKED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm_masked.cdsl")


@functools.cache
def pipeline_copies_group_scans() -> bool:
    from commdsl.compiler import compile_file
    from commdsl.diagnostics import CompileError
    try:
        compile_file(MASKED, emit="llvm")
    except CompileError as e:
        if "TMA coordinates may not depend on a nested loop" in e.message:
            return False
        raise
    return True


needs_group_scans = pytest.mark.skipif(
    "not pipeline_copies_group_scans()",
    reason="passes/pipeline.py does not yet copy the group scan into the TMA producer")
