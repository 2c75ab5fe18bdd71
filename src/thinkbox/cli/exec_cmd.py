"""``thinkbox exec [--timeout S] [--json] [--backend NAME] FILE|-``: run code in a fresh sandbox session.

Exit status: 0 the code ran, 1 it raised, timed out or was killed, 2 the sandbox machinery failed
(the message names what to fix), 130 cancelled with Ctrl-C before a result came back.

Ctrl-C once interrupts the running code (KeyboardInterrupt inside the sandbox, the result is printed);
twice stops waiting, kills the session and closes the backend.

What the sandbox sends is untrusted: its text reaches the terminal with control characters made visible
(:func:`thinkbox.cli.render.terminal_safe`; ``--json`` escapes them anyway), and at most
``sandbox.limits.display_items`` display items and ``display_bytes`` bytes of them are written to files
(the session enforces the same limits; this is a second line); the JSON says how many were dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from thinkbox.cli.render import terminal_safe
from thinkbox.config import load_settings
from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import (
    DisplayData,
    ExecutionResult,
    Limits,
    OutputChunk,
    SessionConfig,
    parse_language,
)

EXIT_OK, EXIT_CODE_FAILED, EXIT_INFRA, EXIT_CANCELLED = 0, 1, 2, 130

_SUFFIX = {"image/png": ".png", "image/svg+xml": ".svg", "text/html": ".html"}


@dataclass
class _Run:
    """What one ``exec`` produced, besides the ExecutionResult."""

    backend: str
    json_out: bool
    figures_dir: Path
    limits: Limits = field(default_factory=Limits)
    session: Session | None = None
    interrupted: bool = False
    session_id: str = ""
    session_ms: float = 0.0
    saved: list[dict[str, Any]] = field(default_factory=list)
    saved_bytes: int = 0
    dropped: int = 0
    pending_text: list[str] = field(default_factory=list)
    result: ExecutionResult | None = None


def register(app: typer.Typer) -> None:
    app.command("exec")(exec_command)


def exec_command(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="File to run, or - to read stdin.")],
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0.001, help="Wall time in seconds (default: sandbox.limits.timeout_s)."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of streaming.")
    ] = False,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Sandbox backend (default: sandbox.backend).")
    ] = None,
    figures_dir: Annotated[
        Path | None, typer.Option("--figures-dir", help="Where figures are saved (default: DATA_DIR/exec).")
    ] = None,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            "-l",
            help="py, js or sh (default: by the file's suffix, .js or .sh; else py).",
        ),
    ] = None,
) -> None:
    """Run code (Python, JavaScript or bash) in a fresh, isolated session and print what it produced."""
    try:
        lang = parse_language(language or _language_of(source), "--language")
        code = _read_source(source)
        settings = load_settings()
        limits = settings.sandbox.limits
        if timeout is not None:
            limits = limits.model_copy(update={"timeout_s": timeout})
        run = _Run(
            backend=backend or settings.sandbox.backend,
            json_out=json_out,
            figures_dir=figures_dir or settings.data_dir / "exec",
            limits=limits,
        )
        status = asyncio.run(_execute(code, run, SessionConfig(limits=limits, language=lang)))
    except ThinkboxError as exc:
        _infra_error(exc.code, exc.message, json_out)
        raise typer.Exit(EXIT_INFRA) from None
    except OSError as exc:
        _infra_error("os_error", str(exc), json_out)
        raise typer.Exit(EXIT_INFRA) from None
    raise typer.Exit(status)


def _language_of(source: str) -> str:
    suffix = Path(source).suffix.lower()
    return {".js": "js", ".mjs": "js", ".cjs": "js", ".sh": "sh", ".bash": "sh"}.get(suffix, "py")


def _read_source(source: str) -> str:
    try:
        if source == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThinkboxError(f"cannot read {'stdin' if source == '-' else source}: {exc}") from None


async def _execute(code: str, run: _Run, config: SessionConfig) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def on_sigint() -> None:
        if run.session is not None and not run.interrupted:
            run.interrupted = True
            print("\nthinkbox: interrupting (Ctrl-C again to kill the session)", file=sys.stderr, flush=True)
            run.session.interrupt()
        else:
            main.cancel()

    backend = registry.create_backend(run.backend)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        started = time.perf_counter()
        session = await backend.create_session(config)
        run.session = session
        run.session_id, run.session_ms = session.id, (time.perf_counter() - started) * 1000
        try:
            async for item in session.stream(code):
                if isinstance(item, OutputChunk):
                    if not run.json_out:
                        stream = sys.stdout if item.name == "stdout" else sys.stderr
                        stream.write(terminal_safe(item.text))
                        stream.flush()
                elif isinstance(item, DisplayData):
                    _show_display(item, run)
                else:
                    run.result = item
        finally:
            await session.close()
    except asyncio.CancelledError:
        print("thinkbox: cancelled; the session was killed", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        await backend.aclose()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    assert run.result is not None
    _print_result(run.result, run)
    return EXIT_OK if run.result.ok else EXIT_CODE_FAILED


def _show_display(item: DisplayData, run: _Run) -> None:
    """Save an image (png > svg) to a file and say where; html without a text form goes to a file too.

    A text-only display is printed when the next display arrives, or at the end unless it is the value
    of the last expression (printed as the result anyway).
    """
    _flush_text(run)
    size = sum(len(k) + len(v) for k, v in item.mime.items())
    limits = run.limits
    if len(run.saved) >= limits.display_items or run.saved_bytes + size > limits.display_bytes:
        run.dropped += 1
        return
    run.saved_bytes += size
    index = len(run.saved) + 1
    mime = next((m for m in _SUFFIX if m in item.mime), None)
    if mime == "text/html" and "text/plain" in item.mime:
        mime = None
    entry: dict[str, Any] = {"mime_types": sorted(item.mime), "path": None}
    if mime is not None:
        run.figures_dir.mkdir(parents=True, exist_ok=True)
        path = run.figures_dir / f"{run.session_id}-{index}{_SUFFIX[mime]}"
        data = item.mime[mime]
        if mime == "image/png":
            try:
                path.write_bytes(base64.b64decode(data, validate=True))
            except ValueError:
                run.saved.append({**entry, "error": "image/png is not valid base64; not saved"})
                return
        else:
            path.write_text(data, encoding="utf-8")
        entry["path"] = str(path)
        if not run.json_out:
            print(f"[display {index}: {mime} saved to {path}]", file=sys.stderr, flush=True)
    elif "text/plain" in item.mime:
        entry["text"] = item.mime["text/plain"]
        run.pending_text.append(item.mime["text/plain"])
    run.saved.append(entry)


def _flush_text(run: _Run, skip: str | None = None) -> None:
    for text in run.pending_text:
        if not run.json_out and text != skip:
            print(terminal_safe(text), flush=True)
    run.pending_text.clear()


def _print_result(result: ExecutionResult, run: _Run) -> None:
    if run.json_out:
        data = {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "result": result.result,
            "error": result.error.model_dump() if result.error else None,
            "timed_out": result.timed_out,
            "interrupted": result.interrupted,
            "killed": result.killed,
            "state_survived": result.state_survived,
            "output_truncated": result.output_truncated,
            "duration_ms": result.duration_ms,
            "display_count": len(run.saved),
            "display": run.saved,
            "display_dropped": result.display_dropped + run.dropped,
            "backend": run.backend,
            "session_id": run.session_id,
            "session_start_ms": run.session_ms,
        }
        print(json.dumps(data, ensure_ascii=False))
        return
    _flush_text(run, skip=result.result)
    if result.result is not None:
        print(terminal_safe(result.result), flush=True)
    if result.error is not None:
        text = result.error.traceback or ""
        last = f"{result.error.type}: {result.error.message}" if result.error.message else result.error.type
        if not text.rstrip().endswith(last.rstrip()):
            text += last + "\n"
        sys.stderr.write(terminal_safe(text))
    if result.timed_out:
        what = "the session was killed" if result.killed else "it was interrupted, its state was kept"
        print(f"thinkbox: timed out after {result.duration_ms / 1000:.1f} s; {what}", file=sys.stderr)
    if result.output_truncated:
        print("thinkbox: the output was cut at sandbox.limits.output_bytes", file=sys.stderr)
    dropped = result.display_dropped + run.dropped
    if dropped:
        print(
            f"thinkbox: {dropped} display item(s) were dropped: past sandbox.limits.display_items "
            "or sandbox.limits.display_bytes",
            file=sys.stderr,
        )
    sys.stderr.flush()


def _infra_error(code: str, message: str, json_out: bool) -> None:
    print(f"thinkbox exec: {terminal_safe(message)}", file=sys.stderr)
    if json_out:
        print(json.dumps({"error": {"type": code, "message": message}, "infrastructure_error": True}))
