"""The airloop view's data and HTML, without a server: the drift chart, report addresses, the page itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airloop.core import numbers, urls
from airloop.ui import board as view

START = datetime(2012, 1, 1, tzinfo=UTC)
DAGS = {stage: f"bikes_{stage}" for stage in ("ingest", "train", "promote", "score", "monitor")}


def _window(i: int, share: float, drifted: bool, report: str = "") -> dict:
    end = START + timedelta(days=28 * (i + 1))
    return {
        "window_start": end - timedelta(days=28),
        "window_end": end,
        "champion_version": "2",
        "drift_share": share,
        "drifted": drifted,
        "drifted_columns": ["temp"] if drifted else [],
        "degradation": 0.5 if drifted else None,
        "performance_metric": "mae",
        "labelled_rows": 600 if drifted else 0,
        "report_path": report,
    }


def test_report_url_only_for_files_under_the_reports_folder(tmp_path: Path) -> None:
    inside = tmp_path / "bikes" / "drift" / "2012-01-29_v2" / "report.html"
    assert urls.report_url(str(inside), tmp_path) == "/airloop/reports/bikes/drift/2012-01-29_v2/report.html"
    assert urls.report_url(str(tmp_path.parent / "elsewhere.html"), tmp_path) is None
    assert urls.report_url(str(tmp_path / ".." / "x.html"), tmp_path) is None
    assert urls.report_url(None, tmp_path) is None
    spaced = tmp_path / "bikes" / "a b#c.html"
    assert urls.report_url(str(spaced), tmp_path) == "/airloop/reports/bikes/a%20b%23c.html"


def test_drift_chart_draws_each_window_with_its_state_and_report(tmp_path: Path) -> None:
    report = tmp_path / "bikes" / "drift" / "r.html"
    windows = [_window(0, 0.0, False), _window(1, 0.2, False), _window(2, 0.6, True, str(report))]
    svg = view.drift_chart(windows, threshold=0.1, reports_root=tmp_path)
    assert svg.startswith('<svg id="drift-chart"') and svg.endswith("</svg>")
    assert svg.count("<circle") == 3 and svg.count('class="window drifted"') == 1
    assert svg.count('<a href="/airloop/reports/bikes/drift/r.html"') == 1  # only the window with a report
    assert "drifted temp" in svg and "mae worse by 50% than at training" in svg
    # Higher drift share is drawn higher (smaller y); the threshold line sits between 0 and 0.2.
    ys = [float(part.split('"')[0]) for part in svg.split('cy="')[1:]]
    assert ys[0] > ys[1] > ys[2]
    threshold_y = float(svg.split('class="threshold"')[1].split('y1="')[1].split('"')[0])
    assert ys[1] < threshold_y < ys[0]


def test_drift_chart_of_nothing_is_empty_and_of_one_window_is_centred(tmp_path: Path) -> None:
    assert view.drift_chart([], threshold=0.1, reports_root=tmp_path) == ""
    svg = view.drift_chart([_window(0, 0.3, True)], threshold=0.1, reports_root=tmp_path, width=400)
    assert 'cx="204.0"' in svg  # left margin 48 + half of the 312-pixel plot


def test_tooltip_text_is_escaped(tmp_path: Path) -> None:
    evil = _window(0, 0.5, True)
    evil["drifted_columns"] = ["<img src=x onerror=alert(1)>"]
    svg = view.drift_chart([evil], threshold=0.1, reports_root=tmp_path)
    assert "<img" not in svg and "&lt;img" in svg


def test_page_without_anything_says_what_to_run(tmp_path: Path) -> None:
    board = view.Board(model="bikes", description="d", owner="o", dag_ids=DAGS, drift_share_threshold=0.1)
    board.problems.append("MLflow registry not readable (ConnectionError: refused); check `airloop status`.")
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="http://ui", models=["bikes"], user="steward")
    assert "No @champion yet" in html and "Trigger <code>bikes_train</code>" in html
    assert "run <code>bikes_ingest</code>" in html and "<code>bikes_monitor</code> has not run" in html
    assert "Nothing waits for an answer." in html and "signed in as steward" in html
    assert 'class="problem">MLflow registry not readable' in html
    assert 'href="http://ui/dags/bikes_train"' in html


def test_page_lists_pending_approvals_with_a_link_to_answer(tmp_path: Path) -> None:
    ask = view.Approval("bikes_train", "manual__1", "approve", "Promote bikes v3?", START, "http://ui/answer")
    board = view.Board(model="bikes", description="d", owner="o", dag_ids=DAGS, approvals=[ask])
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="", models=["bikes"], user="op")
    assert "Promote bikes v3?" in html and 'href="http://ui/answer"' in html and "manual__1" in html


def test_answer_link_only_for_users_the_auth_manager_lets_answer(tmp_path: Path) -> None:
    ask = view.Approval("bikes_train", "manual__1", "approve", "Promote bikes v3?", START, "http://ui/answer")
    board = view.Board(model="bikes", description="d", owner="o", dag_ids=DAGS, approvals=[ask])
    board.can_answer_approvals = False
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="", models=["bikes"], user="viewer")
    assert "Promote bikes v3?" in html and 'href="http://ui/answer"' not in html and "may not answer" in html
    assert board.to_dict()["can_answer_approvals"] is False
    board.can_answer_approvals = True
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="", models=["bikes"], user="ml")
    assert 'href="http://ui/answer"' in html


def test_board_json_is_plain_data() -> None:
    board = view.Board(model="bikes", description="d", owner="o", dag_ids={}, drift=[_window(0, 0.1, False)])
    data = board.to_dict()
    assert data["drift"][0]["window_end"] == "2012-01-29T00:00:00+00:00"
    assert data["champion"] is None


def test_numbers_are_shown_for_people() -> None:
    shown = view._environment().filters["num"]
    assert shown(None) == "–" and shown(float("nan")) == "NaN"
    assert shown(1234.5) == "1,234" and shown(0.61234) == "0.612" and shown(672.0) == "672"
    assert shown(999.7) == "1,000" and shown(1234) == "1,234", "ints and floats alike, never 1e+03"
    for value in (1234.5, 0.61234, 672.0, 999.7, 1e20, float("inf")):
        assert shown(value) == numbers.num(value), "the view shows a metric as the verdict does"


def test_link_addresses_carry_the_run_encoded() -> None:
    url = urls.link_url(urls.VALIDATION, "bikes_ingest", "scheduled__2011-03-01T00:00:00+00:00")
    assert url == "/airloop/go/validation?dag_id=bikes_ingest&run_id=scheduled__2011-03-01T00%3A00%3A00%2B00%3A00"


def test_degradation_is_labelled_with_the_windows_metric_in_its_direction(tmp_path: Path) -> None:
    """A classifier's window says its own metric (not MAE), and "worse" follows the metric's direction: the monitor
    stores degradation as the relative worsening, so a roc_auc that fell is a positive degradation."""
    fell = {**_window(0, 0.6, True), "performance_metric": "roc_auc", "degradation": 0.12, "degraded": False}
    rose = {**_window(1, 0.1, False), "performance_metric": "log_loss", "degradation": -0.03, "labelled_rows": 300}
    unjudged = {**_window(2, 0.1, False), "performance_metric": "roc_auc", "labelled_rows": 40}
    assert view.degradation_text(fell) == "roc_auc worse by 12%"
    assert view.degradation_text(rose) == "log_loss better by 3%"
    assert view.degradation_text(unjudged) == "not judged"  # labels, but no figure (one class, NaN)
    assert view.degradation_text(_window(3, 0.1, False)) == "no labels"
    svg = view.drift_chart([fell, rose, unjudged], threshold=0.5, reports_root=tmp_path)
    assert "roc_auc worse by 12% than at training" in svg and "log_loss better by 3%" in svg and "MAE" not in svg
    board = view.Board(model="strikes", description="d", owner="o", dag_ids=DAGS, drift=[fell, rose, unjudged])
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="", models=["strikes"], user="op")
    table = html.split('<table id="drift">')[1].split("</table>")[0]
    assert "performance vs training" in table and "MAE" not in table
    assert "roc_auc worse by 12%" in table and "log_loss better by 3%" in table and "not judged" in table


def _scored(**output: object) -> dict:
    base = {"partition": "2012-01-01", "ts": START, "row_key": "17", "model_version": "3", "mlflow_run_id": "abc"}
    nothing = {"prediction": None, "predicted_class": None, "probability": None, "probabilities": None}
    return {**base, **nothing, **output}


def test_predictions_show_a_value_or_a_class_with_its_probability(tmp_path: Path) -> None:
    value = _scored(prediction=123.456)
    binary = _scored(predicted_class="yes", probability=0.8123, row_key='["2012-01-01T00:00:00Z",17]')
    multi = _scored(predicted_class="gull", probability=0.61, probabilities='{"gull": 0.61, "hawk": 0.39}')
    assert view.prediction_text(value) == "123"
    assert view.prediction_text(binary) == "yes (P(positive) 0.812)"
    assert view.prediction_text(multi) == "gull (P(class) 0.61)"
    board = view.Board(model="strikes", description="d", owner="o", dag_ids=DAGS, predictions=[binary, multi])
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="", models=["strikes"], user="op")
    table = html.split('<table id="predictions">')[1].split("</table>")[0]
    assert "yes (P(positive) 0.812)" in table and "gull (P(class) 0.61)" in table and "v3" in table
    assert "[&#34;2012-01-01T00:00:00Z&#34;,17]" in table, "the row key, escaped"
    empty = view.render_board(
        view.Board(model="m", description="d", owner="o", dag_ids=DAGS),
        reports_root=tmp_path,
        airflow_ui="",
        models=["m"],
        user="op",
    )
    assert "Nothing scored yet: <code>bikes_score</code>" in empty


def test_windows_show_realized_per_version_the_estimate_and_the_estimate_errors(tmp_path: Path) -> None:
    """Realized figures per version from outcomes (one with too few labels), the champion's CBPE estimate or why it
    was not estimated, and each estimate against what its rows realized once labelled."""
    realized = {
        "2": {"rows": 640, "min_rows": 100, "scores": {"accuracy": 0.74, "roc_auc": 0.81}},
        "3": {"rows": 40, "min_rows": 100, "scores": {"accuracy": 0.7, "roc_auc": 0.77}},
    }
    few = {"kind": "realized", "rows": 40, "min_rows": 100}
    estimated = {"2": {"status": "estimated", "ece": 0.012, "performance": {"rows": 300, "scores": {"roc_auc": 0.8}}}}
    refused = {"2": {"status": "not estimated", "reason": "not estimated: calibration poor, ECE 0.2 > 0.05"}}
    judged = {**_window(0, 0.1, False), "performance_metric": "roc_auc", "labelled_rows": 680, "degradation": 0.01}
    judged |= {"realized": realized, "estimated_performance": estimated}
    unjudged = {**_window(1, 0.1, False), "performance_metric": "roc_auc", "labelled_rows": 40, "performance": few}
    unjudged |= {"realized": {"2": realized["3"] | {"rows": 40}}, "estimated_performance": refused}
    assert view.realized_text(judged) == "v2: roc_auc 0.81 (640 labels); v3: roc_auc 0.77 (40 labels too few to judge)"
    assert view.estimated_text(judged) == "roc_auc 0.8 (300 rows, ECE 0.012)"
    assert view.estimated_text(unjudged) == "not estimated: calibration poor, ECE 0.2 > 0.05"
    assert view.degradation_text(unjudged) == "not judged: 40 labels, fewer than 100"
    error = {
        "window_start": START,
        "window_end": START + timedelta(days=28),
        "model_version": "2",
        "metric": "roc_auc",
        "estimated": 0.8,
        "realized": 0.78,
        "error": 0.02,
        "labelled_rows": 290,
        "estimated_rows": 300,
    }
    board = view.Board(
        model="strikes", description="d", owner="o", dag_ids=DAGS, drift=[judged, unjudged], estimate_errors=[error]
    )
    html = view.render_board(board, reports_root=tmp_path, airflow_ui="", models=["strikes"], user="op")
    table = html.split('<table id="drift">')[1].split("</table>")[0]
    assert "realized (outcomes, per version)" in table and "estimated (no labels yet)" in table
    assert "v3: roc_auc 0.77 (40 labels too few to judge)" in table and "roc_auc 0.8 (300 rows, ECE 0.012)" in table
    assert "calibration poor, ECE 0.2 &gt; 0.05" in table
    errors = html.split('<table id="estimate-errors">')[1].split("</table>")[0]
    assert "<td>0.8</td><td>0.78</td><td>0.02</td><td>290 of 300</td>" in errors
    assert board.to_dict()["estimate_errors"][0]["metric"] == "roc_auc"
