"""Cache policies as tune constants (`tune XC = cache(nc) in [cache(), cache(nc)]`, used as
`cache(XC)`): what they lower to, how they are set and searched, and the located errors."""
from __future__ import annotations

import re

import pytest

from commdsl.cli import main as cli_main
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError
from commdsl.tune.space import search_space

SOURCE = """
kernel cp(x: bf16[N], y: out bf16[N])
  grid(cdiv(N, 4096))
  tune XC = cache(nc) in [cache(), cache(nc), cache(nc, L1 = no_allocate)]
{
  let t = load x[pid.0 * 4096 : +4096] cache(XC, L2 = 256B)
  store y[pid.0 * 4096 : +4096] = t
}
"""


def loads(constants=None, source=SOURCE) -> set[str]:
    ptx = compile_source(source, "cp.cdsl", constants=constants or {}).ptx
    return set(re.findall(r"ld\.global\S*", ptx))


@pytest.mark.parametrize("value,load", [
    (None, "ld.global.nc.L2::256B.v4.b32"),
    ("cache()", "ld.global.L2::256B.v4.b32"),
    ("cache( nc,L1=no_allocate )", "ld.global.nc.L1::no_allocate.L2::256B.v4.b32")])
def test_a_policy_constant_stands_for_its_options(value, load):
    assert loads(None if value is None else {"XC": value}) == {load}


def test_the_search_space_lists_the_policies_as_written_one_way():
    space = search_space(SOURCE, "cp.cdsl", None, {}, None)
    assert space.axes == (("XC", ("cache()", "cache(nc)", "cache(nc, L1 = no_allocate)")),)


def test_the_cli_sets_a_policy(tmp_path, capsys):
    path = tmp_path / "cp.cdsl"
    path.write_text(SOURCE)
    out = tmp_path / "cp.ptx"
    assert cli_main(["compile", str(path), "-D", "XC=cache()", "-o", str(out)]) == 0
    assert set(re.findall(r"ld\.global\S*", out.read_text())) == {"ld.global.L2::256B.v4.b32"}
    assert cli_main(["compile", str(path), "-D", "XC=cache(nc", "-o", str(out)]) != 0
    assert "XC = 'cache(nc' is not a cache policy" in capsys.readouterr().err


@pytest.mark.parametrize("edit,constants,message", [
    (None, {"XC": 7}, "constant 'XC' = 7 is not a cache policy"),
    (("cache(), cache(nc)", "cache(), 4"), {}, "'XC' mixes cache policies with other values"),
    (("tune XC = cache(nc) in [cache(), cache(nc), cache(nc, L1 = no_allocate)]",
      "tune XC = 4 in [4, 8]"), {}, "'XC' = 4 is not a cache policy"),
    (None, {"XC": "cache(cs, L1 = evict_first)"},
     "a cache operator ('cs') and an L1 policy exclude each other"),
])
def test_mistakes_are_located(edit, constants, message):
    source = SOURCE if edit is None else SOURCE.replace(*edit)
    with pytest.raises(CompileError) as e:
        compile_source(source, "cp.cdsl", constants=constants)
    text = str(e.value)
    assert message in text and re.search(r"cp\.cdsl:\d+:\d+: error: ", text)
    assert "help: " in text


def test_a_tuned_policy_is_saved_and_read_back(tmp_path, monkeypatch):
    import math

    import torch

    import commdsl
    from commdsl.tune import tuner
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuner, "MODEL_PRUNE", math.inf)     # the stub's landscape is its own
    timed = []

    def timer(run, config):
        timed.append(config["XC"])
        return 1.0 if config["XC"] == "cache(nc, L1 = no_allocate)" else 2.0
    x = torch.zeros(8192, dtype=torch.bfloat16)
    first = commdsl.autotune(SOURCE, (x,), timer=timer, progress=False)
    again = commdsl.autotune(SOURCE, (x,), timer=timer, progress=False)
    assert first.config == again.config == {"XC": "cache(nc, L1 = no_allocate)"}
    assert again.from_cache and len(timed) == 3


def test_a_space_given_in_python_holds_policies_written_one_way():
    space = search_space(SOURCE, "cp.cdsl", None, {}, {"XC": ["cache( nc )", "cache()"]})
    assert space.axes == (("XC", ("cache(nc)", "cache()")),)


def test_the_tune_command_takes_a_space_of_policies():
    from commdsl.tune.command import parse_space
    assert parse_space(["ROWS=8,16", "XC=cache(),cache(nc, L1 = no_allocate)"]) == {
        "ROWS": [8, 16], "XC": ["cache()", "cache(nc, L1 = no_allocate)"]}
    with pytest.raises(CompileError, match="--space expects NAME=V1,V2"):
        parse_space(["XC=nc"])
