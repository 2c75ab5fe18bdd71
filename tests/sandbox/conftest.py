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

import pytest
import pytest_asyncio
from docker_engine import backend_options, docker_engine  # noqa: F401  (docker's own engine)
from sandbox_support import descendants, start_backend

from thinkbox.sandbox.backend import SandboxBackend

BACKENDS = (
    [os.environ["THINKBOX_TEST_BACKEND"]]
    if os.environ.get("THINKBOX_TEST_BACKEND")
    else ["zygote", "bwrap", "docker", "docker+runsc"]
)


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
