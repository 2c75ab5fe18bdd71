"""A Docker engine of the test run's own: installed when missing, started under a temporary directory,
stopped at the end (only the dockerd this module started, by its pid).

``docker_engine`` (session scope) yields a :class:`Engine` whose ``host`` is the ``DOCKER_HOST`` of that
dockerd, with the sandbox image built once per run and cached between runs on this machine: the
debootstrap tarball and the engine's data root (with the image) live under ~/.cache/thinkbox/docker; a
second test run at the same time finds the data root locked and uses a temporary one.
The engine has the gVisor runtime ``runsc`` when ``/usr/bin/runsc`` exists.
Where no engine can run, the fixture skips with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PACKAGES = ("docker.io", "debootstrap", "runsc")
RUNSC_ARGS = ["--network=none", "--platform=ptrace", "--host-uds=open", "--oci-seccomp"]
"""gVisor as a Docker runtime here: no network stack of its own, the ptrace platform (kvm hangs on this
kind of machine), connecting to the session's host Unix socket allowed, the seccomp profile enforced."""


@dataclass
class Engine:
    host: str
    runtimes: list[str] = field(default_factory=list)
    image: str = ""
    build_seconds: float = 0.0


def _install() -> str | None:
    """Install the Debian packages that are missing; None, or why they cannot be installed."""
    missing = [
        p
        for p, tool in zip(PACKAGES, ("dockerd", "debootstrap", "runsc"), strict=True)
        if not shutil.which(tool)
    ]
    if not missing:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{', '.join(missing)} missing and not root with apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 and "dockerd" not in missing and shutil.which("dockerd"):
        return None  # runsc alone failed: the runsc tests skip
    if not shutil.which("dockerd"):
        return f"apt-get install {' '.join(missing)} failed: {(proc.stdout + proc.stderr)[-500:]}"
    return None


def _wait_for_api(host: str, proc: subprocess.Popen[bytes], log: Path, within_s: float = 30.0) -> Any:
    """A client of the new dockerd once its API answers."""
    import docker

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            client = docker.DockerClient(base_url=host)
            client.ping()
            return client
        except docker.errors.DockerException:
            time.sleep(0.1)
    raise RuntimeError(f"dockerd did not answer within {within_s:.0f} s: {log.read_text()[-1500:]}")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    if os.environ.get("THINKBOX_TEST_NO_DOCKER"):
        pytest.skip("THINKBOX_TEST_NO_DOCKER is set")
    why = _install()
    if why:
        pytest.skip(f"no Docker engine can run here: {why}")
    try:
        import docker  # noqa: F401
    except ImportError:
        pytest.skip("the Docker SDK is not installed (pip install 'thinkbox[docker]')")
    from thinkbox.sandbox.docker import image as docker_image

    tmp = Path(tempfile.mkdtemp(prefix="thinkbox-dockerd-"))
    cached = docker_image.cache_dir() / "dockerd-data"
    cached.parent.mkdir(parents=True, exist_ok=True)
    lock = open(cached.parent / "dockerd-data.lock", "w")  # noqa: SIM115 - held until the end
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        data = cached
    except OSError:
        data = tmp / "data"  # another test run holds the cached data root
    sock = tmp / "docker.sock"
    config = tmp / "daemon.json"
    runtimes = (
        {"runsc": {"path": shutil.which("runsc"), "runtimeArgs": RUNSC_ARGS}} if shutil.which("runsc") else {}
    )
    config.write_text(json.dumps({"runtimes": runtimes}))
    log = tmp / "dockerd.log"
    argv = [
        "dockerd",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--data-root",
        str(data),
        "--exec-root",
        str(tmp / "exec"),
        "-H",
        f"unix://{sock}",
        "--pidfile",
        str(tmp / "dockerd.pid"),
        "--config-file",
        str(config),
    ]
    with open(log, "wb") as out:
        # dockerd inherits the lock: a dockerd that outlives this process still keeps others off its data root
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=[lock.fileno()]
        )
    host = f"unix://{sock}"
    client: Any = None
    try:
        try:
            client = _wait_for_api(host, proc, log)
        except RuntimeError as exc:
            pytest.skip(f"no Docker engine can run here: {exc}")
        try:
            built = docker_image.build_image(client)
        except Exception as exc:
            pytest.skip(f"the sandbox image cannot be built here: {exc}")
        engine = Engine(host=host, runtimes=sorted(runtimes), image=built.image, build_seconds=built.seconds)
        yield engine
    finally:
        if client is not None:
            client.close()
        _stop(proc)
        lock.close()
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], check=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the dockerd this module started (its containers go with it)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def backend_options(engine: Engine, name: str) -> tuple[str, dict[str, object]]:
    """Registry name and options for a test backend name: ``docker`` or ``docker+runsc``."""
    options: dict[str, object] = {"base_url": engine.host, "image": engine.image}
    if name == "docker+runsc":
        if "runsc" not in engine.runtimes:
            pytest.skip("gVisor (runsc) is not installed here")
        options["runtime"] = "runsc"
    return "docker", options
