"""``thinkbox ask "question"`` and ``thinkbox chat``: the agent at the terminal (``ask --server URL``: the
agent of a thinkbox service, shown the same way; :mod:`thinkbox.cli.remote`).

Exit status of ``ask``: 0 an answer was given, 1 a limit stopped the run, 2 a configuration or
infrastructure error (the message names what to fix), 130 Ctrl-C (the running code is interrupted, the
session closed, nothing left running).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from thinkbox.agent.conversation import Conversation
from thinkbox.agent.events import Event, FinalAnswer, LimitReached, RunFinished
from thinkbox.agent.loop import check_question
from thinkbox.agent.route import ROUTES, run_routed
from thinkbox.cli.render import FigureSaver, Renderer, event_json
from thinkbox.config import Settings, load_settings
from thinkbox.errors import ConfigError, ThinkboxError
from thinkbox.models.base import ModelBackend
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import SessionConfig, parse_language
from thinkbox.transcripts import TranscriptWriter

EXIT_ANSWER, EXIT_LIMIT, EXIT_INFRA, EXIT_CANCELLED = 0, 1, 2, 130
Sink = Callable[[Event], None]

FilesOpt = Annotated[
    list[Path] | None, typer.Option("--file", "-f", help="A file copied into the workspace (repeatable).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print events as JSON lines; the last is the outcome.")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="Sandbox backend (sandbox.backend).")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model name (model.name), or 'scripted' to replay --script.")
]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (model.base_url).")
]
LanguageOpt = Annotated[
    str | None,
    typer.Option(
        "--language",
        "-l",
        help="The language the agent writes: py, js, sh, or auto (it chooses per step) (agent.language).",
    ),
]
StepsOpt = Annotated[
    int | None, typer.Option("--max-steps", min=1, help="Model turns at most (agent.max_steps).")
]
RouteOpt = Annotated[
    str | None,
    typer.Option(
        "--route",
        help="code: think in code; direct: one model call, no code; auto: the model decides per question "
        "(agent.route).",
    ),
]
ScriptOpt = Annotated[
    Path | None, typer.Option("--script", help="JSON list of replies for the scripted model (model.script).")
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Ask a thinkbox service (thinkbox serve) at this URL instead of the local engine; --file "
        "uploads to your folder there.",
    ),
]
NoServeOpt = Annotated[
    bool,
    typer.Option(
        "--no-serve",
        help="Load the model here even when thinkbox serve runs on this data dir (service.local_reuse).",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", help="The key for --server (default: THINKBOX_API_KEY).", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.command("ask")(ask_command)
    app.command("chat")(chat_command)


def ask_command(
    question: Annotated[str, typer.Argument(help="What to answer.")],
    file: FilesOpt = None,
    json_out: JsonOpt = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_steps: StepsOpt = None,
    script: ScriptOpt = None,
    language: LanguageOpt = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    route: RouteOpt = None,
    no_serve: NoServeOpt = False,
) -> None:
    """Answer a question by writing and running Python in an isolated sandbox."""
    console = Console(stderr=False, highlight=False)
    try:
        text = check_question(question)
        files = _check_files(file or [])
        if server is not None:
            local = {"--backend": backend, "--model": model, "--base-url": base_url,
                     "--max-steps": max_steps, "--script": script, "--language": language}  # fmt: skip
            status = _ask_remote(text, files, server, api_key, local, console, json_out, _route(route))
        else:
            settings = load_settings(
                **option_overrides(backend, model, base_url, max_steps, script, language, route)
            )
            engine = (backend, model, base_url, max_steps, script, language)
            served = None if no_serve or any(o is not None for o in engine) else _local_server(settings)
            if served is not None:
                print(f"thinkbox: asking thinkbox serve at {served.url}, whose model is loaded (--no-serve: "
                      "load it here)", file=sys.stderr)  # fmt: skip
                status = _ask_remote(
                    text, files, served.url, served.key, {}, console, json_out, _route(route)
                )
            else:
                status = asyncio.run(_ask(text, files, settings, console, json_out))
    except ThinkboxError as exc:
        _fail(exc, json_out)
        raise typer.Exit(EXIT_INFRA) from None
    except KeyboardInterrupt:
        where = (
            "the run was cancelled on the service"
            if server
            else "the code was interrupted and the session closed"
        )
        print(f"thinkbox: cancelled; {where}", file=sys.stderr)
        raise typer.Exit(EXIT_CANCELLED) from None
    raise typer.Exit(status)


def chat_command(
    file: FilesOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_steps: StepsOpt = None,
    script: ScriptOpt = None,
    language: LanguageOpt = None,
    route: RouteOpt = None,
) -> None:
    """A conversation: every question is answered in the same session, with the same history."""
    console = Console(highlight=False)
    try:
        files = _check_files(file or [])
        overrides = option_overrides(backend, model, base_url, max_steps, script, language, route)
        settings = load_settings(**overrides)
        with asyncio.Runner() as runner:
            chat = runner.run(_open_chat(files, settings))
            try:
                with TranscriptWriter(settings.data_dir) as transcript:
                    _chat_loop(runner, chat, console, _sink(settings, console, False, transcript))
            finally:
                runner.run(chat.aclose())
    except ThinkboxError as exc:
        _fail(exc, False)
        raise typer.Exit(EXIT_INFRA) from None
    except KeyboardInterrupt:
        print("\nthinkbox: bye", file=sys.stderr)
        raise typer.Exit(EXIT_CANCELLED) from None


# -- ask ------------------------------------------------------------------------------------------
async def _ask(question: str, files: list[Path], settings: Settings, console: Console, json_out: bool) -> int:
    run_id = uuid.uuid4().hex[:12]
    with TranscriptWriter(settings.data_dir) as transcript:
        sink = _sink(settings, console, json_out, transcript)
        async with _Resources(settings, files) as res:
            outcome = EXIT_INFRA
            events = run_routed(
                question, model=res.model, session=res.session, settings=settings, run_id=run_id
            )
            async for event in events:
                sink(event)
                outcome = _exit_status(event, outcome)
            return outcome


def _ask_remote(
    question: str,
    files: list[Path],
    server: str,
    api_key: str | None,
    local: Mapping[str, object],
    console: Console,
    json_out: bool,
    route: str | None = None,
) -> int:
    from thinkbox.cli.remote import check_local_options, remote_run

    check_local_options(local)
    show = _show(load_settings(), console, json_out)
    outcome = EXIT_INFRA
    with remote_run(server, api_key, question, files, route) as events:
        for event in events:
            show(event)
            outcome = _exit_status(event, outcome)
    return outcome


def _local_server(settings: Settings) -> Any:
    """A ``thinkbox serve`` on this data dir that answers (:mod:`thinkbox.service.local`), else None."""
    from thinkbox.service import local

    return local.find(settings)


def _exit_status(event: Event, current: int) -> int:
    if isinstance(event, FinalAnswer):
        return EXIT_ANSWER
    if isinstance(event, LimitReached):
        return EXIT_LIMIT
    return current


def _show(settings: Settings, console: Console, json_out: bool) -> Sink:
    """The terminal: rich, or JSON lines; figures saved under the data dir."""
    figures = FigureSaver(settings.data_dir / "figures")
    if not json_out:
        return Renderer(console, figures)

    def emit(event: Event) -> None:
        path = figures(event)
        if not isinstance(event, RunFinished):  # the outcome (final_answer / limit_reached) stays last
            print(event_json(event, path), flush=True)

    return emit


def _sink(settings: Settings, console: Console, json_out: bool, transcript: TranscriptWriter) -> Sink:
    """Where events go: the terminal and the run's transcript."""
    show = _show(settings, console, json_out)

    def sink(event: Event) -> None:
        transcript.write(event)
        show(event)

    return sink


# -- resources ------------------------------------------------------------------------------------
class _Resources:
    """Model, sandbox backend and session for one command; closed in reverse order, also on Ctrl-C."""

    def __init__(self, settings: Settings, files: list[Path]) -> None:
        self.settings = settings
        self.files = files
        self.backend: SandboxBackend | None = None
        self._session: Session | None = None
        self._model: ModelBackend | None = None

    @property
    def model(self) -> ModelBackend:
        assert self._model is not None
        return self._model

    @property
    def session(self) -> Session:
        assert self._session is not None
        return self._session

    async def __aenter__(self) -> _Resources:
        """The model is built and its weights loaded while the sandbox starts (one core each)."""
        from thinkbox.models.factory import get_model, preload

        self.backend = registry.create_backend(self.settings.sandbox.backend)

        async def built() -> ModelBackend:
            return await preload(await asyncio.to_thread(get_model, self.settings))

        model = asyncio.ensure_future(built())
        try:
            self._session = await self.backend.create_session(
                SessionConfig(limits=self.settings.sandbox.limits)
            )
            for path in self.files:
                await self._session.put_file(path.name, _read(path))
            self._model = await model
        except BaseException:
            with contextlib.suppress(BaseException):
                self._model = self._model or await model
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.interrupt()  # a Ctrl-C during execution: stop the code first, then close
            await session.close()
        if self.backend is not None:
            await self.backend.aclose()
            self.backend = None
        model, self._model = self._model, None
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()


# -- chat -----------------------------------------------------------------------------------------
class _Chat:
    def __init__(self, resources: _Resources, conversation: Conversation) -> None:
        self.resources = resources
        self.conversation = conversation

    async def aclose(self) -> None:
        await self.resources.aclose()


async def _open_chat(files: list[Path], settings: Settings) -> _Chat:
    res = await _Resources(settings, files).__aenter__()
    return _Chat(res, Conversation(model=res.model, session=res.session, settings=settings))


def _chat_loop(runner: asyncio.Runner, chat: _Chat, console: Console, sink: Sink) -> None:
    console.print("[dim]thinkbox chat: one session, one history. Empty line or Ctrl-D to leave.[/]")
    while True:
        try:
            question = console.input("[bold green]you> [/]")
        except EOFError:
            return
        if not question.strip():
            return
        try:
            check_question(question)
        except ThinkboxError as exc:
            console.print(f"[red]{exc.message}[/]")
            continue
        try:
            runner.run(_chat_turn(chat, question, sink))
        except KeyboardInterrupt:  # stop this answer, keep the chat
            chat.resources.session.interrupt()
            console.print("[yellow]interrupted[/]")


async def _chat_turn(chat: _Chat, question: str, sink: Sink) -> None:
    async for event in chat.conversation.ask(question):
        sink(event)


# -- helpers --------------------------------------------------------------------------------------
def option_overrides(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    max_steps: int | None,
    script: Path | None,
    language: str | None = None,
    route: str | None = None,
) -> dict[str, Any]:
    model_over: dict[str, Any] = {}
    if model == "scripted" or (script is not None and model is None):
        model_over["provider"] = "scripted"
    elif model is not None:
        model_over["name"] = model
    if script is not None:
        model_over["script"] = script
    if base_url is not None:
        model_over["base_url"] = base_url
    overrides: dict[str, Any] = {}
    if model_over:
        overrides["model"] = model_over
    if backend is not None:
        overrides["sandbox"] = {"backend": backend}
    agent: dict[str, Any] = {}
    if max_steps is not None:
        agent["max_steps"] = max_steps
    if language is not None:
        name = language.strip().lower()
        agent["language"] = "auto" if name == "auto" else parse_language(name, "--language, or auto")
    if route is not None:
        agent["route"] = _route(route)
    if agent:
        overrides["agent"] = agent
    return overrides


def _route(route: str | None) -> str | None:
    """``--route`` checked: code, direct or auto (None: not given)."""
    if route is None:
        return None
    name = route.strip().lower()
    if name not in ROUTES:
        raise ConfigError(f"--route {route!r}: use one of {', '.join(ROUTES)}")
    return name


def _check_files(files: list[Path]) -> list[Path]:
    for path in files:
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "does not exist"
            raise ConfigError(f"--file {path}: the file {what}")
    names = [p.name for p in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"--file: two files are named {', '.join(duplicates)}; rename one (they share /workspace)"
        )
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--file {path}: cannot read it ({exc.strerror})") from None


def _fail(exc: ThinkboxError, json_out: bool) -> None:
    print(f"thinkbox: {exc.message}", file=sys.stderr)
    if json_out:
        err = {"type": "run_error", "code": exc.code, "message": exc.message, "retryable": exc.retryable}
        print(json.dumps(err, ensure_ascii=False), flush=True)
