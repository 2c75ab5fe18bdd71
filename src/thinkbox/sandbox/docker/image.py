"""The docker backend's image, built without any registry pull.

Three layers, each reused when nothing changed:

1. a Debian root filesystem with ``python3`` (``debootstrap --variant=minbase``), kept as a tarball under
   ``~/.cache/thinkbox/docker/`` so later builds on the same machine skip the ~1 minute it takes;
2. that tarball imported as ``thinkbox-base:<hash>`` (``docker import``);
3. ``thinkbox-sandbox:<hash>`` on top: numpy, pandas, matplotlib, openpyxl, networkx, sympy and their
   dependencies copied from this interpreter's site-packages (the image's Python has the same minor
   version) and matplotlib's font cache, with ``/opt/thinkbox`` on ``PYTHONPATH``.

thinkbox's in-sandbox files (kernel, wire, launch: :data:`thinkbox.sandbox.inside.FILES`) are *not*
baked in: the backend bind-mounts this thinkbox's own copy read-only at ``/opt/thinkbox/thinkbox`` for
every session, so the
interpreter always speaks the host's protocol and editing the kernel never needs a rebuild (baked-in
copies went stale twice during one test run of a tree being edited).

``<hash>`` is a digest of everything that goes in, so :func:`build_image` is a no-op when the tag exists.
``thinkbox-sandbox:latest`` points at the newest build; the backend uses it unless told otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from thinkbox.errors import SandboxError, SandboxUnavailable
from thinkbox.sandbox import inside

IMAGE_REPO = "thinkbox-sandbox"
BASE_REPO = "thinkbox-base"
DEFAULT_IMAGE = f"{IMAGE_REPO}:latest"
SUITE = "bookworm"
IMAGE_PYTHON = "3.11"
"""Minor version of Debian bookworm's python3: the copied packages' binary modules are built for it."""
PACKAGES = ("numpy", "pandas", "matplotlib", "openpyxl", "networkx", "sympy")
RUNTIME_DIR = "/opt/thinkbox"
MPL_CACHE = f"{RUNTIME_DIR}/matplotlib"
LABEL_CONTENT = "thinkbox.content"
"""Image label: the content hash (also the tag)."""
BUILD_HINT = "run `thinkbox image build`"
_SITE = f"/usr/local/lib/python{IMAGE_PYTHON}/dist-packages"

DOCKERFILE = f"""\
FROM {{base}}
COPY site-packages/ {_SITE}/
RUN rm -rf /run/* /var/lib/apt/lists/* /var/cache/apt/* /root/.[!.]* \\
 && chmod 700 /root && mkdir -p /workspace {MPL_CACHE} \\
 && MPLCONFIGDIR={MPL_CACHE} HOME=/tmp python3 -c "import numpy, pandas, openpyxl, matplotlib.font_manager" \\
 && chmod -R a+rX {RUNTIME_DIR} {_SITE}
ENV PYTHONPATH={RUNTIME_DIR} PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 LANG=C.UTF-8 MPLBACKEND=Agg \\
    HOME=/workspace OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
WORKDIR /workspace
"""


@dataclass
class BuildResult:
    image: str
    """The content tag, ``thinkbox-sandbox:<hash>``."""
    built: bool
    """False when the tag existed and nothing was built."""
    seconds: float
    steps: list[str]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "thinkbox" / "docker"


def rootfs_tarball() -> Path:
    return cache_dir() / f"rootfs-{SUITE}-python3.tar"


def copy_kernel_files(dest: Path) -> Path:
    """This thinkbox's in-sandbox files as a ``thinkbox`` package under ``dest`` (world-readable)."""
    root = inside.install(dest)
    for path in (dest, root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def ensure_rootfs(progress: Callable[[str], None] = lambda _: None) -> Path:
    """The cached Debian root filesystem tarball, made with debootstrap when missing (needs root)."""
    tarball = rootfs_tarball()
    if tarball.is_file():
        return tarball
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise SandboxUnavailable(
            "debootstrap is not installed; install it (`apt-get install debootstrap`) to build the image "
            "without a registry"
        )
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            f"debootstrap needs root; run `sudo thinkbox image build` once ({tarball} is then cached)"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="thinkbox-rootfs-") as tmp:
        root = Path(tmp) / "root"
        progress(f"debootstrap --variant=minbase --include=python3 {SUITE} (about a minute)")
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3", SUITE, str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SandboxError(
                f"debootstrap failed (status {proc.returncode}): "
                f"{(proc.stdout + proc.stderr).strip()[-800:]}; "
                "it needs a reachable Debian mirror (see /etc/apt/sources.list)"
            )
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.replace(tarball)
    return tarball


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def _requirement_names(dist: metadata.Distribution) -> Iterable[str]:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {str(k): str(v) for k, v in default_environment().items()}
    env.update(python_version=IMAGE_PYTHON, extra="")
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate(env):
            yield req.name


def package_closure(names: Iterable[str] = PACKAGES) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need, dependencies included, in a stable order."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SandboxError(
                f"{name} is not installed in {sys.prefix}; the image copies it from there "
                "(`pip install numpy pandas matplotlib openpyxl networkx sympy`)"
            ) from None
        found[key] = dist
        todo.extend(_requirement_names(dist))
    return [found[k] for k in sorted(found)]


def _copy_distributions(dists: list[metadata.Distribution], dest: Path) -> None:
    for dist in dists:
        base = Path(str(dist.locate_file(""))).resolve()
        for rel in dist.files or []:
            if ".." in rel.parts:  # scripts outside site-packages
                continue
            source = base / rel
            if not source.is_file():
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _context(dists: list[metadata.Distribution], base: str, ctx: Path) -> None:
    _copy_distributions(dists, ctx / "site-packages")
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))


def content_tag(base: str, dists: list[metadata.Distribution]) -> str:
    h = hashlib.sha256()
    h.update(base.encode() + b"\0" + DOCKERFILE.encode() + b"\0")
    for dist in dists:
        h.update(f"{dist.metadata['Name']}=={dist.version}\0".encode())
    return f"{IMAGE_REPO}:{h.hexdigest()[:16]}"


def build_image(
    client: Any, *, progress: Callable[[str], None] = lambda _: None, force: bool = False
) -> BuildResult:
    """Make the sandbox image with ``client`` (a ``docker.DockerClient``); skip what already exists."""
    import time

    import docker.errors

    started = time.perf_counter()
    steps: list[str] = []
    if f"{sys.version_info.major}.{sys.version_info.minor}" != IMAGE_PYTHON:
        raise SandboxError(
            f"the image's python3 is {IMAGE_PYTHON} and its packages are copied from this interpreter, "
            f"which is {sys.version.split()[0]}; run `thinkbox image build` from a Python {IMAGE_PYTHON} "
            "environment"
        )
    dists = package_closure()
    try:
        tarball = ensure_rootfs(progress)
        base = f"{BASE_REPO}:{SUITE}-{_file_digest(tarball)}"
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            progress(f"docker import {tarball.name} as {base}")
            repo, tag = base.split(":")
            client.api.import_image_from_file(str(tarball), repository=repo, tag=tag)
            steps.append("import")
        tag = content_tag(base, dists)
        exists = True
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            exists = False
        if not exists or force:
            progress(f"building {tag} ({len(dists)} packages copied from {sys.prefix})")
            with tempfile.TemporaryDirectory(prefix="thinkbox-image-") as tmp:
                ctx = Path(tmp)
                _context(dists, base, ctx)
                client.images.build(
                    path=str(ctx),
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    network_mode="none",
                    labels={LABEL_CONTENT: tag},
                )
            steps.append("build")
        client.images.get(tag).tag(IMAGE_REPO, "latest")
        if "build" in steps:
            _remove_older(client, tag)
    except docker.errors.BuildError as exc:
        log = "".join(str(item.get("stream", item.get("error", ""))) for item in exc.build_log)
        raise SandboxError(f"the image build failed: {exc.msg}; {log.strip()[-1500:]}") from None
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(f"the image could not be built: {exc}") from None
    return BuildResult(image=tag, built=bool(steps), seconds=time.perf_counter() - started, steps=steps)


def _remove_older(client: Any, keep: str) -> None:
    """Untag earlier builds so a cache of images does not grow with every package change."""
    import docker.errors

    for image in client.images.list(name=IMAGE_REPO):
        for old in image.tags:
            if old not in (keep, DEFAULT_IMAGE):
                try:
                    client.images.remove(old)
                except docker.errors.APIError:  # still used by a container: keep it
                    continue
