"""Job benchmarks against an in-process moto server (as `make dev` runs it), through the real worker handler.

- `aws_calls.job_enqueue`: AWS calls of one warm `jobs.enqueue` (record + message): target ≤ 2.
- `aws_calls.job_execute`: AWS calls the worker makes to run one no-op job, excluding the job's own work and the
  request's event batch: target ≤ 2 (the two status writes).
- `jobs.worker_overhead_ms_per_job`: wall time per job for a batch of 10 no-op jobs through the worker handler
  (SQS event in, partial batch response out), median of rounds. Moto's latency dominates it, so
  `jobs.worker_overhead_ratio_vs_two_updates` sets it against two plain UpdateItems on the same table.
"""

from __future__ import annotations

import statistics
import sys
import time

from tests.perf.fixtures import moto_stack
from tests.perf.registry import Figures, Target, benchmark

ROUNDS, BATCH = 5, 10


@benchmark(
    "jobs",
    targets=(Target("aws_calls.job_enqueue", "<=", 2), Target("aws_calls.job_execute", "<=", 2)),
)
def job_benchmarks() -> Figures:
    from pydantic import BaseModel
    from underlay import declaration, events, jobs
    from underlay.aws import client, count_aws_calls
    from underlay.job_types import JobContext, job_type

    from functions.worker.app import handler
    from infra.local.workers import sqs_event

    class Nothing(BaseModel):
        pass

    @job_type("bench.noop", Nothing)
    def noop(payload: Nothing, ctx: JobContext) -> None:
        return None

    with moto_stack() as names:
        url = names[declaration.env_name("queue", "jobs-normal")]
        sqs = client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        def receive(n: int) -> list[dict[str, object]]:
            got: list[dict[str, object]] = []
            while len(got) < n:
                got += sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=min(10, n - len(got)), AttributeNames=["All"]
                ).get("Messages", [])
            return got

        jobs.enqueue("bench.noop", {})  # warm: clients, settings, job types
        handler(sqs_event(receive(1), arn), None)
        with events.batch(), count_aws_calls() as calls:
            jobs.enqueue("bench.noop", {})
            enqueue_calls = calls.total
        messages = receive(1)
        with events.batch(), count_aws_calls() as calls:
            handler(sqs_event(messages, arn), None)
            execute_calls = calls.total

        per_job = []
        for _ in range(ROUNDS):
            for _ in range(BATCH):
                jobs.enqueue("bench.noop", {})
            batch = sqs_event(receive(BATCH), arn)
            started = time.perf_counter()
            response = handler(batch, None)
            per_job.append((time.perf_counter() - started) * 1000 / BATCH)
            assert response["batchItemFailures"] == [], response
        # The floor: the two status writes alone, as plain UpdateItems on the same table.
        ddb, table = client("dynamodb"), names["UNDERLAY_TABLES__JOBS"]
        ddb.put_item(TableName=table, Item={"pk": {"S": "BENCH"}, "sk": {"S": "X"}, "n": {"N": "0"}})
        started = time.perf_counter()
        for _ in range(2 * BATCH):
            ddb.update_item(
                TableName=table,
                Key={"pk": {"S": "BENCH"}, "sk": {"S": "X"}},
                UpdateExpression="SET n = n + :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        two_updates_ms = (time.perf_counter() - started) * 1000 / BATCH
        median = statistics.median(per_job)
        print(
            f"  worker: {median:.2f} ms per no-op job in batches of {BATCH}; two plain UpdateItems {two_updates_ms:.2f} ms",
            file=sys.stderr,
        )
        return {
            "aws_calls.job_enqueue": enqueue_calls,
            "aws_calls.job_execute": execute_calls,
            "jobs.worker_overhead_ms_per_job": round(median, 2),
            "jobs.worker_overhead_ratio_vs_two_updates": round(median / two_updates_ms, 2),
        }
