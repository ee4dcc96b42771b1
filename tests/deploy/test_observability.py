"""Prometheus configuration (deploy/observability): promtool accepts the scrape config and the alert
rules, the rules' unit tests pass (each alert fires above its threshold and not below), every
threshold of the architecture doc's monitoring table has its alert, and every service is scraped."""

from __future__ import annotations

import re

import yaml

from .conftest import DEPLOY, SERVICES, find_tool, run

PROMETHEUS = DEPLOY / "observability" / "prometheus"
RULES = PROMETHEUS / "rules" / "coca-alerts.yml"
# The architecture doc's monitoring table: alert -> the threshold its expression compares with.
THRESHOLDS = {
    "ApiLatencyP99High": "2",  # API p99 > 2 s
    "ApiErrorRateHigh": "0.01",  # error rate > 1 %
    "AgentRunLatencyP95High": "30",  # agent p95 > 30 s
    "AgentRunFailureRateHigh": "0.05",  # agent failure > 5 %
    "DbPoolSaturated": "0.8",  # DB pool > 80 %
    "QueueBacklogHigh": "10000",  # queue backlog > 10000
    "ConsumerLagHigh": "30",  # consumer lag > 30 s
    "ContainerCpuHigh": "0.8",  # CPU > 80 % for 5 min
    "ContainerMemoryHigh": "0.85",  # memory > 85 %
    "DiskAlmostFull": "0.9",  # disk > 90 %
}


def rules() -> dict[str, dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_promtool_accepts_the_scrape_config():
    proc = run([find_tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout + proc.stderr, "the config does not load the rules"


def test_promtool_accepts_the_alert_rules():
    proc = run([find_tool("promtool"), "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_fire_above_their_thresholds_and_stay_quiet_below():
    tests = PROMETHEUS / "tests" / "coca-alerts.test.yml"
    proc = run([find_tool("promtool"), "test", "rules", str(tests)], cwd=tests.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_threshold_of_the_monitoring_table_has_an_alert():
    found = rules()
    for alert, threshold in THRESHOLDS.items():
        assert alert in found, f"no alert {alert}"
        expr = " ".join(str(found[alert]["expr"]).split())
        assert re.search(rf">\s*{re.escape(threshold)}$", expr), (
            f"{alert} does not compare with {threshold}: {expr}"
        )
        assert found[alert]["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]
    assert found["ContainerCpuHigh"]["for"] == "5m", "CPU > 80 % for 5 minutes"


def test_every_alert_is_unit_tested():
    tests = yaml.safe_load((PROMETHEUS / "tests" / "coca-alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert set(rules()) == tested


def test_prometheus_scrapes_every_service_and_the_brokers():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["coca"]["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{port}" for name, (_, port, _) in SERVICES.items()}
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object", "per-queue series for the backlog alert"
    assert "kafka-exporter" in jobs, "consumer-group lag for the lag alert"
