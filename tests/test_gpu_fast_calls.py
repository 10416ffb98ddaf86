"""On a GPU: the repeated-call path, CUDA graph capture, streams, and tuning for real."""

import pytest
import torch

import commdsl
from test_act_quant import ACT_QUANT, act_quant_reference

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))


def activations(m, k):
    return (torch.randn(m, k, device="cuda") * 3).to(torch.bfloat16)


def assert_quantized(x, y, s):
    y_ref, s_ref = act_quant_reference(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(y.view(torch.uint8), y_ref.view(torch.uint8))


def test_repeated_calls_stay_correct():
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    for m in (64, 64, 63, 64, 63):                  # seen and new signatures, both variants
        x = activations(m, 512)
        y, s = kernel(x)
        assert_quantized(x, y, s)
    x = activations(64, 512)
    y = torch.empty(64, 512, dtype=torch.float8_e4m3fn, device="cuda")
    s = torch.empty(64, 4, device="cuda")
    for _ in range(3):
        x.copy_(activations(64, 512))
        assert kernel(x, y=y, s=s) == (y, s)
        assert_quantized(x, y, s)


def test_cuda_graph_capture_and_replay():
    kernel = commdsl.load(ACT_QUANT, ROWS=8)
    x = activations(256, 1024)
    y = torch.empty(256, 1024, dtype=torch.float8_e4m3fn, device="cuda")
    s = torch.empty(256, 8, device="cuda")
    kernel(x, y=y, s=s)                             # loads the module outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kernel(x, y=y, s=s)
    for _ in range(2):
        x.copy_(activations(256, 1024))
        y.view(torch.uint8).fill_(0x7F)
        graph.replay()
        torch.cuda.synchronize()
        assert_quantized(x, y, s)


def test_launches_go_on_the_current_stream():
    kernel = commdsl.load(ACT_QUANT)
    x = activations(512, 2048)
    kernel(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y, s = kernel(x)
    side.synchronize()
    assert_quantized(x, y, s)


def test_autotune_on_the_gpu_then_reuse():
    x = activations(1024, 1024)
    first = commdsl.autotune(ACT_QUANT, (x,), space={"ROWS": [4, 16], "WARPS": [2, 4]})
    assert not first.from_cache and all(t.ms and t.ms > 0 for t in first.trials)
    assert_quantized(x, *first.kernel(x))
    timed = []
    again = commdsl.autotune(ACT_QUANT, (x,), space={"ROWS": [4, 16], "WARPS": [2, 4]},
                             timer=lambda run, config: timed.append(config) or 1.0)
    assert again.from_cache and timed == [] and again.config == first.config


def test_load_with_autotune_quantizes_correctly():
    kernel = commdsl.load(ACT_QUANT, autotune={"ROWS": [8, 32]})
    x = activations(300, 768)
    assert_quantized(x, *kernel(x))
    assert_quantized(x, *kernel(x))
    assert len(kernel.tunings) == 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_second_device_takes_the_fast_path_without_set_device(monkeypatch):
    from commdsl.runtime.launcher import Launcher
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    assert torch.cuda.current_device() == 0
    on = {d: activations(64, 512).to(f"cuda:{d}") for d in (0, 1)}
    outputs = {d: (torch.empty(64, 512, dtype=torch.float8_e4m3fn, device=f"cuda:{d}"),
                   torch.empty(64, 4, device=f"cuda:{d}")) for d in (0, 1)}
    for d in (0, 1):
        kernel(on[d], y=outputs[d][0], s=outputs[d][1])   # first calls: full checks
    checked = []
    original = Launcher.launch_checked
    monkeypatch.setattr(Launcher, "launch_checked", lambda self, *a, **k: checked.append(a) or
                        original(self, *a, **k))
    for d in (1, 0, 1, 1):
        on[d].copy_(activations(64, 512))
        y, s = outputs[d]
        assert kernel(on[d], y=y, s=s) == (y, s)
        torch.cuda.synchronize(d)
        assert_quantized(on[d].cuda(0), y.cuda(0), s.cuda(0))
    assert checked == [] and torch.cuda.current_device() == 0
