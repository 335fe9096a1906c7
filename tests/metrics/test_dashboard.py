"""The Grafana dashboard in docs/ only queries metrics omsync exports, and is importable JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omsync import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def exported_sample_names() -> set[str]:
    names: set[str] = set()
    for family in [*metrics.REGISTRY.collect(), *metrics.ProcessGauges().collect()]:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return found


def test_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_sample_names()
    exprs = expressions(dashboard)
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in re.findall(r"\b((?:omsync|process)_[a-z0-9_]+)\b", expr)}
    assert used, "the dashboard queries no omsync metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    wanted = {"omsync_events_accepted_total", "omsync_task_keys_pending", "omsync_task_keys_inflight",
              "omsync_outcomes_total", "omsync_copied_bytes_total", "omsync_event_to_outcome_seconds_bucket",
              "omsync_retries_total", "omsync_throttled_total", "omsync_worker_utilization_ratio",
              "omsync_store_request_duration_seconds_bucket", "omsync_store_request_errors_total"}
    assert wanted <= used, f"no panel for {sorted(wanted - used)}"


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] == "omsync"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            for target in panel["targets"]:
                # Balanced brackets: a typo in an expression would only show in Grafana.
                expr = target["expr"]
                for opening, closing in ("()", "{}", "[]"):
                    assert expr.count(opening) == expr.count(closing), expr
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance", "task"}
