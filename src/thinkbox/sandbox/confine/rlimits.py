"""Per-process resource limits (setrlimit) of a session, applied in the process to be limited.

RLIMIT_AS turns a memory bomb into a ``MemoryError`` the session survives (the cgroup is only the
backstop); RLIMIT_NPROC counts per *user*, so it holds only where each session runs as its own uid.
"""

from __future__ import annotations

import resource

from thinkbox.sandbox.types import Limits, MiB


def table(limits: Limits) -> dict[int, int]:
    """resource constant -> value (soft = hard) for ``limits``."""
    return {
        resource.RLIMIT_AS: limits.memory_mib * MiB,
        resource.RLIMIT_CPU: limits.cpu_time_s,
        resource.RLIMIT_NPROC: limits.processes,
        resource.RLIMIT_NOFILE: limits.open_files,
        resource.RLIMIT_FSIZE: limits.file_size_mib * MiB,
        resource.RLIMIT_CORE: 0,
    }


def apply(limits: Limits) -> None:
    """Set every limit of ``limits`` on the calling process (soft and hard; children inherit them)."""
    for res, value in table(limits).items():
        resource.setrlimit(res, (value, value))
