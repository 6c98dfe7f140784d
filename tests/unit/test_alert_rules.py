"""deploy/prometheus: the alert rules pass `promtool check rules` and their unit tests.

promtool comes with Debian's `prometheus` package, which .ci/run installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (apt-get install -y prometheus; .ci/run does it)",
)

# The metric names the rules rely on: the contract's, plus the two run counters.
METRICS = {
    "scout_beat_last_tick_timestamp_seconds",
    "scout_schedules_overdue",
    "scout_schedules_cannot_fire",
    "scout_outbox_oldest_age_seconds",
    "scout_runs_finished_total",
    "scout_runs_stale_total",
}
ALERTS = {
    "ScoutBeatSilent",
    "ScoutBeatMetricsAbsent",
    "ScoutSchedulesOverdue",
    "ScoutSchedulesCannotFire",
    "ScoutOutboxStuck",
    "ScoutRunsFailing",
    "ScoutRunsStale",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_check_config() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_is_documented_and_uses_known_metrics() -> None:
    rules = _rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    used = set()
    for rule in rules:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}  # type: ignore[index]
        used |= {name for name in METRICS if name in str(rule["expr"])}
    assert used == METRICS


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS


def test_grafana_dashboard_queries_known_metrics() -> None:
    import json

    dashboard = json.loads((DEPLOY.parent / "grafana" / "scout-tasks.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    contract = {
        "scout_runs_created_total",
        "scout_events_published_total",
        "scout_skipped_slots_total",
        "scout_fire_lag_seconds_bucket",
        "scout_schedules_enabled",
        "scout_schedules_overdue",
        "scout_outbox_backlog",
        "scout_outbox_oldest_age_seconds",
        "scout_beat_last_tick_timestamp_seconds",
    }
    used = {name for name in contract | METRICS for expr in exprs if name in expr}
    assert used == contract | METRICS
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


@needs_promtool
def test_grafana_dashboard_queries_parse(tmp_path: Path) -> None:
    import json

    # promtool has no offline query checker; a recording rule per query has
    # its expression parsed by `check rules`.
    dashboard = json.loads((DEPLOY.parent / "grafana" / "scout-tasks.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
