"""deploy/prometheus and deploy/grafana, checked by parsing and by Prometheus' own promtool: the
dashboard and the alerts use only metrics that pipeline/metrics.py declares, every expression is valid
PromQL, the alerts fire on trouble and stay quiet on a healthy pipeline (promtool's rule unit tests on
synthetic series), and the scrape configs match docker-compose.yml and `eventpipe dev`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import metrics as metrics_mod
from pipeline.settings import Settings
from tests import dashboards
from tests.dashboards import all_panels, dashboard_exprs, graph_panels

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Series Prometheus itself attaches to every target; the only non-eventpipe name an alert may use.
PROMETHEUS_SERIES = {"up"}
# Grafana's interval macros, replaced by what they expand to before PromQL sees an expression.
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def exposed_metric_names() -> set[str]:
    """The series names /metrics exposes, from the registry the app builds: counters gain `_total`,
    histograms are `_bucket`, `_sum` and `_count`, gauges keep their name."""
    names: set[str] = set()
    for family in metrics_mod.fresh().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif family.type == "gauge":
            names.add(family.name)
        else:
            raise AssertionError(f"{family.name}: unexpected metric type {family.type}")
    return names


DECLARED = exposed_metric_names()

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
_KEYWORDS |= {"offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects. Strings, label matchers, ranges, grouping label
    lists and numbers are removed first; of the identifiers left, those followed by `(` are functions
    or aggregations and the rest are keywords or metric names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue
        if match.group(0).lower() not in _KEYWORDS:
            names.add(match.group(0))
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        pytest.param("up", {"up"}, id="bare"),
        pytest.param('sum by (source) (rate(a_total{status=~"5.."}[5m]))', {"a_total"}, id="aggregation"),
        pytest.param(
            "histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))",
            {"h_bucket"},
            id="quantile",
        ),
        pytest.param("a / on(x) group_left(y) b > bool 1e3", {"a", "b"}, id="matching"),
        pytest.param("sum(x) without (instance) offset 5m", {"x"}, id="offset"),
        pytest.param('absent(r{component="consumer"} == 1)', {"r"}, id="absent"),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# -- the dashboard ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dashboards.load()


def expand_macros(expr: str) -> str:
    return dashboards.expand_macros(expr, GRAFANA_MACROS)


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "eventpipe-overview"
    assert dashboard["title"]
    assert "eventpipe" in dashboard["tags"]
    assert isinstance(dashboard["schemaVersion"], int)


def test_every_panel_has_targets_with_an_expr(dashboard: dict[str, Any]) -> None:
    panels = graph_panels(dashboard)
    assert len(panels) >= 11
    for panel in panels:
        assert panel["title"] and panel.get("description"), panel.get("id")
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_uses_only_declared_metrics(dashboard: dict[str, Any]) -> None:
    for where, expr in dashboard_exprs(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: selects no metric"
        assert names <= DECLARED, f"{where}: not declared in pipeline/metrics.py: {names - DECLARED}"


def test_dashboard_covers_the_pipeline(dashboard: dict[str, Any]) -> None:
    used = {name for _, expr in dashboard_exprs(dashboard) for name in metric_names(expr)}
    wanted = {
        "eventpipe_receiver_events_accepted_total",  # throughput by source
        "eventpipe_receiver_requests_total",  # requests by status
        "eventpipe_receiver_rejections_total",  # rejections by reason
        "eventpipe_consumer_events_total",  # consumer outcomes
        "eventpipe_receiver_request_duration_seconds_bucket",  # request latency
        "eventpipe_end_to_end_seconds_bucket",  # end-to-end latency
        "eventpipe_kafka_produce_duration_seconds_bucket",  # Kafka produce latency
        "eventpipe_consumer_lag_records",  # lag per partition
        "eventpipe_dead_letters_total",  # dead letters by reason
        "eventpipe_sink_write_duration_seconds_bucket",  # sink write latency
        "eventpipe_ready",  # readiness
    }
    assert wanted <= used, f"no panel for {wanted - used}"


@pytest.mark.parametrize(
    "bucket",
    ["eventpipe_receiver_request_duration_seconds_bucket", "eventpipe_end_to_end_seconds_bucket"],
)
def test_latency_panels_show_p50_p95_p99(dashboard: dict[str, Any], bucket: str) -> None:
    (panel,) = [
        p for p in graph_panels(dashboard) if any(bucket in metric_names(t["expr"]) for t in p["targets"])
    ]
    quantiles = {
        float(m.group(1))
        for t in panel["targets"]
        for m in re.finditer(r"histogram_quantile\(([\d.]+)", t["expr"])
    }
    assert quantiles == {0.5, 0.95, 0.99}
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


@pytest.mark.parametrize(
    ("metric", "by"),
    [
        pytest.param("eventpipe_receiver_events_accepted_total", "source", id="throughput"),
        pytest.param("eventpipe_receiver_requests_total", "status", id="requests"),
        pytest.param("eventpipe_receiver_rejections_total", "reason", id="rejections"),
        pytest.param("eventpipe_consumer_events_total", "outcome", id="outcomes"),
        pytest.param("eventpipe_consumer_lag_records", "partition", id="lag"),
        pytest.param("eventpipe_dead_letters_total", "reason", id="dead-letters"),
    ],
)
def test_breakdowns_group_by_their_label(dashboard: dict[str, Any], metric: str, by: str) -> None:
    grouped = [
        expr
        for _, expr in dashboard_exprs(dashboard)
        if metric in metric_names(expr) and re.search(rf"\bby \([^)]*\b{by}\b", expr)
    ]
    assert grouped, f"no panel shows {metric} by {by}"


def test_panels_use_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": "${" + variable["name"] + "}"}
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == reference, panel["title"]
        assert all(t["datasource"] == reference for t in panel["targets"]), panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_grafana_provisioning_matches_the_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (datasource,) = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    (provider,) = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/eventpipe.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    mounts = dict(reversed(v.split(":")[:2]) for v in compose["services"]["grafana"]["volumes"])
    assert (ROOT / mounts[provider["options"]["path"]] / dashboards.DASHBOARD.name) == dashboards.DASHBOARD


# -- the alerts ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_by_name(rules: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (rule,) = [r for r in rules if r.get("alert") == name]
    return rule


def test_every_alert_says_what_it_means_and_what_to_do(alert_rules: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in alert_rules]
    assert len(names) == len(set(names))
    for rule in alert_rules:
        assert rule["alert"].startswith("Eventpipe"), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        annotations = rule["annotations"]
        assert len(annotations["summary"]) >= 20, rule["alert"]
        assert len(annotations["description"]) >= 100, rule["alert"]


def test_alerts_use_only_declared_metrics(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= DECLARED | PROMETHEUS_SERIES, (
            f"{rule['alert']}: {names - DECLARED - PROMETHEUS_SERIES}"
        )


@pytest.mark.parametrize(
    ("concern", "pattern"),
    [
        pytest.param(
            "lag growing",
            r"eventpipe_consumer_lag_records.*deriv\(|deriv\(.*eventpipe_consumer_lag_records",
            id="lag",
        ),
        pytest.param(
            "receiver 5xx share", r'eventpipe_receiver_requests_total\{status=~"5\.\."\}', id="errors"
        ),
        pytest.param("not ready", r"eventpipe_ready\b.*== 0", id="ready"),
        pytest.param("target down", r"\bup\{.*\} == 0", id="up"),
        pytest.param("dead letters", r"rate\(eventpipe_dead_letters_total", id="dead-letters"),
        pytest.param("sink errors", r"rate\(eventpipe_sink_errors_total", id="sink"),
    ],
)
def test_alerts_cover(alert_rules: list[dict[str, Any]], concern: str, pattern: str) -> None:
    assert any(re.search(pattern, r["expr"], re.S) for r in alert_rules), f"no alert for {concern}"


# -- the scrape configs ----------------------------------------------------------------------------


def load_config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    return data


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def static_targets(job: dict[str, Any]) -> list[str]:
    return [t for group in job.get("static_configs", []) for t in group["targets"]]


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_configs_load_the_alert_rules(name: str) -> None:
    config = load_config(name)
    assert config["rule_files"] == ["alerts.yml"]
    assert all((PROMETHEUS_DIR / f).is_file() for f in config["rule_files"])


def test_compose_config_scrapes_every_consumer_replica() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    config = jobs(load_config("prometheus.yml"))
    (sd,) = config["eventpipe-consumer"]["dns_sd_configs"]
    assert sd["type"] == "A", "one A record per `--scale` replica"
    assert sd["names"] == ["consumer"] and "consumer" in services
    assert sd["port"] == int(services["consumer"]["environment"]["EVENTPIPE_METRICS_PORT"])
    (receiver,) = static_targets(config["eventpipe-receiver"])
    host, port = receiver.split(":")
    assert host in services
    assert int(port) == int(services["receiver"]["environment"]["EVENTPIPE_HTTP_PORT"])


def test_local_config_scrapes_what_eventpipe_dev_runs() -> None:
    config = load_config("prometheus.local.yml")
    assert config["global"]["scrape_interval"] == "2s"
    local = jobs(config)
    defaults = Settings()
    assert static_targets(local["eventpipe-receiver"]) == [f"127.0.0.1:{defaults.http_port}"]
    # `eventpipe dev` runs two consumers on the ports after EVENTPIPE_METRICS_PORT.
    consumers = [f"127.0.0.1:{defaults.metrics_port + n}" for n in (1, 2)]
    assert static_targets(local["eventpipe-consumer"]) == consumers == ["127.0.0.1:9401", "127.0.0.1:9402"]


def test_job_names_agree_with_the_alerts(alert_rules: list[dict[str, Any]]) -> None:
    compose_jobs = {j for j in jobs(load_config("prometheus.yml")) if j.startswith("eventpipe")}
    local_jobs = set(jobs(load_config("prometheus.local.yml")))
    assert compose_jobs == local_jobs == {"eventpipe-receiver", "eventpipe-consumer"}
    down = alert_by_name(alert_rules, "EventpipeTargetDown")["expr"]
    (pattern,) = re.findall(r'job=~"([^"]+)"', down)
    assert all(re.fullmatch(pattern, job) for job in local_jobs)


# -- promtool --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = "promtool is not installed: `apt-get install -y --no-install-recommends prometheus` (Debian) provides it"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_promtool(promtool: str, *args: str | Path) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_check_config(promtool: str, name: str) -> None:
    run_promtool(promtool, "check", "config", PROMETHEUS_DIR / name)


def test_promtool_check_rules(promtool: str, alert_rules: list[dict[str, Any]]) -> None:
    output = run_promtool(promtool, "check", "rules", ALERTS)
    assert f"{len(alert_rules)} rules found" in output


def test_dashboard_exprs_are_valid_promql(promtool: str, dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query as a recording rule: `promtool check rules` parses it with Prometheus' parser."""
    rules = [
        {"record": f"eventpipe:dashboard_query_{n}", "expr": expand_macros(expr)}
        for n, (_, expr) in enumerate(dashboard_exprs(dashboard))
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool(promtool, "check", "rules", path)
    assert f"{len(rules)} rules found" in output


# Label values for the synthetic series: 5xx statuses so the error panels have something to show.
SAMPLE_LABELS = {
    "source": "topsort",
    "route": "v2_events",
    "status": "503",
    "reason": "late",
    "outcome": "stored",
    "component": "consumer",
    "topic": "eventpipe.raw",
    "partition": "0",
    "sink": "postgresql",
    "kind": "assigned",
}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


def every_declared_series() -> list[dict[str, str]]:
    """One live series for each exposed name (buckets for each histogram), labelled with every label
    any eventpipe metric has: aggregations ignore the labels they do not group by."""
    labels = {**SAMPLE_LABELS, "job": "eventpipe-consumer", "instance": "c1:9400"}
    result = []
    for name in sorted(DECLARED):
        if name.endswith("_bucket"):
            for le, per_minute in (("0.1", 30), ("1", 60), ("+Inf", 60)):
                result.append(series(name, f"0+{per_minute}x40", le=le, **labels))
        elif name.endswith(("_total", "_sum", "_count")):
            result.append(series(name, "0+60x40", **labels))
        else:
            result.append(series(name, "1x40", **labels))
    return result


def run_rule_tests(promtool: str, tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    path = tmp_path / "tests.yml"
    path.write_text(
        yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests})
    )
    run_promtool(promtool, "test", "rules", path)


def test_every_dashboard_panel_shows_numbers(
    promtool: str, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    """With every metric live, every query returns at least one sample that is a number (`x == x` drops
    NaN, which is what a quantile over an empty or mislabelled histogram gives)."""
    checks = [
        {
            "expr": f"count(({expand_macros(expr)}) == ({expand_macros(expr)})) > bool 0",
            "eval_time": "30m",
            "exp_samples": [{"labels": "{}", "value": 1}],
        }
        for _, expr in dashboard_exprs(dashboard)
    ]
    run_rule_tests(
        promtool,
        tmp_path,
        [{"interval": "1m", "input_series": every_declared_series(), "promql_expr_test": checks}],
    )


RECEIVER = {"job": "eventpipe-receiver", "instance": "receiver:8080"}
CONSUMER = {"job": "eventpipe-consumer", "instance": "consumer-1:9400"}
REQUEST = {"source": "topsort", "route": "v2_events"}
LAG = {"topic": "eventpipe.raw", "partition": "0"}
DURATION = "eventpipe_receiver_request_duration_seconds_bucket"
E2E = "eventpipe_end_to_end_seconds_bucket"
EVENTS = "eventpipe_consumer_events_total"


def healthy_series() -> list[dict[str, str]]:
    return [
        series("up", "1x40", **RECEIVER),
        series("up", "1x40", **CONSUMER),
        series("eventpipe_ready", "1x40", component="receiver", **RECEIVER),
        series("eventpipe_ready", "1x40", component="consumer", **CONSUMER),
        series("eventpipe_receiver_requests_total", "0+600x40", status="204", **REQUEST, **RECEIVER),
        series("eventpipe_receiver_requests_total", "0x40", status="503", **REQUEST, **RECEIVER),
        series(DURATION, "0+600x40", le="0.05", source="topsort", **RECEIVER),
        series(DURATION, "0+600x40", le="+Inf", source="topsort", **RECEIVER),
        series("eventpipe_consumer_lag_records", "100x40", **LAG, **CONSUMER),
        series(EVENTS, "0+6000x40", source="topsort", outcome="stored", **CONSUMER),
        series("eventpipe_dead_letters_total", "0+1x40", source="topsort", reason="late", **CONSUMER),
        series("eventpipe_sink_errors_total", "0x40", sink="postgresql", **CONSUMER),
        series(E2E, "0+6000x40", le="1", source="topsort", **CONSUMER),
        series(E2E, "0+6000x40", le="+Inf", source="topsort", **CONSUMER),
    ]


def trouble_series() -> list[dict[str, str]]:
    """Everything wrong at once: 1 in 6 requests 503, slow replies, a lag growing past 10,000, a failing
    sink, a tenth of events dead-lettered, a consumer that is down and not ready, stale storage."""
    return [
        series("up", "1x40", **RECEIVER),
        series("up", "0x40", **CONSUMER),
        series("eventpipe_ready", "1x40", component="receiver", **RECEIVER),
        series("eventpipe_ready", "0x40", component="consumer", **CONSUMER),
        series("eventpipe_receiver_requests_total", "0+300x40", status="204", **REQUEST, **RECEIVER),
        series("eventpipe_receiver_requests_total", "0+60x40", status="503", **REQUEST, **RECEIVER),
        series(DURATION, "0+10x40", le="1", source="topsort", **RECEIVER),
        series(DURATION, "0+360x40", le="2.5", source="topsort", **RECEIVER),
        series(DURATION, "0+360x40", le="+Inf", source="topsort", **RECEIVER),
        series("eventpipe_consumer_lag_records", "20000+500x40", **LAG, **CONSUMER),
        series("eventpipe_sink_errors_total", "0+5x40", sink="postgresql", **CONSUMER),
        series(EVENTS, "0+6000x40", source="dfinery", outcome="stored", **CONSUMER),
        series("eventpipe_dead_letters_total", "0+600x40", source="dfinery", reason="late", **CONSUMER),
        series(E2E, "0+10x40", le="60", source="dfinery", **CONSUMER),
        series(E2E, "0+100x40", le="300", source="dfinery", **CONSUMER),
        series(E2E, "0+100x40", le="+Inf", source="dfinery", **CONSUMER),
    ]


def test_alert_expressions_fire_on_trouble(
    promtool: str, alert_rules: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Each alert's condition holds, for exactly one series, on the trouble scenario."""
    checks = [
        {"expr": f"count({rule['expr']})", "eval_time": "30m", "exp_samples": [{"labels": "{}", "value": 1}]}
        for rule in alert_rules
    ]
    run_rule_tests(
        promtool, tmp_path, [{"interval": "1m", "input_series": trouble_series(), "promql_expr_test": checks}]
    )


def test_no_alert_fires_on_a_healthy_pipeline(
    promtool: str, alert_rules: list[dict[str, Any]], tmp_path: Path
) -> None:
    checks = [{"eval_time": "40m", "alertname": rule["alert"], "exp_alerts": []} for rule in alert_rules]
    run_rule_tests(
        promtool, tmp_path, [{"interval": "1m", "input_series": healthy_series(), "alert_rule_test": checks}]
    )
