"""Where a burst's CPU goes: in-process ``fire_due`` against the baseline, part by part.

Fires N due schedules in this process (no Celery), on a fresh scratch database
each time, and reads ``time.process_time()`` around the main functions. The
variants alternate and the median of the repeats is printed:

- ``current``: scout-tasks as it is;
- ``baseline``: the hand-written loop of ``baseline.py``;
- ``payload``, ``amqp``, ``payload+amqp``: what-ifs, monkeypatched here and
  nowhere else: the trigger payload built as a plain dict instead of
  ``TriggerEvent(...).to_payload()``, and/or messages published with py-amqp's
  ``channel.basic_publish`` instead of kombu's ``Producer.publish``.

    python bench/profile_fire.py --count 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import amqp
import baseline
import common
import kombu.messaging

from scout_tasks import events, firing, outbox, policy, runs, schedules
from scout_tasks.db import make_engine
from scout_tasks.publisher import ConfirmingPublisher

VARIANTS = ["current", "baseline", "payload", "amqp", "payload+amqp"]


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


class PlainTrigger:
    """Stands in for ``TriggerEvent``: the same payload, built once as a dict."""

    __slots__ = ("_payload", "event_id")

    def __init__(self, *, event_id: uuid.UUID, timestamp: datetime, **fields: Any) -> None:
        self.event_id = event_id
        schedule_id, slot = fields["schedule_id"], fields["scheduled_for"]
        self._payload = {
            "event_id": str(event_id),
            "event_type": events.TRIGGER,
            "timestamp": _iso(timestamp),
            "run_id": str(fields["run_id"]),
            "source": fields["source"],
            "max_strategies": fields["max_strategies"],
            "trigger_type": fields["trigger_type"],
            "triggered_by": fields["triggered_by"],
            "schedule_id": None if schedule_id is None else str(schedule_id),
            "scheduled_for": None if slot is None else _iso(slot),
        }

    def to_payload(self) -> dict[str, Any]:
        return self._payload


class AmqpProducer:
    """Stands in for kombu's ``Producer``: one ``basic_publish`` per message."""

    def __init__(self, channel: Any, exchange: str) -> None:
        self.channel = channel
        self.exchange = exchange

    def publish(self, body: bytes, *, routing_key: str, mandatory: bool, **props: Any) -> None:
        props.pop("retry", None)
        self.channel.basic_publish(
            amqp.Message(body, **props),
            exchange=self.exchange,
            routing_key=routing_key,
            mandatory=mandatory,
        )


class Timers:
    """CPU seconds per wrapped function, reset per measurement."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.process_time() - start

        setattr(owner, name, timed)


TIMERS = Timers()
PARTS = [
    (kombu.messaging.Producer, "publish", "kombu Producer.publish"),
    (ConfirmingPublisher, "publish", "publish with confirms"),
    (outbox, "deliver", "outbox.deliver (lock, publish, delete)"),
    (firing, "_fire_batch", "firing._fire_batch (one transaction)"),
    (events.TriggerEvent, "to_payload", "TriggerEvent.to_payload"),
    (outbox, "add_events", "outbox.add_events"),
    (runs, "insert_scheduled_runs", "runs.insert_scheduled_runs"),
    (schedules, "advance", "schedules.advance"),
    (policy, "plan", "policy.plan"),
    (schedules, "claim_due", "schedules.claim_due"),
    (baseline.ConfirmingChannel, "publish_confirmed", "baseline publish with confirms"),
]
for _owner, _name, _label in PARTS:
    TIMERS.wrap(_owner, _name, _label)


@contextmanager
def patched(variant: str) -> Iterator[None]:
    trigger, connect = firing.TriggerEvent, ConfirmingPublisher._connect

    def amqp_connect(self: ConfirmingPublisher) -> None:
        connect(self)
        self._producer = AmqpProducer(self._channel, self.exchange_name)  # type: ignore[assignment]

    if "payload" in variant:
        firing.TriggerEvent = PlainTrigger  # type: ignore[assignment, misc]
    if "amqp" in variant:
        ConfirmingPublisher._connect = amqp_connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        firing.TriggerEvent = trigger  # type: ignore[misc]
        ConfirmingPublisher._connect = connect  # type: ignore[method-assign]


def measure(variant: str, count: int) -> tuple[float, dict[str, float]]:
    """CPU µs per run for the whole call, and per part."""
    exchange = f"bench-profile-{uuid.uuid4().hex[:8]}"
    with common.scratch_database() as db_url, common.counting_queue(exchange) as queue:
        common.insert_schedules(db_url, count, common.db_now(db_url))
        TIMERS.seconds.clear()
        if variant == "baseline":
            start = time.process_time()
            baseline.fire_due(db_url, exchange)
            used = time.process_time() - start
        else:
            engine = make_engine(db_url)
            publisher = ConfirmingPublisher(common.BROKER_URL, exchange)
            try:
                with engine.begin():
                    pass  # connect before the clock starts, as a warm worker has
                with patched(variant):
                    publisher._connect()
                    start = time.process_time()
                    firing.fire_due(engine, publisher)
                    used = time.process_time() - start
            finally:
                publisher.close()
                engine.dispose()
        fired = common.run_stats(db_url).runs
        if queue.depth() != fired:
            raise RuntimeError(f"{variant}: {fired} runs but {queue.depth()} messages")
        per_run = {k: 1e6 * v / fired for k, v in TIMERS.seconds.items()}
        return 1e6 * used / fired, per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    started = time.strftime("%Y-%m-%d %H:%M")
    totals: dict[str, list[float]] = {v: [] for v in variants}
    parts: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    try:
        for rep in range(args.repeat):
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                total, per_part = measure(variant, args.count)
                totals[variant].append(total)
                parts[variant].append(per_part)
                common.log(f"repeat {rep + 1}/{args.repeat}: {variant} {total:.0f} µs/run")
    finally:
        common.drop_template()

    print(
        f"\nin-process fire of {args.count:,} due schedules, CPU µs per run "
        f"({started}, {common.machine()}, median of {args.repeat})\n"
    )
    print(
        common.table(
            ["variant", "CPU µs/run", "each repeat"],
            [
                [
                    v,
                    f"{common.median(totals[v]):.0f}",
                    " ".join(f"{x:.0f}" for x in totals[v]),
                ]
                for v in variants
            ],
        )
    )
    shown = [v for v in ("current", "baseline") if v in variants]
    if shown:
        labels = [label for _o, _n, label in PARTS]

        def cell(variant: str, label: str) -> str:
            values = [p[label] for p in parts[variant] if label in p]
            return f"{common.median(values):.1f}" if values else "-"

        print()
        print(
            common.table(
                ["part (nested parts overlap)", *shown],
                [[label, *(cell(v, label) for v in shown)] for label in labels],
            )
        )


if __name__ == "__main__":
    main()
