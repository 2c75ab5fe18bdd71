"""What is particular to the docker backend, on a real dockerd of the test run's own (docker_engine.py).

The behaviours every backend shares (protocol, limits, escapes) run in test_conformance, test_hostile and
test_escape, parametrized over docker and docker+runsc.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from docker_engine import Engine

from thinkbox.errors import SandboxUnavailable
from thinkbox.sandbox import inside
from thinkbox.sandbox.docker import image as docker_image
from thinkbox.sandbox.docker.backend import LABEL_OWNER, LABEL_SESSION, DockerBackend
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.types import Mount, SessionConfig

docker = pytest.importorskip("docker")
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def client(docker_engine: Engine) -> Iterator[Any]:
    c = docker.DockerClient(base_url=docker_engine.host)
    try:
        yield c
    finally:
        c.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def backend(docker_engine: Engine) -> AsyncIterator[DockerBackend]:
    b = DockerBackend(base_url=docker_engine.host, image=docker_engine.image)
    await b.start()
    try:
        yield b
    finally:
        await b.aclose()


# -- errors name the fix (no engine needed) -------------------------------------------------------
async def test_no_engine_is_sandbox_unavailable_naming_docker_host(tmp_path: Path) -> None:
    backend = DockerBackend(base_url=f"unix://{tmp_path}/absent.sock")
    with pytest.raises(SandboxUnavailable, match="DOCKER_HOST") as info:
        await backend.start()
    assert "dockerd" in str(info.value)
    await backend.aclose()


async def test_missing_image_says_to_run_image_build(docker_engine: Engine) -> None:
    backend = DockerBackend(base_url=docker_engine.host, image="thinkbox-sandbox:does-not-exist")
    with pytest.raises(SandboxUnavailable, match="thinkbox image build"):
        await backend.start()
    await backend.aclose()


async def test_unknown_runtime_names_the_daemon_setting(docker_engine: Engine) -> None:
    backend = DockerBackend(base_url=docker_engine.host, image=docker_engine.image, runtime="no-such-runtime")
    with pytest.raises(SandboxUnavailable, match=r"daemon\.json"):
        await backend.start()
    await backend.aclose()


# -- containers -----------------------------------------------------------------------------------
async def test_session_container_is_hardened_labelled_and_removed_on_close(
    backend: DockerBackend, client: Any
) -> None:
    session = await backend.create_session()
    containers = client.containers.list(filters={"label": f"{LABEL_SESSION}={session.id}"})
    assert len(containers) == 1
    attrs = containers[0].attrs
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert any(opt.startswith("seccomp=") for opt in host["SecurityOpt"])
    assert attrs["Config"]["User"] == "1000:1000"
    assert host["Memory"] > 0 and host["PidsLimit"] == 64 and host["NanoCpus"] == 1_000_000_000
    assert str(os.getpid()) in attrs["Config"]["Labels"][LABEL_OWNER]
    await session.close()
    assert client.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={session.id}"}) == []


async def test_stale_containers_of_a_gone_thinkbox_are_removed_on_start(
    docker_engine: Engine, client: Any, backend: DockerBackend
) -> None:
    dead = f"{socket.gethostname()}:999999999:1"
    alive = backend._owner  # another backend of this (live) process: must be left alone
    labels = {"thinkbox.backend": "docker", LABEL_SESSION: "stale"}
    gone = client.containers.create(docker_engine.image, "true", labels={**labels, LABEL_OWNER: dead})
    kept = client.containers.create(docker_engine.image, "true", labels={**labels, LABEL_OWNER: alive})
    try:
        fresh = DockerBackend(base_url=docker_engine.host, image=docker_engine.image)
        await fresh.start()
        await fresh.aclose()
        ids = {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL_SESSION}=stale"})}
        assert gone.id not in ids and kept.id in ids
    finally:
        kept.remove(force=True)


async def test_backend_close_removes_every_container_it_started(docker_engine: Engine, client: Any) -> None:
    backend = DockerBackend(base_url=docker_engine.host, image=docker_engine.image)
    sessions = [await backend.create_session() for _ in range(2)]
    ids = {s.id for s in sessions}
    await backend.aclose()
    left = [c for c in client.containers.list(all=True) if c.labels.get(LABEL_SESSION) in ids]
    assert left == []


async def test_bind_mounted_storage_is_shared_with_the_host(backend: DockerBackend, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    storage.chmod(0o777)
    (storage / "in.txt").write_text("from the host")
    config = SessionConfig(mounts=(Mount(source=storage, target="store", read_only=False),))
    session = await backend.create_session(config)
    try:
        result = await session.execute(
            "open('store/out.txt', 'w').write(open('store/in.txt').read().upper())"
        )
        assert result.ok, result
    finally:
        await session.close()
    assert (storage / "out.txt").read_text() == "FROM THE HOST"


async def test_warm_pool_hands_out_pre_started_containers(backend: DockerBackend) -> None:
    async with SessionPool(backend, size=2) as pool:
        await pool.wait_full()
        started = time.perf_counter()
        session = await pool.acquire()
        acquire_ms = (time.perf_counter() - started) * 1000
        result = await session.execute("21 * 2")
        await pool.release(session)
    assert result.result == "42"
    assert pool.stats().acquired_warm == 1
    assert acquire_ms < 500, f"a warm acquire took {acquire_ms:.0f} ms"


async def test_interpreter_runs_under_an_init_not_as_pid_1(backend: DockerBackend) -> None:
    session = await backend.create_session()
    try:
        result = await session.execute("import os\nos.getpid(), os.getppid()")
        pid, ppid = eval(result.result or "()")
        assert pid != 1 and ppid == 1, "the interpreter runs under an init, not as pid 1"
    finally:
        await session.close()


# -- the image ------------------------------------------------------------------------------------
async def test_image_build_is_skipped_when_nothing_changed(docker_engine: Engine, client: Any) -> None:
    again = docker_image.build_image(client)
    assert again.image == docker_engine.image and not again.built
    assert client.images.get(docker_image.DEFAULT_IMAGE).id == client.images.get(again.image).id
    assert client.images.get(again.image).labels[docker_image.LABEL_CONTENT] == again.image


async def test_image_has_the_analysis_packages_and_no_thinkbox_code(
    docker_engine: Engine, client: Any
) -> None:
    code = (
        "import importlib.util, numpy, pandas, matplotlib, openpyxl\n"
        "print(importlib.util.find_spec('thinkbox') is None)"
    )
    out = client.containers.run(
        docker_engine.image, ["python3", "-c", code], network_mode="none", remove=True
    ).decode()
    assert out.strip() == "True"


async def test_sessions_see_only_the_sandbox_part_of_thinkbox(backend: DockerBackend) -> None:
    session = await backend.create_session()
    try:
        result = await session.execute(
            "import os, thinkbox\nroot = os.path.dirname(thinkbox.__file__)\n"
            "sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)"
        )
    finally:
        await session.close()
    expected = sorted(["__init__.py", *inside.FILES])
    assert result.result == repr(expected), result
