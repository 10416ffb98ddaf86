"""Launches one example's kernels once on one shape, for bench/sanitize.sh to run under
compute-sanitizer (one process per example, shape and tool), and reads the reports.

    python bench/sanitize_driver.py EXAMPLE aligned|ragged
    python bench/sanitize_driver.py --list              # the examples, one a line
    python bench/sanitize_driver.py --summarize LOGS    # table of LOGS/TOOL.EXAMPLE.SHAPE.log

Aligned shapes fill every tile; ragged ones end inside a tile, so the masked loads and
stores at the edges run. Outputs are allocated by the launch (torch.empty): a kernel that
reads one before writing it shows up under initcheck.
"""
from __future__ import annotations

import os
import re
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
SHAPE_KINDS = ("aligned", "ragged")


def _load(name, **kw):
    import commdsl
    return commdsl.load(os.path.join(EXAMPLES, f"{name}.cdsl"), **kw)


def _bf16(*shape):
    import torch
    return (torch.randn(*shape, device="cuda") * 3).to(torch.bfloat16)


def _fp8(m, k):
    import torch
    return (torch.randn(m, k, device="cuda") * 40).to(torch.float8_e4m3fn)


def _scales(*shape):
    import torch
    return torch.rand(*shape, device="cuda") + 0.5


def _cdiv(a, b):
    return -(-a // b)


def act_quant(m, k):
    _load("act_quant")(_bf16(m, k))


def weight_quant(m, k):
    _load("weight_quant")(_bf16(m, k))


def requant_t(m, k):
    _load("requant_t")(_fp8(m, k), _scales(m, _cdiv(k, 128)))


def dequant(m, k):
    _load("dequant", kernel="dequant_act")(_fp8(m, k), _scales(m, _cdiv(k, 128)))
    _load("dequant", kernel="dequant_weight")(_fp8(m, k), _scales(_cdiv(m, 128), _cdiv(k, 128)))


def copy_nc(m, k):
    _load("copy_nc")(_bf16(m * k))


def fp8_gemm(m, n):
    k = 256                                         # K / 128 scales: K stays whole
    _load("fp8_gemm")(_fp8(m, k), _scales(k // 128, _cdiv(m, 4) * 4), _fp8(n, k),   # mn_major
                      _scales(_cdiv(n, 128), k // 128))


def bf16_gemm(m, n):
    k = 200                                         # ragged K: a partial last step of 64
    _load("bf16_gemm")(_bf16(m, k), _bf16(n, k))


def bf16_matmul(m, n):
    k = 200                                         # ragged K: a partial last step of 64
    _load("bf16_matmul")(_bf16(m, k), _bf16(k, n))


def swiglu_gemm(m, n):
    k = 200                                         # ragged K: a partial last step of 64
    _load("swiglu_gemm")(_bf16(m, k), _bf16(m, k), _bf16(n, k))


def attention(bh, length):
    q, k, v = (_bf16(bh, length, 64) for _ in range(3))
    _load("attention")(q, k, v)


def attention_varlen(heads, length):
    import torch
    lens = [length // 3, 1, 0, length - length // 3 - 1]     # ragged, one of 1, one empty
    q, k, v = (_bf16(length, heads, 64) for _ in range(3))
    cu = torch.tensor([0, *lens], device="cuda").cumsum(0).to(torch.int32)
    _load("attention_varlen")(q, k, v, cu)


def mla_decode(heads, length):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from mla_reference import mla_operands
    lens = [length, 2, length // 3 + 1]                       # the fewest, a ragged block
    _load("mla_decode")(*mla_operands(heads, 2, lens, seed=length, device="cuda"))


def mla_decode_split(heads, length):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from mla_reference import mla_operands
    lens = [length, 2]                                         # the second leaves splits empty
    o_part, lse_part = _load("mla_decode_split", kernel="mla_decode_split", SPLITS=3)(
        *mla_operands(heads, 2, lens, seed=length, device="cuda"))
    _load("mla_decode_split", kernel="mla_combine", SPLITS=3)(o_part, lse_part)


def grouped_fp8_gemm(m, n):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from grouped_layout import grouped_operands
    from test_fp8_gemm import mn_major
    rows = [m // 2, 0, m - m // 2]                  # an empty group, padding rows
    a, sa, b, sb, m_idx = grouped_operands(rows, n, 256, seed=m, device="cuda")
    _load("grouped_fp8_gemm")(a, mn_major(sa), b, sb, m_idx)


def grouped_fp8_gemm_masked(m, n):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from grouped_layout import masked_operands
    from test_fp8_gemm import mn_major
    counts = [m // 2, 0, m - 3]                     # an empty group, counts inside a tile
    a, sa, b, sb, masked_m = masked_operands(counts, m, n, 256, seed=m, device="cuda")
    _load("grouped_fp8_gemm_masked")(a, mn_major(sa), b, sb, masked_m)


def swiglu_quant(m, k):
    _load("swiglu_quant")(_bf16(m, k), _bf16(m, k))


def rmsnorm_quant(m, h):
    _load("rmsnorm_quant", H=h)(_bf16(m, h), _bf16(h))


def softmax(m, k):
    import torch
    _load("softmax")(torch.randn(m, k, device="cuda"))


def moe_router(tokens, _):
    import torch
    _load("moe_router")(torch.randn(tokens, 256, device="cuda"), torch.randn(256, device="cuda"))


# example -> (aligned shape, ragged shape). K stays a multiple of 128 where the scale layout
# asks for it (K / 128 in the signature); elsewhere the ragged shape cuts both axes.
SHAPES = {
    "act_quant": ((64, 512), (33, 384)),
    "weight_quant": ((256, 256), (200, 300)),
    "requant_t": ((256, 256), (200, 300)),
    "dequant": ((256, 256), (200, 300)),
    "copy_nc": ((16, 4096), (13, 5000)),
    "fp8_gemm": ((256, 256), (200, 296)),
    "bf16_gemm": ((256, 256), (200, 296)),
    "bf16_matmul": ((256, 256), (200, 296)),
    "swiglu_gemm": ((256, 256), (200, 296)),
    "attention": ((2, 256), (3, 200)),
    "attention_varlen": ((2, 256), (3, 200)),                  # heads x total tokens
    "mla_decode": ((64, 256), (128, 200)),                     # heads x cached tokens
    "mla_decode_split": ((64, 256), (128, 200)),
    "grouped_fp8_gemm": ((256, 256), (200, 296)),
    "grouped_fp8_gemm_masked": ((256, 256), (200, 296)),       # M_max x N
    "swiglu_quant": ((64, 512), (33, 384)),
    "rmsnorm_quant": ((16, 1024), (5, 896)),
    "softmax": ((8, 2048), (5, 1000)),
    "moe_router": ((64, 256), (13, 256)),                      # tokens x experts (fixed)
}
RUN = {name: globals()[name] for name in SHAPES}

# Driver-API probes: the CUDA runtime and cuda-bindings look up entry points this driver may
# lack, on purpose; compute-sanitizer reports each failed lookup as an API error.
PROBE = re.compile(r"Program hit (CUDA_ERROR_NOT_FOUND|cudaErrorSymbolNotFound)|"
                   r"on CUDA API call to cuGetProcAddress")
API_ERROR = re.compile(r"^========= Program hit ", re.M)
SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors?")
RACES = re.compile(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, \d+ warnings?\)")


def count(text: str, example: str) -> tuple[int | None, int]:
    """(errors, probes) of one report; errors None when the run did not finish (no
    summary, or the driver's closing line missing)."""
    probes = sum(1 for line in text.splitlines() if line.startswith("=========") and
                 PROBE.search(line))
    m, races = SUMMARY.search(text), RACES.search(text)
    if (m is None and races is None) or f"ran {example} " not in text:
        return None, probes
    # racecheck ends with its own summary line instead of the other tools' ERROR SUMMARY
    errors = int(m.group(1)) - probes if m else 0
    if races:
        errors = max(errors, int(races.group(1)))
    return errors, probes


def summarize(logs: str, examples) -> int:
    """Prints the table (example/shape x tool) and returns the number of runs with errors."""
    bad, probes, lines = 0, 0, []
    for ex in examples:
        for shape in SHAPE_KINDS:
            cells = []
            for tool in TOOLS:
                path = os.path.join(logs, f"{tool}.{ex}.{shape}.log")
                text = open(path, errors="replace").read() if os.path.exists(path) else ""
                errors, p = count(text, ex)
                probes += p
                if errors is None:
                    bad += 1
                    cells.append("DID NOT FINISH")
                    continue
                bad += errors > 0
                other_api = len(API_ERROR.findall(text)) - p
                cells.append(f"{errors}" + (f" ({other_api} api)" if other_api else ""))
            lines.append([f"{ex}/{shape}"] + cells)
    header = ["example/shape", *TOOLS]
    widths = [max(len(r[i]) for r in [header] + lines) + 2 for i in range(len(header))]
    for row in [header] + lines:
        print("".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"{bad} run(s) with errors; {probes} driver-API probe(s) excluded; reports in {logs}")
    return bad


def main(argv):
    if argv == ["--list"]:
        print("\n".join(SHAPES))
        return 0
    if len(argv) == 2 and argv[0] == "--summarize":
        return 1 if summarize(argv[1], SHAPES) else 0
    if len(argv) != 2 or argv[0] not in SHAPES or argv[1] not in SHAPE_KINDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    import torch
    name, shape = argv
    RUN[name](*SHAPES[name][shape == "ragged"])
    torch.cuda.synchronize()
    print(f"ran {name} {shape} {SHAPES[name][shape == 'ragged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
