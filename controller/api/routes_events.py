"""The server-sent events stream: ``GET /v1/sites/{site}/events`` (``text/event-stream``).

Each event of the site's :class:`~controller.events.EventHub` is one SSE message whose
``event`` is its type (``interval``, ``settlement``), ``id`` its ``seq`` and ``data`` its
JSON; a subscriber that fell behind gets a ``lagged`` message with the number of events it
missed (``{"missed": n}``); a comment line is sent every :data:`PING_S` seconds to keep
proxies from closing an idle stream. Any signed-in role may subscribe: events carry public
figures only. The session is checked again every :data:`SESSION_CHECK_S` seconds: once it is
signed out, has expired or its address lost its role, the stream sends ``session_ended``
(``{"code", "reason"}``, as a refusal) and closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from controller.api.deps import PrincipalDep, SiteDep, TokenDep
from controller.api.models import ErrorBody
from controller.auth import AuthRefused
from controller.events import EventHub

PING_S = 15
"""Seconds between keep-alive comments on an idle stream."""
WAIT_S = 1.0
"""How often the stream checks for a client that went away [s]."""
SESSION_CHECK_S = 5.0
"""How often the stream checks that its session still holds [s]."""

ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (401, 404, 422)}

router = APIRouter(prefix="/v1/sites/{site}", tags=["events"], responses=ERRORS)


async def event_stream(
    hub: EventHub, session_ended: Callable[[], AuthRefused | None] = lambda: None
) -> AsyncIterator[ServerSentEvent]:
    """The SSE messages of a new subscription to ``hub``.

    Until the client goes away, or ``session_ended`` (called in a worker thread every
    :data:`SESSION_CHECK_S` seconds) gives a refusal: then a ``session_ended`` message, and
    the stream ends.
    """
    loop = asyncio.get_running_loop()
    checked = loop.time()
    with hub.subscribe() as sub:
        while True:
            if loop.time() - checked >= SESSION_CHECK_S:
                checked = loop.time()
                ended = await run_in_threadpool(session_ended)
                if ended is not None:
                    body = {"code": str(ended.code), "reason": str(ended.reason)}
                    yield ServerSentEvent(data=json.dumps(body), event="session_ended")
                    return
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
async def events(service: SiteDep, principal: PrincipalDep, token: TokenDep) -> EventSourceResponse:
    """Stream the site's events (``text/event-stream``) from now on, while the session holds."""
    del principal  # signed in: checked again every SESSION_CHECK_S seconds

    def session_ended() -> AuthRefused | None:
        try:
            service.auth.principal(token)
        except AuthRefused as refused:  # signed out, expired, or the role withdrawn
            return refused
        return None

    return EventSourceResponse(event_stream(service.events, session_ended), ping=PING_S)
