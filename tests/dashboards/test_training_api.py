"""The Training page's learner section: throughput and loss curves read back from MLflow.

The integration tests write a learner run (and a newer registry publish run that must be skipped) to
the real MLflow server of the test stack; the others cover MLflow being absent or dead and the series
helpers.
"""

from __future__ import annotations

import re

import pytest

from dashboards.charts import series_svg
from dashboards.training_metrics import LearnerMetrics, derive_throughput, thin
from fleet.stack.process import free_port
from tests.dashboards.conftest import Dash
from tests.dashboards.factories import add_learner_run

pytestmark = pytest.mark.timeout(120)

LOSSES = [0.9, 0.6, 0.4, 0.35]
RATES = [12.0, 14.0, 13.5, 15.0]


@pytest.fixture()
def learner_run(mlflow_uri: str) -> str:
    """A learner run with four log points, then a newer publish run in the same experiment."""
    return add_learner_run(mlflow_uri, losses=LOSSES, rates=RATES)


@pytest.mark.integration
def test_api_serves_the_newest_learner_runs_series(dash: Dash, mlflow_uri: str, learner_run: str) -> None:
    dash.services.learner_metrics = LearnerMetrics(mlflow_uri)
    r = dash.client.get("/api/v1/training", headers=dash.auth("viewer"))
    assert r.status_code == 200, r.text
    learner = r.json()["learner"]
    assert learner["error"] is None and learner["run_id"] == learner_run  # the newer publish run is skipped
    assert learner["runs"][0]["run_id"] == learner_run and learner["runs"][0]["updates_per_s"] == RATES[-1]
    assert [p["value"] for p in learner["losses"]["losses/action"]] == LOSSES
    assert [p["step"] for p in learner["losses"]["losses/action"]] == [10, 20, 30, 40]
    assert set(learner["losses"]) == {"losses/action", "losses/total"}  # other charts/… metrics: not sent
    assert [p["value"] for p in learner["throughput"]["charts/updates_per_s"]] == RATES
    assert [p["value"] for p in learner["throughput"]["charts/samples_per_s"]] == [v * 32 for v in RATES]
    assert learner["derived"] is False
    assert dash.client.get("/api/v1/training").status_code == 401


@pytest.mark.integration
def test_page_draws_the_curves_as_inline_svg(dash: Dash, mlflow_uri: str, learner_run: str) -> None:
    dash.services.learner_metrics = LearnerMetrics(mlflow_uri)
    html = dash.login("viewer").get("/training").text
    assert f'data-run="{learner_run}"' in html
    for title in ("charts/updates_per_s", "charts/samples_per_s", "losses/action", "losses/total"):
        chart = re.search(rf'<svg[^>]*data-title="{re.escape(title)}".*?</svg>', html, re.S)
        assert chart is not None, title
        assert "<polyline" in chart.group(0), title
    assert '<script src="http' not in html and "cdn" not in html.lower()


def test_dead_mlflow_gives_an_empty_section_with_a_message(dash: Dash) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    dash.services.learner_metrics = LearnerMetrics(dead, probe_timeout_s=1.0)
    r = dash.client.get("/api/v1/training", headers=dash.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["learner"]["losses"] == {} and body["learner"]["throughput"] == {}
    assert dead in body["learner"]["error"] and "fleet up" in body["learner"]["error"]
    assert "no Kafka configured" in body["lag_error"] and body["lag"] == []
    html = dash.login("viewer").get("/training")
    assert html.status_code == 200 and dead in html.text and 'id="learner-error"' in html.text


def test_no_mlflow_configured_says_so(dash: Dash) -> None:
    assert dash.services.learner_metrics is None  # connect=False builds no real clients
    learner = dash.client.get("/api/v1/training", headers=dash.auth("viewer")).json()["learner"]
    assert learner["run_id"] is None and "no MLflow configured" in learner["error"]


def test_throughput_derived_from_log_points_when_the_run_has_none() -> None:
    log = ((10, 100.0), (20, 102.0), (30, 102.0), (40, 107.0))
    points = [{"step": s, "timestamp": t, "value": 1.0} for s, t in log]
    batch = [{"step": s, "timestamp": 0.0, "value": 16.0} for s in (20, 40)]
    rates = derive_throughput(points, batch)
    assert [(p["step"], p["value"]) for p in rates["charts/updates_per_s"]] == [(20, 5.0), (40, 2.0)]
    assert [p["value"] for p in rates["charts/samples_per_s"]] == [80.0, 32.0]


def test_thin_keeps_the_ends_and_at_most_max_points() -> None:
    points = [{"step": i, "timestamp": 0.0, "value": float(i)} for i in range(1000)]
    kept = thin(points, 50)
    assert len(kept) <= 50 and kept[0]["step"] == 0 and kept[-1]["step"] == 999


def test_series_svg_empty_and_escaped() -> None:
    assert "no data yet" in series_svg({"losses/action": []}, title="losses/action")
    svg = series_svg({"<b>": [(0, 1.0), (10, 0.5)]}, title="a<b")
    assert "<b>" not in svg and "<polyline" in svg
