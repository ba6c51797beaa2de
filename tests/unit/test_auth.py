"""The personas' FAB permissions (airloop.ops.auth): what each may do, per model, and nothing more.

The table is checked against FAB's own names here; that the FAB auth manager grants and refuses what it says is
tested through a real api-server in tests/e2e/test_roles.py.
"""

from __future__ import annotations

import pytest

from airloop.ops import auth
from airloop.ops.cli import build_parser

MODELS = ["m1", "m2"]
READ, EDIT, CREATE, DELETE = auth.READ, auth.EDIT, auth.CREATE, auth.DELETE


def _per_dag(perms: frozenset[auth.Permission]) -> set[auth.Permission]:
    return {p for p in perms if p[1].startswith(auth.DAG_PREFIX)}


def _writes(perms: frozenset[auth.Permission]) -> set[auth.Permission]:
    """Everything but reading and menu entries (and a user's own profile and password)."""
    own = {"My Profile", "My Password"}
    return {p for p in perms if p[0] not in (READ, auth.MENU) and p[1] not in own}


def test_every_name_in_the_table_is_one_fab_knows() -> None:
    from airflow.providers.fab.www.security import permissions

    resources = {v for k, v in vars(permissions).items() if k.startswith("RESOURCE_") and isinstance(v, str)}
    actions = {v for k, v in vars(permissions).items() if k.startswith("ACTION_") and isinstance(v, str)}
    assert auth.DAG_PREFIX == permissions.RESOURCE_DAG_PREFIX
    for persona in auth.PERSONAS:
        for action, resource in auth.persona_permissions(persona, MODELS):
            assert action in actions, (persona, action)
            assert resource in resources or resource.startswith(auth.DAG_PREFIX), (persona, resource)


def test_roles_are_airloops_own_except_the_admin() -> None:
    from airflow.providers.fab.auth_manager.security_manager.constants import EXISTING_ROLES

    roles = [p.role for p in auth.PERSONAS.values()]
    assert len(set(roles)) == len(roles)
    assert auth.PERSONAS["admin"].role == "Admin"
    assert not (set(roles) - {"Admin"}) & EXISTING_ROLES  # FAB resets its built-in roles at each start
    assert set(auth.role_permissions(MODELS)) == set(roles) - {"Admin"}  # FAB keeps Admin complete itself
    assert auth.persona_permissions("admin", MODELS) == frozenset()


def test_viewer_only_reads_and_no_logs() -> None:
    perms = auth.persona_permissions("viewer", MODELS)
    assert _writes(perms) == set()
    assert _per_dag(perms) == set()
    assert {(READ, "DAGs"), (READ, "DAG Runs"), (READ, "Task Instances"), (READ, "HITL Detail")} <= perms
    assert not {(READ, "Task Logs"), (READ, "XComs"), (READ, "Connections"), (READ, "Variables")} & perms


def test_operator_triggers_clears_and_marks_any_dag_and_reads_logs() -> None:
    perms = auth.persona_permissions("operator", MODELS)
    assert _writes(perms) == {(EDIT, "DAGs"), (CREATE, "DAG Runs"), (EDIT, "DAG Runs"), (EDIT, "Task Instances")}
    assert {(READ, "Task Logs"), (READ, "XComs")} <= perms
    assert _per_dag(perms) == set()  # edits every DAG through "DAGs"
    assert not {(EDIT, "HITL Detail"), (READ, "Connections"), (READ, "Variables")} & perms


def test_ml_engineer_triggers_train_and_promote_of_each_model_and_answers_approvals() -> None:
    perms = auth.persona_permissions("ml_engineer", MODELS)
    assert _per_dag(perms) == {(EDIT, f"DAG:{m}_{s}") for m in MODELS for s in ("train", "promote")}
    assert _writes(perms) - _per_dag(perms) == {(CREATE, "DAG Runs"), (EDIT, "HITL Detail")}
    assert (EDIT, "DAGs") not in perms and (EDIT, "Task Instances") not in perms


def test_data_steward_reads_everything_and_clears_only_ingest_dags() -> None:
    perms = auth.persona_permissions("data_steward", MODELS)
    assert _per_dag(perms) == {(EDIT, "DAG:m1_ingest"), (EDIT, "DAG:m2_ingest")}
    assert _writes(perms) - _per_dag(perms) == {(EDIT, "Task Instances"), (EDIT, "DAG Runs")}
    assert (CREATE, "DAG Runs") not in perms  # no model action: not even an ingest run
    reads = {(READ, r) for r in ("Connections", "Variables", "Configurations", "Task Logs", "XComs", "Audit Logs")}
    assert reads <= perms
    assert auth.persona_permissions("viewer", MODELS) <= perms


def test_per_model_permissions_follow_the_models() -> None:
    assert _per_dag(auth.persona_permissions("ml_engineer", [])) == set()
    only = auth.role_permissions(["solo"])["airloop_ml_engineer"]
    assert _per_dag(only) == {(EDIT, "DAG:solo_train"), (EDIT, "DAG:solo_promote")}


def test_unknown_persona_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown persona 'owner'; known: admin, operator, ml_engineer"):
        auth.persona_permissions("owner", MODELS)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["auth", "user", "bob", "--role", "owner"])
    args = build_parser().parse_args(["auth", "user", "bob", "--role", "data_steward", "--password-env", "PW"])
    assert (args.username, args.role, args.password_env) == ("bob", "data_steward", "PW")


def test_roles_and_users_need_the_fab_auth_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.SimpleAuthManager")
    with pytest.raises(ValueError, match="roles and users are for the FAB auth manager"):
        auth.sync_roles(MODELS)
