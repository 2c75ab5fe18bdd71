"""The sandbox: persistent, isolated interpreters behind one interface.

Layers, one folder each (docs/architecture.md, docs/security.md):

- the core, here: :mod:`~thinkbox.sandbox.types` (configuration in, results out),
  :mod:`~thinkbox.sandbox.backend` (the backend interface), :mod:`~thinkbox.sandbox.session` (one live
  interpreter, the same class for every backend), :mod:`~thinkbox.sandbox.frames` (reading the
  interpreter's frames under the host's limits), :mod:`~thinkbox.sandbox.pool`,
  :mod:`~thinkbox.sandbox.registry`, :mod:`~thinkbox.sandbox.procs` (host processes and exit statuses)
  and :mod:`~thinkbox.sandbox.conformance` (the suite every backend passes);
- ``inside/``: what runs inside the sandbox (kernel, wire framing, launcher): standard library only;
- ``confine/``: the confinement mechanisms (namespaces and mounts, seccomp, cgroups, rlimits, uids);
- one subpackage per backend: ``zygote/`` (the default fork server), ``bwrap/``, ``docker/``.

This file is copied into sandboxes with ``inside/``: it imports nothing.
"""
