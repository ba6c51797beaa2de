"""Production auth: airloop's personas as roles of Airflow's FAB auth manager (the compose stack's auth).

The embedded runtime (``airloop up``) keeps Airflow's SimpleAuthManager; this module is for deployments that
set ``AIRFLOW__CORE__AUTH_MANAGER`` to the FAB auth manager (``docker-compose.yaml`` does).

A persona is a role: a set of FAB permissions, each an ``(action, resource)`` pair. The table is
:data:`PERSONAS`; the per-model part comes from the model specs (:func:`role_permissions`). FAB decides an
action on one DAG's runs or task instances by two checks (its ``is_authorized_dag``): the action on the
resource type ("DAG Runs", "Task Instances", "HITL Detail") and ``can_edit`` on that DAG, either on every DAG
("DAGs") or on the one (``DAG:<dag_id>``). So the ML engineer gets "create DAG Runs" but edits only the
models' train and promote DAGs, and the data steward gets "edit Task Instances" (clearing a task) but edits
only the ingest DAGs. FAB's granularity is the DAG: a steward who may clear ``validate`` may clear any task of
an ingest DAG and mark its runs, and an ML engineer may pause the train and promote DAGs.

| persona       | FAB role               | may                                                                 |
| ------------- | ---------------------- | ------------------------------------------------------------------- |
| admin         | Admin (FAB's own)      | everything, users and roles included                                |
| operator      | airloop_operator       | read; task logs, XComs; trigger, clear and mark any DAG; pause      |
| ml_engineer   | airloop_ml_engineer    | read; task logs, XComs; trigger train/promote DAGs; answer approvals|
| data_steward  | airloop_data_steward   | read everything (connections, variables, config, audit log too);    |
|               |                        | clear tasks of the ingest DAGs (re-run validation of an interval)   |
| viewer        | airloop_viewer         | read DAGs, runs, task instances, approvals; no logs, no XComs       |

:func:`sync_roles` writes the roles into the FAB tables (idempotent: a role gets exactly the permissions of
the table, what an earlier version granted is taken away) and :func:`ensure_user` creates or updates a user.
Both need Airflow's metadata DB migrated with the FAB auth manager configured (``airflow db migrate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

Permission = tuple[str, str]  # (action, resource), FAB's names

READ, EDIT, CREATE, DELETE, MENU = "can_read", "can_edit", "can_create", "can_delete", "menu_access"

#: FAB's prefix of a per-DAG resource (``DAG:<dag_id>``), as in ``airflow.providers.fab.www.security.permissions``.
DAG_PREFIX = "DAG:"
#: The FAB role that holds every permission; FAB keeps it complete itself, so airloop never edits it.
ADMIN_ROLE = "Admin"

_VIEW: tuple[Permission, ...] = (
    (READ, "Website"),
    (READ, "DAGs"),
    (READ, "DAG Runs"),
    (READ, "Task Instances"),
    (READ, "DAG Code"),
    (READ, "DAG Dependencies"),
    (READ, "DAG Versions"),
    (READ, "DAG Warnings"),
    (READ, "Assets"),
    (READ, "Asset Aliases"),
    (READ, "Backfills"),
    (READ, "Cluster Activity"),
    (READ, "HITL Detail"),
    (READ, "ImportError"),
    (READ, "Jobs"),
    (READ, "Pools"),
    (READ, "My Profile"),
    (EDIT, "My Profile"),
    (READ, "My Password"),
    (EDIT, "My Password"),
    (MENU, "Browse"),
    (MENU, "DAGs"),
    (MENU, "DAG Runs"),
    (MENU, "DAG Dependencies"),
    (MENU, "Assets"),
    (MENU, "Cluster Activity"),
    (MENU, "Jobs"),
    (MENU, "Task Instances"),
    (MENU, "Docs"),
    (MENU, "Documentation"),
)
_LOGS: tuple[Permission, ...] = (
    (READ, "Task Logs"),
    (READ, "XComs"),
    (READ, "Task Reschedules"),
    (READ, "Triggers"),
    (READ, "Audit Logs"),
    (MENU, "XComs"),
    (MENU, "Audit Logs"),
)
_READ_EVERYTHING: tuple[Permission, ...] = (
    (READ, "Connections"),
    (READ, "Variables"),
    (READ, "Configurations"),
    (READ, "Plugins"),
    (READ, "Providers"),
    (READ, "All Audit Logs"),
    (READ, "All Import Errors"),
    (MENU, "Admin"),
    (MENU, "Connections"),
    (MENU, "Variables"),
    (MENU, "Configurations"),
    (MENU, "Plugins"),
    (MENU, "Providers"),
    (MENU, "Pools"),
)


@dataclass(frozen=True)
class Persona:
    """One persona: its FAB role, the permissions it holds on every DAG, and the stages it may edit."""

    name: str
    role: str
    summary: str
    permissions: tuple[Permission, ...] = ()
    #: Stages (``ingest``, ``train``...) whose DAG of every model this persona may edit (``DAG:<model>_<stage>``).
    edits_stages: tuple[str, ...] = ()


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona("admin", ADMIN_ROLE, "everything, users and roles included (FAB's Admin role)"),
        Persona(
            "operator",
            "airloop_operator",
            "on call: read, task logs, trigger, clear and mark any DAG's runs and tasks, pause DAGs",
            _VIEW
            + _LOGS
            + (
                (EDIT, "DAGs"),
                (CREATE, "DAG Runs"),
                (EDIT, "DAG Runs"),
                (EDIT, "Task Instances"),
            ),
        ),
        Persona(
            "ml_engineer",
            "airloop_ml_engineer",
            "read, task logs, trigger the train and promote DAGs, answer approvals",
            _VIEW + _LOGS + ((CREATE, "DAG Runs"), (EDIT, "HITL Detail")),
            edits_stages=("train", "promote"),
        ),
        Persona(
            "data_steward",
            "airloop_data_steward",
            "read everything, clear tasks of the ingest DAGs (re-run an interval's validation); no model actions",
            _VIEW + _LOGS + _READ_EVERYTHING + ((EDIT, "DAG Runs"), (EDIT, "Task Instances")),
            edits_stages=("ingest",),
        ),
        Persona("viewer", "airloop_viewer", "read DAGs, runs, task instances and approvals", _VIEW),
    )
}


def _persona(name: str) -> Persona:
    try:
        return PERSONAS[name]
    except KeyError:
        raise ValueError(f"unknown persona {name!r}; known: {', '.join(PERSONAS)}") from None


def persona_permissions(name: str, models: Iterable[str]) -> frozenset[Permission]:
    """The FAB permissions of persona ``name`` for these model names (the admin's role is FAB's own: empty)."""
    persona = _persona(name)
    per_dag = {(EDIT, f"{DAG_PREFIX}{model}_{stage}") for model in models for stage in persona.edits_stages}
    return frozenset(persona.permissions) | per_dag


def role_permissions(models: Iterable[str]) -> dict[str, frozenset[Permission]]:
    """Role name -> permissions, for every persona airloop manages (all but the admin), for these models."""
    names = sorted(set(models))
    return {p.role: persona_permissions(p.name, names) for p in PERSONAS.values() if p.role != ADMIN_ROLE}


@dataclass(frozen=True)
class RoleChange:
    role: str
    created: bool
    added: int
    removed: int


def sync_roles(models: Iterable[str]) -> list[RoleChange]:
    """Create or update the personas' roles in the FAB tables so each holds exactly its table's permissions."""
    wanted_by_role = role_permissions(models)
    changes = []
    with _security_manager() as sm:
        for role_name, wanted in wanted_by_role.items():
            role = sm.find_role(role_name)
            created = role is None
            if role is None:
                role = sm.add_role(role_name)
            have = {(p.action.name, p.resource.name): p for p in role.permissions}
            added = sorted(wanted - have.keys())
            for action, resource in added:
                sm.add_permission_to_role(role, sm.create_permission(action, resource))
            removed = sorted(have.keys() - wanted)
            for key in removed:
                sm.remove_permission_from_role(role, have[key])
            changes.append(RoleChange(role_name, created, len(added), len(removed)))
    return changes


def ensure_user(username: str, persona: str, password: str, *, email: str | None = None) -> bool:
    """Create user ``username`` with the persona's role, or give an existing one that role and password.

    Returns True when the user was created. The password is set every time, so re-running with a new one
    rotates it (the compose stack does so at each ``up``, from .env).
    """
    role_name = _persona(persona).role
    if not username.strip():
        raise ValueError("auth user: the user name is empty")
    if not password:
        raise ValueError(f"auth user {username}: the password is empty")
    with _security_manager() as sm:
        role = sm.find_role(role_name)
        if role is None:
            raise ValueError(f"auth user {username}: no role {role_name!r} yet; run `airloop auth roles` first")
        user = sm.find_user(username=username)
        if user is None:
            sm.add_user(
                username=username,
                first_name=username,
                last_name=persona,
                email=email or f"{username}@airloop.invalid",
                role=role,
                password=password,
            )
            return True
        user.roles = [role]
        user.last_name = persona
        if email:
            user.email = email
        sm.update_user(user)
        sm.reset_password(user.id, password)
        return False


@contextlib.contextmanager
def _security_manager() -> Iterator[Any]:
    """FAB's security manager on the metadata DB (the Flask app the provider's own CLI commands build)."""
    from airflow.configuration import conf

    manager = conf.get("core", "auth_manager", fallback="")
    if "FabAuthManager" not in manager:
        raise ValueError(
            f"auth: AIRFLOW__CORE__AUTH_MANAGER is {manager!r}; roles and users are for the FAB auth manager "
            "(airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager). The embedded runtime uses "
            "SimpleAuthManager: its users come from AIRLOOP_USERS."
        )
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        yield appbuilder.sm
