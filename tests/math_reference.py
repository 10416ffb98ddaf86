"""What the math functions' tests share: the float64 references, the inputs that span each
function's domain, the error bounds the docs state (commdsl/ops/math.py), and the error in
ulps. tests/test_math.py checks the algorithms on the CPU (emulated), tests/test_gpu_math.py
the code the backend emits, on the GPU."""
import torch

REFERENCE = {
    "exp": torch.exp, "exp2": torch.exp2, "log": torch.log, "log2": torch.log2,
    "rsqrt": torch.rsqrt, "sigmoid": torch.sigmoid, "silu": torch.nn.functional.silu,
    "tanh": torch.tanh, "erf": torch.erf, "sin": torch.sin, "cos": torch.cos,
}
# Max error in ulps of the default (accurate) lowering: the ops' doc lines.
BOUND = {"exp": 1.5, "exp2": 1, "log": 1, "log2": 2, "rsqrt": 1, "sigmoid": 2, "silu": 4,
         "tanh": 1, "erf": 3, "sin": 2, "cos": 2}
# Where each function's values are worth testing: uniform ranges, or "magnitudes" (every
# binade of positive floats, subnormals included).
DOMAIN = {
    "exp": [(-104.0, 89.0), (-1.0, 1.0)],
    "exp2": [(-150.0, 128.0), (-1.0, 1.0)],
    "log": ["magnitudes", (0.5, 2.0)],
    "log2": ["magnitudes", (0.5, 2.0)],
    "rsqrt": ["magnitudes"],
    "sigmoid": [(-110.0, 30.0), (-4.0, 4.0)],
    "silu": [(-110.0, 30.0), (-4.0, 4.0)],
    "tanh": [(-10.0, 10.0), (-1.0, 1.0)],
    "erf": [(-5.0, 5.0), (-1.2, 1.2)],
    "sin": [(-100.0, 100.0), (-1e6, 1e6), (-3e38, 3e38)],
    "cos": [(-100.0, 100.0), (-1e6, 1e6), (-3e38, 3e38)],
}
SPECIALS = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -1e-45, 3e38, -3e38]


def inputs(name: str, count: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """`count` f32 inputs spread over the function's domains, the special values first."""
    g = torch.Generator(device=device).manual_seed(seed)
    parts = [torch.tensor(SPECIALS, device=device)]
    per = count // len(DOMAIN[name])
    for d in DOMAIN[name]:
        u = torch.rand(per, generator=g, device=device, dtype=torch.float64)
        if d == "magnitudes":
            parts.append(torch.exp2(u * 277 - 149).float())
        else:
            lo, hi = d
            parts.append((lo + (hi - lo) * u).float())
    x = torch.cat(parts)
    return x[:count] if x.numel() >= count else x


def reference(name: str, x: torch.Tensor) -> torch.Tensor:
    """The function in float64 at the f32 inputs (not rounded)."""
    return REFERENCE[name](x.double())


def ulp_error(y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|y - ref| in f32 ulps at ref (2^-149 below 2^-126); a reference beyond f32's range
    counts as the infinity it rounds to; 0 where both are the same infinity or both NaN."""
    y, ref = y.double(), ref.double()
    ref = torch.where(ref.float().isinf(), ref.float().double(), ref)
    same = (y == ref) | (y.isnan() & ref.isnan())
    mag = ref.abs().clamp(min=2.0 ** -126, max=3.4e38)
    ulp = torch.exp2(torch.floor(torch.log2(mag)) - 23)
    err = (y - ref).abs() / ulp
    return torch.where(same, torch.zeros_like(err), torch.nan_to_num(err, nan=float("inf")))
