"""NaN, Inf and -0.0 inputs for the quantization examples, and the comparison the language
promises between the interpreter and the GPU (docs/language.md, "NaN, Inf and -0.0"): the
same bits, but a NaN in f32 / bf16 only as a NaN (FP8 and ue8m0 bytes are exact)."""
import torch

NAN, INF = float("nan"), float("inf")


def inject(x: torch.Tensor, g: int) -> torch.Tensor:
    """x (float, [M, K], M >= 5, K >= 3 g) with special values in chosen 1 x g groups:
    row 0 group 0 a NaN, row 1 group 1 a +Inf, row 2 group 2 a -Inf, row 3 group 0 all -0.0
    and a -0.0 in its group 1, row 4 group 0 a NaN and an Inf."""
    x = x.float().clone()
    x[0, 3] = NAN
    x[1, g + 5] = INF
    x[2, 2 * g + 7] = -INF
    x[3, :g] = -0.0
    x[3, g + 1] = -0.0
    x[4, 0], x[4, 1] = NAN, INF
    return x


def inject_fp8(q: torch.Tensor, g: int) -> torch.Tensor:
    """FP8 bytes with NaN (0x7F, 0xFF) and -0.0 (0x80) in chosen groups."""
    b = q.view(torch.uint8).clone()
    b[0, 3] = 0x7F
    b[1, g + 5] = 0xFF
    b[3, :g] = 0x80
    return b.view(q.dtype)


def inject_scales(s: torch.Tensor) -> torch.Tensor:
    """f32 group scales with an Inf, a NaN, a -0.0 and a +0.0 (x * 0 and 0 * Inf)."""
    s = s.clone()
    s[1, 0], s[2, 0], s[3, 0], s[4, 0] = INF, NAN, -0.0, 0.0
    return s


def _bits(t: torch.Tensor) -> torch.Tensor:
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]
    return t.contiguous().view(width)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bits; f32/bf16/f16 NaN equal to any NaN. FP8 and byte tensors: exact bytes."""
    a, b = a.cpu(), b.cpu()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype in (torch.float32, torch.bfloat16, torch.float16):
        nan = torch.isnan(a)
        if not torch.equal(nan, torch.isnan(b)):
            return False
        return torch.equal(_bits(a)[~nan], _bits(b)[~nan])
    return torch.equal(_bits(a), _bits(b))


def differences(a: torch.Tensor, b: torch.Tensor, count: int = 6) -> str:
    """The first cells where `same` fails, as (index, a's bits, b's bits), for a message."""
    a, b = a.cpu(), b.cpu()
    ab, bb = _bits(a).flatten(), _bits(b).flatten()
    bad = (ab != bb).nonzero().flatten()[:count].tolist()
    return ", ".join(f"[{i}] {ab[i].item():#x} vs {bb[i].item():#x}" for i in bad)


def same_as_torch(a: torch.Tensor, ref: torch.Tensor) -> bool:
    """`same`, but FP8 NaN bytes of a torch reference as any NaN byte (torch on the CPU gives
    inf / inf the x86 NaN, whose sign bit is set), while `a`'s must be 0x7F."""
    if ref.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        nan = torch.isnan(ref.float())
        if not torch.equal(nan, torch.isnan(a.float())):
            return False
        return bool((a.view(torch.uint8)[nan] == 0x7F).all()) and torch.equal(
            a.view(torch.uint8)[~nan], ref.view(torch.uint8)[~nan])
    return same(a, ref)
