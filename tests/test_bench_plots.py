"""bench/plot.py: the chart each bench's JSON gives, and the PNG common.write_results writes
beside it (where matplotlib is installed; it is optional)."""
import importlib
import json
import os
import struct
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
BENCH = os.path.join(ROOT, "bench")
RESULTS = os.path.join(BENCH, "results")
sys.path.insert(0, BENCH)
plot = importlib.import_module("plot")
common = importlib.import_module("common")

GEMM = {"benchmark": "fp8_gemm", "device": "h100", "shapes": [
    {"shape": [128, 2112, 7168], "cublas": {"tflops": 90.5},
     "best": {"config": "BM=64", "tflops": 144.5}},
    {"shape": [4096, 4096, 7168], "cublas": {"tflops": 1050.0}, "best": None},
]}
MEMORY_BOUND = {"benchmark": "act_quant", "device": "h100", "shape": [16384, 7168],
                "copy_gbs": 3010.6, "commdsl_best": {"config": "ROWS=16", "gbs": 2642.5},
                "peers": {"triton_tiled_best": 2703.8, "torch_eager": 231.5}}


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_a_gemm_is_tflops_by_shape_against_cublas():
    c = plot.chart(GEMM)
    assert c.unit == "TFLOP/s" and "fp8_gemm on h100" in c.title and c.line is None
    assert c.groups["128x2112x7168"] == {"commdsl (best config)": 144.5, "cuBLAS": 90.5}
    no_config = c.groups["4096x4096x7168"]
    assert no_config["cuBLAS"] == 1050.0 and no_config["commdsl (best config)"] != \
        no_config["commdsl (best config)"]                         # NaN: no bar


def test_a_memory_bound_kernel_is_bandwidth_against_the_copy_ceiling():
    c = plot.chart(MEMORY_BOUND)
    assert c.line == ("device-to-device copy", 3010.6)
    assert c.groups == {"16384x7168": {"commdsl (ROWS=16)": 2642.5,
                                       "triton_tiled_best": 2703.8, "torch_eager": 231.5}}


def test_every_committed_result_has_a_chart_and_its_png_in_the_readme():
    names = sorted(f for f in os.listdir(RESULTS) if f.endswith(".json"))
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert names
    for name in names:
        with open(os.path.join(RESULTS, name)) as f:
            assert plot.chart(json.load(f)) is not None, name
        png = name[:-5] + ".png"
        assert os.path.isfile(os.path.join(RESULTS, png)), \
            f"{name}: run python bench/plot.py bench/results/*.json"
        assert f"(bench/results/{png})" in readme, f"README's Benchmarks do not show {png}"


def test_write_results_writes_a_png_beside_the_json(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(common, "RESULTS", str(tmp_path))
    monkeypatch.setattr(common, "device_name", lambda: "h100")
    monkeypatch.delenv("OUT", raising=False)
    path = common.write_results("fp8_gemm", {k: v for k, v in GEMM.items()
                                             if k not in ("benchmark", "device")})
    png = path[:-5] + ".png"
    assert f"wrote {png}" in capsys.readouterr().out
    width, height = png_size(png)
    assert width >= 600 and height == 420                # 4.2 inches at 100 dpi


def test_plot_py_draws_existing_results_again(tmp_path):
    pytest.importorskip("matplotlib")
    source = tmp_path / "act_quant-h100.json"
    source.write_text(json.dumps(MEMORY_BOUND))
    assert plot.main([str(source)]) == 0
    assert png_size(str(tmp_path / "act_quant-h100.png"))[1] == 420


def test_without_matplotlib_one_line_and_no_png(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import matplotlib fails
    assert plot.write_png(str(tmp_path / "k.json"), MEMORY_BOUND) is None
    out = capsys.readouterr().out
    assert out == "no plot: matplotlib is not installed (pip install 'commdsl[plots]')\n"
    assert list(tmp_path.iterdir()) == []


def test_a_grouped_gemm_shows_the_contiguous_and_masked_setups():
    setup = {"groups": 4, "rows": [8000, 9000], "n": 4096, "k": 7168,
             "cublas_loop": {"tflops": 1200.0}, "deepgemm": {"tflops": 1250.0},
             "best": {"config": "BM=128", "tflops": 1260.0}}
    masked = {"groups": 2, "rows": [500, 600], "m_max": 4096, "n": 7168, "k": 2048,
              "cublas_loop": {"calc_diff": 0.5, "error": "calc_diff >= 1e-3: not timed"},
              "deepgemm": {"tflops": 700.0}, "best": None}
    c = plot.chart({"benchmark": "grouped_fp8_gemm", "device": "h100", "setups": [setup],
                    "masked": [masked]})
    assert "contiguous and masked layouts" in c.title
    assert c.groups["contiguous 4 x ~9000, 4096x7168"] == {
        "cuBLAS loop": 1200.0, "DeepGEMM": 1250.0, "commdsl (best config)": 1260.0}
    assert c.groups["masked 2 x ~600, 7168x2048"] == {"DeepGEMM": 700.0}
    older = plot.chart({"benchmark": "grouped_fp8_gemm", "device": "h100", "setups": [setup]})
    assert "contiguous layout" in older.title and len(older.groups) == 1


def test_attention_is_tflops_by_shape_against_each_torch_backend():
    shape = {"shape": [128, 4096, 64], "commdsl": {}, "best": {"tflops": 300.0},
             "torch": {"flash": {"tflops": 350.0}, "cudnn": {"error": "not available"}}}
    c = plot.chart({"benchmark": "attention", "device": "h100", "shapes": [shape]})
    assert c.groups == {"128 x 4096 x 64": {"torch flash": 350.0,
                                            "commdsl (best config)": 300.0}}


def test_mla_split_kv_is_kv_bandwidth_of_each_form_against_the_copy_ceiling():
    payload = {"benchmark": "mla_decode_split", "device": "h100", "copy_gbs": 3000.0,
               "cases": [{"batch": 1, "s_q": 1, "length": 32768,
                          "whole": {"ms": 0.1, "correct": True},
                          "split": {"SPLITS=4": {"ms": 0.05, "correct": True},
                                    "SPLITS=8": {"ms": 0.01, "correct": False}}}]}
    c = plot.chart(payload)
    kv = 32768 * 576 * 2
    assert c.line == ("device-to-device copy", 3000.0) and c.unit == "GB/s of KV cache"
    assert c.groups["B=1, S=1, L=32768"] == pytest.approx(
        {"mla_decode": kv / 0.1 / 1e6, "split + combine (best)": kv / 0.05 / 1e6})
