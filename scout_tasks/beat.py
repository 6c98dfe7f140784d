"""The custom Celery beat scheduler: sleeps until the next slot and wakes on NOTIFY.

Celery's own schedulers keep the schedule in the beat process and poll it.
This one keeps nothing: the schedule lives in ``scout_schedules``, and the beat
only asks the database two indexed questions (when is the earliest slot, is
any schedule unscheduled) and sends tasks:

- ``scout_tasks.fire`` the moment the earliest ``next_run_at`` arrives, so a
  slot fires on time instead of up to a tick late;
- ``scout_tasks.tick`` every ``SCOUT_TICK_SECONDS``, the safety net that also
  relays stranded events.

A plain-SQL change to ``scout_schedules`` NOTIFYs the beat through a trigger,
so it re-asks at once; nothing is reloaded. Any number of beats may run: the
one holding a PostgreSQL advisory lock sends, the others wait for it. The lock
belongs to the leader's database session, so a killed leader (SIGKILL
included) releases it with its connection, measured by the database, not by
any host's clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import time
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from celery.beat import Scheduler
from sqlalchemy.engine import make_url

from scout_tasks import heartbeat, horizon
from scout_tasks.celery_app import EARLY, FIRE, PAIRED, TICK
from scout_tasks.settings import get_settings, mask_url

log = logging.getLogger(__name__)

CHANNEL = "scout_schedules"
# pg_try_advisory_lock key, shared by every beat (and read by the console).
LEADER_LOCK = horizon.LEADER_LOCK
# How often a standby beat asks for the lock, and how long to wait after an error.
STANDBY_POLL = 2.0
ERROR_BACKOFF = 3.0
# A due horizon that did not move is re-sent after a NOTIFY, at most this often:
# the claim skipped rows another writer held (an apply, a backfill, an edit),
# and that writer's commit is what NOTIFYs us.
RESEND_AFTER_NOTIFY = 1.0
# While a herd of jittered schedules is under way the horizon is only a lower
# bound (see horizon.HORIZON_QUERY): fire is sent this often, and each claim
# takes what has come due since.
HERD_CADENCE = 0.25
# A slot this close is sent ahead, marked early: the pool process it reaches
# waits for the slot by the database's clock, so the claim starts at the slot
# instead of after the beat's wake-up and the task's trip through the broker.
EARLY_LEAD = 0.2
# If the slot stays due this long after it with no NOTIFY (no commit: the early
# tasks were lost, or a worker that does not know the mark fired too soon and
# found nothing), it is sent again, at once.
EARLY_CHECK = 0.5
# A leader that goes silent (frozen: SIGSTOP, a paused VM; or cut off without a
# reset) keeps its session, and with it the leader lock, for as long as the
# server sees the connection open: for ever when frozen (its kernel still answers
# keepalives), the OS's 2 h when cut off. Nothing would fire meanwhile. The
# server ends a session idle for a leader period (below) plus this margin instead,
# and a standby takes over. A leader queries at least once a leader period (a
# standby every STANDBY_POLL); the margin covers sends that wait on an unreachable
# broker.
IDLE_SESSION_MARGIN = 30.0
# A leader period: the tick period, but never over this. A leader waits no longer
# between two queries, and the idle timeout and the step-down are counted in these
# periods, so a frozen or cut-off leader hands over within a minute or two even
# with SCOUT_TICK_SECONDS at an hour. A wake-up with nothing to send is one query.
LEADER_PERIOD_MAX = 30.0


# A leader whose every send has failed for this many leader periods (it reaches the
# database but not the broker: its route, its node of a cluster) lets the lock go
# and leaves it for STEP_DOWN_REST, so a standby that can send takes over. When
# the broker is away for every beat, they take turns at failing: nothing is lost.
STEP_DOWN_TICKS = 2
STEP_DOWN_REST = 2 * STANDBY_POLL + 1


def leader_period(tick_seconds: float) -> float:
    """The longest a leader waits between two queries (seconds)."""
    return min(tick_seconds, LEADER_PERIOD_MAX)


def step_down_after(tick_seconds: float) -> float:
    """How long a leader's sends may all fail before it lets the lock go (seconds)."""
    return STEP_DOWN_TICKS * leader_period(tick_seconds)


def idle_session_timeout(tick_seconds: float) -> float:
    """How long the server lets a beat's session sit idle before ending it (seconds)."""
    return leader_period(tick_seconds) + IDLE_SESSION_MARGIN


def psycopg2_dsn(url: str) -> str:
    """A libpq URI for a SQLAlchemy URL (the listener talks to psycopg2 directly)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class _Listener:
    """The beat's own database session: LISTENs and holds the leader lock."""

    def __init__(self, dsn: str, idle_timeout: float) -> None:
        self.conn = psycopg2.connect(
            dsn,
            connect_timeout=5,
            application_name="scout-tasks beat",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        self.conn.set_session(autocommit=True)
        self._prepared = False
        with self.conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            if self.conn.server_version >= 140000:  # the setting is new in PostgreSQL 14
                cur.execute(
                    "SELECT set_config('idle_session_timeout', %s, false)",
                    (str(round(idle_timeout * 1000)),),
                )
            cur.execute(f"LISTEN {CHANNEL}")

    def try_lead(self) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
            return bool(cur.fetchone()[0])

    def step_down(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))

    def horizon(self) -> horizon.Horizon:
        with self.conn.cursor() as cur:
            if not self._prepared:
                # Planned once per session, not on every wake-up (about 0.8 ms each).
                cur.execute("PREPARE scout_horizon AS " + horizon.HORIZON_QUERY.text)
                self._prepared = True
            cur.execute("EXECUTE scout_horizon")
            return horizon.Horizon(*cur.fetchone())

    def record_tick(self, leader: str, tick_seconds: float) -> None:
        """The heartbeat `scout-tasks status` and /metrics read (scout_beat)."""
        try:
            with self.conn.cursor() as cur:
                heartbeat.record_tick(cur, leader, tick_seconds)
        except psycopg2.errors.UndefinedTable:
            # A database not migrated to head yet: firing must not wait for it.
            log.warning(
                "cannot record the tick: run `scout-tasks db upgrade`",
                extra={"action": "beat.heartbeat_failed"},
            )

    def wait(self, timeout: float) -> bool:
        """Block until a NOTIFY arrives or ``timeout`` passes; True if notified."""
        if timeout > 0 and not self.conn.notifies:
            ready, _, _ = select.select([self.conn], [], [], timeout)
            if not ready:
                return False
        self.conn.poll()
        notified = bool(self.conn.notifies)
        self.conn.notifies.clear()
        return notified

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.conn.close()


class ScoutScheduler(Scheduler):
    """Celery beat scheduler backed by ``scout_schedules`` (the app's default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._settings = get_settings()
        self._listener: _Listener | None = None
        self._leader = False
        self._next_tick = 0.0
        self._last_fire: tuple[datetime | None, datetime | None, bool] | None = None
        self._last_fire_sent = 0.0
        # _last_fire was sent ahead of its slot (EARLY_LEAD); _last_fire_sent is the slot.
        self._early = False
        self._notified = False
        # Since when every send has failed (None: the last one went out), and until
        # when a leader that stepped down for it leaves the lock to the others.
        self._failing_since: float | None = None
        self._rest_until = 0.0
        self._name = f"{socket.gethostname()}:{os.getpid()}"
        super().__init__(*args, **kwargs)

    # Celery's Scheduler API -------------------------------------------------

    def setup_schedule(self) -> None:
        # Nothing to load: every decision is a query at the moment it is needed.
        self.data = {}
        log.info(
            "scout-tasks beat: schedules from %s, tick every %ss",
            mask_url(self._settings.database_url),
            self._settings.tick_seconds,
            extra={"action": "beat.start"},
        )

    @property
    def schedule(self) -> dict[str, Any]:
        return self.data

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self._drop_listener()
        super().close()

    @property
    def info(self) -> str:
        return f"    . db -> {mask_url(self._settings.database_url)}"

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass: send what is due, then block until the next reason to wake.

        Returns 0 so Celery's loop calls again at once; the waiting happens here,
        on the database socket, so a NOTIFY cuts it short.
        """
        try:
            self._pass()
        except (psycopg2.Error, OSError) as exc:
            log.warning(
                "database unavailable, retrying in %ss: %s",
                ERROR_BACKOFF,
                str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
                extra={"action": "beat.db_error"},
            )
            self._drop_listener()
            time.sleep(ERROR_BACKOFF)
        return 0.0

    # The loop ---------------------------------------------------------------

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        if self._leader:
            log.warning(
                "leadership lost with the database session", extra={"action": "beat.leader_lost"}
            )
        self._leader = False

    def _pass(self) -> None:
        if self._listener is None:
            self._listener = _Listener(
                psycopg2_dsn(self._settings.database_url_value()),
                idle_session_timeout(self._settings.tick_seconds),
            )
        listener = self._listener
        if not self._leader:
            if time.monotonic() < self._rest_until:
                listener.wait(STANDBY_POLL)
                return
            self._leader = listener.try_lead()
            if not self._leader:
                listener.wait(STANDBY_POLL)
                return
            log.info("this beat is now the leader", extra={"action": "beat.leader"})
            self._next_tick = 0.0
            self._last_fire = None
            self._failing_since = None
        tick_seconds = self._settings.tick_seconds
        horizon = listener.horizon()
        mono = time.monotonic()
        if self._failing_since is not None and (
            mono - self._failing_since >= step_down_after(tick_seconds)
        ):
            listener.step_down()
            self._leader = False
            self._rest_until = mono + STEP_DOWN_REST
            log.warning(
                "no send has reached the broker for %.0fs: leadership left to another beat",
                mono - self._failing_since,
                extra={"action": "beat.step_down"},
            )
            return
        if mono >= self._next_tick:
            if self._send(TICK, horizon.now):
                listener.record_tick(self._name, tick_seconds)
                # Ticks keep a steady cadence; after a long stall, restart it.
                behind = mono - self._next_tick > tick_seconds
                self._next_tick = (mono if behind else self._next_tick) + tick_seconds
            else:
                self._next_tick = mono + ERROR_BACKOFF
        due = horizon.unscheduled or (
            horizon.earliest is not None and horizon.earliest <= horizon.now
        )
        # A burst (more than a batch due) starts on two pool processes at once,
        # not on one that hands on only once its first claim is back. Not in a
        # herd (bounded): due_count leaves jitter out, so it counts the whole
        # herd, not what has come due, and every cadence's send would be a pair.
        burst = horizon.due_count > self._settings.fire_batch_size and not horizon.bounded
        copies = 2 if burst else 1
        resend_in: float | None = None
        ahead = (
            None
            if horizon.earliest is None or due
            else (horizon.earliest - horizon.now).total_seconds()
        )
        if ahead is not None and ahead <= EARLY_LEAD and not horizon.bounded:
            # The key the horizon will read at the slot, so the wake-up there
            # finds it sent: latest_due already reads the slot's (for a jittered
            # head, its next_run_at, which has passed, not the instant).
            key = (horizon.earliest, horizon.latest_due, False)
            if key != self._last_fire and self._send(FIRE, horizon.earliest, copies, early=True):
                self._last_fire, self._last_fire_sent = key, mono + ahead
                self._early, self._notified = True, False
        if due:
            # latest_due is in the key: a schedule coming due behind one that
            # stays due (its row held elsewhere) is a fresh reason to send.
            key = (horizon.earliest, horizon.latest_due, horizon.unscheduled)
            # The same due slot is re-sent only after a tick period (the worker
            # is on it, and its commit NOTIFYs us when the horizon moves), or
            # soon after a NOTIFY that left it where it was.
            since = mono - self._last_fire_sent
            # A NOTIFY before the slot (another schedule's change) says nothing
            # of the task sent ahead: its check stands.
            early = self._early and key == self._last_fire
            fresh = (
                key != self._last_fire
                or since >= tick_seconds
                or (self._notified and since >= RESEND_AFTER_NOTIFY)
                or (horizon.bounded and since >= HERD_CADENCE)
                or (early and since >= EARLY_CHECK)
            )
            if fresh and self._send(FIRE, horizon.earliest or horizon.now, copies):
                self._last_fire, self._last_fire_sent = key, mono
                self._early, self._notified = False, False
                since = 0.0
                early = False
            if horizon.bounded:
                resend_in = HERD_CADENCE - since
            elif early:
                resend_in = EARLY_CHECK - since
            elif self._notified:
                resend_in = RESEND_AFTER_NOTIFY - since
        wait = max(0.0, min(self._next_tick - time.monotonic(), leader_period(tick_seconds)))
        if resend_in is not None:
            wait = min(wait, max(0.0, resend_in))
        if ahead is not None and ahead > EARLY_LEAD and not horizon.bounded:
            # Wake in time to send the slot ahead.
            wait = min(wait, ahead - EARLY_LEAD)
        elif horizon.earliest is not None and horizon.earliest > horizon.now:
            # A hair past the slot, so the database agrees it is due when we wake.
            until_slot = (horizon.earliest - horizon.now).total_seconds() + 0.002
            wait = min(wait, until_slot)
        elif due and horizon.upcoming is not None:
            # The earliest is due and stays so: wake when the next one comes.
            until_next = (horizon.upcoming - horizon.now).total_seconds() + 0.002
            wait = min(wait, until_next)
        self._notified = listener.wait(wait) or self._notified

    def _send(self, task: str, slot: datetime, copies: int = 1, *, early: bool = False) -> bool:
        headers = {PAIRED: copies > 1, EARLY: early} if copies > 1 or early else None
        try:
            for _ in range(copies):
                self.app.send_task(
                    task,
                    kwargs={"slot": slot.isoformat()},
                    expires=max(2 * self._settings.tick_seconds, 10.0),
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
                    headers=headers,
                )
        except Exception as exc:  # noqa: BLE001 - any broker failure: log, carry on
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            log.warning(
                "could not send %s: %s",
                task,
                exc,
                extra={"action": "beat.send_failed", "task": task, "slot": slot.isoformat()},
            )
            return False
        self._failing_since = None
        log.debug(
            "sent %s", task, extra={"action": "beat.sent", "task": task, "slot": slot.isoformat()}
        )
        return True
