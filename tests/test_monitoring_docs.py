"""docs/prometheus/alerts.yml and the Grafana dashboard: valid for promtool, and only about metrics we expose.

promtool comes from Debian's `prometheus` package (.ci/run installs it when missing); without it
this test fails and says so, it never skips.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OTHER_SECRET
from tests.helpers import run_worker

DOCS = Path(__file__).resolve().parent.parent / "docs"
RULES = DOCS / "prometheus" / "alerts.yml"
RULE_TESTS = DOCS / "prometheus" / "alerts_test.yml"
DASHBOARD = DOCS / "grafana" / "stripe-webhook-dashboard.json"
#: Series Prometheus makes itself rather than scraping them from us.
PROMETHEUS_OWN = {"up"}
_NAME = re.compile(r"\b(stripe_webhook_[a-z0-9_]+|up)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does this)")
    return found


@pytest.mark.parametrize(
    "args", [("check", "rules", RULES), ("test", "rules", RULE_TESTS)], ids=["check", "test"]
)
def test_promtool_accepts_the_rules_and_their_unit_tests(args):
    result = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape can carry: samples, and each family's suffixes even when it has none."""
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_rules_and_dashboard_use_only_metrics_that_metrics_exposes(app, client, stripe, fixture_events):
    stripe.post(fixture_events[0], secret=OTHER_SECRET)  # one of each kind of figure, for good measure
    for event in fixture_events:
        stripe.post(event)
    run_worker(app)
    exposed = exposed_names(client.get("/metrics").get_data(as_text=True)) | PROMETHEUS_OWN
    used = {name for expr in rule_expressions() + dashboard_expressions() for name in _NAME.findall(expr)}
    assert len(used) > 10, used
    assert used <= exposed, sorted(used - exposed)


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "prometheus" and panel["targets"], panel["title"]
