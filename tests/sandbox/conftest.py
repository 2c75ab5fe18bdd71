"""Real sandbox backends for the conformance, escape and hostile-code suites.

``sandbox_backend`` is parametrized over every registered backend that can run here (THINKBOX_TEST_BACKEND
narrows it to one name); a backend that cannot start here is skipped with its reason. One backend instance
serves a whole test module, on the module's event loop: such modules set
``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from docker_engine import backend_options, docker_engine  # noqa: F401  (docker's own engine)

from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend

BACKENDS = (
    [os.environ["THINKBOX_TEST_BACKEND"]]
    if os.environ.get("THINKBOX_TEST_BACKEND")
    else ["zygote", "bwrap", "docker", "docker+runsc"]
)


async def start_backend(name: str, **options: object) -> SandboxBackend:
    """A started backend, or a skip that says why ``name`` cannot run here."""
    try:
        backend = registry.create_backend(name, **options)
        await backend.start()
    except (ThinkboxError, ImportError, OSError) as exc:
        pytest.skip(f"the {name} backend cannot run here: {exc}")
    return backend


SECRET_PREFIX = "tbcanary"
SECRET_VAR = "THINKBOX_TEST_PLANTED_SECRET"


@pytest.fixture(scope="module")
def planted_secret() -> Iterator[str]:
    """A secret in this process's environment from BEFORE any backend is created; no session may see it."""
    secret = SECRET_PREFIX + secrets.token_hex(16)
    old = os.environ.get(SECRET_VAR)
    os.environ[SECRET_VAR] = secret
    try:
        yield secret
    finally:
        if old is None:
            os.environ.pop(SECRET_VAR, None)
        else:
            os.environ[SECRET_VAR] = old


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def sandbox_backend(
    request: pytest.FixtureRequest, planted_secret: str
) -> AsyncIterator[SandboxBackend]:
    name, options = request.param, {}
    if name.startswith("docker"):  # docker, docker+runsc: on an engine of the test run's own
        name, options = backend_options(request.getfixturevalue("docker_engine"), name)
    backend = await start_backend(name, **options)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def process_tree() -> Callable[..., set[int]]:
    """``process_tree(pid=None)``: pids of every live process below ``pid`` (default: this test process)."""
    return descendants


def descendants(pid: int | None = None) -> set[int]:
    """Host pids of every live (non-zombie) process below ``pid`` (default: this test process)."""
    found: set[int] = set()
    todo = [pid or os.getpid()]
    while todo:
        parent = todo.pop()
        try:
            children = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and child not in found:
                found.add(child)
                todo.append(child)
    return found


KNOWN_GAPS = {
    "test_fork_bomb_is_capped_and_cleaned_up[docker+runsc]": (
        "gVisor (runsc 2022) has no per-session process cap here: RLIMIT_NPROC inside refuses every new "
        "thread, and the host pids cgroup also counts the sandbox kernel's own threads, so hitting it "
        "kills the session instead of giving EAGAIN (measured)"
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_GAPS.get(item.name)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
