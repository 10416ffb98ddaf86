"""`commdsl check --sass`: the SASS of each kernel and its opcode counts (commdsl/runtime/
sass.py), the diagnostic without cuobjdump, and the listing where the tools are found."""
import os

import pytest

from commdsl.cli import main
from commdsl.diagnostics import ToolError
from commdsl.runtime import sass
from commdsl.runtime.ptxas import find_ptxas

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXAMPLE = os.path.join(ROOT, "examples", "copy_nc.cdsl")
LISTING = """\
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
        /*0180*/               @P3 LDG.E.LTC256B.128.CONSTANT R20, desc[UR6][R8.64] ;
        /*0590*/                   FCHK P0, R0, R48 ;
        /*05a0*/                   FFMA R34, R0, R43, RZ ;
        /*05d0*/                   FFMA R35, -R48, R34, R0 ;
        /*0640*/              @!P0 BRA 0x680 ;
        /*0c20*/                   CALL.REL.NOINC 0x1020 ;
"""


def test_opcodes_count_instructions_by_name_predicated_ones_too():
    assert sass.opcodes(LISTING) == {"LDC": 1, "LDG": 1, "FCHK": 1, "FFMA": 2, "BRA": 1,
                                     "CALL": 1}


def test_global_loads_are_placed_among_the_instructions():
    slow_path = "        /*0c40*/                   FFMA R1, R2, R3, R4 ;\n"
    assert sass.global_loads(LISTING + "        /*0c30*/                   EXIT ;\n" + slow_path) \
        == ([1], 7)                                     # the code after the last EXIT is cold
    assert sass.global_loads(LISTING) == ([1], 7)


def test_check_sass_without_cuobjdump_is_a_diagnostic(monkeypatch, capsys):
    try:
        find_ptxas()
    except ToolError:
        pytest.skip("no ptxas here: check stops before the SASS")
    monkeypatch.setattr(sass, "find_tool", _missing)
    assert main(["check", EXAMPLE, "--sass"]) == 1
    err = capsys.readouterr().err
    assert "cuobjdump not found" in err and "Traceback" not in err


def _missing(name):
    raise ToolError(f"{name} not found (test)")


def test_check_sass_lists_each_kernels_instructions(capsys):
    try:
        sass.find_tool("cuobjdump"), sass.find_tool("nvdisasm")
    except ToolError:
        pytest.skip("no cuobjdump and nvdisasm here")
    assert main(["check", EXAMPLE, "--sass"]) == 0
    out = capsys.readouterr().out
    total = int(out.split("SASS: ")[1].split(" instructions")[0])
    assert total == sum(sass.opcodes(out).values()) and "LDG" in out and "STG" in out
    assert "global loads: " in out
