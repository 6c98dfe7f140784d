"""One poison message against a real worker: it is dead-lettered once and firing goes on.

On main, a lifecycle message with ~130 KB of headers and a non-JSON body made the
worker's republished dead-letter copy exceed ``frame_max``: the broker closed the
worker's one connection before the ack, the message came back, and so on (about
150 reconnects in 10 s), while no tick or fire task ran.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path

import kombu
from kombu import Producer
from sqlalchemy import Engine, text

from scout_tasks.lifecycle_queues import LifecycleQueues
from tests.e2e.procs import CeleryProcess, scout_env, stop_all

# Headers that just fit RabbitMQ's default frame_max (131,072 bytes) when
# published: any copy with a few more headers does not.
PAD = 130_950


def _schedule_due_in(engine: Engine, seconds: float) -> uuid.UUID:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO scout_schedules (name, cron_expression, source, max_strategies,"
                " next_run_at) VALUES (:n, '0 0 * * *', 'stratninja', 3,"
                " now() + make_interval(secs => :s)) RETURNING id"
            ),
            {"n": f"after poison {uuid.uuid4().hex[:6]}", "s": seconds},
        ).scalar_one()


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` (the worker's main process, where the consumer runs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _dead_letters(broker_url: str, queue: str) -> list[kombu.Message]:
    out = []
    with kombu.Connection(broker_url) as conn:
        bound = kombu.Queue(queue, no_declare=True)(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            out.append(message)
    return out


def test_a_130_kb_headers_message_is_dead_lettered_once_and_schedules_still_fire(
    db_url: str, broker_url: str, exchange_name: str, engine: Engine, tmp_path: Path
) -> None:
    env = scout_env(db_url, broker_url, exchange_name)
    names = LifecycleQueues.for_task_queue(env["SCOUT_TASK_QUEUE"])
    worker = CeleryProcess("worker", env, tmp_path)
    beat = CeleryProcess("beat", env, tmp_path)
    try:
        worker.wait_for("consuming lifecycle events from")
        worker.wait_for("ready")
        beat.wait_for("this beat is now the leader")

        with kombu.Connection(broker_url) as conn:
            Producer(conn.default_channel).publish(
                b"not json",
                exchange=exchange_name,
                routing_key="scout.progress",
                headers={"x-pad": "p" * PAD},
                content_type="application/json",
                content_encoding="utf-8",
                message_id="padded",
                delivery_mode=2,
            )
        worker.wait_for("malformed scout.progress message set aside")

        # Firing goes on: a schedule due after the poison gets its run.
        schedule_id = _schedule_due_in(engine, 2.0)
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as conn:
                fired = conn.execute(
                    text("SELECT count(*) FROM scout_runs WHERE schedule_id = :s"),
                    {"s": schedule_id},
                ).scalar_one()
            if fired:
                break
            assert time.monotonic() < deadline, f"no run fired:\n{worker.log()[-4000:]}"
            time.sleep(0.2)
        time.sleep(3)  # room for a storm to show, had there been one

        # A 5 MB progress for that run: set aside unparsed, not stored, and the
        # worker's memory barely moves (main stored it: RSS 82 -> 410 MB).
        with engine.connect() as conn:
            run_id = conn.execute(
                text("SELECT id FROM scout_runs WHERE schedule_id = :s"), {"s": schedule_id}
            ).scalar_one()
        rss_before = _rss_mb(worker.pid)
        huge = {
            "event_id": str(uuid.uuid4()),
            "event_type": "scout.progress",
            "run_id": str(run_id),
            "stage": "fetch",
            "progress": 1,
            "message": "m" * 5_000_000,
        }
        with kombu.Connection(broker_url) as conn:
            Producer(conn.default_channel).publish(
                json.dumps(huge).encode(),
                exchange=exchange_name,
                routing_key="scout.progress",
                content_type="application/json",
                content_encoding="utf-8",
                message_id=huge["event_id"],
                delivery_mode=2,
            )
        deadline = time.monotonic() + 20
        while worker.log().count("malformed scout.progress message set aside") < 2:
            assert time.monotonic() < deadline, worker.log()[-4000:]
            time.sleep(0.2)
        rss_after = _rss_mb(worker.pid)
        print(f"\nworker RSS {rss_before:.0f} MB -> {rss_after:.0f} MB after a 5 MB progress")
        assert rss_after - rss_before < 40
        with engine.connect() as conn:
            metrics = conn.execute(
                text("SELECT metrics FROM scout_runs WHERE id = :r"), {"r": run_id}
            ).scalar_one()
        assert metrics is None or "progress" not in metrics

        log = worker.log()
        assert log.count("malformed scout.progress message set aside") == 2, log[-4000:]
        assert log.count("consuming lifecycle events from") == 1, log[-4000:]
        assert "lifecycle consumer lost its broker connection" not in log
        assert "Connection to broker lost" not in log
        assert worker.alive() and beat.alive()
        padded, big = _dead_letters(broker_url, names.dead_queue)
        assert padded.properties["message_id"] == "padded"
        assert padded.headers["x-death"][0]["count"] == 1
        assert big.properties["message_id"] == huge["event_id"]
    finally:
        stop_all([beat, worker])
        with kombu.Connection(broker_url) as conn:
            for name in (env["SCOUT_TASK_QUEUE"], *names.all_names()):
                with contextlib.suppress(Exception), conn.channel() as channel:
                    channel.queue_delete(queue=name)
            with contextlib.suppress(Exception), conn.channel() as channel:
                channel.exchange_delete(names.dead_exchange)
