"""Addresses of the airloop view, shared by the extra links (orchestration) and the view itself (ui).

The view's FastAPI app is mounted on the api-server at :data:`MOUNT`; an extra link is an address in it
(``/airloop/go/<kind>?dag_id=&run_id=``) that the view resolves when clicked. Pure and light.

Also the two ways a configured URL (an MLflow tracking URI may carry ``user:password@``) leaves airloop:
:func:`public_url` for links people click (XCom, markdown, model-version descriptions, the view) and
:func:`mask_url` for logs and error messages.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

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


def public_url(url: str) -> str:
    """A URL to show and link to: without its ``user:password@`` (the browser asks whoever clicks it to log in).

    Path, query and fragment stay (an MLflow UI link is all fragment). An unparsable URL gives a placeholder
    rather than itself, since it cannot be told what in it is a secret.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname  # raises for a malformed port or bracket
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    netloc = f"[{host}]" if host and ":" in host else (host or "")
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def mask_url(url: str) -> str:
    """A URL for a log line or an error message: the user kept, the password, query and fragment dropped."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" not in netloc and not parts.query and not parts.fragment:
        return url
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"
