"""Where MLflow artifacts go and which MLflow address people are sent to, per deployment."""

from __future__ import annotations

import pytest

from airloop.adapters import registry as tracking


def test_a_tracking_server_chooses_the_artifact_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOOP_MLFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking.artifact_location("bikes") is None  # mlflow-artifacts:/<id>: what its basic-auth can check
    monkeypatch.setenv("AIRLOOP_MLFLOW_ARTIFACT_ROOT", "s3://artifacts/mlflow/")
    assert tracking.artifact_location("bikes") == "s3://artifacts/mlflow/bikes"


def test_a_local_store_keeps_artifacts_under_airloop_home(monkeypatch: pytest.MonkeyPatch, home) -> None:
    monkeypatch.delenv("AIRLOOP_MLFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    location = tracking.artifact_location("bikes")
    assert location == (home / "mlflow" / "artifacts" / "bikes").as_uri()


def test_links_go_to_the_public_mlflow_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000/")
    monkeypatch.delenv("AIRLOOP_MLFLOW_UI_URL", raising=False)
    assert tracking.ui_base() == "http://mlflow:5000"
    monkeypatch.setenv("AIRLOOP_MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert tracking.ui_base() == "https://mlflow.example.com"
    assert tracking.run_url("3", "abc") == "https://mlflow.example.com/#/experiments/3/runs/abc"
    monkeypatch.delenv("AIRLOOP_MLFLOW_UI_URL")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.ui_base() is None  # a local store has no web UI to link to
