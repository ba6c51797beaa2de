"""A tracking URI's ``user:password@`` never reaches a link, a description, the view or a log (issue 14, item 7)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airloop.core.urls import mask_url, public_url

SENTINEL = "s3ntinel-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://airloop:{SENTINEL}@mlflow:5000", "http://mlflow:5000"),
        (f"https://{SENTINEL}@mlflow.example.com/#/models/m", "https://mlflow.example.com/#/models/m"),
        (f"http://u:{SENTINEL}@[::1]:5000/x?y=1", "http://[::1]:5000/x?y=1"),
        ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
        (f"http://u:{SENTINEL}@host:notaport/", "<unparsable URL>"),
    ],
)
def test_links_drop_the_userinfo_and_keep_the_rest(url: str, shown: str) -> None:
    assert public_url(url) == shown


def test_log_form_keeps_the_user_only() -> None:
    assert mask_url(f"http://airloop:{SENTINEL}@mlflow:5000/") == "http://airloop:***@mlflow:5000/"


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_URI", "AIRLOOP_MLFLOW_UI_URL"])
def test_mlflow_links_carry_no_credentials(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_url and version_url go to XCom, the gate's markdown and the version's description; ui_base to the view."""
    from airloop.adapters import registry

    monkeypatch.setenv(variable, f"http://airloop:{SENTINEL}@127.0.0.1:5999/")
    assert registry.ui_base() == "http://127.0.0.1:5999"
    for url in (registry.run_url("1", "abc"), registry.version_url("m", "3")):
        assert url is not None and SENTINEL not in url and url.startswith("http://127.0.0.1:5999/#/")


def test_the_gate_markdown_links_the_version_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from airloop.adapters import registry
    from airloop.stages.promote import steps

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://airloop:{SENTINEL}@127.0.0.1:5999")
    markdown = steps.gate_markdown(
        action="promote",
        model="m",
        candidate="3",
        holdout="2011-01-01 to 2011-02-01",
        rows=10,
        reason="test",
        verdict_markdown="",
        notes=[],
        version_url=registry.version_url("m", "3"),
    )
    assert "http://127.0.0.1:5999/#/models/m/versions/3" in markdown and SENTINEL not in markdown


def test_a_database_is_described_without_password_or_extras(tmp_path) -> None:
    """A connection's extras become URL query arguments (SQLite's hook, Postgres' sslpassword...): never logged."""
    import sqlalchemy as sa

    from airloop.adapters.db import describe

    sqlite = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}?secret_token={SENTINEL}")
    # Only its URL is read: no driver is needed for that.
    postgres = SimpleNamespace(
        url=sa.engine.make_url(f"postgresql+psycopg2://airloop:{SENTINEL}@db:5432/warehouse?sslpassword={SENTINEL}")
    )
    assert describe(sqlite) == f"sqlite:///{tmp_path / 'w.db'}"
    assert describe(postgres) == "postgresql+psycopg2://airloop:***@db:5432/warehouse"
