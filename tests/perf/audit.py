"""Audit benchmarks against an in-process moto server with every declared resource (as `make dev` runs it).

- `aws_calls.audit_write`: AWS calls of one warm `audit.record` (the chain head is cached): target 1.
- `aws_calls.audit_query_page`: AWS calls to serve one page of `GET /v1/audit-logs?user=...`: target 1.
- `audit.write_throughput_ratio_vs_putitem`: entries per second with 4 concurrent chain writers ÷ items per second
  with 4 threads doing plain PutItem, same server, same run. Chain writers serialize on the head (and retry when
  they lose), so this says what tamper evidence costs. The moto server answers one request at a time, as in
  `make dev`; absolute rates are moto's, only the ratios mean anything, and moto's transactions copy the whole
  table, so `audit.write_throughput_ratio_vs_transact` (same-size transactions, no chain) separates moto's cost
  from the chain's (contention on the head, the second put).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from tests.perf.fixtures import moto_stack
from tests.perf.registry import Figures, Target, benchmark

WRITERS, PER_WRITER = 4, 40


def _rate(worker: object) -> float:
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WRITERS)]  # type: ignore[arg-type]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return WRITERS * PER_WRITER / (time.perf_counter() - started)


@benchmark(
    "audit",
    targets=(
        Target("aws_calls.audit_write", "<=", 1),
        Target("aws_calls.audit_query_page", "<=", 1),
    ),
)
def audit_benchmarks() -> Figures:
    import boto3
    from underlay import audit, context, events
    from underlay.audit.chain import AuditChain
    from underlay.audit.query import Filters, list_entries
    from underlay.aws import count_aws_calls

    with moto_stack() as names:
        table = names["UNDERLAY_TABLES__AUDIT"]
        with context.bound(context.RequestContext("bench", sub="alice")):
            audit.record("bench.warmup", "bench", "0")  # the first write of a process reads the head
            with events.batch(), count_aws_calls() as calls:  # events leave with the request's batch
                audit.record("cache.invalidate", "cache_tag", "movies", after={"deleted": 3})
                write_calls = calls.total
        with count_aws_calls() as calls:
            list_entries(Filters(user="alice"), limit=50)
            page_calls = calls.total

        endpoint = os.environ["AWS_ENDPOINT_URL"]
        errors: list[BaseException] = []

        def chain_writer(n: int) -> None:
            chain = AuditChain(
                table, client=boto3.client("dynamodb", endpoint_url=endpoint), max_attempts=1000
            )
            try:
                for i in range(PER_WRITER):
                    chain.append(audit.build_entry("bench.write", "bench", f"{n}-{i}"))
            except BaseException as error:
                errors.append(error)

        # The baselines write to other tables: moto's transactions copy the whole table, so they slow as a table
        # grows, and the chain should not pay for the baselines' items.
        def plain_writer(n: int) -> None:
            client = boto3.client("dynamodb", endpoint_url=endpoint)
            for i in range(PER_WRITER):
                client.put_item(
                    TableName=names["UNDERLAY_TABLES__JOBS"],
                    Item={"pk": {"S": f"P#{n}"}, "sk": {"S": f"{i:06d}"}},
                )

        def transact_writer(n: int) -> None:
            client = boto3.client("dynamodb", endpoint_url=endpoint)
            for i in range(PER_WRITER):
                item = {"pk": {"S": f"T#{n}"}, "sk": {"S": f"{i:06d}"}}
                client.transact_write_items(
                    TransactItems=[{"Put": {"TableName": names["UNDERLAY_TABLES__CONFIG"], "Item": item}}]
                )

        plain = _rate(plain_writer)
        transact = _rate(transact_writer)
        chained = _rate(chain_writer)
        if errors:
            raise errors[0]
        from underlay.audit import verify

        assert verify.verify()["ok"], "the chain must verify after the concurrent run"
        print(
            f"  plain PutItem {plain:.0f}/s, one-put transactions {transact:.0f}/s, chained appends {chained:.0f}/s"
            f" ({WRITERS} threads)",
            file=sys.stderr,
        )
        return {
            "aws_calls.audit_write": write_calls,
            "aws_calls.audit_query_page": page_calls,
            "audit.write_throughput_ratio_vs_putitem": round(chained / plain, 3),
            "audit.write_throughput_ratio_vs_transact": round(chained / transact, 3),
            "audit.write_per_s.chain_4_writers": round(chained, 1),
            "audit.write_per_s.putitem_4_writers": round(plain, 1),
        }
