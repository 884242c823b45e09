"""Who and what the current invocation is about: correlation id, trace, caller, client address.

The HTTP app factory sets it for every request, and the job worker for every job, so code anywhere below
them (events, audit, logs) reads the same values without passing them around. It is a `ContextVar`, so threads
started with `contextvars.copy_context()` (the health checkers, for one) see it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple


class RequestContext(NamedTuple):
    correlation_id: str
    traceparent: str = ""
    sub: str = ""  # the caller (token subject), or "system:<name>" for schedules and jobs
    tenant: str = ""
    tier: str = ""
    source_ip: str = ""
    user_agent: str = ""
    route: str = ""  # `GET /v1/...` for a request, the job type for a job


def new_traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


_current: ContextVar[RequestContext | None] = ContextVar("underlay_request_context", default=None)


def current() -> RequestContext:
    """The current context; outside any request or job, a fresh one with a new correlation id."""
    found = _current.get()
    if found is None:
        found = RequestContext(correlation_id=str(uuid.uuid4()), traceparent=new_traceparent())
        _current.set(found)
    return found


def set_current(context: RequestContext) -> None:
    _current.set(context)


@contextmanager
def bound(context: RequestContext) -> Iterator[RequestContext]:
    """Make `context` current inside the block, and restore the previous one after."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
