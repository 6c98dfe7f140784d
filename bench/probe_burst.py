"""Where a real burst's PostgreSQL CPU goes: per backend, per wait, per table.

Runs one burst as ``burst.py`` does (a real ``worker -c 2`` and beat, N
schedules due at T) and, while it runs, samples ``pg_stat_activity`` and
``pg_locks`` of the scratch database every ``--interval`` seconds. Prints:

- the CPU of each backend from T to the end (``/proc``), named by the
  statements it was seen running, µs per fire;
- what active backends were doing when sampled (query and wait event), and
  how often a lock was waited for, with the locked relation;
- the deltas of ``pg_stat_user_tables`` / ``pg_stat_user_indexes`` /
  ``pg_stat_database`` over the burst (index entries read per fire, dead
  tuples, HOT updates, commits).

    python bench/probe_burst.py --count 20000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import common
from burst import choose_instant, setup_lead

_ACTIVITY = """
    SELECT a.pid, a.application_name, a.backend_type, a.state, a.wait_event_type,
           a.wait_event, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 70)
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
"""

_WAITING = """
    SELECT l.pid, l.locktype, l.mode, COALESCE(c.relname, l.locktype)
    FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
    WHERE NOT l.granted AND l.database = (SELECT oid FROM pg_database
                                          WHERE datname = current_database())
       OR NOT l.granted AND l.locktype = 'transactionid'
"""

_TABLES = """
    SELECT relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins, n_tup_upd,
           n_tup_hot_upd, n_tup_del, n_dead_tup, autovacuum_count, autoanalyze_count
    FROM pg_stat_user_tables
"""
_INDEXES = "SELECT indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes"
_DATABASE = """
    SELECT xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched,
           tup_inserted, tup_updated, tup_deleted
    FROM pg_stat_database WHERE datname = current_database()
"""


def _stats(conn: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        for query, prefix in ((_TABLES, "table "), (_INDEXES, "index ")):
            cur.execute(query)
            names = [d[0] for d in cur.description][1:]
            for row in cur.fetchall():
                out[prefix + row[0]] = dict(zip(names, row[1:], strict=True))
        cur.execute(_DATABASE)
        names = [d[0] for d in cur.description]
        out["database"] = dict(zip(names, cur.fetchone(), strict=True))
    return out


class Sampler(threading.Thread):
    def __init__(self, db_url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.conn = common.connect(db_url)
        self.conn.autocommit = True
        self.interval = interval
        self.stop = threading.Event()
        self.samples = 0
        self.doing: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.waits: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.queries: dict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.names: dict[int, str] = {}
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}

    def read_cpu(self, pids: list[int], first: bool) -> None:
        for pid in pids:
            with contextlib.suppress(OSError):
                seconds = common.cpu_seconds(pid)
                if first:
                    self.cpu_first.setdefault(pid, seconds)
                else:
                    self.cpu_first.setdefault(pid, 0.0)  # born during the burst
                self.cpu_last[pid] = seconds

    def sample(self, first: bool = False) -> None:
        with self.conn.cursor() as cur:
            cur.execute(_ACTIVITY)
            rows = cur.fetchall()
            cur.execute(_WAITING)
            waiting = cur.fetchall()
        self.samples += 1
        for pid, app, kind, state, wtype, wevent, query in rows:
            self.names[pid] = f"{app or kind}"
            if state == "active" or (kind or "").startswith("autovacuum"):
                self.doing[(app or kind, f"{wtype}:{wevent}", query)] += 1
            if query:
                self.queries[pid][query[:45]] += 1
        for _pid, locktype, mode, rel in waiting:
            self.waits[(locktype, mode, rel)] += 1
        self.read_cpu([r[0] for r in rows], first)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(self.interval)


def _delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> list[str]:
    lines = []
    for key, values in after.items():
        if not key.startswith(("table scout_", "index ", "database")):
            continue
        if key.startswith("index ") and "scout" not in key and "pkey" not in key:
            continue
        old = before.get(key, {})
        changed = {k: v - old.get(k, 0) for k, v in values.items() if v - old.get(k, 0)}
        if changed:
            lines.append(f"{key}: " + ", ".join(f"{k} {v:+,}" for k, v in changed.items()))
    return lines


def probe(count: int, interval: float) -> None:
    exchange = f"bench-probe-{uuid.uuid4().hex[:8]}"
    with (
        common.scratch_database() as db_url,
        common.counting_queue(exchange) as queue,
        common.celery_stack(db_url, exchange, concurrency=2) as stack,
    ):
        t = choose_instant(count, setup_lead(count))
        common.insert_schedules(db_url, count, datetime.fromtimestamp(t, UTC))
        stats_conn = common.connect(db_url)
        stats_conn.autocommit = True
        sampler = Sampler(db_url, interval)
        clients = [*common.process_tree(stack.worker.pid), stack.beat.pid]
        common.sleep_until(t - 0.1)
        before = _stats(stats_conn)
        client_before = common.cpu_of(clients)
        sampler.sample(first=True)
        common.sleep_until(t)
        sampler.start()
        progress = common.Progress(db_url)
        while True:
            if queue.depth() >= count and progress.counts() == (count, 0):
                break
            if time.time() > t + 300:
                raise RuntimeError("burst did not finish in 300 s")
            time.sleep(0.02)
        elapsed = time.time() - t
        sampler.stop.set()
        sampler.join()
        sampler.sample()
        client_after = common.cpu_of(clients)
        client_cpu = common.cpu_used(client_before, client_after)
        roles = {stack.worker.pid: "worker", stack.beat.pid: "beat"}
        time.sleep(0.5)  # let the statistics collector catch up
        after = _stats(stats_conn)
        progress.close()
        stats_conn.close()

    print(f"\nprobe: {count:,} fires in {elapsed:.2f} s ({common.machine()})")
    print(f"client processes (worker, pool, beat): {1e6 * client_cpu / count:.0f} µs/fire")
    for pid, seconds in client_after.items():
        used = seconds - client_before.get(pid, 0.0)
        print(f"  {roles.get(pid, 'pool')} {pid}: {1e6 * used / count:.0f} µs/fire")
    total = 0.0
    rows = []
    for pid, last in sorted(sampler.cpu_last.items()):
        used = last - sampler.cpu_first.get(pid, 0.0)
        if used <= 0:
            continue
        total += used if sampler.names.get(pid, "").startswith("scout-tasks") else 0.0
        top = ", ".join(f"{q} ({n})" for q, n in sampler.queries[pid].most_common(3))
        rows.append([str(pid), sampler.names.get(pid, "?"), f"{1e6 * used / count:.1f}", top])
    print(f"PostgreSQL backends named scout-tasks: {1e6 * total / count:.0f} µs/fire\n")
    print(common.table(["pid", "application", "µs/fire", "statements seen"], rows))
    print(f"\nactive backends over {sampler.samples} samples:")
    for (app, wait, query), n in sampler.doing.most_common(25):
        print(f"  {n:5d}  {app[:20]:20s} {wait:28s} {query}")
    print("\nlock waits (sample count):")
    for (locktype, mode, rel), n in sampler.waits.most_common(10):
        print(f"  {n:5d}  {locktype} {mode} {rel}")
    print("\nstatistics deltas:")
    for line in _delta(before, after):
        print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    try:
        probe(args.count, args.interval)
    finally:
        common.drop_template()


if __name__ == "__main__":
    main()
