"""Every ```cdsl block of docs/language.md compiles to PTX for sm_90a, so the reference cannot
drift from the compiler. A block whose first line is `// expect-error: TEXT` must instead
fail with a located diagnostic whose message contains TEXT."""
import os
import re

import pytest

from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "language.md")
EXPECT = "// expect-error:"


def snippets() -> list[tuple[int, str]]:
    """(line of the opening fence, text) of each ```cdsl block."""
    text = open(DOC).read()
    return [(text[:m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(r"^```cdsl\n(.*?)^```$", text, re.S | re.M)]


SNIPPETS = snippets()


def test_the_reference_has_snippets_and_error_examples():
    assert len(SNIPPETS) >= 40
    assert sum(s.startswith(EXPECT) for _, s in SNIPPETS) >= 15


@pytest.mark.parametrize("line,source", SNIPPETS, ids=[f"line{n}" for n, _ in SNIPPETS])
def test_snippet_compiles(line, source):
    first, _, body = source.partition("\n")
    if not first.startswith(EXPECT):
        assert compile_source(source, f"language.md:{line}", target="sm_90a").ptx
        return
    expected = first[len(EXPECT):].strip()
    with pytest.raises(CompileError) as info:
        # the marker line is blank in the compiled text, so positions match the block's lines
        compile_source("\n" + body, f"language.md:{line}", target="sm_90a")
    err = info.value
    assert expected in err.message, err.render()
    assert err.span is not None, err.render()
