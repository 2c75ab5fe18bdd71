"""Helpers for tests that run the CLI as a child process."""

from __future__ import annotations

import signal


def sigint_as_in_a_terminal() -> None:
    """preexec_fn: SIGINT back to its default in the child. A shell that starts the tests in the background
    ignores SIGINT, children inherit that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
