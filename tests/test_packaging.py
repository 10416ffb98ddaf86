"""The wheel holds every subpackage and data file; `python -m commdsl` and `--version` work.

.ci/run builds the wheel and uses it from a fresh venv; these tests catch the same omissions
in pyproject.toml without building one."""
import fnmatch
import os
import subprocess
import sys

import pytest

import commdsl
from commdsl.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files the package reads at run time, besides its modules.
DATA_SUFFIXES = (".lark", ".cdsl", "py.typed")


@pytest.fixture(scope="module")
def setuptools_config():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _package_folders(config) -> dict[str, str]:
    """Package name -> folder, for every folder with an __init__.py under a mapped root."""
    found = {}
    for root_name, root_dir in config["package-dir"].items():
        for folder, subfolders, names in os.walk(os.path.join(ROOT, root_dir)):
            subfolders[:] = [d for d in subfolders if d != "__pycache__"]
            if "__init__.py" in names:
                rel = os.path.relpath(folder, os.path.join(ROOT, root_dir))
                name = root_name if rel == "." else f"{root_name}.{rel.replace(os.sep, '.')}"
                found[name] = folder
    return found


def test_every_subpackage_is_listed(setuptools_config):
    folders = _package_folders(setuptools_config)
    assert "commdsl.tune" in folders and "commdsl.passes" in folders
    assert sorted(folders) == sorted(setuptools_config["packages"])


def test_every_data_file_is_package_data(setuptools_config):
    """Each .lark, .cdsl and py.typed file inside a package matches a package-data pattern."""
    patterns = setuptools_config["package-data"]
    missing = []
    for name, folder in _package_folders(setuptools_config).items():
        for sub, _, files in os.walk(folder):
            for file in files:
                if not file.endswith(DATA_SUFFIXES):
                    continue
                rel = os.path.relpath(os.path.join(sub, file), folder)
                owner = rel.split(os.sep)[0]
                if os.path.isfile(os.path.join(folder, owner, "__init__.py")):
                    continue                # a subpackage's file: its own entry covers it
                if not any(fnmatch.fnmatch(rel, p) for p in patterns.get(name, ())):
                    missing.append(f"{name}: {rel}")
    assert not missing


def test_moe_kernels_are_package_data_and_the_examples_link_to_them():
    from commdsl.moe import COMBINE_SOURCE, DISPATCH_SOURCE
    package = os.path.dirname(commdsl.__file__)
    for path in (DISPATCH_SOURCE, COMBINE_SOURCE):
        assert os.path.dirname(path) == os.path.join(package, "kernels")
        example = os.path.join(ROOT, "examples", os.path.basename(path))
        assert os.path.samefile(example, path), f"{example} is not {path}"


def test_py_typed_is_shipped():
    assert os.path.isfile(os.path.join(os.path.dirname(commdsl.__file__), "py.typed"))


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "commdsl", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"commdsl {commdsl.__version__}"


def test_python_dash_m_compiles(tmp_path):
    subprocess.run([sys.executable, "-m", "commdsl", "compile",
                    os.path.join(ROOT, "examples", "copy_nc.cdsl"), "-o", "k.ptx"],
                   cwd=tmp_path, check=True, capture_output=True)
    assert ".entry" in (tmp_path / "k.ptx").read_text()


def test_check_without_ptxas_is_a_diagnostic(monkeypatch, capsys):
    """What CI's `commdsl check` step expects on a machine without ptxas."""
    from commdsl.runtime import ptxas
    monkeypatch.delenv("COMMDSL_PTXAS", raising=False)
    monkeypatch.setattr(ptxas, "_is_executable", lambda path: False)
    assert main(["check", os.path.join(ROOT, "examples", "copy_nc.cdsl")]) == 1
    err = capsys.readouterr().err
    assert "ptxas not found" in err and "Traceback" not in err
