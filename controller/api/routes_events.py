"""The server-sent events stream: ``GET /v1/sites/{site}/events`` (``text/event-stream``).

Each event of the site's :class:`~controller.events.EventHub` is one SSE message whose
``event`` is its type (``interval``, ``settlement``), ``id`` its ``seq`` and ``data`` its
JSON; a subscriber that fell behind gets a ``lagged`` message with the number of events it
missed (``{"missed": n}``); a comment line is sent every :data:`PING_S` seconds to keep
proxies from closing an idle stream. Any signed-in role may subscribe: events carry public
figures only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from controller.api.deps import PrincipalDep, SiteDep
from controller.api.models import ErrorBody
from controller.events import EventHub

PING_S = 15
"""Seconds between keep-alive comments on an idle stream."""
WAIT_S = 1.0
"""How often the stream checks for a client that went away [s]."""

ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (401, 404, 422)}

router = APIRouter(prefix="/v1/sites/{site}", tags=["events"], responses=ERRORS)


async def event_stream(hub: EventHub) -> AsyncIterator[ServerSentEvent]:
    """The SSE messages of a new subscription to ``hub`` (until the client goes away)."""
    with hub.subscribe() as sub:
        while True:
            event = await sub.get(WAIT_S)
            missed = sub.take_missed()
            if missed:
                yield ServerSentEvent(data=json.dumps({"missed": missed}), event="lagged")
            if event is not None:
                yield ServerSentEvent(
                    data=json.dumps(event, sort_keys=True),
                    event=str(event["type"]),
                    id=str(event["seq"]),
                )


@router.get(
    "/events",
    summary="server-sent events: each interval's result and settlement",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the stream"}},
)
async def events(service: SiteDep, principal: PrincipalDep) -> EventSourceResponse:
    """Stream the site's events (``text/event-stream``) from now on."""
    del principal
    return EventSourceResponse(event_stream(service.events), ping=PING_S)
