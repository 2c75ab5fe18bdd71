"""A Python client of the thinkbox service (``thinkbox serve``), blocking or asyncio, on httpx.

    from thinkbox.client import Client

    with Client("http://127.0.0.1:8000", api_key="tbk_...") as client:
        run = client.ask("What is 48271 * 9173?")  # starts a run, follows it to the end
        print(run.status, run.answer)

        created = client.create_run("Plot sin(x)")
        for event in client.run_events(created.id):  # typed events of thinkbox.agent.events
            print(event.type)

Following a run's events survives a broken connection: the stream is opened again with the last event id
it got (``Last-Event-ID``), so every event comes once, in order, to ``run_finished``. Responses are the
service's own models (:mod:`thinkbox.service.api.schemas`). Errors::

    ThinkboxError
    └── ClientError                 the client could not do what was asked
        ├── ApiError                the service answered an error: .status, .code, .message, .retry_after
        └── ServiceUnreachable      no answer (not running, wrong URL, network down); names the URL

A 429 (too many runs) is raised like any error, with ``retry_after``; only :meth:`Client.ask` waits for it,
once.
"""

from thinkbox.client._async import AsyncClient, AsyncEventStream
from thinkbox.client._errors import ApiError, ClientError, ServiceUnreachable
from thinkbox.client._sync import Client, EventStream

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncEventStream",
    "Client",
    "ClientError",
    "EventStream",
    "ServiceUnreachable",
]
