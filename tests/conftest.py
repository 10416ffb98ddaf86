"""GPU tests (@pytest.mark.gpu) run only where torch sees a CUDA GPU; elsewhere they skip.
The `launches` fixture runs the call path on the CPU with the launch itself recorded."""
import pytest

from commdsl.runtime.launcher import Launcher


def _has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on an H100)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def launches(monkeypatch, tmp_path):
    """Records launches and counts full checks; CPU tensors pass the device check."""
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path))
    record = {"launches": [], "binds": 0}
    original_bind = Launcher.bind

    def bind(self, *args, require_cuda=True, **kwargs):
        record["binds"] += 1
        return original_bind(self, *args, require_cuda=False, **kwargs)

    def launch_checked(self, pointers, sizes, grid, index):
        record["launches"].append((self, list(pointers), list(sizes), grid))

    monkeypatch.setattr(Launcher, "bind", bind)
    monkeypatch.setattr(Launcher, "launch_checked", launch_checked)
    monkeypatch.setattr(Launcher, "prepared", lambda self, grid, index: (
        lambda pointers, sizes: launch_checked(self, pointers, sizes, grid, index)))
    return record
