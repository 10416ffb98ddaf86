"""User-facing errors: one rendering for every mistake a user can make.

A compile error points into the source (file:line:col, the line, a caret under the span)
and says what to write instead. A launch error names the argument. The CLI prints either
and exits 1; the Python API raises them without compiler frames.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def of(meta) -> "Span":
        """The span of a lark tree node or token."""
        end_line = getattr(meta, "end_line", None) or meta.line
        end_col = getattr(meta, "end_column", None) or meta.column + 1
        return Span(meta.line, meta.column, end_line, end_col)


@dataclass
class Source:
    text: str
    path: str = "<string>"

    def line(self, n: int) -> str:
        lines = self.text.splitlines()
        return lines[n - 1] if 0 < n <= len(lines) else ""

    @staticmethod
    def read(path: str) -> "Source":
        """A .cdsl file; a byte that is not UTF-8 is an error located where it sits."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise CompileError("no such file", None, None, Source("", path)) from None
        except OSError as e:
            raise CompileError(f"cannot read {path}: {e.strerror}") from None
        try:
            return Source(data.decode("utf-8"), path)
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            line_start = data.rfind(b"\n", 0, e.start) + 1
            col = len(data[line_start:e.start].decode("utf-8", "replace")) + 1
            raise CompileError(f"byte 0x{data[e.start]:02x} is not UTF-8 text",
                               Span(line, col, line, col + 1),
                               "save the file as UTF-8 (comments included)",
                               Source(data.decode("utf-8", "replace"), path)) from None


class CommdslError(Exception):
    """Base of all errors commdsl reports to its users."""

    def render(self) -> str:
        return str(self)


class CompileError(CommdslError):
    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 source: Source | None = None):
        super().__init__(message)
        self.message, self.span, self.hint, self.source = message, span, hint, source
        self.notes: list[tuple[str, Span]] = []    # more places that explain the error

    def note(self, message: str, span: Span) -> "CompileError":
        self.notes.append((message, span))
        return self

    def with_source(self, source: Source) -> "CompileError":
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        out = self._located("error", self.message, self.span)
        if self.hint:
            out.append(f"  help: {self.hint}")
        for message, span in self.notes:
            out += self._located("note", message, span)
        return "\n".join(out)

    def _located(self, kind: str, message: str, span: Span | None) -> list[str]:
        path = self.source.path if self.source else "<string>"
        if span is None:
            return [f"{path}: {kind}: {message}"]
        out = [f"{path}:{span.line}:{span.col}: {kind}: {message}"]
        if self.source is not None:
            text = self.source.line(span.line)
            width = (span.end_col - span.col
                     if span.end_line == span.line else len(text) - span.col + 1)
            out.append(f"  {text}")
            out.append("  " + " " * (span.col - 1) + "^" * max(1, width))
        return out

    def __str__(self):
        return self.render()


class LaunchError(CommdslError, ValueError):
    """A wrong argument at launch: the message names the kernel and the argument."""

    def __init__(self, kernel: str, arg: str, message: str, hint: str | None = None):
        self.kernel, self.arg, self.message, self.hint = kernel, arg, message, hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.kernel}: argument '{self.arg}': {self.message}"
        return text + (f"\n  help: {self.hint}" if self.hint else "")

    def __str__(self):
        return self.render()


class ToolError(CommdslError):
    """A tool commdsl drives (ptxas, the CUDA driver) failed; the message holds its log."""
