"""The observability files agree with the code: the metric table of docs/observability.md is the exporter's, and
the Grafana dashboard queries only metrics that exist (the exporter's, or Airflow's as the StatsD mapping names them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from airloop.ui import metrics_export as mx

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "airloop.json"
MAPPING = ROOT / "docker" / "statsd-exporter" / "mapping.yml"
#: A metric name in PromQL: airloop's or Airflow's (label values and functions do not start like this).
_NAME = re.compile(r"\b(?:airloop|airflow)_[a-z0-9_]*[a-z0-9]\b")
#: What a histogram observer adds to its name.
_HISTOGRAM = ("_bucket", "_sum", "_count")


def test_the_docs_table_is_the_exporters() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    assert mx.markdown_table() in page, "docs/observability.md's table is out of date: paste mx.markdown_table()"
    documented = re.findall(r"^\| `(airloop_[a-z_]+)` \|", page, flags=re.M)
    assert documented == [d.name for d in mx.METRICS]


def exprs(dashboard: dict) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["query"]["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return found


def statsd_names() -> set[str]:
    """Every Prometheus name the StatsD mapping produces (a histogram observer's with its suffixes)."""
    mapping = yaml.safe_load(MAPPING.read_text())
    default_observer = mapping.get("defaults", {}).get("observer_type", "summary")
    names: set[str] = set()
    for m in mapping["mappings"]:
        names.add(m["name"])
        if m.get("match_metric_type") == "observer" and m.get("observer_type", default_observer) == "histogram":
            names |= {m["name"] + suffix for suffix in _HISTOGRAM}
    return names


def test_every_metric_the_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for expr in exprs(dashboard) for name in _NAME.findall(expr)}
    assert {n for n in queried if n.startswith("airloop_")} and {n for n in queried if n.startswith("airflow_")}
    known = set(mx.BY_NAME) | statsd_names()
    assert sorted(queried - known) == [], "the dashboard queries metrics nothing exports"
    # Every airloop metric is on the dashboard (source_up included): a new metric gets a panel.
    assert sorted(set(mx.BY_NAME) - queried) == []


def test_the_check_catches_an_unknown_name() -> None:
    bad = {"panels": [{"targets": [{"expr": 'rate(airloop_promotion_total{model="$model"}[1d])'}]}],
           "templating": {"list": []}}  # fmt: skip
    queried = {name for expr in exprs(bad) for name in _NAME.findall(expr)}
    assert queried == {"airloop_promotion_total"} and not queried <= set(mx.BY_NAME)
