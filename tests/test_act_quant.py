"""act_quant and copy_nc: the PTX facts the issue names, ptxas acceptance, CPU numerics."""
import os
import re

import pytest
import torch

import commdsl
from commdsl.compiler import compile_file
from commdsl.runtime.ptxas import assemble

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
ACT_QUANT = os.path.join(EXAMPLES, "act_quant.cdsl")
COPY_NC = os.path.join(EXAMPLES, "copy_nc.cdsl")


def act_quant_reference(x: torch.Tensor):
    """DeepSeek-V3's formula in float32: s = max(amax, 1e-4) / 448, y = x / s.

    The divisor is a tensor on purpose: torch on CUDA divides by a Python scalar through a
    reciprocal multiply, which is not the IEEE division the kernel's '/' promises."""
    m, k = x.shape
    groups = x.float().view(m, k // 128, 128)
    amax = groups.abs().amax(-1).clamp(min=1e-4)
    s = amax / torch.full_like(amax, 448.0)
    y = (groups / s[..., None]).view(m, k).to(torch.float8_e4m3fn)
    return y, s


def random_activations(m, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 2
    outliers = torch.randint(0, m * k, (max(1, m * k // 500),), generator=g)
    x.view(-1)[outliers] *= 300                                  # DeepSeek-style outliers
    return x.to(torch.bfloat16)


def test_act_quant_ptx_facts_and_ptxas():
    ptx = compile_file(ACT_QUANT, constants={"XC": "cache(nc, L1 = no_allocate, L2 = 256B)"}).ptx
    loads = re.findall(r"ld\.global\.nc\.L1::no_allocate\.L2::256B(\.\w+)*", ptx)
    assert loads, "no cache-hinted load"
    assert all(".v4.b32" in line for line in re.findall(r"ld\.global\.nc\.L1::no_allocate\.L2::256B\S*", ptx)), \
        "every hinted load must be 128 bits wide"
    assert "cvt.rn.satfinite.e4m3x2.f32" in ptx
    assert "div.rn.f32" in ptx, "'/' must be IEEE round-to-nearest division"
    report = assemble(ptx, arch="sm_90a", entry="act_quant").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


@pytest.mark.parametrize("policy,load", [
    (None, "ld.global.nc.L2::256B.v4.b32"),                   # the measured default
    ("cache()", "ld.global.v4.b32"),
    ("cache(nc,L1=no_allocate, L2=256B)", "ld.global.nc.L1::no_allocate.L2::256B.v4.b32")])
def test_the_load_policy_is_a_tune_constant(policy, load):
    ptx = compile_file(ACT_QUANT, constants={} if policy is None else {"XC": policy}).ptx
    assert re.findall(r"ld\.global\S*", ptx) == [load] * len(re.findall(r"ld\.global", ptx))


@pytest.mark.parametrize("rows,warps", [(1, 1), (4, 4), (16, 4), (64, 8)])
def test_act_quant_compiles_for_every_tile_config(rows, warps):
    ptx = compile_file(ACT_QUANT, constants={"ROWS": rows, "WARPS": warps}).ptx
    assemble(ptx, arch="sm_90a", entry="act_quant")


def test_copy_nc_ptx_facts():
    ptx = compile_file(COPY_NC).ptx
    assert re.search(r"ld\.global\.nc\.L1::no_allocate\.L2::256B\.v4\.b32", ptx)
    assert re.search(r"st\.global\.L1::no_allocate\.v4\.b32", ptx)
    assemble(ptx, arch="sm_90a", entry="copy_nc")


def test_unaligned_sizes_get_a_scalar_variant():
    """A size not known to be a multiple of 16 must not get 16-byte accesses along it."""
    ptx = compile_file(COPY_NC, divisible={"N": False}).ptx
    assert ".v4.b32" not in ptx
    assert "ld.global.nc.L1::no_allocate.L2::256B.b16" in ptx


@pytest.mark.parametrize("m,k,rows", [(1, 128, 4), (5, 384, 4), (33, 256, 16), (3, 7168, 2)])
def test_act_quant_interpreter_matches_torch(m, k, rows):
    kernel = commdsl.load(ACT_QUANT, ROWS=rows)
    x = random_activations(m, k, seed=m * 1000 + k)
    y, s = kernel.interpret(x)
    y_ref, s_ref = act_quant_reference(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(y.view(torch.uint8), y_ref.view(torch.uint8))


def test_act_quant_interpreter_all_zero_group_gives_zeros():
    kernel = commdsl.load(ACT_QUANT, ROWS=2)
    y, s = kernel.interpret(torch.zeros(3, 256, dtype=torch.bfloat16))
    assert not torch.isnan(y.float()).any() and (y.float() == 0).all()
    assert torch.all(s == torch.tensor(1e-4) / 448.0)


def test_copy_nc_interpreter_handles_a_ragged_tail():
    kernel = commdsl.load(COPY_NC, BLOCK=1024)
    x = torch.randn(2500).to(torch.bfloat16)
    assert torch.equal(kernel.interpret(x), x)


def test_launch_checks_name_the_argument():
    kernel = commdsl.load(ACT_QUANT)
    with pytest.raises(commdsl.LaunchError, match="argument 'x'.*bf16"):
        kernel.interpret(torch.zeros(4, 256))
    with pytest.raises(commdsl.LaunchError, match="argument 'x'.*multiple of 128"):
        kernel.interpret(torch.zeros(4, 200, dtype=torch.bfloat16))
    with pytest.raises(commdsl.LaunchError, match="argument 'x'.*CUDA"):
        kernel(torch.zeros(4, 256, dtype=torch.bfloat16))
