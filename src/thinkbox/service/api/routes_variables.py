"""GET /v1/sessions/{id}/variables: what a session defines, for the web page's session panel (and anyone).

The listing is a request of its own in the sandbox protocol (``variables``, docs/protocol.md), not code
sent as a cell: no user code runs, the cell count, the last result (``_``) and open figures stay as they
were, and nothing is written to a run's journal, so a session rebuilt by replay never sees it. It does not
count as activity either: a page that looks at a session does not keep it from closing when idle.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from thinkbox.errors import SessionDead
from thinkbox.sandbox.types import Variable
from thinkbox.service.api.deps import Caller
from thinkbox.service.errors import ApiError

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class SessionVariables(BaseModel):
    live: bool = Field(
        description="False when the session's interpreter is not running (closed, or not rebuilt yet "
        "after a restart: its next run rebuilds it); the list is then empty."
    )
    variables: list[Variable] = Field(description="Sorted by name; names starting with _ are left out.")
    omitted: int = Field(0, description="Names past the first 500, not listed.")


@router.get("/{session_id}/variables", response_model=SessionVariables)
async def session_variables(session_id: str, caller: Caller) -> SessionVariables:
    """The names the session defines, their types and short descriptions (made without running the user's
    code: contents of builtins, the shape of arrays and frames, the type of anything else). 409 while a
    cell runs in it."""
    sessions = caller.service.sessions
    row = await asyncio.to_thread(sessions.owned_row, caller.principal, session_id)
    live = sessions.live(row.id)
    if live is None or not live.session.is_alive():
        return SessionVariables(live=False, variables=[])
    if live.session.busy:
        raise ApiError(
            409, "session_busy", f"code is running in session {session_id!r}; ask again when it ends"
        )
    try:
        found = await live.session.variables()
    except (SessionDead, OSError):
        return SessionVariables(live=False, variables=[])
    return SessionVariables(live=True, variables=found.variables, omitted=found.omitted)
