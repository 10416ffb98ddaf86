"""Math functions on the GPU: each one's max error in ulps against float64 over 2^22 inputs
spanning its domain (with inf, NaN, -0 and subnormals), within the bound its doc line states
(commdsl/ops/math.py); the fast-math variants within theirs (PTX's .approx instructions)."""
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
# Fast math: max ulp error where the function is of order 1 or more, and max absolute error
# (for results near 0, where .approx instructions promise an absolute bound).
FAST_BOUND = {"exp": (4, 0), "exp2": (3, 0), "log": (8, 2.0 ** -21), "log2": (3, 2.0 ** -21),
              "rsqrt": (3, 0), "tanh": (2 ** 13, 2.0 ** -10), "sigmoid": (2 ** 13, 2.0 ** -10),
              "silu": (2 ** 13, 2.0 ** -10), "sin": (2 ** 10, 2.0 ** -20), "cos": (2 ** 10, 2.0 ** -20)}
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
    x = (torch.exp(torch.log(torch.tensor(lo)) + u * (torch.log(torch.tensor(hi / lo))))
         if lo > 0 else lo + (hi - lo) * u).float()
    y = run(name, x, header=" fast_math()")
    ref = reference(name, x)
    ulps, absolute = FAST_BOUND[name]
    err = ulp_error(y, ref)
    big = ref.abs() >= 0.5
    diff = (y.double() - ref).abs()
    print(f"fast {name}: max {err[big].max().item():.3f} ulp (|f| >= 1/2), "
          f"max {diff[~big].max().item() if (~big).any() else 0:.3g} absolute below")
    assert err[big].max() <= ulps
    if (~big).any():
        assert (diff[~big].max() <= absolute) if absolute else (err[~big].max() <= ulps)
