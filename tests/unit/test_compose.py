"""The scale-out deployment files: docker-compose.yaml, Dockerfile, .dockerignore, .env.example, docker/.

No Docker engine is needed: the compose file is validated against the Compose Specification's JSON schema
(check-jsonschema's vendored copy), `docker compose config` runs only where the client is installed, and
the rest are policy checks that catch regressions: pinned images, the Airflow image matching uv.lock, health
checks and start conditions, every secret from .env with no working default and no literal secret in the
file, a scalable worker, ports on 127.0.0.1, separate databases, and the helper scripts' behaviour.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "uv.lock"

#: ``$$`` (a literal dollar for the container's shell), ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``...
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}$")
#: Environment keys that name a secret's location or a user, not a secret.
NOT_SECRET_SUFFIXES = ("_FILE", "_USERNAME")


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"airloop_docker_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


preflight = _module(ROOT / "docker" / "preflight.py")
generate_env = _module(ROOT / "docker" / "generate_env.py")


def is_secret(name: str) -> bool:
    return preflight.is_secret(name) and not name.endswith(NOT_SECRET_SUFFIXES)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def usages(compose: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(name, operator, argument) of every interpolation in the file's values (comments excluded)."""
    found = []
    for text in _strings(compose):
        for m in INTERPOLATION.finditer(text):
            if m.group(0) == "$$":
                continue
            found.append((m.group("name") or m.group("bare"), m.group("op"), m.group("arg") or ""))
    return found


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation, enough for this file: defaults apply, a missing required variable raises."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        unset = not value if op in (":-", ":?") else value is None
        if op in (":-", "-"):
            return arg if unset else str(value)
        if op in (":?", "?"):
            if unset:
                raise KeyError(f"{name}: {arg}")
            return str(value)
        return value or ""

    return INTERPOLATION.sub(sub, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(active settings, commented-out optional settings) of .env.example."""
    active, optional = {}, {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line):
            active[m.group(1)] = m.group(2)
        elif m := re.match(r"^#\s*([A-Z][A-Z0-9_]*)=(.*)$", line):
            optional[m.group(1)] = m.group(2)
    return active, optional


def generated_env() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in generate_env.render(ENV_EXAMPLE.read_text()).splitlines()
        if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    )


def one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, svc in services.items() if str(svc.get("restart", "")) == "no"}


def image_ref_ok(ref: str) -> tuple[bool, str]:
    """An image reference is pinned: it has a tag other than ``latest`` (a digest alone is fine too)."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else ""
    if digest:
        return (digest.startswith("sha256:") and tag != "latest", "bad digest or latest tag")
    if not tag:
        return False, "no tag"
    return (tag != "latest", "latest tag")


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))


def dockerfile_from_images() -> list[str]:
    args = dockerfile_args()
    refs = []
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.match(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", line):
            refs.append(re.sub(r"\$\{?([A-Z_]+)\}?", lambda a: args.get(a.group(1), a.group(0)), m.group(1)))
    return refs


def locked_version(package: str) -> str:
    lock = tomllib.loads(LOCK.read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


# ---------------------------------------------------------------------------------------------------------
# The file is valid Compose
# ---------------------------------------------------------------------------------------------------------


def test_compose_matches_the_compose_specification() -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema is a dev dependency: uv sync --frozen"
    result = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _docker_compose_available(), reason="`docker compose` is not installed here")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "compose.env"
    env_file.write_text(generate_env.render(ENV_EXAMPLE.read_text()))
    base = ["docker", "compose", "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    ok = subprocess.run([*base, "--env-file", str(env_file), "config", "-q"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # A missing secret stops compose itself, naming the variable.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = subprocess.run([*base, "--env-file", str(empty), "config", "-q"], capture_output=True, text=True)
    assert missing.returncode != 0
    assert "in .env" in missing.stderr


def test_the_generated_env_satisfies_every_required_variable(compose: dict[str, Any]) -> None:
    env = generated_env()
    for text in _strings(compose):
        interpolate(text, env)  # raises KeyError naming a required variable that is missing
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(compose["services"]["redis"]["environment"]["REDIS_PASSWORD"], {})


def test_shell_scripts_parse() -> None:
    for shell, script in [
        ("bash", "docker/postgres/init-databases.sh"),
        ("sh", "docker/objectstore/start.sh"),
        ("sh", "docker/mlflow/start.sh"),
    ]:
        result = subprocess.run([shell, "-n", str(ROOT / script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    bad = []
    for name, svc in services.items():
        if "image" not in svc:
            assert "build" in svc, f"{name} has neither image nor build"
            continue
        ref = interpolate(svc["image"], {})
        ok, why = image_ref_ok(ref)
        if not ok:
            bad.append(f"{name}: {ref} ({why})")
    for ref in dockerfile_from_images():
        ok, why = image_ref_ok(ref)
        if not ok and "$" not in ref:
            bad.append(f"Dockerfile FROM {ref} ({why})")
        assert "$" not in ref, f"Dockerfile FROM {ref}: an ARG without a default"
    assert not bad, bad
    for path in (COMPOSE, DOCKERFILE):
        assert not re.search(r":latest\b", path.read_text()), f"{path.name} mentions a :latest image"


def test_dockerfile_builds_on_the_locked_airflow_version() -> None:
    airflow = locked_version("apache-airflow")
    args = dockerfile_args()
    assert args["AIRFLOW_VERSION"] == airflow, "Dockerfile's AIRFLOW_VERSION must equal apache-airflow in uv.lock"
    base = [ref for ref in dockerfile_from_images() if ref.startswith("apache/airflow:")]
    assert len(base) == 1, dockerfile_from_images()
    assert base[0].split(":", 1)[1].split("@")[0] == f"{airflow}-python{args['PYTHON_VERSION']}"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert f"{args['PYTHON_VERSION']}.0" in SpecifierSet(requires), (args["PYTHON_VERSION"], requires)


def test_dockerfile_installs_exactly_the_lock_as_the_airflow_user() -> None:
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    syncs = re.findall(r"uv sync[^\n]*", text)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert not re.search(r"--constraint|constraints-\d", text), "uv.lock pins everything: no constraint files"
    assert "pip install" not in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] in ("airflow", "50000"), users
    for source in ("pyproject.toml", "uv.lock", "README.md", "include/", "dags/", "plugins/", "expectations/"):
        assert re.search(rf"^COPY .*\b{re.escape(source)}", text, flags=re.M), f"{source} is not copied"
    for var in ("AIRLOOP_PROJECT_DIR", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "AIRLOOP_HOME"):
        assert var in text


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    for required in (".env", ".git", ".venv", ".airloop", "tests/artifacts", "benchmarks/results"):
        assert required in patterns, f".dockerignore must exclude {required}"


def test_env_file_is_git_ignored() -> None:
    if shutil.which("git") and (ROOT / ".git").exists():
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".env"], capture_output=True)
        assert result.returncode == 0, ".env must be git-ignored"
    else:
        assert ".env" in (ROOT / ".gitignore").read_text().split()


# ---------------------------------------------------------------------------------------------------------
# Health and start order
# ---------------------------------------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    short = one_shots(services)
    assert {"preflight", "postgres-init", "objectstore-init", "mlflow-init", "airflow-init"} <= short
    for name, svc in services.items():
        if name in short:
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} needs a healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert str(svc.get("restart")) in ("unless-stopped", "always", "on-failure"), f"{name} restart policy"


def test_every_dependency_waits_for_a_condition(services: dict[str, dict[str, Any]]) -> None:
    short = one_shots(services)
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = (spec or {}).get("condition")
            if dep in short:
                assert condition == "service_completed_successfully", f"{name} -> {dep}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}: {condition}"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    def needs(name: str, seen: set[str] | None = None) -> set[str]:
        seen = set() if seen is None else seen
        for dep in services[name].get("depends_on", {}):
            if dep not in seen:
                seen.add(dep)
                needs(dep, seen)
        return seen

    for name in services:
        assert name not in needs(name), f"dependency cycle through {name}"
    for name in services:
        if name != "preflight":
            assert "preflight" in needs(name), f"{name} may start before the secrets are checked"
    for component in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert {"airflow-init", "postgres-init", "redis"} <= needs(component), component
    assert {"airflow-apiserver", "mlflow-init", "objectstore-init", "redis"} <= needs("airflow-worker")
    assert {"postgres-init", "objectstore-init"} <= needs("mlflow")


# ---------------------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------------------


def test_variables_are_documented_and_secrets_have_no_default(compose: dict[str, Any]) -> None:
    active, optional = env_example()
    documented = active.keys() | optional.keys()
    defaults: dict[str, set[str]] = {}
    for name, op, arg in usages(compose):
        assert name in documented, f"${{{name}}} is used in docker-compose.yaml but not documented in .env.example"
        assert op is not None, f"${{{name}}} has neither a default nor :? (an unset value would pass silently)"
        if is_secret(name):
            assert op == ":?" and arg.strip(), f"secret {name} must be ${{{name}:?message}}, never a default"
            assert name in active, f"secret {name} must be an active line of .env.example"
        if op in (":-", "-"):
            defaults.setdefault(name, set()).add(arg)
    used = {name for name, _, _ in usages(compose)}
    assert not (documented - used), f".env.example documents unused variables: {sorted(documented - used)}"
    for name, values in defaults.items():
        assert len(values) == 1, f"{name} has different defaults: {values}"
        if name in optional:
            assert optional[name] == next(iter(values)), f".env.example shows {name}={optional[name]}, compose {values}"


def test_env_example_holds_only_placeholders_for_secrets() -> None:
    active, optional = env_example()
    for name, value in active.items():
        if is_secret(name):
            assert value.startswith("change-me"), f"{name} in .env.example must be a change-me placeholder"
    assert not [n for n in optional if is_secret(n)], "secrets must not be optional"


def test_no_secret_literal_in_the_compose_file(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    secret_vars = {name for name, _, _ in usages(compose) if is_secret(name)}
    for svc_name, svc in services.items():
        for key, value in environment(svc).items():
            if is_secret(key):
                m = REQUIRED.match(value)
                assert m and m.group("name") in secret_vars, f"{svc_name}.{key} must be ${{VAR:?...}} from .env"
    for text in _strings(compose):
        for m in re.finditer(r"[a-z][a-z0-9+.-]*://(?P<user>[^:/@\s]*):(?P<password>[^@\s]+)@", text):
            assert REQUIRED.match(m.group("password")), f"credentials in a URL must come from .env: {text}"
        for m in re.finditer(r'"password":\s*"(?P<password>[^"]*)"', text):
            assert REQUIRED.match(m.group("password")), f"password in a JSON connection must come from .env: {text}"


def test_preflight_receives_every_secret(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    secret_vars = {name for name, _, _ in usages(compose) if is_secret(name)}
    checked = environment(services["preflight"])
    assert set(checked) == secret_vars
    for key, value in checked.items():
        m = REQUIRED.match(value)
        assert m and m.group("name") == key, f"preflight must see {key} under its own name"


def test_preflight_refuses_placeholders_and_accepts_generated_secrets() -> None:
    active, _ = env_example()
    secrets_ = {k: v for k, v in active.items() if is_secret(k)}
    found = preflight.problems(secrets_)
    assert len(found) == len(secrets_) and all("placeholder" in line for line in found)
    generated = {k: v for k, v in generated_env().items() if is_secret(k)}
    assert preflight.problems(generated) == []
    weak = dict(generated, REDIS_PASSWORD="short", AIRFLOW_JWT_SECRET="x" * 40, AIRFLOW_FERNET_KEY="A" * 44)
    weak["SOURCE_DB_PASSWORD"] = weak["WAREHOUSE_DB_PASSWORD"]
    # An existing object store may give one key pair for the lake and the artifacts: that may repeat.
    shared = dict(generated, MLFLOW_S3_ACCESS_KEY_ID=generated["LAKE_S3_ACCESS_KEY_ID"])
    shared["MLFLOW_S3_SECRET_ACCESS_KEY"] = shared["LAKE_S3_SECRET_ACCESS_KEY"]
    assert preflight.problems(shared) == []
    weak["MLFLOW_DB_PASSWORD"] = "has spaces and @ signs in it!"
    found = "\n".join(preflight.problems(weak))
    for expected in (
        "REDIS_PASSWORD is shorter",
        "AIRFLOW_JWT_SECRET is shorter than 64 bytes",
        "AIRFLOW_FERNET_KEY is not a Fernet key",
        "the same value as",
        "MLFLOW_DB_PASSWORD may only hold",
    ):
        assert expected in found, found
    for value in weak.values():
        assert value not in found or len(value) < 6, "preflight must never print a secret"
    fernet = generated["AIRFLOW_FERNET_KEY"]
    other = generate_env.secret_for("AIRFLOW_FERNET_KEY")
    assert preflight.problems(dict(generated, AIRFLOW_FERNET_KEY=f"{other},{fernet}")) == []  # while rotating
    assert preflight.problems(dict(generated, AIRFLOW_FERNET_KEY=f"{other},oops"))


def test_generated_env_keeps_the_example_and_fills_each_secret_once() -> None:
    active, _ = env_example()
    generated = generated_env()
    assert generated.keys() == active.keys()
    values = [v for k, v in generated.items() if is_secret(k)]
    assert len(set(values)) == len(values)
    for key, value in generated.items():
        if not is_secret(key):
            assert value == active[key]


def test_airflow_init_creates_the_personas_roles_and_every_ui_user_from_env(
    services: dict[str, dict[str, Any]],
) -> None:
    from airloop.ops.auth import PERSONAS

    common = environment(services["airflow-apiserver"])
    assert common["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS" not in common
    init = services["airflow-init"]
    script = init["command"][-1]
    lines = [line.strip() for line in script.splitlines()]
    assert lines.index("airflow db migrate") < lines.index("airloop auth roles")
    users = re.findall(r"^airloop auth user (\S+) --role (\S+) --password-env (\S+)$", script, re.MULTILINE)
    assert {name for name, _, _ in users} == {"admin", "operator", "steward"}
    env = environment(init)
    for name, role, var in users:
        assert role in PERSONAS, f"{name}: no persona {role}"
        assert lines.index("airloop auth roles") < lines.index(
            f"airloop auth user {name} --role {role} --password-env {var}"
        )
        assert var in env, f"airflow-init does not get {var} for user {name}"
    for name, svc in services.items():
        if name not in ("airflow-init", "preflight"):
            ui_passwords = [k for k in environment(svc) if k.startswith("AIRLOOP_") and k.endswith("_PASSWORD")]
            assert not ui_passwords, f"{name} should not see the UI passwords {ui_passwords}"


# ---------------------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------------------


AIRFLOW_COMPONENTS = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


def test_the_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"] == "celery worker"
    assert not [name for name, svc in services.items() if "container_name" in svc]


def test_published_ports_are_on_localhost_by_default(services: dict[str, dict[str, Any]]) -> None:
    published = []
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = interpolate(str(port.get("host_ip", "")), {})
            else:
                parts = interpolate(str(port), {}).split(":")
                assert len(parts) == 3, f"{name}: {port} must name the host address"
                host_ip = parts[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine by default"
            published.append(name)
    assert sorted(published) == ["airflow-apiserver", "grafana", "mlflow", "prometheus"]


def test_airflow_components_share_one_configuration(services: dict[str, dict[str, Any]]) -> None:
    envs = {name: environment(services[name]) for name in AIRFLOW_COMPONENTS}
    images = {services[name]["image"] for name in AIRFLOW_COMPONENTS}
    assert len(images) == 1 and next(iter(images)).startswith("airloop:")
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW_CONN_AIRLOOP_SOURCE",
        "AIRFLOW_CONN_AIRLOOP_WAREHOUSE",
        "AIRLOOP_LAKE_URL",
        "MLFLOW_TRACKING_URI",
    ):
        values = {name: env.get(key) for name, env in envs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), (key, values)
    env = envs["airflow-worker"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert interpolate(env["AIRLOOP_LAKE_URL"], {}).startswith("s3://")
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"):
        assert key in env


def test_separate_databases_with_their_own_owners(services: dict[str, dict[str, Any]]) -> None:
    fake = {name: f"pw-{name.lower()}" for name, _, _ in usages({"s": services}) if is_secret(name)}
    env = {k: interpolate(v, fake) for k, v in environment(services["airflow-worker"]).items()}
    metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    warehouse = json.loads(env["AIRFLOW_CONN_AIRLOOP_WAREHOUSE"])
    source = json.loads(env["AIRFLOW_CONN_AIRLOOP_SOURCE"])
    mlflow_script = (ROOT / "docker" / "mlflow" / "start.sh").read_text()
    mlflow_db = re.search(r"\$\{MLFLOW_DB:-(\w+)\}", mlflow_script).group(1)  # type: ignore[union-attr]
    mlflow_auth_db = re.search(r"\$\{MLFLOW_AUTH_DB:-(\w+)\}", mlflow_script).group(1)  # type: ignore[union-attr]
    used = {
        metadata.path.lstrip("/"): metadata.username,
        warehouse["schema"]: warehouse["login"],
        source["schema"]: source["login"],
        mlflow_db: "mlflow",
        mlflow_auth_db: "mlflow",
    }
    assert len(used) == 5, used
    assert len({metadata.username, warehouse["login"], source["login"], "mlflow"}) == 4
    created = dict(pair.split(":") for pair in environment(services["postgres-init"])["AIRLOOP_DATABASES"].split())
    assert created == used, "postgres-init must create exactly the databases the services use"
    init_env = environment(services["postgres-init"])
    for owner in set(created.values()):
        assert f"{owner.upper()}_DB_PASSWORD" in init_env


def test_postgres_urls_name_the_locked_driver(compose: dict[str, Any]) -> None:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which uv.lock does not hold (psycopg2-binary is)."""
    texts = [*_strings(compose), (ROOT / "docker" / "mlflow" / "start.sh").read_text()]
    urls = [m.group(0) for text in texts for m in re.finditer(r"[a-z+]*postgres(?:ql)?[a-z0-9+]*://", text)]
    assert urls
    for url in urls:
        assert url.endswith("postgresql+psycopg2://"), f"{url} must name its driver: postgresql+psycopg2://"
    assert locked_version("psycopg2-binary")


def test_the_locked_celery_executor_loads() -> None:
    """The workers' executor must import with exactly the locked packages (the image installs uv.lock)."""
    code = "from airflow.providers.celery.executors.celery_executor import CeleryExecutor"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_mlflow_server_has_auth_postgres_and_proxied_object_storage(services: dict[str, dict[str, Any]]) -> None:
    mlflow = services["mlflow"]
    env = environment(mlflow)
    script = (ROOT / "docker" / "mlflow" / "start.sh").read_text()
    assert "--app-name basic-auth" in script and "--serve-artifacts" in script
    assert "postgresql+psycopg2://" in script
    assert interpolate(env["MLFLOW_ARTIFACTS_DESTINATION"], {}).startswith("s3://")
    assert REQUIRED.match(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) and REQUIRED.match(env["MLFLOW_FLASK_SERVER_SECRET_KEY"])
    assert mlflow["image"].split(":")[1].startswith(f"v{locked_version('mlflow')}"), "server and client versions"
    worker = environment(services["airflow-worker"])
    assert worker["MLFLOW_TRACKING_USERNAME"] == environment(services["mlflow-init"])["MLFLOW_SERVICE_USERNAME"]
    assert worker["MLFLOW_TRACKING_PASSWORD"] == environment(services["mlflow-init"])["MLFLOW_SERVICE_PASSWORD"]


# ---------------------------------------------------------------------------------------------------------
# Observability: StatsD from Airflow, the optional Prometheus + Grafana profile
# ---------------------------------------------------------------------------------------------------------


def test_airflow_sends_statsd_to_the_exporter(services: dict[str, dict[str, Any]]) -> None:
    exporter = services["statsd-exporter"]
    assert "profiles" not in exporter, "Airflow sends StatsD always: the exporter is not optional"
    flags = dict(arg.split("=", 1) for arg in exporter["command"])
    udp_port = flags["--statsd.listen-udp"].rsplit(":", 1)[1]
    mapping = flags["--statsd.mapping-config"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in exporter["volumes"]}
    assert (ROOT / mounted[mapping]).is_file()
    for name in AIRFLOW_COMPONENTS:
        env = environment(services[name])
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "True", name
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter", name
        assert env["AIRFLOW__METRICS__STATSD_PORT"] == udp_port, name
        assert services[name]["depends_on"]["statsd-exporter"]["condition"] == "service_healthy", name
    # Airflow's StatsD logger imports the `statsd` package: it must be in the image (the lock).
    assert locked_version("statsd")


def test_observability_profile_scrapes_both_exporters_with_the_token(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
    prom = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    airloop = jobs["airloop"]
    assert airloop["metrics_path"] == "/airloop/metrics"
    assert airloop["static_configs"][0]["targets"] == ["airflow-apiserver:8080"]
    token_file = airloop["authorization"]["credentials_file"]
    assert f"> {token_file}" in prom["command"][0] and "umask 077" in prom["command"][0]
    assert REQUIRED.match(environment(prom)["AIRLOOP_METRICS_TOKEN"])
    assert (
        environment(services["airflow-apiserver"])["AIRLOOP_METRICS_TOKEN"]
        == environment(prom)["AIRLOOP_METRICS_TOKEN"]
    )
    web = dict(a.split("=", 1) for a in services["statsd-exporter"]["command"])["--web.listen-address"]
    assert jobs["airflow"]["static_configs"][0]["targets"] == [f"statsd-exporter{web}"]
    assert services["prometheus"]["depends_on"].keys() >= {"statsd-exporter", "airflow-apiserver"}


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "airloop.yml").read_text())["providers"][0]
    dashboards = ROOT / mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "airloop.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    assert REQUIRED.match(environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"])
    assert environment(grafana)["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_mlflow_server_registers_only_airloops_source_form(services: dict[str, dict[str, Any]]) -> None:
    """The compose server validates model-version sources with the embedded runtime's regex (issue 14)."""
    from airloop.adapters.registry import SOURCE_REGEX
    from airloop.ops.runtime.processes import SOURCE_VALIDATION_VAR

    env = environment(services["mlflow"])
    assert interpolate(env[SOURCE_VALIDATION_VAR], {}) == SOURCE_REGEX
