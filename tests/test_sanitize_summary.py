"""bench/sanitize.sh's reading of compute-sanitizer reports (bench/sanitize_driver.py): the
driver-API probes are counted apart, real errors and unfinished runs fail the table. The
runs themselves need a GPU (bash bench/sanitize.sh on the lead's machine)."""
import importlib
import os
import re
import sys

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")
sys.path.insert(0, BENCH)
driver = importlib.import_module("sanitize_driver")

PROBE = ('========= Program hit CUDA_ERROR_NOT_FOUND (error 500) due to "named symbol not '
         'found" on CUDA API call to cuGetProcAddress_v2.\n'
         '=========     Saved host backtrace up to driver entry point at error\n')
CLEAN = "========= COMPUTE-SANITIZER\nran act_quant aligned (64, 512)\n"


def test_probes_are_excluded_and_counted():
    text = CLEAN + PROBE * 3 + "========= ERROR SUMMARY: 3 errors\n"
    assert driver.count(text, "act_quant") == (0, 3)


def test_a_kernel_error_counts():
    text = (CLEAN + PROBE + "========= Invalid __global__ read of size 2 bytes\n"
            "=========     at act_quant+0x1b0\n========= ERROR SUMMARY: 2 errors\n")
    assert driver.count(text, "act_quant") == (1, 1)


def test_racecheck_hazards_count():
    text = (CLEAN + "========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n"
            "========= ERROR SUMMARY: 0 errors\n")
    assert driver.count(text, "act_quant") == (1, 0)


def test_racecheck_ends_with_its_own_summary_alone():
    """racecheck prints no ERROR SUMMARY line (as the H100's compute-sanitizer did)."""
    clean = CLEAN + "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
    assert driver.count(clean, "act_quant") == (0, 0)
    assert driver.count(clean.replace("(0 errors", "(3 errors"), "act_quant") == (3, 0)


def test_a_run_that_did_not_finish_is_an_error():
    assert driver.count("========= ERROR SUMMARY: 0 errors\n", "act_quant")[0] is None
    assert driver.count(CLEAN, "act_quant")[0] is None


def test_the_table_fails_on_any_error(tmp_path, capsys):
    for tool in driver.TOOLS:
        for shape in driver.SHAPE_KINDS:
            text = CLEAN.replace("aligned", shape) + PROBE + "========= ERROR SUMMARY: 1 error\n"
            (tmp_path / f"{tool}.act_quant.{shape}.log").write_text(text)
    assert driver.summarize(str(tmp_path), ["act_quant"]) == 0
    out = capsys.readouterr().out
    assert "act_quant/ragged" in out and "8 driver-API probe(s) excluded" in out
    (tmp_path / "initcheck.act_quant.ragged.log").write_text(
        CLEAN + "========= Uninitialized __global__ memory read of size 4 bytes\n"
        "========= ERROR SUMMARY: 1 error\n")
    assert driver.summarize(str(tmp_path), ["act_quant"]) == 1
    (tmp_path / "memcheck.act_quant.aligned.log").unlink()
    assert driver.summarize(str(tmp_path), ["act_quant"]) == 2
    assert "DID NOT FINISH" in capsys.readouterr().out


def test_every_single_gpu_example_has_shapes():
    """Every example but the communication ones (symmetric tensors need a process group)."""
    folder = os.path.join(BENCH, "..", "examples")
    examples = {f[:-5] for f in os.listdir(folder) if f.endswith(".cdsl")
                and not re.search(r":\s*sym\b", open(os.path.join(folder, f)).read())}
    assert set(driver.SHAPES) == examples
