"""Addresses of the airloop view, shared by the extra links (orchestration) and the view itself (ui).

The view's FastAPI app is mounted on the api-server at :data:`MOUNT`; an extra link is an address in it
(``/airloop/go/<kind>?dag_id=&run_id=``) that the view resolves when clicked. Pure and light.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

#: Where the FastAPI app is mounted on the api-server, and the UI route of the embedded page.
MOUNT = "/airloop"
UI_ROUTE = "airloop"

MLFLOW_RUN = "mlflow-run"
VALIDATION = "validation"
DRIFT = "drift-report"
TRAINING_RUN = "training-run"
KINDS = (MLFLOW_RUN, VALIDATION, DRIFT, TRAINING_RUN)
#: The stages whose DAGs carry links.
STAGES = ("ingest", "train", "monitor")


def link_url(kind: str, dag_id: str, run_id: str) -> str:
    """The view address of one link (relative to the api-server, like the UI's own links)."""
    return f"{MOUNT}/go/{kind}?{urlencode({'dag_id': dag_id, 'run_id': run_id})}"


def report_url(path: str | None, reports_root: Path) -> str | None:
    """The view's URL of a report file under ``reports_root`` (None when it is elsewhere or missing)."""
    if not path:
        return None
    try:
        relative = Path(path).resolve().relative_to(reports_root.resolve())
    except ValueError:
        return None
    return f"{MOUNT}/reports/{quote(relative.as_posix())}"
