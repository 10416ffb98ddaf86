"""The golden tests' matcher (filecheck.py): what each directive accepts and rejects."""
import pytest

from filecheck import CheckError, compile_pattern, match, parse_test

OUTPUT = """\
kernel @k(%x: tensor<f32[N]>) grid(N) {
  %0 = pid() {axis = 0} : i32
  %1 = load(%x, %0) {sizes = [4], vec = 4} : tile<f32[4]>
  %2 = recip(%1) : tile<f32[4]>
  store(%x, %0, %2) {sizes = [4], vec = 4}
}
"""


def checks(text: str):
    return parse_test("// RUN: vectorize\n" + text).checks


def ok(text: str):
    match(checks(text), OUTPUT)


def fails(text: str, message: str):
    with pytest.raises(CheckError, match=message):
        ok(text)


def test_check_matches_lines_in_order():
    ok("// CHECK: pid()\n// CHECK: load(\n// CHECK: store(")
    fails("// CHECK: store(\n// CHECK: load(", r"CHECK: load\( \(line 3\): no match")


def test_check_next_wants_the_following_line():
    ok("// CHECK: load(\n// CHECK-NEXT: recip(")
    fails("// CHECK: pid()\n// CHECK-NEXT: recip(", "not on the line right after")


def test_check_same_continues_on_the_matched_line_after_the_match():
    ok("// CHECK: load(\n// CHECK-SAME: vec = 4\n// CHECK-SAME: tile<f32[4]>")
    fails("// CHECK: load(\n// CHECK-SAME: vec = 4\n// CHECK-SAME: sizes", "not on the line")


def test_check_not_holds_between_its_neighbours():
    ok("// CHECK: load(\n// CHECK-NOT: div(\n// CHECK: store(")
    ok("// CHECK: recip(\n// CHECK-NOT: pid()")      # pid() comes before the recip
    fails("// CHECK: pid()\n// CHECK-NOT: recip(\n// CHECK: store(", "found on line 4")
    fails("// CHECK: load(\n// CHECK-NOT: store(", "found on line 5")


def test_check_not_on_one_line_stops_at_the_next_match():
    ok("// CHECK: load(\n// CHECK-NOT: vec\n// CHECK-SAME: sizes")
    fails("// CHECK: load(\n// CHECK-NOT: vec\n// CHECK-SAME: tile", "found on line 3")


def test_check_count_needs_that_many_matches():
    ok("// CHECK-COUNT-2: vec = 4")
    fails("// CHECK-COUNT-3: vec = 4", "CHECK-COUNT-3: vec = 4 .*no match")


def test_regex_parts_and_literal_parts():
    assert compile_pattern("a[{{[0-9]+}}]").fullmatch("a[12]")
    assert not compile_pattern("a[{{[0-9]+}}]").fullmatch("a1")
    ok("// CHECK: %{{[0-9]+}} = recip(%{{[0-9]+}}) : tile<f32[4]>")
    fails("// CHECK: vec = {{[58]}}", "no match")


def test_variables_bind_and_match_again():
    ok("// CHECK: [[V:%[0-9]+]] = load(\n// CHECK: recip([[V]])")
    ok("// CHECK: [[V:%[0-9]+]] = recip(\n// CHECK-NOT: load([[V]]\n// CHECK: store(%x, %0, [[V]])")
    fails("// CHECK: [[V:%[0-9]+]] = pid()\n// CHECK: recip([[V]])", "no match")
    fails("// CHECK: recip([[W]])", r"\[\[W\]\] is used before a match binds it")


def test_failure_shows_the_output_where_matching_stopped():
    with pytest.raises(CheckError) as err:
        ok("// CHECK: recip(\n// CHECK: fma(")
    assert "output from line 5:" in str(err.value)
    assert "store(%x, %0, %2)" in str(err.value)
    assert "pid()" not in str(err.value)


def test_directives_leave_the_ir_and_its_line_numbers():
    test = parse_test("// RUN: cache sm_89\nkernel @k() grid(1) {\n}\n// CHECK: kernel")
    assert test.run == ["cache", "sm_89"]
    assert test.source.splitlines() == ["", "kernel @k() grid(1) {", "}", ""]
    assert test.checks[0].line == 4


@pytest.mark.parametrize("text,message", [
    ("// CHECK: x", "no '// RUN"),
    ("// RUN: cache\n// CHEKC: x", "unknown directive 'CHEKC'"),
    ("// RUN: cache\n// CHECK-NEXTT: x", "unknown directive 'CHECK-NEXTT'"),
    ("// RUN: cache\n// CHECK:", "empty pattern"),
    ("// RUN: cache\n// CHECK-NOT: x", "no positive CHECK"),
    ("// RUN: cache\n// ERROR: bad\n// CHECK: x", "not both"),
    ("// RUN: cache\n// RUN: tile\n// CHECK: x", "a second RUN"),
])
def test_malformed_tests_are_rejected(text, message):
    with pytest.raises(CheckError, match=message):
        parse_test(text)
