"""The provisioned Grafana dashboard as tests read it: its panels, their PromQL, and Grafana's interval
macros expanded to what a given scrape setup needs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventpipe.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title + refId, expr) of every target."""
    return [(f"{p['title']} {t['refId']}", t["expr"]) for p in graph_panels(dashboard) for t in p["targets"]]


def expand_macros(expr: str, macros: Mapping[str, str]) -> str:
    for macro, value in macros.items():
        expr = expr.replace(macro, value)
    assert "$" not in expr, f"an unexpanded Grafana variable: {expr}"
    return expr
