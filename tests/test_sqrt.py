"""sqrt: the elementwise op added by one declaration (commdsl/ops/arith.py) and one emitter
(backends/ptx/codegen.py). Correctly rounded on the CPU interpreter and the GPU alike."""
import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError
from commdsl.runtime.ptxas import assemble, find_ptxas

ROOT = """\
kernel root(x: {dtype}[M, 256], y: out f32[M, 256])
  grid(M)
{{
  let t = load x[pid.0 : +1, 0 : +256]
  store y[pid.0 : +1, 0 : +256] = sqrt(t) * 2.0
}}
"""


def special_inputs(m: int, seed: int) -> torch.Tensor:
    """Random magnitudes over f32's range, with 0, -0, -1, inf, NaN and subnormals."""
    g = torch.Generator().manual_seed(seed)
    x = torch.exp2(torch.rand(m, 256, generator=g) * 252 - 126) * torch.rand(m, 256, generator=g)
    x.view(-1)[:8] = torch.tensor([0.0, -0.0, -1.0, float("inf"), float("nan"), 1e-40, 3e38, 1.0])
    return x


def reference(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded f32 root (f64's root rounded once is exact for f32 inputs)."""
    return (torch.sqrt(x.double()).float() * 2.0)


def assert_same_bits(y: torch.Tensor, ref: torch.Tensor):
    """Equal bits where the reference is a number, NaN exactly where it is NaN (payloads
    differ between torch and PTX's canonical NaN)."""
    assert torch.equal(y.isnan(), ref.isnan())
    keep = ~ref.isnan()
    assert torch.equal(y[keep].view(torch.int32), ref[keep].view(torch.int32))


def test_sqrt_lowers_to_the_correctly_rounded_instruction():
    ptx = compile_source(ROOT.format(dtype="f32"), "root.cdsl").ptx
    assert "sqrt.rn.f32" in ptx and "sqrt.approx" not in ptx
    if find_ptxas():
        assemble(ptx, arch="sm_90a", entry="root")


def test_sqrt_on_the_interpreter_is_correctly_rounded():
    x = special_inputs(5, seed=1)
    y = commdsl.load(ROOT.format(dtype="f32")).interpret(x)
    assert_same_bits(y, reference(x))


def test_sqrt_of_an_integer_tile_is_a_located_error():
    with pytest.raises(CompileError) as e:
        compile_source(ROOT.format(dtype="i32"), "root.cdsl")
    text = str(e.value)
    assert "root.cdsl:5:" in text and "sqrt" in text and "float" in text


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 300])
def test_sqrt_on_the_gpu_is_correctly_rounded(m):
    x = special_inputs(m, seed=m).cuda()
    y = torch.full((m, 256), float("nan"), device="cuda")            # poisoned output
    commdsl.load(ROOT.format(dtype="f32"))(x, y=y)
    assert_same_bits(y.cpu(), reference(x.cpu()))
