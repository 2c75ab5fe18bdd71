"""The conformance suite for JavaScript and bash sessions (thinkbox.sandbox.conformance_langs), one test
per behaviour and language, on every backend that runs here."""

from __future__ import annotations

import pytest

from thinkbox.errors import ConfigError
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.conformance_langs import LANGUAGE_CHECKS, OTHER_LANGUAGES
from thinkbox.sandbox.docker.backend import DockerBackend
from thinkbox.sandbox.types import Language, Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
@pytest.mark.parametrize("behaviour", list(LANGUAGE_CHECKS))
async def test_language_session(sandbox_backend: SandboxBackend, behaviour: str, language: Language) -> None:
    if isinstance(sandbox_backend, DockerBackend) and language == "js":
        pytest.skip("the docker image has no Node.js: test_docker_refuses_javascript_naming_the_fix")
    await LANGUAGE_CHECKS[behaviour](sandbox_backend, language)


async def test_docker_refuses_javascript_naming_the_fix() -> None:
    """Before any container or engine is needed: the error names the backends that run JavaScript."""
    backend = DockerBackend()
    with pytest.raises(ConfigError, match=r"no Node\.js.*zygote.*bwrap"):
        await backend.spawn("s1", SessionConfig(language="js"))


async def test_javascript_below_nodes_memory_floor_is_refused_naming_the_setting(
    sandbox_backend: SandboxBackend,
) -> None:
    config = SessionConfig(language="js", limits=Limits(memory_mib=256))
    # docker refuses JavaScript before looking at the limits (its image has no Node.js)
    expected = (
        r"has no Node\.js" if sandbox_backend.name.startswith("docker") else r"limits\.memory_mib >= 1024"
    )
    with pytest.raises(ConfigError, match=expected):
        await sandbox_backend.create_session(config)
