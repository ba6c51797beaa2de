"""The airloop plugin: the airloop view in the Airflow UI's navigation, served by a FastAPI app on the api-server.

Every Airflow process imports plugin modules, task processes included, so this file imports nothing heavy:
the FastAPI app (:mod:`airloop.ui.app`, with pandas, MLflow and SQLAlchemy behind it) is built on the first
request the api-server routes to it. The extra links live in :mod:`airloop.orchestration.links` and are attached in the
DAG files; Airflow stores them per task instance and needs no registration here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from airloop.core.urls import MOUNT  # pure and light: importing this file stays cheap


class _LazyApp:
    """An ASGI app that builds the real one on its first call.

    Written by hand because Airflow mounts the object given in ``fastapi_apps`` as it is; no library defers
    the import of an ASGI app. A mounted app gets HTTP requests only (Starlette does not forward lifespan
    events to mounts), so a broken view cannot stop the api-server from starting: its error shows on first use.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            from airloop.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class AirloopViewPlugin(AirflowPlugin):
    name = "airloop"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [{"app": _LazyApp(), "url_prefix": MOUNT, "name": "airloop view"}]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "airloop",
            "href": f"{MOUNT}/",
            "url_route": "airloop",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
