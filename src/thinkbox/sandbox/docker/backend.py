"""The docker backend: one container per session, optionally under gVisor (``runtime="runsc"``).

Each session is a container of the image from :mod:`thinkbox.sandbox.docker.image` running
``python3 -m thinkbox.sandbox.inside.launch`` under ``docker-init`` (so the interpreter is not pid 1 and its
exit status or signal reaches the host), with:

- no network (``--network none``), a read-only root, every capability dropped, ``no-new-privileges``,
  the seccomp filter of :mod:`thinkbox.sandbox.confine.seccomp` written as a Docker profile, a non-root user;
- memory (RLIMIT_AS for a ``MemoryError`` first, the cgroup as backstop), pids, CPU quota, CPU time,
  open files and file size from :class:`~thinkbox.sandbox.types.Limits`;
- size-limited tmpfs mounts for ``/workspace``, ``/tmp`` and ``/dev/shm``, and the caller's mounts under
  ``/workspace``.

thinkbox's own in-sandbox files (kernel, wire, launch) are bind-mounted read-only from a copy made at
:meth:`DockerBackend.start`, so the image never holds a stale protocol.

The protocol runs over a Unix socket: the host listens in a per-session directory bind-mounted read-only
at ``/opt/thinkbox/run``; the interpreter connects once, the host then closes the listener and removes the
socket file. That is a direct kernel socket (no proxy in dockerd), so a round trip costs what it costs
for the other backends; the engine must therefore run on this machine.

Containers carry labels (``thinkbox.session``, ``thinkbox.owner``); :meth:`DockerBackend.start` removes
containers whose owning thinkbox process is gone, and :meth:`DockerBackend.aclose` removes its own.
The engine is found the usual way (``DOCKER_HOST``, else the default socket). ``THINKBOX_DOCKER_RUNTIME``
and ``THINKBOX_DOCKER_IMAGE`` set the defaults of ``runtime`` and ``image``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from thinkbox.errors import ConfigError, SandboxUnavailable, SessionStartError
from thinkbox.sandbox import procs
from thinkbox.sandbox.backend import BackendInfo, ExitInfo, KernelProcess, SandboxBackend
from thinkbox.sandbox.docker import image as docker_image
from thinkbox.sandbox.docker.mounts import bind_mounts, ulimits
from thinkbox.sandbox.docker.profile import seccomp_profile
from thinkbox.sandbox.types import WORKSPACE, MiB, SessionConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

LABEL_BACKEND = "thinkbox.backend"
LABEL_OWNER = "thinkbox.owner"
LABEL_SESSION = "thinkbox.session"
SOCKET_DIR = f"{docker_image.RUNTIME_DIR}/run"
KERNEL_DIR = f"{docker_image.RUNTIME_DIR}/thinkbox"
"""This thinkbox's in-sandbox files, bind-mounted read-only (see :mod:`thinkbox.sandbox.docker.image`)."""
SOCKET_NAME = "kernel.sock"
USER = "1000:1000"
CONNECT_TIMEOUT_S = 60.0
ENGINE_HINT = (
    "start a Docker engine (`sudo systemctl start docker`, or `dockerd &`) and point DOCKER_HOST at its "
    "socket (e.g. DOCKER_HOST=unix:///var/run/docker.sock), or choose another backend "
    "(THINKBOX_SANDBOX__BACKEND / --backend)"
)
_START_SCRIPT = (
    f"mkdir -p /tmp/matplotlib && cp {docker_image.MPL_CACHE}/*.json /tmp/matplotlib/ 2>/dev/null; "
    'ulimit -v "$2" && exec python3 -m thinkbox.sandbox.inside.launch "$0" "$1"'
)
"""Runs as the container's command (under docker-init): matplotlib's font cache into the private /tmp, then
the interpreter with RLIMIT_AS (Docker's ulimits cannot set it) connecting to the host's socket.

Under gVisor the sandbox kernel's own threads count in the host's pids cgroup (about 60 for one idle
session, more per task with the ptrace platform), so there the pids limit is scaled; RLIMIT_NPROC inside
is no substitute: runsc (2022) then refuses every new thread (measured), and the kernel needs one."""
RUNSC_PIDS_BACKSTOP = 512


# -- helpers ---------------------------------------------------------------------------------------
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks (with the pid, it names one process across pid reuse)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(owner: str) -> bool:
    """``host:pid:start`` names a thinkbox process; True unless it is on this host and gone."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return _start_time(int(pid)) == start and start != ""


class DockerKernel(KernelProcess):
    """One container: docker-init as pid 1 and, under it, the interpreter."""

    def __init__(self, backend: DockerBackend, container: Any, sock: socket.socket, workdir: Path) -> None:
        self.backend = backend
        self.container = container
        self.sock = sock
        self.workdir = workdir
        self.init_pid: int | None = (container.attrs.get("State") or {}).get("Pid") or None
        """Host pid of the container's first process (docker-init under runc; the sandbox under runsc)."""
        self._exit: ExitInfo | None = None
        self._killed = False

    def interrupt(self) -> None:
        if self._exit is None:
            self.backend._fire(self._signal, "SIGINT")

    def _signal(self, name: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.DockerException):
            self.container.kill(signal=name)

    async def kill(self) -> None:
        if self._exit is None:
            self._killed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        await self.backend._call(self._remove)
        if self._exit is None:
            self._exit = ExitInfo(-9, "it was killed by thinkbox")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _remove(self) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.DockerException):
            if not self._killed:
                self._exit = self._exit or self._state_exit()
            self.container.remove(force=True)

    def _state_exit(self) -> ExitInfo | None:
        """The exit as dockerd recorded it, or None while the container runs."""
        self.container.reload()
        state = self.container.attrs.get("State") or {}
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        code = procs.from_init_status(state.get("ExitCode"))
        if state.get("OOMKilled"):
            return ExitInfo(code, "it was killed for memory (the container's limit, Limits.memory_mib)")
        if code not in (0, None) and code > 0:
            logs = _container_logs(self.container)
            if logs:
                return ExitInfo(code, f"the interpreter exited with status {code}: {logs}")
        return ExitInfo(code, "")

    async def wait(self) -> ExitInfo:
        import docker.errors

        while self._exit is None:
            try:
                info = await self.backend._call(self._state_exit)
            except docker.errors.NotFound:
                info = ExitInfo(None, "its container was removed")
            except docker.errors.DockerException as exc:
                info = ExitInfo(None, f"the Docker engine did not say how it ended: {exc}")
            if info is not None:
                self._exit = self._exit or info
                break
            await asyncio.sleep(0.05)
        if self._killed:
            return ExitInfo(self._exit.returncode, "it was killed by thinkbox")
        return self._exit

    def host_pids(self) -> list[int]:
        if self.init_pid is None:
            return []
        pids, todo = [], [self.init_pid]
        while todo:
            pid = todo.pop()
            if os.path.exists(f"/proc/{pid}"):
                pids.append(pid)
                todo.extend(procs.children(pid))
        return sorted(pids)


# -- the backend -----------------------------------------------------------------------------------
class DockerBackend(SandboxBackend):
    """Sessions in Docker containers (``runtime="runsc"`` for gVisor)."""

    name: ClassVar[str] = "docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        runtime: str | None = None,
        base_url: str | None = None,
        preload: bool = True,
        user: str = USER,
        **_: Any,
    ) -> None:
        self._image = image or os.environ.get("THINKBOX_DOCKER_IMAGE") or docker_image.DEFAULT_IMAGE
        self._runtime = runtime or os.environ.get("THINKBOX_DOCKER_RUNTIME") or None
        self._base_url = base_url
        self._preload = preload
        self._user = user
        self._client: Any = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"
        self._instance = uuid.uuid4().hex[:12]
        self._root: Path | None = None
        self._seccomp = ""
        self._seq = 0
        self._live: dict[str, DockerKernel] = {}
        self._pins: dict[str, dict[str, tuple[str, int, int]]] = {}
        """Per session: its mount sources (configured path -> canonical path, device, inode) as first seen."""
        self._start_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="thinkbox-docker")
        self._pending: set[asyncio.Future[Any]] = set()

    def info(self) -> BackendInfo:
        runtime = self._runtime or "runc (default)"
        return BackendInfo(
            name=self.name if not self._runtime else f"{self.name}+{self._runtime}",
            isolation=f"Docker container ({runtime}): no network, read-only root, no capabilities, "
            "no-new-privileges, seccomp, non-root, cgroup limits, tmpfs workspace",
            details={
                "image": self._image,
                "runtime": runtime,
                "engine": str(self._base_url or os.environ.get("DOCKER_HOST", "default")),
            },
        )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _fire(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` in the backend's threads without waiting (from sync code on the loop)."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    # -- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self._client is not None:
                return
            try:
                import docker  # noqa: F401
            except ImportError:
                raise SandboxUnavailable(
                    "the docker backend needs the Docker SDK: `pip install 'thinkbox[docker]'` (docker>=7)"
                ) from None
            client = await self._call(self._connect)
            try:
                await self._call(self._check, client)
                self._seccomp = json.dumps(seccomp_profile(clone3_rule=self._runtime != "runsc"))
                root = Path(tempfile.mkdtemp(prefix=f"thinkbox-docker-{os.getpid()}-"))
                os.chmod(root, 0o711)  # the sandbox user reaches its socket, lists nothing
                await asyncio.to_thread(docker_image.copy_kernel_files, root / "kernel")
                self._root = root
                await self._call(self._reap, client)
            except BaseException:
                client.close()
                raise
            self._client = client

    def _connect(self) -> Any:
        import docker

        where = self._base_url or os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
        try:
            client = docker.DockerClient(base_url=self._base_url) if self._base_url else docker.from_env()
            client.ping()
        except docker.errors.DockerException as exc:
            raise SandboxUnavailable(f"no Docker engine answers at {where} ({exc}); {ENGINE_HINT}") from None
        return client

    def _check(self, client: Any) -> None:
        import docker.errors

        if self._runtime:
            runtimes = (client.info().get("Runtimes") or {}).keys()
            if self._runtime not in runtimes:
                have = ", ".join(sorted(runtimes))
                raise SandboxUnavailable(
                    f"the Docker engine has no runtime {self._runtime!r} (it has: {have}); add it to "
                    '/etc/docker/daemon.json, e.g. {"runtimes": {"runsc": {"path": "/usr/bin/runsc", '
                    '"runtimeArgs": ["--network=none", "--platform=ptrace", "--host-uds=open", '
                    '"--oci-seccomp"]}}}, and restart dockerd'
                )
        try:
            client.images.get(self._image)
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(
                f"the sandbox image {self._image} is missing; {docker_image.BUILD_HINT}"
            ) from None
        except docker.errors.DockerException as exc:
            raise SandboxUnavailable(
                f"the Docker engine could not be asked for {self._image}: {exc}"
            ) from None

    def _reap(self, client: Any) -> None:
        """Remove containers (and socket directories) left by thinkbox processes that are gone."""
        import docker.errors

        try:
            stale = [
                c
                for c in client.containers.list(all=True, filters={"label": f"{LABEL_BACKEND}=docker"})
                if not _owner_alive(c.labels.get(LABEL_OWNER, ""))
            ]
        except docker.errors.DockerException as exc:
            log.warning("could not list stale thinkbox containers: %s", exc)
            return
        for container in stale:
            log.info("removing stale sandbox container %s (%s)", container.short_id, container.labels)
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
        for path in Path(tempfile.gettempdir()).glob("thinkbox-docker-*-*"):
            pid = path.name.split("-")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(path, ignore_errors=True)

    # -- sessions ---------------------------------------------------------------------------------
    async def spawn(self, session_id: str, config: SessionConfig) -> KernelProcess:
        if config.language == "js":  # before any container starts: the image is the problem
            raise ConfigError(
                "the docker backend's image has no Node.js, which JavaScript sessions need: use the zygote "
                "(default) or bwrap backend for language js (py and sh sessions run on docker)"
            )
        await self.start()
        limits = config.limits
        if limits.network:
            raise ConfigError("sessions have no network: set Limits.network to False")
        mounts = bind_mounts(config.mounts, self._pins.setdefault(session_id, {}))
        old = self._live.pop(session_id, None)
        if old is not None:
            await old.kill()
        self._seq += 1
        assert self._root is not None
        workdir = self._root / f"{session_id}-{self._seq}"
        workdir.mkdir(mode=0o711)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        container: Any = None
        try:
            listener.bind(str(workdir / SOCKET_NAME))
            os.chmod(workdir / SOCKET_NAME, 0o666)
            listener.listen(1)
            listener.setblocking(False)
            container = await self._call(self._run, session_id, config, mounts, workdir)
            conn = await self._accept(listener, container)
        except BaseException:
            listener.close()
            if container is not None:
                await self._call(_force_remove, container)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(workdir / SOCKET_NAME)
        kernel = DockerKernel(self, container, conn, workdir)
        self._live[session_id] = kernel
        return kernel

    def _run(self, session_id: str, config: SessionConfig, mounts: list[Any], workdir: Path) -> Any:
        import docker.errors
        from docker.types import Mount as DockerMount

        limits = config.limits
        options = {
            "output_bytes": limits.output_bytes,
            "env": config.env,
            "preload": self._preload,
            "cwd": config.cwd_in_workspace(),
            "language": config.language,
        }
        memory = (limits.memory_mib + 256) * MiB  # the cgroup backstop sits above RLIMIT_AS
        kwargs: dict[str, Any] = dict(
            command=[
                "/bin/sh",
                "-c",
                _START_SCRIPT,
                f"{SOCKET_DIR}/{SOCKET_NAME}",
                json.dumps(options),
                str(limits.memory_mib * 1024),  # KiB
            ],
            detach=True,
            init=True,
            user=self._user,
            working_dir=WORKSPACE,
            environment={"MPLCONFIGDIR": "/tmp/matplotlib"},
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={self._seccomp}"],
            mem_limit=memory,
            memswap_limit=memory,
            pids_limit=limits.processes * (4 if self._runtime == "runsc" else 1)
            + (RUNSC_PIDS_BACKSTOP if self._runtime == "runsc" else 0),
            nano_cpus=int(limits.cpu_cores * 1e9),
            ulimits=ulimits(limits),
            tmpfs={
                WORKSPACE: f"size={limits.workspace_mib}m,mode=0700,uid=1000,gid=1000,exec",
                "/tmp": f"size={limits.tmp_mib}m,mode=1777,exec",
            },
            shm_size=limits.tmp_mib * MiB,
            mounts=[
                DockerMount(SOCKET_DIR, str(workdir), type="bind", read_only=True),
                DockerMount(
                    KERNEL_DIR, str(workdir.parent / "kernel" / "thinkbox"), type="bind", read_only=True
                ),
                *mounts,
            ],
            hostname="sandbox",
            labels={
                LABEL_BACKEND: "docker",
                LABEL_OWNER: self._owner,
                LABEL_SESSION: session_id,
                "thinkbox.instance": self._instance,
            },
        )
        if self._runtime:
            kwargs["runtime"] = self._runtime
        try:
            container = self._client.containers.run(self._image, **kwargs)
            container.reload()  # run() answers with the state before the start: no pid yet
            return container
        except docker.errors.ImageNotFound:
            raise SandboxUnavailable(
                f"the sandbox image {self._image} is missing; {docker_image.BUILD_HINT}"
            ) from None
        except docker.errors.APIError as exc:
            raise SessionStartError(
                f"the Docker engine could not start the session's container: {exc.explanation or exc}"
            ) from None
        except docker.errors.DockerException as exc:
            raise SessionStartError(
                f"the Docker engine could not start the session's container: {exc}; {ENGINE_HINT}"
            ) from None

    async def _accept(self, listener: socket.socket, container: Any) -> socket.socket:
        """Wait for the interpreter to connect; fail early if its container ends first."""
        loop = asyncio.get_running_loop()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                while True:
                    done, _ = await asyncio.wait([accept], timeout=0.25)
                    if done:
                        conn, _ = accept.result()
                        return conn
                    state = await self._call(_container_state, container)
                    if not state.get("Running", False):
                        logs = await self._call(_container_logs, container)
                        raise SessionStartError(
                            f"the session's container ended before its interpreter connected "
                            f"(status {state.get('ExitCode')}: {logs or state.get('Error') or 'no output'})"
                        )
        except TimeoutError:
            raise SessionStartError(
                f"the interpreter in the session's container did not connect within {CONNECT_TIMEOUT_S:.0f} s"
            ) from None
        finally:
            accept.cancel()

    async def release(self, session_id: str) -> None:
        kernel = self._live.pop(session_id, None)
        if kernel is not None:
            await kernel.kill()
        self._pins.pop(session_id, None)

    async def aclose(self) -> None:
        live, self._live = list(self._live.values()), {}
        for kernel in live:
            with contextlib.suppress(Exception):
                await kernel.kill()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._call(self._remove_own)
            self._client.close()
            self._client = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="thinkbox-docker")

    def _remove_own(self) -> None:
        for container in self._client.containers.list(
            all=True, filters={"label": f"thinkbox.instance={self._instance}"}
        ):
            _force_remove(container)


def _force_remove(container: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.DockerException):
        container.remove(force=True)


def _container_state(container: Any) -> dict[str, Any]:
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        return {"Running": False, "Error": "the container was removed"}
    state: dict[str, Any] = container.attrs.get("State") or {}
    return state


def _container_logs(container: Any) -> str:
    import docker.errors

    try:
        logs: bytes = container.logs(tail=20)
    except docker.errors.DockerException:
        return ""
    return logs.decode("utf-8", "replace").strip()[-1500:]
