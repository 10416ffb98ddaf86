"""Math functions on the GPU: each one's max error in ulps against float64 over 2^22 inputs
spanning its domain (with inf, NaN, -0 and subnormals), within the bound its doc line states
(commdsl/ops/math.py); the fast-math variants within the PTX ISA's bounds for .approx."""
import math

import pytest
import torch

import commdsl
from math_reference import BOUND, inputs, reference, ulp_error

KERNEL = """\
kernel k(x: f32[M, 256], y: out f32[M, 256]){header}
  grid(M)
{{
  let t = load x[pid.0 : +1, 0 : +256]
  store y[pid.0 : +1, 0 : +256] = {name}(t)
}}
"""
COUNT = 1 << 22
# Fast math: the error allowed at input x with float64 value f, from the PTX ISA's bounds for
# the .approx instructions (relative 2^-22 for ex2, rsqrt; 2^-22 absolute near 1 for lg2;
# 2^-20.9 absolute for sin and cos in [-pi, pi]; relative 2^-11 for tanh), plus what the
# lowering adds: exp's x * log2(e) rounded (up to |x| 2^-24 relative; sigmoid's and silu's
# too, with rcp.approx's 1 ulp and 1 + e's rounding)
FAST_BOUND = {
    "exp": lambda x, f: f.abs() * (2.0 ** -21 + x.abs() * 2.0 ** -23),
    "exp2": lambda x, f: f.abs() * 2.0 ** -21,
    "log": lambda x, f: f.abs() * 2.0 ** -21 + 2.0 ** -21,
    "log2": lambda x, f: f.abs() * 2.0 ** -21 + 2.0 ** -21,
    "rsqrt": lambda x, f: f.abs() * 2.0 ** -21,
    "tanh": lambda x, f: f.abs() * 2.0 ** -10 + 2.0 ** -24,
    "sigmoid": lambda x, f: f.abs() * (2.0 ** -20 + x.abs() * 2.0 ** -23),
    "silu": lambda x, f: f.abs() * (2.0 ** -20 + x.abs() * 2.0 ** -23),
    "sin": lambda x, f: torch.full_like(f, 2.0 ** -20),
    "cos": lambda x, f: torch.full_like(f, 2.0 ** -20),
}
FAST_DOMAIN = {"exp": (-80.0, 80.0), "exp2": (-120.0, 120.0), "log": (1e-30, 1e30),
               "log2": (1e-30, 1e30), "rsqrt": (1e-30, 1e30), "tanh": (-10.0, 10.0),
               "sigmoid": (-20.0, 20.0), "silu": (-20.0, 20.0), "sin": (-3.14159, 3.14159),
               "cos": (-3.14159, 3.14159)}


def run(name: str, x: torch.Tensor, header: str = "") -> torch.Tensor:
    k = commdsl.load(KERNEL.format(name=name, header=header))
    x = x.reshape(-1, 256).cuda()
    y = torch.full_like(x, float("nan"))                          # poisoned output
    k(x, y=y)
    return y.reshape(-1)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(BOUND))
def test_max_ulp_error_is_within_the_documented_bound(name):
    x = inputs(name, COUNT, seed=3, device="cuda")
    y = run(name, x)
    err = ulp_error(y, reference(name, x))
    worst = int(err.argmax())
    print(f"{name}: max {err.max().item():.3f} ulp at {x[worst].item()!r}")
    assert err.max() <= BOUND[name], f"{name}({x[worst].item()!r}): {err.max():.2f} ulp"


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(FAST_BOUND))
def test_fast_math_variants_are_within_their_bounds(name):
    lo, hi = FAST_DOMAIN[name]
    g = torch.Generator(device="cuda").manual_seed(4)
    u = torch.rand(COUNT, generator=g, device="cuda", dtype=torch.float64)
    x = (torch.exp(math.log(lo) + u * math.log(hi / lo))
         if lo > 0 else lo + (hi - lo) * u).float()
    y = run(name, x, header=" fast_math()")
    ref = reference(name, x)
    excess = (y.double() - ref).abs() / FAST_BOUND[name](x.double(), ref)
    worst = int(excess.argmax())
    print(f"fast {name}: error / bound at most {excess.max().item():.3f}, at {x[worst].item()!r}")
    assert excess.max() <= 1
