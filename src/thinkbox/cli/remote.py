"""``thinkbox ask --server URL``: the question goes to a thinkbox service instead of the local engine.

The service's events are the same typed events as a local run's, so the same renderer shows them and the
same exit statuses apply. ``--file`` uploads each file to the user's folder on the service (under its own
name, replacing a file of that name) and names it to the run. Ctrl-C cancels the run on the service.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from thinkbox.agent.events import Event
from thinkbox.client import ApiError, Client
from thinkbox.client._options import ASK_WAIT_MAX_S
from thinkbox.errors import ConfigError


def check_local_options(given: Mapping[str, object]) -> None:
    """Options of the local engine have no effect on a service: say so instead of ignoring them."""
    used = [name for name, value in given.items() if value is not None]
    if used:
        raise ConfigError(
            f"{', '.join(used)} cannot be used with --server: the service's own settings choose the model, "
            "the sandbox and the limits"
        )


@contextlib.contextmanager
def remote_run(
    server: str, api_key: str | None, question: str, files: list[Path], route: str | None = None
) -> Iterator[Iterator[Event]]:
    """Upload ``files``, start the run, give its events; a Ctrl-C (or any error) inside cancels the run."""
    with Client(server, api_key) as client:
        run_id = None
        try:
            names = []
            for path in files:
                client.upload(path.name, _read(path))
                names.append(path.name)
            run_id = _create(client, question, names, route)
            yield iter(client.run_events(run_id))
        except ApiError as exc:
            raise ApiError(
                exc.status,
                exc.code,
                f"the service at {client.base_url} answered: {exc.message}",
                exc.retry_after,
            ) from None
        except BaseException:
            if run_id is not None:
                with contextlib.suppress(Exception):
                    client.cancel_run(run_id)
            raise


def _create(client: Client, question: str, files: list[str], route: str | None = None) -> str:
    """The new run's id; one wait when the service says too many runs are going (429 with Retry-After)."""
    try:
        return client.create_run(question, files=files, route=route).id
    except ApiError as exc:
        if exc.status != 429 or exc.retry_after is None or exc.retry_after > ASK_WAIT_MAX_S:
            raise
        time.sleep(exc.retry_after)
        return client.create_run(question, files=files, route=route).id


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--file {path}: cannot read it ({exc.strerror})") from None
