#!/usr/bin/env python3
"""A reference Scout agent: consumes ``scout.trigger``, reports back on the same exchange.

It shows what scout-tasks expects from an agent (docs/contract.md, "Events") with
nothing but kombu and the standard library, so it can be copied into any
project:

- the exchange is declared exactly as the contract pins it (topic, durable,
  no arguments); a different declaration would make RabbitMQ refuse it;
- triggers come from a durable queue with manual acks and a prefetch limit, so
  a trigger is never lost: it is acknowledged only after the run's final event
  (``scout.completed`` or ``scout.failed``) was confirmed by the broker, and an
  agent that dies mid-run has its trigger redelivered to another agent;
- delivery is at least once, so triggers are deduplicated on ``event_id``;
- every event is published with a publisher confirm, ``mandatory``, persistent,
  ``message_id`` = ``event_id`` and routing key = ``event_type``; a publish that
  fails is retried with the *same* ``event_id`` (the worker ignores an id it has
  already recorded), so a retry never counts twice.

The "work" is simulated (``--work-seconds``, ``--fail-rate``). Run it next to a
scout-tasks worker::

    python examples/scout_agent.py                 # until Ctrl-C
    python examples/scout_agent.py --once 1 -v     # handle one trigger, then exit

Ctrl-C once finishes the run in hand (its final event, then the ack) and
exits; Ctrl-C twice exits at once, leaving the trigger unacknowledged so the
broker hands it to the next agent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import kombu
from amqp.exceptions import MessageNacked
from kombu import Exchange, Queue
from kombu.message import Message

log = logging.getLogger("scout_agent")

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_EXCHANGE = "scout"
DEFAULT_QUEUE = "scout-agent.triggers"

TRIGGER = "scout.trigger"
STARTED = "scout.started"
PROGRESS = "scout.progress"
COMPLETED = "scout.completed"
FAILED = "scout.failed"

# The simulated pipeline, in order; a progress event follows each stage.
STAGES = ("fetch", "deduplicate", "validate", "submit")


# --- stopping -----------------------------------------------------------------


class Aborted(Exception):
    """A second Ctrl-C: give up the trigger in hand (it stays unacknowledged)."""


class StopFlag:
    """Set by SIGINT/SIGTERM. Once: finish the run in hand, then exit. Twice: abort it.

    Signal handlers only set flags; the loops poll them, because raising from
    a handler could interrupt kombu half-way through a frame.
    """

    def __init__(self) -> None:
        self.requested = False
        self.aborted = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            self.aborted = True
            log.warning("second %s: abandoning the run in hand", signal.Signals(signum).name)
        else:
            self.requested = True
            log.info(
                "%s: finishing the run in hand, then exiting (again to abort)",
                signal.Signals(signum).name,
            )

    def sleep(self, seconds: float) -> None:
        """Sleep in short slices so an abort is noticed promptly."""
        deadline = time.monotonic() + seconds
        while True:
            if self.aborted:
                raise Aborted
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.1))


# --- events -------------------------------------------------------------------


def utc_now() -> str:
    """ISO 8601 in UTC with a ``Z``, as the contract writes timestamps."""
    return datetime.now(UTC).isoformat().removesuffix("+00:00") + "Z"


def declare_exchange(channel: Any, name: str) -> Exchange:
    """The events exchange exactly as the contract pins it: any other shape is refused."""
    exchange = Exchange(name, type="topic", durable=True, auto_delete=False)
    exchange(channel).declare()
    return exchange


class PublishFailed(Exception):
    """One publish attempt did not end with a broker confirm; it will be retried."""


class EventPublisher:
    """Publishes events with publisher confirms on a connection of its own.

    Its own connection, because waiting for a confirm drains the connection,
    and on the consumer's connection that could deliver the next trigger in
    the middle of this one. A failed attempt (broker down, nack, unroutable,
    no confirm in time) is retried with the same ``event_id`` after a growing
    delay, until it is confirmed or the agent is aborted: the event must reach
    the worker before the trigger is acknowledged.
    """

    def __init__(
        self,
        url: str,
        exchange: str,
        stop: StopFlag,
        *,
        confirm_timeout: float = 10.0,
        max_delay: float = 30.0,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.stop = stop
        self.confirm_timeout = confirm_timeout
        self.max_delay = max_delay
        self._connection: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._returned: dict[str, str] = {}

    def _connect(self) -> kombu.Producer:
        if self._producer is not None:
            return self._producer
        # confirm_publish: every basic.publish waits for the broker's ack/nack.
        connection = kombu.Connection(
            self.url, connect_timeout=5, transport_options={"confirm_publish": True}
        )
        try:
            connection.connect()
            channel = connection.channel()
            # A mandatory message no queue would receive comes back as a
            # basic.return before its confirm; note it instead of raising.
            channel.events["basic_return"].add(self._on_return)
            exchange = declare_exchange(channel, self.exchange_name)
        except Exception:
            connection.release()
            raise
        self._connection = connection
        self._producer = kombu.Producer(channel, exchange=exchange, auto_declare=False)
        return self._producer

    def _on_return(self, exc: Exception, _exchange: str, routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        if message_id:
            self._returned[str(message_id)] = f"{routing_key}: {exc}"

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                log.debug("closing the publisher connection failed", exc_info=True)

    def _attempt(self, event_id: str, event_type: str, body: bytes) -> None:
        producer = self._connect()
        assert self._connection is not None
        self._returned.pop(event_id, None)
        try:
            producer.publish(
                body,
                routing_key=event_type,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=event_id,
                mandatory=True,
                retry=False,
                confirm_timeout=self.confirm_timeout,
            )
        except MessageNacked:
            raise PublishFailed("nacked by the broker") from None
        except TimeoutError:
            self.close()  # a confirm may still arrive; start from a clean channel
            raise PublishFailed(f"no confirm within {self.confirm_timeout}s") from None
        except (
            *self._connection.connection_errors,
            *self._connection.channel_errors,
            OSError,
        ) as exc:
            self.close()
            raise PublishFailed(f"broker unavailable: {exc!r}") from None
        reason = self._returned.pop(event_id, None)
        if reason is not None:
            raise PublishFailed(
                f"unroutable ({reason}); no queue is bound for it: is the scout-tasks"
                " worker running against this exchange?"
            )

    def publish(self, event_type: str, fields: dict[str, Any]) -> str:
        """Publish one event and return its ``event_id`` once the broker confirmed it."""
        event_id = str(uuid.uuid4())
        payload = {"event_id": event_id, "event_type": event_type, "timestamp": utc_now()}
        payload.update(fields)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        delay = 0.5
        while True:
            try:
                self._attempt(event_id, event_type, body)
            except PublishFailed as exc:
                log.warning(
                    "%s for run %s not confirmed (%s); retrying in %.1fs",
                    event_type,
                    fields.get("run_id"),
                    exc,
                    delay,
                )
                self.stop.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            log.debug("%s %s confirmed", event_type, event_id)
            return event_id


# --- the simulated run --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """What the agent uses from a ``scout.trigger`` (extra keys are ignored)."""

    event_id: str
    run_id: str
    source: str
    max_strategies: int

    @classmethod
    def parse(cls, body: bytes) -> Trigger:
        """The trigger in a message body, or ``ValueError`` saying why it is unusable."""
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("body is not a JSON object")
        if data.get("event_type", TRIGGER) != TRIGGER:
            raise ValueError(f"event_type is {data.get('event_type')!r}, not {TRIGGER!r}")
        missing = [k for k in ("event_id", "run_id", "source") if not data.get(k)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        max_strategies = data.get("max_strategies", 10)
        if not isinstance(max_strategies, int) or isinstance(max_strategies, bool):
            raise ValueError("max_strategies is not an integer")
        return cls(
            event_id=str(data["event_id"]),
            run_id=str(uuid.UUID(str(data["run_id"]))),
            source=str(data["source"]),
            max_strategies=max(1, max_strategies),
        )


@dataclass(slots=True)
class RunCounters:
    """The five counters ``scout.completed`` reports, kept consistent with each other."""

    total_fetched: int = 0
    duplicates_removed: int = 0
    validated: int = 0
    validation_failed: int = 0
    submitted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "total_fetched": self.total_fetched,
            "validated": self.validated,
            "validation_failed": self.validation_failed,
            "duplicates_removed": self.duplicates_removed,
            "submitted": self.submitted,
        }


@dataclass(slots=True)
class Simulation:
    """How the simulated pipeline behaves (from the command line)."""

    work_seconds: float = 0.4
    fail_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


def run_stage(stage: str, counters: RunCounters, trigger: Trigger, rng: random.Random) -> str:
    """Advance the counters through one stage; return the progress message."""
    if stage == "fetch":
        counters.total_fetched = rng.randint(trigger.max_strategies, 3 * trigger.max_strategies)
        return f"fetched {counters.total_fetched} strategies from {trigger.source}"
    if stage == "deduplicate":
        counters.duplicates_removed = rng.randint(0, counters.total_fetched // 5)
        return f"removed {counters.duplicates_removed} duplicates"
    unique = counters.total_fetched - counters.duplicates_removed
    if stage == "validate":
        counters.validation_failed = rng.randint(0, unique // 4)
        counters.validated = unique - counters.validation_failed
        return f"{counters.validated} valid, {counters.validation_failed} invalid"
    counters.submitted = min(counters.validated, trigger.max_strategies)
    return f"submitted {counters.submitted} strategies"


def execute(trigger: Trigger, sim: Simulation, publisher: EventPublisher, stop: StopFlag) -> str:
    """Run one trigger, reporting each step; return the final event type.

    Returns only after the final event was confirmed; :class:`Aborted`
    propagates when the operator insists on stopping.
    """
    publisher.publish(STARTED, {"run_id": trigger.run_id, "source": trigger.source})
    counters = RunCounters()
    failing_stage = _failing_stage(sim)
    per_stage = sim.work_seconds / len(STAGES)
    for index, stage in enumerate(STAGES):
        stop.sleep(per_stage)
        if stage == failing_stage:
            publisher.publish(
                FAILED,
                {
                    "run_id": trigger.run_id,
                    "error_message": f"simulated failure in the {stage} stage",
                    "stage": stage,
                },
            )
            return FAILED
        message = run_stage(stage, counters, trigger, sim.rng)
        publisher.publish(
            PROGRESS,
            {
                "run_id": trigger.run_id,
                "stage": stage,
                "progress": round(100 * (index + 1) / len(STAGES)),
                "message": message,
                "stage_metrics": counters.as_dict(),
            },
        )
    publisher.publish(COMPLETED, {"run_id": trigger.run_id, **counters.as_dict()})
    return COMPLETED


def _failing_stage(sim: Simulation) -> str | None:
    if sim.fail_rate > 0 and sim.rng.random() < sim.fail_rate:
        return sim.rng.choice(STAGES)
    return None


# --- consuming triggers -------------------------------------------------------


class SeenTriggers:
    """The ``event_id`` of recently finished triggers, bounded (oldest forgotten first).

    Redeliveries arrive soon after the original, so a bounded memory catches
    them; a trigger forgotten and redelivered much later runs again, and the
    worker then ignores its events (the run is already terminal).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


def raw_body(message: Message) -> bytes:
    """The body's bytes (py-amqp decodes a body with a known encoding into ``str``)."""
    body = message.body
    if isinstance(body, str):
        return body.encode(message.content_encoding or "utf-8")
    return bytes(body)


class Agent:
    """Consumes triggers one at a time and settles each only when it is done."""

    def __init__(self, args: argparse.Namespace, stop: StopFlag) -> None:
        self.args = args
        self.stop = stop
        self.sim = Simulation(work_seconds=args.work_seconds, fail_rate=args.fail_rate)
        self.publisher = EventPublisher(
            args.broker_url, args.exchange, stop, confirm_timeout=args.confirm_timeout
        )
        self.seen = SeenTriggers(args.dedup_size)
        self.handled = 0
        self._consumer: kombu.Consumer | None = None

    def done(self) -> bool:
        return self.stop.requested or (
            self.args.once is not None and self.handled >= self.args.once
        )

    def on_message(self, message: Message) -> None:
        if self.done():
            # Prefetched after the decision to stop: left unacknowledged, it
            # goes back to the queue when the connection closes.
            return
        try:
            trigger = Trigger.parse(raw_body(message))
        except (ValueError, UnicodeDecodeError) as exc:
            # Redelivering it would fail the same way forever: reject without
            # requeue (dead-lettered if the queue has a dead-letter exchange).
            log.error("unusable trigger rejected: %s", exc)
            message.reject(requeue=False)
            return
        if trigger.event_id in self.seen:
            log.info(
                "duplicate trigger %s for run %s acknowledged", trigger.event_id, trigger.run_id
            )
            message.ack()
            return
        log.info(
            "run %s: trigger for %s (max_strategies %d)%s",
            trigger.run_id,
            trigger.source,
            trigger.max_strategies,
            " [redelivered]" if message.delivery_info.get("redelivered") else "",
        )
        outcome = execute(trigger, self.sim, self.publisher, self.stop)
        # Remembered before the ack: if the ack is lost with the connection,
        # the redelivered trigger is recognised instead of run again.
        self.seen.add(trigger.event_id)
        self.handled += 1
        if self.done() and self._consumer is not None:
            # Stop deliveries before the ack frees a prefetch slot. Cancelling
            # waits for the broker, and a trigger prefetched meanwhile is
            # dispatched to this method again, which leaves it alone (above).
            self._consumer.cancel()
        message.ack()
        log.info("run %s: %s, trigger acknowledged", trigger.run_id, outcome)

    def consume(self) -> None:
        """Consume until done, reconnecting after broker failures."""
        delay = 0.5
        while not self.done():
            connection = kombu.Connection(self.args.broker_url, connect_timeout=5)
            try:
                connection.connect()
                channel = connection.channel()
                exchange = declare_exchange(channel, self.args.exchange)
                queue = Queue(
                    self.args.queue,
                    exchange,
                    routing_key=TRIGGER,
                    durable=True,
                    auto_delete=False,
                )
                queue(channel).declare()
                self._consumer = kombu.Consumer(
                    channel,
                    queues=[queue],
                    on_message=self.on_message,
                    prefetch_count=self.args.prefetch,
                    no_ack=False,
                    auto_declare=False,
                )
                self._consumer.consume()
                log.info(
                    "consuming %s from queue %s on exchange %s (prefetch %d)",
                    TRIGGER,
                    self.args.queue,
                    self.args.exchange,
                    self.args.prefetch,
                )
                delay = 0.5
                while not self.done():
                    try:
                        connection.drain_events(timeout=1.0)
                    except TimeoutError:
                        continue
            except (*connection.connection_errors, *connection.channel_errors, OSError) as exc:
                if self.done():
                    break
                log.warning("broker unavailable (%r); reconnecting in %.1fs", exc, delay)
                self.stop.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                self._consumer = None
                # Closing returns any prefetched, unacknowledged trigger to the queue.
                try:
                    connection.release()
                except Exception:
                    log.debug("closing the consumer connection failed", exc_info=True)


# --- command line -------------------------------------------------------------


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Reference Scout agent: runs scout.trigger events and reports back.",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("SCOUT_BROKER_URL") or DEFAULT_BROKER_URL,
        help="AMQP URL (default: $SCOUT_BROKER_URL or %(default)s)",
    )
    parser.add_argument(
        "--exchange",
        default=os.environ.get("SCOUT_EXCHANGE") or DEFAULT_EXCHANGE,
        help="events exchange (default: $SCOUT_EXCHANGE or %(default)s)",
    )
    parser.add_argument(
        "--queue", default=DEFAULT_QUEUE, help="durable trigger queue (default: %(default)s)"
    )
    parser.add_argument(
        "--prefetch",
        type=_positive_int,
        default=1,
        help="unacknowledged triggers held at once (basic.qos; default: %(default)s)",
    )
    parser.add_argument(
        "--work-seconds",
        type=_non_negative,
        default=0.4,
        help="simulated work per run (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_fraction,
        default=0.0,
        help="share of runs that fail, 0..1 (default: %(default)s)",
    )
    parser.add_argument(
        "--once",
        type=_positive_int,
        metavar="N",
        default=None,
        help="exit after running N triggers (duplicates and rejects do not count)",
    )
    parser.add_argument(
        "--dedup-size",
        type=_positive_int,
        default=10_000,
        help="trigger event_ids remembered for deduplication (default: %(default)s)",
    )
    parser.add_argument(
        "--confirm-timeout",
        type=_non_negative,
        default=10.0,
        help="seconds to wait for a publisher confirm before retrying (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every confirm")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # kombu and py-amqp are chatty at DEBUG only; keep their warnings.
        logging.getLogger("amqp").setLevel(logging.WARNING)
    stop = StopFlag()
    stop.install()
    agent = Agent(args, stop)
    try:
        agent.consume()
    except Aborted:
        log.warning("aborted; the trigger in hand will be redelivered")
        return 130
    finally:
        agent.publisher.close()
    log.info("stopped after %d run(s)", agent.handled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
