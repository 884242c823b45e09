"""Admin API. Rate-limit resets live in `underlay.ratelimit`.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from underlay import ratelimit
from underlay.http import create_app

app = create_app("admin")


@app.handles("DELETE /v1/admin/rate-limits/{subject}")
def reset_rate_limits(
    subject: Annotated[str, Path(min_length=1, max_length=3 * ratelimit.SUBJECT_MAX_LENGTH)],
) -> dict[str, Any]:
    """Forget a caller (token `sub`, or `ip:<address>`) in every route group; answers what was deleted."""
    return ratelimit.reset_subject(subject).as_dict()


handler = app.lambda_handler
