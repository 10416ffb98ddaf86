"""The Target table: each GPU family's limits and instructions, and the target for a device."""
import pytest

import commdsl
from commdsl import compile_source
from commdsl.diagnostics import CompileError
from commdsl.dims import Const, Sym
from commdsl.spec import KernelSpec, TensorParam
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
    assert t.max_grid == (2**31 - 1, 65535, 65535)
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


def test_compiling_a_wgmma_kernel_for_sm_80_is_one_diagnostic(capsys, tmp_path):
    from commdsl.cli import main
    assert main(["compile", "examples/fp8_gemm.cdsl", "--target", "sm_80",
                 "-o", str(tmp_path / "k.ptx")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1 and err.count("help:") == 1
    line = next(i for i, text in enumerate(GEMM.splitlines(), 1) if "acc += mma(" in text)
    assert f"examples/fp8_gemm.cdsl:{line}:14: error: mma needs the warpgroup MMA (wgmma) of " \
           "sm_90a; sm_80 has none" in err
    assert "  help: compile with --target sm_90a" in err


def test_tma_pipeline_needs_a_tma_target():
    with pytest.raises(CompileError, match="sm_89"):
        compile_source(GEMM, target="sm_89")


def test_pipeline_reads_the_shared_memory_limit_from_the_target():
    with pytest.raises(CompileError, match="a CTA can have 232448"):
        compile_source(GEMM, target="sm_90a", constants={"STAGES": 16})


COPY = """kernel c(x: f32[N, 64], y: out f32[N, 64]) grid(N) {
  store y[pid.0, 0 : +64] = load x[pid.0, 0 : +64]
}
"""


def test_ctas_per_sm_is_held_to_the_targets_sm():
    """sm_86 holds 16 CTAs per SM, sm_90a 32: the same kernel fits one and not the other."""
    source = COPY.replace("grid(N)", "grid(N)\n  ctas_per_sm(20)")
    compile_source(source, target="sm_90a", emit="ir")
    with pytest.raises(CompileError, match="an SM holds at most 16 CTAs, not 20"):
        compile_source(source, target="sm_86", emit="ir")


def test_warps_are_held_to_the_targets_threads_per_block():
    with pytest.raises(CompileError, match=r"33 warps is more than a CTA can hold \(32\)"):
        compile_source(COPY.replace("grid(N)", "grid(N)\n  warps(33)"), emit="ir")


# ---- the runtime: the device's target, and kernels the device cannot run ---------------------

ACT_QUANT = open("examples/act_quant.cdsl").read()


@pytest.fixture
def device_of(monkeypatch):
    """Stands in a CUDA device of compute capability (major, minor) for every device index."""
    from commdsl.runtime import device

    def simulate(major: int, minor: int):
        monkeypatch.setattr(device, "capability", lambda index: (major, minor))
        monkeypatch.setattr(device, "current_target",
                            lambda: device.device_target(0))
    return simulate


def test_load_compiles_for_the_devices_family(device_of, tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path))
    device_of(8, 9)
    kernel = commdsl.load(ACT_QUANT)
    assert kernel.target == "sm_89" and ".target sm_89" in kernel.ptx


def test_a_kernel_needing_wgmma_on_a_cc_8_0_device_fails_at_load(device_of, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path))
    device_of(8, 0)
    with pytest.raises(CompileError, match="wgmma.*sm_80 has none") as info:
        commdsl.load(GEMM)
    message = str(info.value)
    assert message.count("error:") == 1 and "Traceback" not in message
    assert "\n  help: compile with --target sm_90a; sm_80 is the current GPU's family" in message


def test_loading_code_the_device_cannot_run_names_kernel_instructions_and_device(device_of):
    from commdsl.runtime import Launcher
    from commdsl.runtime.device import DeviceError
    device_of(8, 0)
    spec = KernelSpec(name="fp8_gemm", tensors=(), size_symbols=(), grid=(Const(1),),
                      num_threads=256, target="sm_90a")
    launcher = Launcher.from_image(spec, "// PTX for sm_90a")
    with pytest.raises(DeviceError) as info:
        launcher._function_on(0)        # what the first call on cuda:0 does, before the driver
    message = str(info.value)
    assert "fp8_gemm" in message and "sm_90a" in message
    assert "cuda:0 (compute capability 8.0)" in message
    assert "wgmma" in message and "tma" in message
    assert "\n  help: load it with target='sm_80'" in message


def test_a_device_older_than_every_target(device_of):
    from commdsl.runtime.device import DeviceError, device_target
    device_of(7, 5)
    with pytest.raises(DeviceError, match=r"no target for cuda:0 \(compute capability 7.5\)"):
        device_target(0)


def test_comm_parameters_follow_the_sizes_each_aligned_to_its_size():
    import numpy as np

    from commdsl.runtime import Launcher
    from commdsl.spec import COMM_PARAMS
    spec = KernelSpec(name="moe", tensors=(TensorParam("x", "bf16", (Sym("T"),)),),
                      size_symbols=("T",), grid=(Const(1),), num_threads=128, comm=True)
    launcher = Launcher(spec)
    values = (7, 2, 5, 30_000_000_000, 0xABC0)       # rank, world, epoch, timeout_ns, status
    launcher.pack([0x1000], [96], values)
    buffer = launcher._arg_buffer
    offsets = [int(a) - buffer.ctypes.data for a in launcher._kernel_params]
    assert len(offsets) == 2 + len(COMM_PARAMS)
    kinds = [np.uint64, np.uint32] + [np.uint32 if k == "u32" else np.uint64
                                      for _, k in COMM_PARAMS]
    read = [int(buffer[o:o + np.dtype(t).itemsize].view(t)[0]) for o, t in zip(offsets, kinds)]
    assert read == [0x1000, 96, *values]
    assert all(o % np.dtype(t).itemsize == 0 for o, t in zip(offsets, kinds))


def test_a_comm_kernel_launches_only_through_a_comm():
    from commdsl.diagnostics import LaunchError
    from commdsl.runtime import Bound, Launcher
    spec = KernelSpec(name="moe_route", tensors=(), size_symbols=(), grid=(Const(1),),
                      num_threads=128, comm=True)
    with pytest.raises(LaunchError, match="(?s)through a Comm.*load_comm"):
        Launcher(spec).launch(Bound((), {}, (1, 1, 1), None))
