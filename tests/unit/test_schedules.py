"""Recurring schedules: EventBridge cron read the way EventBridge Scheduler reads it, in the schedule's time zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from underlay import declaration
from underlay.jobs import schedules


def test_eventbridge_cron_becomes_croniter_cron() -> None:
    assert schedules.to_croniter("0 * * * ? *") == "0 * * * *"
    assert schedules.to_croniter("0/15 * * * ? *") == "0/15 * * * *"
    assert schedules.to_croniter("0 8 ? * 2,6 *") == "0 8 * * 1,5"  # MON=2, FRI=6 in EventBridge
    assert schedules.to_croniter("0 8 ? * MON-FRI *") == "0 8 * * MON-FRI"
    with pytest.raises(ValueError):
        schedules.to_croniter("0 8 * * ? 2027")


def test_daily_run_keeps_its_wall_clock_time_across_the_autumn_switch() -> None:
    daily = declaration.Schedule("daily", "0 9 * * ? *", "America/New_York", "cache.stats")
    runs = schedules.next_runs(daily, datetime(2026, 10, 30, 12, 0, tzinfo=UTC), 4)
    assert [r.strftime("%m-%d %H:%M") for r in runs] == [
        "10-30 09:00",
        "10-31 09:00",
        "11-01 09:00",
        "11-02 09:00",
    ]
    # 09:00 EDT is 13:00 UTC; after the switch on 1 November, 09:00 EST is 14:00 UTC
    assert [r.astimezone(UTC).hour for r in runs] == [13, 13, 14, 14]


def test_a_time_that_does_not_exist_in_spring_is_not_fired_twice_or_skipped_silently() -> None:
    nightly = declaration.Schedule("nightly", "30 2 * * ? *", "Europe/Berlin", "cache.stats")
    runs = schedules.next_runs(nightly, datetime(2026, 3, 27, 12, 0, tzinfo=UTC), 3)
    utc = [r.astimezone(UTC) for r in runs]
    assert len(set(utc)) == 3  # three distinct firings
    assert utc[0] == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert utc[2] == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST
    # 29 March has no 02:30 (clocks jump 02:00 -> 03:00): the run that day happens once, within that hour's gap
    assert utc[1].date() == datetime(2026, 3, 29).date()


def test_declared_schedules_are_valid_and_name_registered_jobs() -> None:
    from underlay import job_types

    registered = job_types.all_types()
    for schedule in declaration.SCHEDULES:
        assert schedule.job_type in registered, schedule
        assert schedules.next_runs(schedule, datetime(2026, 1, 1, tzinfo=UTC), 2)
        message = schedules.message(schedule)
        assert message["schedule"] == schedule.name and message["overlap"] in ("skip", "allow")
