"""The embedded MLflow server refuses model versions from sources airloop's training never writes (issue 14).

The server is started with exactly the command and environment ``airloop up`` gives it (its own store here);
a version whose source is a folder elsewhere is refused at registration, a logged model is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.e2e.helpers import mlflow_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.delenv("AIRLOOP_MLFLOW_ARTIFACT_ROOT", raising=False)
        yield url


def test_the_server_refuses_a_foreign_source_and_accepts_airloops(server, tmp_path: Path):
    import mlflow
    from mlflow.exceptions import MlflowException
    from sklearn.linear_model import LinearRegression

    from airloop.adapters import registry

    c = registry.client()
    experiment_id = registry.ensure_experiment("validated")
    registry.ensure_registered_model("validated", "", "tests")
    with mlflow.start_run(experiment_id=experiment_id, tags={"airloop.model": "validated"}) as run:
        fitted = LinearRegression().fit(np.array([[1.0], [2.0], [3.0]]), [1.0, 2.0, 3.0])
        info = mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle")

    # Without the setting MLflow registers these (it checks a source against a run only when one is given).
    for source in ("s3://someone-elses-bucket/model", (tmp_path / "elsewhere").as_uri()):
        with pytest.raises(MlflowException, match="Invalid model version source"):
            c.create_model_version("validated", source)

    mv = mlflow.register_model(info.model_uri, "validated", tags={"airloop.run_id": run.info.run_id})
    loaded = registry.load_version("validated", str(mv.version))  # the trust check passes through a server too
    assert loaded.predict(np.array([[4.0]]))[0] == pytest.approx(4.0)


def test_a_missing_version_is_named_without_the_tracking_uris_password(server, monkeypatch: pytest.MonkeyPatch):
    """The one error path that names the tracking URI (issue 14, item 7): the password is masked."""
    from airloop.adapters import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.replace("http://", "http://airloop:s3ntinel-Pw@"))
    registry.ensure_registered_model("named", "", "tests")
    with pytest.raises(registry.RegistryProblem) as caught:
        registry.load_version("named", "999")
    assert "airloop:***@127.0.0.1" in str(caught.value) and "s3ntinel-Pw" not in str(caught.value)
