"""The agent's fingerprint: what makes two benchmark results comparable.

A result depends on every word the model is shown (the agent's system prompts in each language, the arms'
prompts), on the model (its file or endpoint, its sampling and limits), on the agent's limits and on the
code that runs the loop. :func:`agent_fingerprint` collects these, and its ``id`` (a short hash of all of
them) is part of every cached result's key: a change to any of them starts a fresh set of results instead
of mixing old and new ones. The report shows the parts, so a reader can tell which version produced it.

The code's identity is a hash of the source files that decide answers (the agent, the model backends, the
benchmark's tasks and arms). The settings' values that decide answers are part of the fingerprint
themselves, so ``config.py``'s source is not: a new service setting or a reworded description does not
start the results afresh, and neither does a change to how the report is written. The git commit, when
the package runs from a checkout (``+dirty`` when the package's files have uncommitted changes), is shown
in the report but left out of ``id``: a commit of documentation or tests does not change an answer, and
keying on it made every such commit start the results afresh (an interrupted run could no longer
resume); the source hash already tells code versions apart, committed or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import thinkbox
from thinkbox.config import Settings

SOURCES = ("agent", "models", "bench/reasoning")
"""The parts of the package (relative to it) whose source decides what an arm answers."""
NOT_SOURCES = ("bench/reasoning/report.py", "bench/reasoning/targets.py", "bench/reasoning/fingerprint.py")
"""Files under :data:`SOURCES` that only describe results: the report, its targets and this module."""


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def source_hash(root: Path | None = None) -> str:
    """A hash of the Python source under :data:`SOURCES` (paths and contents, in a fixed order)."""
    base = root or Path(thinkbox.__file__).parent
    digest = hashlib.sha256()
    for part in SOURCES:
        path = base / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and str(file.relative_to(base)) not in NOT_SOURCES:
                digest.update(str(file.relative_to(base)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def git_commit(root: Path | None = None) -> str | None:
    """The commit of the checkout the package runs from (``+dirty`` when it has changes), else None."""
    where = root or Path(thinkbox.__file__).parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip()[:12] + ("+dirty" if dirty.stdout.strip() else "")


def module_prompts(*modules: ModuleType) -> dict[str, str]:
    """Every module-level string constant (``UPPER_CASE``) of ``modules``: the arms' prompts and hints."""
    found: dict[str, str] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str):
                found[f"{module.__name__.rpartition('.')[2]}.{name}"] = value
    return found


def model_identity(settings: Settings) -> dict[str, Any]:
    """Which model answers: the local model's file (its published sha256, or path, size and mtime for a
    file of one's own), an endpoint's URL and model name, or the scripted model's replies."""
    model = settings.model
    provider = settings.resolved_provider()
    if provider == "local":
        if model.path is not None:
            with contextlib.suppress(OSError):
                st = model.path.expanduser().stat()
                return {"file": str(model.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            return {"file": str(model.path)}
        from thinkbox.models.install import get_spec

        with contextlib.suppress(Exception):  # an unknown name: the local backend will say so itself
            spec = get_spec(model.name)
            return {"file": spec.filename, "sha256": spec.sha256}
        return {"name": model.name}
    if provider == "openai":
        return {"base_url": model.base_url, "name": model.name}
    return {"provider": provider, "script": str(model.script) if model.script else None}


def agent_fingerprint(
    settings: Settings, prompts: dict[str, str], model_name: str, *, given_model: bool = False
) -> dict[str, Any]:
    """The parts that make a result reproducible, and ``id``: their hash (a cache key's last part).

    ``prompts``: every prompt the run's arms may send (name -> text); they are hashed one by one so the
    report can say which changed. ``given_model``: the model was handed in (a test's), not built from
    ``settings``, so only its name identifies it."""
    model = settings.model
    provider = "given" if given_model else settings.resolved_provider()
    identity = {"name": model_name} if given_model else model_identity(settings)
    parts: dict[str, Any] = {
        "thinkbox_version": thinkbox.__version__,
        "git_commit": git_commit(),
        "source_sha": source_hash(),
        "prompts_sha": {name: _sha(text) for name, text in sorted(prompts.items())},
        "model": {
            "name": model_name,
            "provider": provider,
            "identity": identity,
            "temperature": model.temperature,
            "max_tokens": model.max_tokens,
            "context_tokens": model.context_tokens,
        },
        "agent": settings.agent.model_dump(mode="json"),
        "sandbox_timeout_s": settings.sandbox.limits.timeout_s,
    }
    keyed = {k: v for k, v in parts.items() if k != "git_commit"}
    parts["id"] = _sha(json.dumps(keyed, sort_keys=True, default=str))
    return parts
