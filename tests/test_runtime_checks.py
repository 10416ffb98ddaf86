"""Launch-argument checks and ptxas assembly; both run without a GPU."""

import pytest
import torch

from commdsl.diagnostics import LaunchError, ToolError
from commdsl.dims import BinOp, Const, Sym
from commdsl.runtime import Launcher, assemble, find_ptxas
from commdsl.spec import KernelSpec, QuantGroup, TensorParam

M, K, N = Sym("M"), Sym("K"), Sym("N")


def act_quant_spec() -> KernelSpec:
    # x: bf16[M, K]; y: out e4m3[M, K] quant(1x128, scale=s); s: out f32[M, K / 128]
    return KernelSpec(
        name="act_quant",
        tensors=(
            TensorParam("x", "bf16", (M, K)),
            TensorParam("y", "e4m3", (M, K), is_out=True, quant=QuantGroup((1, 128), "s")),
            TensorParam("s", "f32", (M, BinOp("/", K, Const(128))), is_out=True),
        ),
        size_symbols=("M", "K"),
        grid=(BinOp("cdiv", M, Const(8)), BinOp("/", K, Const(128))),
        num_threads=256,
    )


def add_spec() -> KernelSpec:
    # a: f32[M, N]; b: f32[M, N]; c: out f32[M, N]
    return KernelSpec(
        name="add",
        tensors=(TensorParam("a", "f32", (M, N)), TensorParam("b", "f32", (M, N)),
                 TensorParam("c", "f32", (M, N), is_out=True)),
        size_symbols=("M", "N"),
        grid=(BinOp("cdiv", BinOp("*", M, N), Const(1024)),),
        num_threads=128,
    )


def bind_error(launcher, *args, require_cuda=False, **kwargs) -> LaunchError:
    with pytest.raises(LaunchError) as info:
        launcher.bind(*args, require_cuda=require_cuda, **kwargs)
    return info.value


def x_bf16(m=4, k=256):
    return torch.randn(m, k).to(torch.bfloat16)


def test_valid_call_binds_sizes_grid_and_allocates_outputs():
    bound = Launcher(act_quant_spec()).bind(x_bf16(20, 384), require_cuda=False)
    assert bound.sizes == {"M": 20, "K": 384}
    assert bound.grid == (3, 3, 1)
    x, y, s = bound.tensors
    assert y.shape == (20, 384) and y.dtype == torch.float8_e4m3fn
    assert s.shape == (20, 3) and s.dtype == torch.float32
    assert y.device == x.device


def test_outputs_can_be_passed_by_keyword_or_position():
    launcher = Launcher(act_quant_spec())
    x = x_bf16()
    s = torch.empty(4, 2, dtype=torch.float32)
    assert launcher.bind(x, s=s, require_cuda=False).tensors[2] is s
    y = torch.empty(4, 256, dtype=torch.float8_e4m3fn)
    bound = launcher.bind(x, y, s, require_cuda=False)
    assert bound.tensors[1] is y and bound.tensors[2] is s


def test_wrong_dtype():
    err = bind_error(Launcher(act_quant_spec()), torch.randn(4, 256))
    assert err.arg == "x"
    assert "must be bf16 (torch.bfloat16), got torch.float32" in str(err)
    assert "x.to(torch.bfloat16)" in str(err)


def test_not_a_tensor():
    err = bind_error(Launcher(act_quant_spec()), [[1.0]])
    assert err.arg == "x" and "torch.Tensor" in str(err)


def test_wrong_rank():
    err = bind_error(Launcher(act_quant_spec()), torch.zeros(2, 4, 256, dtype=torch.bfloat16))
    assert err.arg == "x" and "2 dimensions, got 3" in str(err)


def test_k_not_multiple_of_128_names_the_input_and_the_declaration():
    err = bind_error(Launcher(act_quant_spec()), x_bf16(4, 300))
    assert err.arg == "x"
    assert "K / 128" in str(err) and "300" in str(err)


def test_passed_output_with_wrong_compound_dim():
    err = bind_error(Launcher(act_quant_spec()), x_bf16(4, 256), s=torch.empty(4, 3))
    assert err.arg == "s" and "must be K / 128 = 2, got 3" in str(err)


def test_mismatched_sizes_between_inputs():
    a = torch.zeros(4, 512)
    err = bind_error(Launcher(add_spec()), a, torch.zeros(4, 256))
    assert err.arg == "b"
    assert "size N is 256 here but 512 from 'a'" in str(err)


def test_non_contiguous():
    x = torch.zeros(256, 4, dtype=torch.bfloat16).t()
    err = bind_error(Launcher(act_quant_spec()), x)
    assert err.arg == "x" and "contiguous" in str(err) and "x.contiguous()" in str(err)


def test_misaligned():
    x = torch.zeros(4 * 256 + 1, dtype=torch.bfloat16)[1:].view(4, 256)
    err = bind_error(Launcher(act_quant_spec()), x)
    assert err.arg == "x" and "16-byte aligned" in str(err)


def test_cpu_tensor_is_rejected_last():
    err = bind_error(Launcher(act_quant_spec()), x_bf16(), require_cuda=True)
    assert err.arg == "x" and "cpu" in str(err) and "x.cuda()" in str(err)
    # A dtype mistake on the same CPU tensor is reported as the dtype mistake.
    err = bind_error(Launcher(act_quant_spec()), torch.randn(4, 256), require_cuda=True)
    assert "bf16" in str(err)


def test_missing_input():
    err = bind_error(Launcher(add_spec()), torch.zeros(4, 4))
    assert err.arg == "b" and "missing input" in str(err)
    err = bind_error(Launcher(add_spec()), c=torch.zeros(4, 4))
    assert err.arg == "a, b" and "missing inputs" in str(err)


def test_unknown_keyword():
    err = bind_error(Launcher(act_quant_spec()), x_bf16(), scale=torch.zeros(4, 2))
    assert err.arg == "scale" and "unknown argument" in str(err)
    assert "valid names: x, y, s" in str(err)


def test_too_many_and_duplicate_arguments():
    launcher = Launcher(act_quant_spec())
    x = x_bf16()
    assert "too many" in str(bind_error(launcher, x, None, None, None))
    assert bind_error(launcher, x, x=x).arg == "x"


def test_size_only_an_output_has_must_come_from_that_output():
    spec = KernelSpec(
        name="gather",
        tensors=(TensorParam("idx", "i32", (M,)), TensorParam("out", "f32", (M, N), is_out=True)),
        size_symbols=("M", "N"), grid=(M,), num_threads=128)
    err = bind_error(Launcher(spec), torch.zeros(8, dtype=torch.int32))
    assert err.arg == "out" and "pass output 'out'" in str(err)
    bound = Launcher(spec).bind(torch.zeros(8, dtype=torch.int32), out=torch.empty(8, 64),
                                require_cuda=False)
    assert bound.sizes == {"M": 8, "N": 64}


# -- ptxas -------------------------------------------------------------------------------

def _ptxas_available() -> bool:
    try:
        find_ptxas()
        return True
    except ToolError:
        return False


needs_ptxas = pytest.mark.skipif(not _ptxas_available(), reason="no ptxas installed")

TINY_PTX = r"""
.version 8.0
.target sm_90a
.address_size 64

.visible .entry add_one(
    .param .u64 p_x,
    .param .u32 n
)
.maxntid 128, 1, 1
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<2>;
    .reg .pred %p;
    ld.param.u64 %rd1, [p_x];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    setp.ge.u32 %p, %r2, %r1;
    @%p bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r2, 4;
    add.u64 %rd2, %rd2, %rd3;
    ld.global.f32 %f1, [%rd2];
    add.f32 %f1, %f1, 0f3F800000;
    st.global.f32 [%rd2], %f1;
DONE:
    ret;
}
"""


@needs_ptxas
def test_assemble_reports_resources():
    out = assemble(TINY_PTX)
    assert out.cubin.startswith(b"\x7fELF")
    report = out.report
    assert report.entry == "add_one"
    assert 0 < report.registers < 64
    assert (report.spill_stores_bytes, report.spill_loads_bytes, report.stack_bytes) == (0, 0, 0)
    assert report.shared_bytes == 0
    assert report.summary().startswith(f"add_one: {report.registers} registers, 0 bytes spill")


@needs_ptxas
def test_assemble_collects_performance_notes():
    # An ordinary write to an accumulator between two wgmmas makes ptxas serialize them.
    ptx = r"""
.version 8.0
.target sm_90a
.address_size 64
.visible .entry wg(.param .u64 out)
.maxntid 128, 1, 1
{
  .reg .b64 %rd<4>; .reg .f32 %d<4>;
  mov.b64 %rd1, 0; mov.b64 %rd2, 0;
  wgmma.fence.sync.aligned;
  wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%d0, %d1, %d2, %d3}, %rd1, %rd2, 0, 1, 1, 0, 0;
  mov.f32 %d1, 0f00000000;
  wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%d0, %d1, %d2, %d3}, %rd1, %rd2, 1, 1, 1, 0, 0;
  wgmma.commit_group.sync.aligned;
  wgmma.wait_group.sync.aligned 0;
  ld.param.u64 %rd3, [out]; cvta.to.global.u64 %rd3, %rd3;
  st.global.v4.f32 [%rd3], {%d0, %d1, %d2, %d3};
  ret;
}
"""
    report = assemble(ptx, entry="wg").report
    assert any("serialized" in w for w in report.warnings)


@needs_ptxas
def test_assemble_failure_keeps_ptx_and_shows_log():
    bad = TINY_PTX.replace("add.f32 %f1, %f1, 0f3F800000;", "add.f33 %f1, %f1;")
    with pytest.raises(ToolError) as info:
        assemble(bad)
    text = str(info.value)
    assert "Unknown modifier '.f33'" in text
    saved = text.split("PTX saved to ")[1].split()[0]
    assert open(saved).read() == bad
    assert "reproduce: " in text and saved in text.split("reproduce: ")[1]


@needs_ptxas
def test_assemble_asks_which_entry_when_several():
    two = TINY_PTX + TINY_PTX.split(".address_size 64")[1].replace("add_one", "add_two")
    with pytest.raises(ToolError, match="add_one.*add_two|add_two.*add_one"):
        assemble(two)
    assert assemble(two, entry="add_two").report.entry == "add_two"


def test_find_ptxas_honours_override(monkeypatch, tmp_path):
    monkeypatch.setenv("COMMDSL_PTXAS", str(tmp_path / "nope"))
    with pytest.raises(ToolError, match="COMMDSL_PTXAS"):
        find_ptxas()


# -- on a GPU ----------------------------------------------------------------------------

ADD_ONE_PTX = r"""
.version 8.0
.target sm_90a
.address_size 64

.visible .entry add_one(
    .param .u64 p_x,
    .param .u64 p_y,
    .param .u32 n
)
.maxntid 128, 1, 1
{
    .reg .b32 %r<6>;
    .reg .b64 %rd<6>;
    .reg .f32 %f<2>;
    .reg .pred %p;
    ld.param.u64 %rd1, [p_x];
    ld.param.u64 %rd2, [p_y];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mad.lo.u32 %r4, %r3, 128, %r2;
    setp.ge.u32 %p, %r4, %r1;
    @%p bra DONE;
    mul.wide.u32 %rd3, %r4, 4;
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    add.u64 %rd1, %rd1, %rd3;
    add.u64 %rd2, %rd2, %rd3;
    ld.global.f32 %f1, [%rd1];
    add.f32 %f1, %f1, 0f3F800000;
    st.global.f32 [%rd2], %f1;
DONE:
    ret;
}
"""


def add_one_spec(shared_bytes=0) -> KernelSpec:
    return KernelSpec(
        name="add_one",
        tensors=(TensorParam("x", "f32", (N,)), TensorParam("y", "f32", (N,), is_out=True)),
        size_symbols=("N",), grid=(BinOp("cdiv", N, Const(128)),), num_threads=128,
        shared_bytes=shared_bytes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@needs_ptxas
def test_launch_on_gpu():
    cubin = assemble(ADD_ONE_PTX).cubin
    x = torch.randn(1000, device="cuda")
    for image, smem in ((cubin, 0), (ADD_ONE_PTX, 0), (cubin, 100 * 1024)):
        launcher = Launcher.from_image(add_one_spec(smem), image)
        torch.testing.assert_close(launcher(x), x + 1)
    y = torch.empty_like(x)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        assert launcher(x, y=y) is y
    stream.synchronize()
    torch.testing.assert_close(y, x + 1)
    with pytest.raises(LaunchError, match="N = 0 from the shape of 'x'"):
        launcher(torch.empty(0, device="cuda"))           # an empty grid is refused
