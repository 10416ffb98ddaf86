"""A small FileCheck: the directives of a golden test, matched against a pass's output.

Directives are comment lines of the test file (`// CHECK: text`); the text matches as a
substring, except that `{{...}}` holds a Python regular expression, `[[NAME:regex]]` matches
the regex and binds NAME to what it matched, and `[[NAME]]` matches that text again (so a
check can follow a value without naming its number: `[[R:%[0-9]+]] = recip(` ... `mul(%x,
[[R]])`). In order:

    CHECK: p         p on a line at or after the line after the last match
    CHECK-NEXT: p    p on the line right after the last match
    CHECK-SAME: p    p on the last match's line, after the last match
    CHECK-NOT: p     p on no line between the last match and the next positive match (or
                     the end of the output)
    CHECK-COUNT-n: p p on n consecutive matches, each as CHECK would find it

A test file also names what to run (`// RUN: pass [target]`) or, for a pass that must reject
its input, the message it raises (`// ERROR: text`); see test_golden.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("CHECK", "CHECK-NEXT", "CHECK-SAME", "CHECK-NOT", "CHECK-COUNT")
# Any `// WORD:` comment is a directive, so a misspelt one is an error, not a comment.
_DIRECTIVE = re.compile(r"^\s*//\s*([A-Z][A-Z0-9-]*):(.*)$")
CONTEXT_LINES = 8           # output lines shown after where matching stopped


class CheckError(AssertionError):
    pass


@dataclass(frozen=True)
class Check:
    kind: str               # one of KINDS
    pattern: str
    line: int               # 1-based, in the test file
    count: int = 1          # CHECK-COUNT-n

    def regex(self, env: dict[str, str]) -> re.Pattern:
        return compile_pattern(self.pattern, env, self.line)

    def __str__(self):
        kind = f"CHECK-COUNT-{self.count}" if self.kind == "CHECK-COUNT" else self.kind
        return f"{kind}: {self.pattern} (line {self.line})"


def compile_pattern(pattern: str, env: dict[str, str] | None = None,
                    line: int = 0) -> re.Pattern:
    """Literal text with `{{regex}}`, `[[NAME:regex]]` and `[[NAME]]` parts; `env` holds
    the names bound so far."""
    env = {} if env is None else env
    parts, at = [], 0
    for m in re.finditer(r"\{\{(.*?)\}\}|\[\[([A-Za-z_][A-Za-z0-9_]*)(?::(.*?))?\]\]", pattern):
        parts.append(re.escape(pattern[at:m.start()]))
        regex, name, bound = m.groups()
        if regex is not None:
            parts.append(f"(?:{regex})")
        elif bound is not None:
            parts.append(f"(?P<{name}>{bound})")
        elif name in env:
            parts.append(re.escape(env[name]))
        else:
            raise CheckError(f"line {line}: [[{name}]] is used before a match binds it")
        at = m.end()
    parts.append(re.escape(pattern[at:]))
    return re.compile("".join(parts))


@dataclass
class TestFile:
    source: str             # the IR, comment lines blanked (line numbers stay)
    run: list[str]          # [pass, target...]
    checks: list[Check]
    error: str | None = None


def parse_test(text: str) -> TestFile:
    """Splits a golden test into its IR and its directives."""
    source, run, checks, error = [], None, [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = _DIRECTIVE.match(line)
        source.append("" if line.lstrip().startswith("//") else line)    # notes for the reader
        if not m:
            continue
        name, body = m.group(1), m.group(2).strip()
        if name == "RUN":
            if run is not None:
                raise CheckError(f"line {n}: a second RUN line")
            run = body.split()
        elif name == "ERROR":
            error = body
        else:
            checks.append(_check(name, body, n))
    if not run:
        raise CheckError("no '// RUN: PASS [TARGET]' line")
    if error is not None and checks:
        raise CheckError("a test expects an ERROR or has CHECK lines, not both")
    if error is None and not any(c.kind not in ("CHECK-NOT",) for c in checks):
        raise CheckError("no positive CHECK line: the test would check nothing")
    return TestFile("\n".join(source) + "\n", run, checks, error)


def _check(name: str, body: str, n: int) -> Check:
    if not name.startswith("CHECK"):
        raise CheckError(f"line {n}: unknown directive '{name}' (known: RUN, ERROR, CHECK...)")
    count = re.fullmatch(r"CHECK-COUNT-([1-9][0-9]*)", name)
    if count:
        return Check("CHECK-COUNT", body, n, int(count.group(1)))
    if name not in KINDS or name == "CHECK-COUNT":
        raise CheckError(f"line {n}: unknown directive '{name}' (known: CHECK, CHECK-NEXT, "
                         "CHECK-SAME, CHECK-NOT, CHECK-COUNT-n)")
    if not body:
        raise CheckError(f"line {n}: {name} has an empty pattern")
    return Check(name, body, n)


def _context(lines: list[str], start: int) -> str:
    shown = lines[start:start + CONTEXT_LINES]
    out = [f"  {start + i + 1:4d} | {line}" for i, line in enumerate(shown)]
    if start + CONTEXT_LINES < len(lines):
        out.append("       | ...")
    return "\n".join(out) or "  (end of output)"


def match(checks: list[Check], output: str) -> None:
    """Raises CheckError, naming the directive and showing the output where it looked,
    unless `output` satisfies every check."""
    lines = output.splitlines()
    line, col = -1, 0          # the last match: its line and the column after it
    pending_not: list[Check] = []
    env: dict[str, str] = {}    # [[NAME:...]] bindings

    def fail(check: Check, why: str, at: int):
        raise CheckError(f"{check}: {why}; output from line {at + 1}:\n{_context(lines, at)}")

    def forbid(upto: int, upto_col: int | None = None):
        """The pending CHECK-NOTs against the text from the last match up to (`upto`,
        `upto_col`): the next match's start, or the end of the output."""
        for c in pending_not:
            for i in range(max(line, 0), min(upto + 1, len(lines))):
                text = lines[i]
                if i == upto and upto_col is not None:
                    text = text[:upto_col]
                if i == line:
                    text = text[col:]
                if c.regex(env).search(text):
                    fail(c, f"found on line {i + 1}: {lines[i].strip()}", i)
        pending_not.clear()

    def find(check: Check, start: int) -> tuple[int, re.Match]:
        for i in range(start, len(lines)):
            m = check.regex(env).search(lines[i])
            if m:
                return i, m
        fail(check, "no match", start)

    for check in checks:
        if check.kind == "CHECK-NOT":
            pending_not.append(check)
            continue
        if check.kind == "CHECK-SAME":
            if line < 0:
                fail(check, "CHECK-SAME needs a match before it", 0)
            m = check.regex(env).search(lines[line], col)
            if not m:
                fail(check, f"not on the line of the last match (after column {col})", line)
            forbid(line, m.start())
            col = m.end()
            env.update(m.groupdict())
            continue
        if check.kind == "CHECK-NEXT":
            at = line + 1
            m = check.regex(env).search(lines[at]) if at < len(lines) else None
            if not m:
                fail(check, f"not on the line right after the last match (line {at + 1})", at)
            forbid(at, m.start())
            line, col = at, m.end()
            env.update(m.groupdict())
            continue
        for _ in range(check.count):
            at, m = find(check, line + 1)
            forbid(at, m.start())
            line, col = at, m.end()
            env.update(m.groupdict())
    forbid(len(lines))
