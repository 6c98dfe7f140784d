"""Everything published on the events exchange, as an observer with a durable queue sees it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import kombu
from kombu import Exchange, Queue


@dataclass(frozen=True, slots=True)
class Seen:
    routing_key: str
    body: dict[str, Any] | None  # None: not a JSON object (a poison message)
    size: int
    at: float


class Collector:
    """Consumes ``scout.#`` from a durable queue on its own thread, reconnecting after outages.

    Acknowledged after recording, so an outage may show a message twice (same
    ``event_id``); the audit tolerates that, never a second ``event_id``.
    """

    def __init__(self, broker_url: str, exchange: str, queue: str = "soak.collector") -> None:
        self.broker_url = broker_url
        self.exchange = Exchange(exchange, type="topic", durable=True)
        self.queue = Queue(queue, self.exchange, routing_key="scout.#", durable=True)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> None:
        with kombu.Connection(self.broker_url) as conn:
            self.queue(conn.default_channel).declare()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def last_at(self) -> float:
        with self.lock:
            return self.seen[-1].at if self.seen else 0.0

    def _on_message(self, message: kombu.Message) -> None:
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        parsed: dict[str, Any] | None
        try:
            value = json.loads(raw)
            parsed = value if isinstance(value, dict) else None
        except ValueError:
            parsed = None
        if parsed is not None and len(raw) > 64_000:
            parsed = {k: parsed.get(k) for k in ("event_id", "event_type", "run_id")}
        with self.lock:
            self.seen.append(
                Seen(message.delivery_info.get("routing_key", ""), parsed, len(raw), time.time())
            )
        message.ack()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with kombu.Connection(self.broker_url, connect_timeout=5) as conn:
                    conn.connect()
                    with conn.Consumer(
                        [self.queue], on_message=self._on_message, prefetch_count=200
                    ):
                        while not self._stop.is_set():
                            try:
                                conn.drain_events(timeout=1.0)
                            except TimeoutError:
                                continue
            except Exception:  # noqa: BLE001 - broker away: try again shortly
                self.reconnects += 1
                self._stop.wait(1.0)
