"""``thinkbox bench egress --pip``: does the tenant's package cache make a second user's install faster?

Two users of one tenant install the same small pure-Python packages, each in a fresh zygote session that
goes out through its egress proxy to the package index of the host's pip configuration (the product's
path: ``!pip install`` into the user's own site folder, with the user's own pip cache). The first user
finds the tenant's package cache empty, the second finds what the first one's downloads left there;
every install is timed from the host, around the whole cell. Rounds use a new tenant each (an empty
cache), so the figures are medians over independent rounds. The package files the proxy served from the
tenant's package cache (:mod:`thinkbox.service.egress.artifacts`) are counted from its records, and
whether pip itself said ``Using cached`` (its HTTP cache, which depends on the index's caching headers).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from thinkbox.agent.events import NetworkRequest
from thinkbox.config import Settings
from thinkbox.errors import SandboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.accounts import Principal
from thinkbox.service.egress import Egress
from thinkbox.service.egress.artifacts import CACHED, PACKAGE_FILE
from thinkbox.service.egress.policy import index_urls

PACKAGES = ("tomli_w", "text-unidecode", "botocore")
"""Pure-Python wheels not installed in the sandbox's environment: two small ones and a large one (about
13 MB), installed without their dependencies."""
TIMEOUT_S = 300.0


class PipBench(BaseModel):
    """Install times in seconds, medians over rounds (each round a new tenant and so an empty cache)."""

    rounds: int
    packages: list[str]
    first_user_s_p50: float | None = None
    second_user_s_p50: float | None = None
    second_over_first: float | None = None
    second_pip_used_its_cache: bool | None = None
    files_fetched: int = Field(0, description="Package files the first users' installs downloaded.")
    files_from_proxy_cache: int = Field(0, description="Package files served from the tenant's cache.")
    first_s: list[float] = Field(default_factory=list)
    second_s: list[float] = Field(default_factory=list)
    skipped: str | None = Field(None, description="Why the pip part did not run (no index reachable).")


def _owner(tenant: str, user: str) -> Principal:
    return Principal(
        tenant_id=f"t_{tenant}", tenant_name=tenant, user_id=f"u_{tenant}_{user}", user_name=user, key_id=""
    )


async def _install(egress: Egress, backend: Any, owner: Principal, session_id: str) -> tuple[float, str]:
    config = await egress.session_config(session_id, owner, SessionConfig())
    session = await backend.create_session(config)
    try:
        started = time.perf_counter()
        result = await session.execute(f"!pip install --no-deps {' '.join(PACKAGES)}", timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - started
    finally:
        await session.close()
        await egress.detach(session_id)
    output = result.stdout + result.stderr
    if not result.ok or "Successfully installed" not in output:
        raise SandboxError(f"pip install in the bench session failed: {output[-600:]}")
    return elapsed, output


async def run_pip_bench(data_dir: Path, rounds: int = 3, progress: Any = lambda _m: None) -> PipBench:
    report = PipBench(rounds=rounds, packages=list(PACKAGES))
    if not index_urls():
        report.skipped = "the host's pip configuration names no http(s) package index"
        return report
    egress = await asyncio.to_thread(Egress, Settings(data_dir=data_dir), None, None)
    files: list[NetworkRequest] = []
    egress.listener = lambda _sid, e: files.append(e) if PACKAGE_FILE.search(e.path) else None
    backend = registry.create_backend("zygote")
    await backend.start()
    try:
        cached: list[bool] = []
        for n in range(rounds):
            tenant = f"pip{n}"
            progress(f"pip round {n + 1}/{rounds}: a first user of a new tenant, then a second one")
            first, _ = await _install(egress, backend, _owner(tenant, "a"), f"s_pip_{n}_a")
            report.files_fetched += sum(1 for e in files if e.status == 200 and not e.reason)
            files.clear()
            second, said = await _install(egress, backend, _owner(tenant, "b"), f"s_pip_{n}_b")
            report.first_s.append(round(first, 2))
            report.second_s.append(round(second, 2))
            cached.append("Using cached" in said)
            report.files_from_proxy_cache += sum(1 for e in files if e.reason == CACHED)
            files.clear()
    finally:
        await backend.aclose()
        await egress.aclose()
    report.first_user_s_p50 = round(statistics.median(report.first_s), 2)
    report.second_user_s_p50 = round(statistics.median(report.second_s), 2)
    report.second_over_first = round(report.second_user_s_p50 / report.first_user_s_p50, 2)
    report.second_pip_used_its_cache = all(cached)
    return report
