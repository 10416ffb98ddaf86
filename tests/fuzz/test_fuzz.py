"""A short fuzz run in CI: generated kernels and mutants of the examples and of the language
reference's snippets through the front end, the passes and LLVM IR generation. Each
must compile or end in a commdsl diagnostic, within 5 s; a long run is
`python tests/fuzz/run.py --count 100000`."""
import time

import pytest

from fuzzgen import Generator, Mutator, inputs, outcome

COUNT = 3000


def test_every_input_ends_in_success_or_a_diagnostic():
    start = time.perf_counter()
    results = {"ok": 0, "error": 0}
    for item in inputs(seed=17, count=COUNT):
        try:
            results[outcome(item, seconds=5.0)] += 1
        except Exception as e:
            pytest.fail(f"{type(e).__name__}: {e}\n{item}")
    assert sum(results.values()) == COUNT
    assert results["ok"] > COUNT // 50, results       # the generator still makes valid kernels
    assert time.perf_counter() - start < 60


def test_inputs_are_reproducible():
    import random
    a = [str(i) for i in inputs(seed=3, count=20)]
    assert a == [str(i) for i in inputs(seed=3, count=20)]
    assert "kernel k(" in Generator(random.Random(1)).kernel().text
    assert Mutator(random.Random(1), ["kernel k(x: f32[N]) { }\n"]).mutate().text


def test_a_hang_is_reported_as_a_timeout():
    from fuzzgen import InputTimeout, deadline
    with pytest.raises(InputTimeout):
        with deadline(0.05):
            while True:
                pass
