"""The confinement mechanisms the backends combine: namespaces, mounts and capabilities
(:mod:`.isolation`), the seccomp allow-list (:mod:`.seccomp`), cgroups (:mod:`.cgroups`), rlimits
(:mod:`.rlimits`) and per-engine session uids (:mod:`.uids`). What each one stops: docs/security.md."""
