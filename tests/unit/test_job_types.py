"""The job-type registry: names, defaults, backoff, and duplicate registration."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from underlay import job_types
from underlay.job_types import Backoff, job_type


class Payload(BaseModel):
    n: int = 0


def test_a_registered_type_keeps_its_policy() -> None:
    @job_type("tests.echo", Payload, max_attempts=5, timeout_s=30, concurrency_key="n")
    def echo(payload: Payload, ctx: job_types.JobContext) -> dict[str, int]:
        """Echo the payload."""
        return {"n": payload.n}

    registered = job_types.get("tests.echo")
    assert registered.handler is echo and registered.payload_model is Payload
    assert (registered.max_attempts, registered.timeout_s, registered.concurrency_key) == (5, 30, "n")
    assert registered.backoff == Backoff(1.0, 2.0, 16.0, True)
    assert registered.description == "Echo the payload."
    assert "tests.echo" in job_types.all_types()


def test_names_are_dotted_lowercase_and_unique() -> None:
    with pytest.raises(ValueError, match="dotted"):
        job_type("CacheWarm", Payload)
    job_type("tests.once", Payload)(lambda p, c: None)
    with pytest.raises(ValueError, match="twice"):
        job_type("tests.once", Payload)(lambda p, c: None)
    with pytest.raises(KeyError):
        job_types.get("tests.unknown")


def test_default_backoff_doubles_from_one_second_to_a_sixteen_second_cap() -> None:
    fixed = Backoff(jitter=False)
    assert [fixed.delay_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 16]
    jittered = Backoff()
    assert jittered.delay_s(3, random=lambda: 0.5) == 2.0
    assert all(0 <= jittered.delay_s(4) <= 8 for _ in range(50))


def test_every_built_in_job_fits_its_queues_and_worker() -> None:
    """A job that may try more often than SQS redelivers would be moved to the DLQ while still pending; one that
    may run longer than the worker would be cut off mid-run."""
    from underlay import declaration, job_types

    job_queues = [q for q in declaration.QUEUES if q.name.startswith("jobs-")]
    worker = declaration.function("worker")
    for spec in job_types.all_types().values():
        if spec.name.startswith(("test.", "bench.")):
            continue
        assert spec.max_attempts < min(q.max_receive_count for q in job_queues), spec.name
        assert spec.timeout_s < worker.timeout_s, spec.name
