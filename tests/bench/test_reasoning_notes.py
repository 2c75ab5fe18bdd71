"""An item's notes count what went wrong in its steps (the reply-format measurement reads them)."""

from __future__ import annotations

from thinkbox.agent.events import CodeRejected, ExecutionFinished, ParseFailed
from thinkbox.bench.reasoning.arms import step_notes
from thinkbox.sandbox.types import ExecutionError, ExecutionResult


def finished(error: str | None) -> ExecutionFinished:
    failure = ExecutionError(type=error, message="bad", traceback="") if error else None
    return ExecutionFinished(step=1, result=ExecutionResult(error=failure), observation="")


def test_unusable_replies_rejected_code_and_syntax_errors_are_noted() -> None:
    assert step_notes(ParseFailed(step=1, attempt=1, error="x", raw="x")) == ["step: reply unusable"]
    syntax = CodeRejected(step=1, code="def f(:", problems=["line 1: SyntaxError: invalid syntax"],
                          observation="")  # fmt: skip
    name = CodeRejected(step=1, code="print(x)", problems=["line 1: undefined name 'x'"], observation="")
    assert step_notes(syntax) == ["step: code rejected (syntax error)"]
    assert step_notes(name) == ["step: code rejected (undefined name)"]
    assert step_notes(finished("IndentationError")) == ["step: code raised IndentationError"]
    assert step_notes(finished("ZeroDivisionError")) == step_notes(finished(None)) == []
