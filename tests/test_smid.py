"""`smid`: the SM a program runs on (PTX %smid), for a test to record per CTA where it ran
(tests/test_gpu_partition.py). On the CPU: it compiles to a read of %smid, reads back from IR
text, a name of the kernel's own shadows it, and the interpreter runs every program on SM 0."""
import re

import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.ir_parser import parse_kernel
from commdsl.ir_printer import print_kernel

WHERE_RUN = """
kernel where_run(x: f32[N], y: out f32[N], sm: out i32[N / 128])
  grid(N / 128)
{
  store y[pid.0 * 128 : +128] = load x[pid.0 * 128 : +128] + 1.0
  store sm[pid.0] = smid
}
"""


def test_smid_reads_the_sm_id_register():
    ptx = compile_source(WHERE_RUN, "where_run.cdsl", target="sm_90a").ptx
    assert re.search(r"mov\.u32\s+%r\d+, %smid;", ptx)


def test_smid_is_an_op_of_the_ir_text():
    kir = compile_source(WHERE_RUN, "where_run.cdsl", emit="ir").ir[0]
    text = print_kernel(kir)
    assert "= smid() : i32" in text
    assert print_kernel(parse_kernel(text)) == text


def test_a_let_named_smid_shadows_the_builtin():
    shadowed = WHERE_RUN.replace("store sm[pid.0] = smid",
                                 "let smid = pid.0 * 3\n  store sm[pid.0] = smid")
    ptx = compile_source(shadowed, "where_run.cdsl", target="sm_90a").ptx
    assert "%smid" not in ptx


def test_the_interpreter_runs_every_program_on_sm_0():
    kernel = commdsl.load(WHERE_RUN)
    y, sm = kernel.interpret(torch.arange(512, dtype=torch.float32))
    assert torch.equal(y, torch.arange(512, dtype=torch.float32) + 1)
    assert torch.equal(sm, torch.zeros(4, dtype=torch.int32))
