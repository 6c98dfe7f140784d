"""Idle: CPU and memory of a real beat and worker while nothing is due, at two table sizes.

Each size gets its own database of enabled schedules, none due (``next_run_at``
30 days out). For each repetition and size (the sizes alternate), a real
``celery -A scout_tasks beat`` and ``worker -c 2`` are started with the
default ``SCOUT_TICK_SECONDS`` (30); after a warm-up, the CPU seconds (user +
system, from ``/proc/<pid>/stat``) of the beat and of the worker with its pool
processes are read over a window, and their peak RSS (``VmHWM`` in
``/proc/<pid>/status``) at its end. The PostgreSQL backends serving them are
measured too, for information (they are not scout-tasks processes).

    python bench/idle.py --sizes 1000,1000000 --window 60 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from dataclasses import dataclass

import common


@dataclass
class Result:
    window: float
    beat_cpu: float
    worker_cpu: float
    db_cpu: float
    beat_hwm_kb: int
    worker_hwm_kb: int  # the worker's main process
    pool_hwm_kb: int  # the largest pool process

    def pct(self, seconds: float) -> float:
        return 100 * seconds / self.window


def measure(db_url: str, warmup: float, window: float, loglevel: str) -> Result:
    exchange = f"bench-idle-{uuid.uuid4().hex[:8]}"
    try:
        with common.celery_stack(db_url, exchange, loglevel=loglevel) as stack:
            time.sleep(warmup)
            beat = [stack.beat.pid]
            worker = common.process_tree(stack.worker.pid)
            db = common.backends(db_url)
            before = (common.cpu_of(beat), common.cpu_of(worker), common.cpu_of(db))
            start = time.monotonic()
            time.sleep(window)
            after = (
                common.cpu_of(beat),
                common.cpu_of(common.process_tree(stack.worker.pid)),
                common.cpu_of(common.backends(db_url)),
            )
            elapsed = time.monotonic() - start
            if common.process_tree(stack.worker.pid) != worker:
                common.log("  note: the worker's pool processes changed during the window")
            pool = [p for p in worker if p != stack.worker.pid]
            return Result(
                window=elapsed,
                beat_cpu=common.cpu_used(before[0], after[0]),
                worker_cpu=common.cpu_used(before[1], after[1]),
                db_cpu=common.cpu_used(before[2], after[2]),
                beat_hwm_kb=common.status_kb(stack.beat.pid, "VmHWM"),
                worker_hwm_kb=common.status_kb(stack.worker.pid, "VmHWM"),
                pool_hwm_kb=max((common.status_kb(p, "VmHWM") for p in pool), default=0),
            )
    finally:
        common.delete_broker_objects(exchanges=[exchange])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,1000000", help="comma-separated schedule counts")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loglevel", default="warning", help="celery -l for beat and worker")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.strftime("%Y-%m-%d %H:%M")
    results: dict[int, list[Result]] = {n: [] for n in sizes}
    try:
        with contextlib.ExitStack() as stack:
            urls = {}
            for n in sizes:
                urls[n] = stack.enter_context(common.scratch_database())
                seconds = common.insert_schedules(urls[n], n, None)
                common.log(f"{n:,} schedules inserted and vacuumed in {seconds:.1f} s")
            for rep in range(args.repeat):
                order = sizes if rep % 2 == 0 else sizes[::-1]
                for n in order:
                    common.log(f"repeat {rep + 1}/{args.repeat}: {n:,} schedules")
                    r = measure(urls[n], args.warmup, args.window, args.loglevel)
                    results[n].append(r)
                    common.log(
                        f"  beat {r.pct(r.beat_cpu):.2f}% worker {r.pct(r.worker_cpu):.2f}% "
                        f"(db backends {r.pct(r.db_cpu):.2f}%) of a core; peak RSS beat "
                        f"{r.beat_hwm_kb / 1024:.1f} MiB, worker {r.worker_hwm_kb / 1024:.1f} "
                        f"MiB, pool {r.pool_hwm_kb / 1024:.1f} MiB"
                    )
    finally:
        common.drop_template()

    print(
        f"\nidle: nothing due, tick every 30 s, {args.window:.0f} s window after "
        f"{args.warmup:.0f} s warm-up ({started}, {common.machine()}, median of {args.repeat})\n"
    )

    def pct(n: int, attr: str) -> str:
        return f"{common.median([r.pct(getattr(r, attr)) for r in results[n]]):.2f}"

    def total(n: int) -> str:
        values = [r.pct(r.beat_cpu + r.worker_cpu) for r in results[n]]
        return f"{common.median(values):.2f} ({' '.join(f'{v:.2f}' for v in values)})"

    def mib(n: int, attr: str) -> str:
        return f"{common.median([getattr(r, attr) for r in results[n]]) / 1024:.1f}"

    rows = [
        ["CPU beat, % of a core", *(pct(n, "beat_cpu") for n in sizes)],
        ["CPU worker + pool, % of a core", *(pct(n, "worker_cpu") for n in sizes)],
        ["CPU beat + worker (each repeat)", *(total(n) for n in sizes)],
        ["CPU PostgreSQL backends (info)", *(pct(n, "db_cpu") for n in sizes)],
        ["peak RSS beat, MiB", *(mib(n, "beat_hwm_kb") for n in sizes)],
        ["peak RSS worker main, MiB", *(mib(n, "worker_hwm_kb") for n in sizes)],
        ["peak RSS largest pool process, MiB", *(mib(n, "pool_hwm_kb") for n in sizes)],
    ]
    print(common.table(["", *(f"{n:,} schedules" for n in sizes)], rows))


if __name__ == "__main__":
    main()
