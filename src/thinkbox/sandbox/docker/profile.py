"""The docker backend's seccomp profile: thinkbox's own filter (:mod:`thinkbox.sandbox.confine.seccomp`)
written in Docker's profile format, replacing Docker's default profile."""

from __future__ import annotations

import errno
import logging
import platform
from typing import Any

log = logging.getLogger(__name__)
GVISOR_NAMES = {"pselect6": "pselect"}
"""Syscalls that gVisor (runsc 2022) names otherwise than libseccomp: a profile rule by the libseccomp name
alone misses them there (select() answered EPERM, measured). Found by calling every allowed syscall under
runsc with the profile and without it: pselect6 was the only one whose answer changed (and futex_waitv,
which that gVisor does not implement)."""


def seccomp_profile(*, clone3_rule: bool = True) -> dict[str, Any]:
    """thinkbox's seccomp filter (:func:`thinkbox.sandbox.confine.seccomp.rules`) as a Docker seccomp
    profile: the same allow-list, ENOSYS for every syscall it does not list, EPERM for the refused ones,
    and the same
    argument conditions (clone's flags, socket's family and type, personality).

    Docker (runc, through libseccomp) ANDs the ``args`` of one rule and defines no order between two rules
    that match: the rules of one syscall with different outcomes never overlap, so none is needed. Every
    condition is a masked equality: ``SCMP_CMP_MASKED_EQ`` with the mask in ``value`` and the expected
    bits in ``valueTwo``. ``clone3_rule=False`` for gVisor: runsc (2022) answers the rule's ENOSYS as
    EPERM, so glibc does not fall back to ``clone`` and no thread can start (measured); there ``clone3``
    is allowed (its own kernel answers it) and unlisted syscalls may answer EPERM instead of ENOSYS."""
    from thinkbox.sandbox.confine import seccomp

    arch = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(platform.machine())
    unknown = set(seccomp.unknown_syscalls())

    def outcome(err: int | None) -> dict[str, Any]:
        return {"action": "SCMP_ACT_ALLOW"} if err is None else {"action": "SCMP_ACT_ERRNO", "errnoRet": err}

    plain: dict[int | None, list[str]] = {}  # the unconditional rules, by outcome
    conditional: list[dict[str, Any]] = []
    for rule in seccomp.rules():
        if rule.name in unknown:
            continue
        err = None if rule.name == "clone3" and not clone3_rule else rule.errno
        if not rule.args:
            plain.setdefault(err, []).append(rule.name)
            if rule.name in GVISOR_NAMES:  # runc ignores a name its libseccomp does not know
                plain[err].append(GVISOR_NAMES[rule.name])
            continue
        args = [
            {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}
            for index, mask, value in rule.args
        ]
        conditional.append({"names": [rule.name], **outcome(err), "args": args})
    # ENOSYS spelled out too: Docker 20.10 drops defaultErrnoRet, so its default answers EPERM (measured),
    # and glibc falls back from clone3 to clone on ENOSYS only. runc skips a rule that repeats the default.
    plain.setdefault(errno.ENOSYS, []).extend(n for n in seccomp.unlisted_syscalls() if n not in unknown)
    rules = [{"names": names, **outcome(err)} for err, names in plain.items()]
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "syscalls": rules + conditional,
    }
    if arch:
        profile["architectures"] = [arch]
    return profile
