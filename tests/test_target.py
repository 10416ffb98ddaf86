"""The Target table: each GPU family's limits and instructions, and the target for a device."""
import pytest

from commdsl import compile_source
from commdsl.diagnostics import CompileError
from commdsl.target import (CLUSTERS, FP8_CONVERT, SETMAXNREG, TARGETS, TMA, WGMMA, get_target,
                            target_for_capability)


@pytest.mark.parametrize("name, smem_block, smem_sm, threads_sm, ctas_sm", [
    ("sm_80", 166912, 167936, 2048, 32),
    ("sm_86", 101376, 102400, 1536, 16),
    ("sm_89", 101376, 102400, 1536, 24),
    ("sm_90", 232448, 233472, 2048, 32),
    ("sm_90a", 232448, 233472, 2048, 32),
])
def test_limits_are_the_programming_guides(name, smem_block, smem_sm, threads_sm, ctas_sm):
    t = get_target(name)
    assert (t.shared_bytes_per_block, t.shared_bytes_per_sm) == (smem_block, smem_sm)
    assert (t.max_threads_per_sm, t.max_ctas_per_sm) == (threads_sm, ctas_sm)
    assert (t.registers_per_sm, t.registers_per_block, t.max_registers_per_thread) == (
        65536, 65536, 255)
    assert (t.max_threads_per_block, t.warp_size, t.default_shared_bytes_per_block) == (
        1024, 32, 49152)
    assert t.shared_bytes_per_block <= t.shared_bytes_per_sm


def test_instructions_by_family():
    has = {name: t.features for name, t in TARGETS.items()}
    assert FP8_CONVERT not in has["sm_86"] and FP8_CONVERT in has["sm_89"]
    assert TMA not in has["sm_89"] and {TMA, CLUSTERS} <= has["sm_90"]
    assert WGMMA not in has["sm_90"] and SETMAXNREG not in has["sm_90"]
    assert {WGMMA, SETMAXNREG} <= has["sm_90a"]
    # Each family has what the one before it has (sm_80 < 86 < 89 < 90 < 90a).
    names = list(TARGETS)
    assert all(has[a] <= has[b] for a, b in zip(names, names[1:]))


def test_consumer_registers_split_the_sm():
    t = get_target("sm_90a")
    assert t.producer_registers == 24
    # 65536 registers over 128-thread warpgroups, less the producer's 24, in steps of 8 and
    # at most 255 per thread.
    assert [t.consumer_registers(g) for g in (1, 2, 3)] == [248, 240, 160]
    for g in (1, 2, 3):
        assert 128 * (t.producer_registers + g * t.consumer_registers(g)) <= t.registers_per_sm


@pytest.mark.parametrize("capability, name", [
    ((8, 0), "sm_80"), ((8, 6), "sm_86"), ((8, 7), "sm_86"), ((8, 9), "sm_89"),
    ((9, 0), "sm_90a"), ((7, 5), None), ((10, 0), None),
])
def test_target_for_capability(capability, name):
    t = target_for_capability(*capability)
    assert (t.name if t else None) == name


def test_which_devices_run_a_targets_code():
    assert get_target("sm_90a").runs_on((9, 0)) and not get_target("sm_90a").runs_on((10, 0))
    assert get_target("sm_80").runs_on((8, 9)) and not get_target("sm_80").runs_on((9, 0))
    assert not get_target("sm_89").runs_on((8, 6))


def test_unknown_target():
    with pytest.raises(CompileError, match="unknown target 'sm_70'"):
        get_target("sm_70")


GEMM = open("examples/fp8_gemm.cdsl").read()


def test_tma_pipeline_needs_a_tma_target():
    with pytest.raises(CompileError, match="sm_89"):
        compile_source(GEMM, target="sm_89")


def test_pipeline_reads_the_shared_memory_limit_from_the_target():
    with pytest.raises(CompileError, match="a CTA can have 232448"):
        compile_source(GEMM, target="sm_90a", constants={"STAGES": 16})
