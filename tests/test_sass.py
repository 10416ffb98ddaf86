"""`commdsl check --sass`: the SASS of each kernel and its opcode counts (commdsl/runtime/
sass.py), a GEMM's wgmma loops, the diagnostic without cuobjdump, and the listing where the
tools are found."""
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


def _listing(rows):
    return "".join(f"        /*{16 * i:04x}*/                   {row} ;\n"
                   for i, row in enumerate(rows))


# A persistent GEMM's shape: a tile loop (0x10..0xd0) around a K loop (0x20..0xb0) of two
# wgmma groups, whose barrier wait retries after the EXIT and jumps back into it.
GEMM = _listing([
    "S2R R0, SR_TID.X",                                                   # 0x00
    "CS2R R24, SRZ",                                                      # 0x10: tile loop
    "SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [UR4], R2",                       # 0x20: K loop
    "@!P1 BRA 0xf0",
    "QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24",
    "QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24, gsb0",
    "FFMA R40, R24, R2, R40",
    "HGMMA.64x128x16.F32.BF16 R56, gdesc[UR12], R56, gsb0",
    "FFMA R41, R25, R2, R41",
    "WARPGROUP.DEPBAR.LE gsb0, 0x1",
    "UIADD3 UR4, UR4, 0x8, URZ",
    "@P0 BRA 0x20",                                                       # 0xb0 -> the K loop
    "STS [R8], R40",
    "@P2 BRA 0x10",                                                       # 0xd0 -> the tile loop
    "EXIT",
    "SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [UR4], R2",                       # 0xf0: slow path
    "@!P1 BRA 0xf0",
    "BRA 0x40",
])


def test_mma_loops_take_the_innermost_loop_that_commits_wgmma_groups():
    (ops, groups), = sass.mma_loops(GEMM)
    assert groups == 2
    assert ops == {"SYNCS": 1, "BRA": 2, "QGMMA": 2, "HGMMA": 1, "FFMA": 2, "WARPGROUP": 1,
                   "UIADD3": 1}


def test_mma_loops_ignore_loops_without_wgmma_and_code_after_the_last_exit():
    no_mma = GEMM.replace("gsb0", "")
    assert sass.mma_loops(no_mma) == []
    assert sass.mma_loops(LISTING) == []


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
    assert "wgmma loops" not in out                 # a copy kernel has none


def test_check_sass_gives_the_gemm_loops_instructions(capsys):
    try:
        sass.find_tool("cuobjdump"), sass.find_tool("nvdisasm")
    except ToolError:
        pytest.skip("no cuobjdump and nvdisasm here")
    assert main(["check", os.path.join(ROOT, "examples", "bf16_gemm.cdsl"), "--sass"]) == 0
    out = capsys.readouterr().out
    line = out.split("wgmma loops")[1].split("\n")[0]
    per_iteration, groups = line.split(": ")[1].split(";")[0].split(", ")[0].split(" / ")
    assert int(groups) >= 1 and "HGMMA 4" in line
    assert 4 * int(groups) < int(per_iteration) < 200 * int(groups)
