"""Data types of the sandbox family: configuration in, results out.

Running code never raises for an error *in the code*: the error is part of :class:`ExecutionResult`.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from thinkbox.errors import ConfigError

MiB = 1024 * 1024


class Limits(BaseModel):
    """Resource limits of one session. Defaults are safe for an agent's scratch work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(30.0, gt=0, description="Wall time of one execution before it is interrupted.")
    kill_grace_s: float = Field(
        2.0,
        gt=0,
        description="How long an interrupted execution may take to stop before the session is killed.",
    )
    cpu_time_s: int = Field(3600, gt=0, description="CPU seconds the interpreter may use over its lifetime.")
    cpu_cores: float = Field(
        1.0, gt=0, description="Share of CPU (in cores) the session may use (cgroup quota)."
    )
    memory_mib: int = Field(
        1024, ge=64, description="Address space of the interpreter (MemoryError past it)."
    )
    processes: int = Field(64, ge=4, description="Processes and threads the session may run at once.")
    open_files: int = Field(256, ge=32, description="Open file descriptors per process.")
    file_size_mib: int = Field(256, ge=1, description="Largest file a session may write.")
    workspace_mib: int = Field(512, ge=1, description="Size of the workspace; filling it gives ENOSPC.")
    tmp_mib: int = Field(256, ge=1, description="Size of the private /tmp.")
    output_bytes: int = Field(
        1 * MiB,
        ge=1024,
        description=(
            "stdout+stderr kept per execution (UTF-8 bytes, counted inside the sandbox and again by the "
            "host); the rest is cut with a marker, after which at most the last 8 KiB of each stream follow."
        ),
    )
    display_items: int = Field(
        32,
        ge=0,
        le=1000,
        description="Display items (figures, rich values) kept per execution; later ones are dropped.",
    )
    display_bytes: int = Field(
        16 * MiB,
        ge=1024,
        le=64 * MiB,
        description=(
            "Display data kept per execution, all items together, measured as they travel (images in "
            "base64); an item that does not fit in what is left is dropped, so this is also the largest item."
        ),
    )
    network: bool = Field(False, description="Reserved: sessions have no network; True is refused for now.")


class Mount(BaseModel):
    """A host directory made visible inside the session's workspace.

    Mounts are applied in order, so a later mount may lie inside an earlier one (a user's folder inside
    their tenant's folder). Each backend refuses a target outside /workspace, follows no symlink inside
    the workspace to reach a target, and pins the source for the session's restarts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path = Field(description="Host directory (must exist).")
    target: str = Field(description="Path inside the workspace (relative) or absolute under /workspace.")
    read_only: bool = True
    hide: tuple[str, ...] = Field(
        (),
        description=(
            "Paths relative to this mount, each covered by an empty read-only directory right after the "
            "mount, before any later mount (what the session must not see of the source). A path that "
            "does not exist when the session starts is skipped; one that is a symlink fails the start."
        ),
    )
    owner: tuple[int, int] | None = Field(
        None,
        description=(
            "Host (uid, gid) that the session's own uid and gid stand for in this mount, whichever uid the "
            "session runs as: files of that uid are the session's own, what it creates gets that uid and "
            "gid. The zygote as root makes an idmapped mount (the other id of the pair stays writable as "
            "nobody; files of any other id are read-only); a bwrap session acts as the engine's uid with "
            "that gid as its host gid, so the uid must be the engine's; an unprivileged zygote's sessions "
            "act as the engine's user, the only owner it accepts; docker refuses it. The source is then "
            "opened without following any symlink."
        ),
    )

    def target_in_workspace(self) -> str:
        """The normalized absolute target, strictly below /workspace (every backend checks it here)."""
        return in_workspace(self.target, "mount target", "SessionConfig.mounts")

    def hidden_in_workspace(self) -> list[str]:
        """The normalized absolute paths of :attr:`hide`, each strictly below the target."""
        target = self.target_in_workspace()
        out = []
        for rel in self.hide:
            path = posixpath.normpath(posixpath.join(target, rel.lstrip("/")))
            if not path.startswith(target + "/") or "\0" in rel:
                raise ConfigError(
                    f"hidden path {rel!r} must lie below the mount target {self.target!r} "
                    "(Mount.hide in SessionConfig.mounts)"
                )
            out.append(path)
        return out


MAX_MOUNTS = 128
"""Mounts per session, every backend (the zygote sends one fd per distinct source in one message)."""
MAX_OWNERS = 4
"""Distinct :attr:`Mount.owner` values per session (each one is a user namespace on the zygote)."""
MAX_HIDDEN = 4096
"""Paths covered per session, all mounts together (:attr:`Mount.hide`)."""


def in_workspace(path: str, what: str, setting: str) -> str:
    """``path`` (relative to /workspace, or absolute under it) normalized, strictly below /workspace."""
    full = posixpath.normpath(posixpath.join(WORKSPACE, path))
    if not full.startswith(WORKSPACE + "/") or "\0" in path:
        raise ConfigError(
            f"{what} {path!r} must be a path under {WORKSPACE}, not {WORKSPACE} itself ({setting})"
        )
    return full


class SessionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: Limits = Field(default_factory=Limits)
    mounts: tuple[Mount, ...] = ()
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the interpreter.")
    cwd: str | None = Field(
        None,
        description=(
            "Where the interpreter starts: a path relative to /workspace or absolute under it (typically "
            "inside a mount); None: /workspace. The session fails to start when it is not a directory."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> SessionConfig:
        if len(self.mounts) > MAX_MOUNTS:
            raise ValueError(f"{len(self.mounts)} mounts; at most {MAX_MOUNTS}")
        owners = {m.owner for m in self.mounts if m.owner is not None}
        if len(owners) > MAX_OWNERS:
            raise ValueError(f"{len(owners)} distinct mount owners; at most {MAX_OWNERS}")
        hidden = sum(len(m.hide) for m in self.mounts)
        if hidden > MAX_HIDDEN:
            raise ValueError(f"{hidden} hidden paths; at most {MAX_HIDDEN}")
        return self

    def cwd_in_workspace(self) -> str:
        """The interpreter's start directory, normalized (/workspace when :attr:`cwd` is None)."""
        if self.cwd is None or posixpath.normpath(posixpath.join(WORKSPACE, self.cwd)) == WORKSPACE:
            return WORKSPACE
        return in_workspace(self.cwd, "cwd", "SessionConfig.cwd")


WORKSPACE = "/workspace"


class OutputChunk(BaseModel):
    """A piece of output that arrived while the code was running."""

    name: Literal["stdout", "stderr"]
    text: str


class DisplayData(BaseModel):
    """A rich output: a matplotlib figure, or anything with a ``_repr_*_`` method."""

    mime: dict[str, str] = Field(description="MIME type -> content (base64 for image/png).")


class ExecutionError(BaseModel):
    type: str
    message: str
    traceback: str = Field(description="Formatted traceback without the engine's own frames.")


class ExecutionResult(BaseModel):
    """The terminal result of one execution. Always returned, never raised."""

    stdout: str = ""
    stderr: str = ""
    result: str | None = Field(None, description="repr() of the value of the last expression, if any.")
    display: list[DisplayData] = Field(default_factory=list)
    error: ExecutionError | None = None
    duration_ms: float = 0.0
    timed_out: bool = False
    interrupted: bool = Field(False, description="The code was stopped with KeyboardInterrupt.")
    killed: bool = Field(False, description="The interpreter was killed (timeout past grace, crash, exit).")
    state_survived: bool = Field(True, description="Variables and imports are still there for the next call.")
    output_truncated: bool = Field(
        False, description="stdout/stderr went past Limits.output_bytes and were cut (a marker says where)."
    )
    display_dropped: int = Field(
        0,
        description=(
            "Display items the host dropped: past Limits.display_items or Limits.display_bytes, or "
            "malformed. When not 0, a note at the end of stderr says so."
        ),
    )
    exit_status: int | None = Field(None, description="For shell commands: the command's exit status.")

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and not self.killed


class FileInfo(BaseModel):
    path: str
    size: int
    is_dir: bool


class Variable(BaseModel):
    """A name defined in a session, described without running the user's code (docs/protocol.md)."""

    name: str
    type: str = Field(description="The value's type, with its module unless a builtin or __main__.")
    repr: str = Field(description="A short description: contents of builtins, shape of arrays and frames.")


class Namespace(BaseModel):
    variables: list[Variable] = Field(description="Sorted by name; names starting with _ left out.")
    omitted: int = Field(0, description="Names past the first 500, not listed.")
