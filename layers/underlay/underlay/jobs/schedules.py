"""Recurring schedules, declared once in `underlay.declaration.SCHEDULES` (cron, time zone, job type, payload,
overlap policy). On AWS each is an EventBridge Scheduler schedule that puts `message(schedule)` on the normal
queue; locally `infra/local/workers.py` fires them by the same cron in the same time zone.

Declarations use EventBridge's six-field cron (`min hour day-of-month month day-of-week year`, `?` for "any",
day-of-week 1-7 = SUN-SAT); `to_croniter` turns one into the five-field form croniter reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from underlay import declaration
from underlay.errors import NotFoundError

SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"


def to_croniter(expression: str) -> str:
    minute, hour, day, month, weekday, year = expression.split()
    if year not in ("*", "?"):
        raise ValueError(f"schedules with a year field are not supported: {expression!r}")
    day = "*" if day == "?" else day
    if weekday == "?":
        weekday = "*"
    else:  # EventBridge counts SUN=1..SAT=7, cron SUN=0..SAT=6; names are the same in both
        weekday = ",".join(str(int(p) - 1) if p.isdigit() else p for p in weekday.split(","))
    return f"{minute} {hour} {day} {month} {weekday}"


def next_runs(schedule: declaration.Schedule, after: datetime, count: int = 1) -> list[datetime]:
    """The next `count` fire times after `after`, as wall-clock times in the schedule's time zone."""
    from croniter import croniter

    zone = ZoneInfo(schedule.timezone)
    runs = croniter(to_croniter(schedule.cron), after.astimezone(zone))
    return [runs.get_next(datetime) for _ in range(count)]


def find(name: str) -> declaration.Schedule:
    for schedule in declaration.SCHEDULES:
        if schedule.name == name:
            return schedule
    raise NotFoundError(f"No schedule {name!r}.")


def message(schedule: declaration.Schedule) -> dict[str, Any]:
    """What a firing puts on the queue (the worker turns it into a job record); CDK sends the same."""
    return {
        "type": schedule.job_type,
        "payload": dict(schedule.payload),
        "priority": "normal",
        "source": "schedule",
        "schedule": schedule.name,
        "overlap": schedule.overlap,  # Scheduler cannot skip overlaps; the worker does, by this flag
        # Scheduler fills in the time the run was due: a firing delivered twice becomes one job.
        "scheduled_time": SCHEDULED_TIME,
    }


def listing(now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "job_type": s.job_type,
            "payload": dict(s.payload),
            "overlap": s.overlap,
            "next_runs": [t.isoformat() for t in next_runs(s, now, 3)],
        }
        for s in declaration.SCHEDULES
    ]


def trigger(name: str) -> str:
    """Run a schedule's job now (manual trigger); the overlap policy applies as for a timed run."""
    from underlay import jobs

    schedule = find(name)
    return jobs.enqueue(
        schedule.job_type,
        dict(schedule.payload),
        source="manual",
        schedule=schedule.name,
        overlap=schedule.overlap,
    )
