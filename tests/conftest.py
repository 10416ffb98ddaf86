"""GPU tests (@pytest.mark.gpu) run only where torch sees a CUDA GPU; elsewhere they skip."""
import pytest


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
