"""The alert rules and the dashboard in ops/, read for the tests: the PromQL
of each, and the metric names they use."""
from __future__ import annotations

import json
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(REPO, "ops", "prometheus", "alerts.yml")
DASHBOARD = os.path.join(REPO, "ops", "grafana", "capture.json")


def dashboard_exprs() -> list[str]:
    with open(DASHBOARD) as f:
        dash = json.load(f)
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    with open(RULES) as f:
        text = f.read()
    # every expr: one line, or a block scalar (indented lines after "expr: |")
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(1).strip() != "|":
            out.append(m.group(1))
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt.strip())
        out.append(" ".join(block).strip())
    return out


def metric_names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\bcapture_[a-z0-9_]+", e)}


def dashboard_and_rule_metrics() -> set[str]:
    """Every metric (as exported: ``_total``, ``_bucket``...) either names."""
    return metric_names(rule_exprs()) | metric_names(dashboard_exprs())
