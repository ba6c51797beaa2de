"""The ``airloop`` command line: seed, up, down, status, suites check, source load, model new/check, ci, warehouse,
ledger at, lake gc, lineage rebuild, demo.

Every command is safe to run twice. Expected problems print one clear message and exit non-zero
(1 for a failed check, 2 for bad usage or configuration); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


def _cmd_seed(args: argparse.Namespace) -> int:
    from airloop.adapters.datasets import find_datasets, seed
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID, paths

    engine = engine_for(SOURCE_CONN_ID)
    for dataset in find_datasets(paths().data_dir, args.dataset):
        report = seed(engine, dataset)
        print(
            f"Seeded {report.rows} rows of data set {dataset.name} ({report.file}, sha256 verified) "
            f"into table {report.table!r} of {report.database} (replaced)."
        )
        print("\n".join("  " + line for line in report.lines()[1:]))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from airloop.ops import runtime

    status = runtime.up()
    _print_up(status.to_dict())
    return 0


def _print_up(status: dict[str, Any]) -> None:
    from airloop.ops import runtime

    urls = status["urls"]
    print("airloop is up (all bound to 127.0.0.1):")
    for name, url in urls.items():
        print(f"  {name:<10} {url}")
    roles = {u["name"]: u["role"] for u in status.get("users", [])}
    credentials = runtime.read_credentials()
    if _first_showing(credentials):
        print("Log in to Airflow with one of these users (passwords generated now and shown only this once;")
        print(f"they are stored only in {status['credentials_file']}, readable by you alone):")
        for user, password in sorted(credentials.items()):
            print(f"  {user:<10} {password:<20} ({roles.get(user, '?')})")
    else:
        users = ", ".join(f"{u} ({roles.get(u, '?')})" for u in sorted(credentials))
        print(f"Log in to Airflow as {users}; the passwords are in {status['credentials_file']}.")
    print(f"The airloop view: {urls['airflow']}/plugin/airloop")
    print("Stop everything with `make down` (or `airloop down`).")


def _first_showing(credentials: dict[str, str]) -> bool:
    """True the first time these passwords are printed (a digest of them, never the passwords, is kept)."""
    from airloop.core.digests import json_digest
    from airloop.core.settings import paths

    digest = json_digest(credentials)
    marker = paths().run / "passwords_shown"
    if marker.exists() and marker.read_text().strip() == digest:
        return False
    marker.write_text(digest + "\n")
    return True


def _cmd_down(args: argparse.Namespace) -> int:
    from airloop.ops import runtime

    stopped = runtime.down()
    print(f"Stopped: {', '.join(stopped)}." if stopped else "Nothing was running.")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from airloop.ops import runtime

    state = runtime.status().to_dict()
    from airloop.ops.status import model_status

    state["models"] = model_status()
    if args.json:
        print(json.dumps(state, indent=2, default=str))
        return 0
    for name, comp in state["components"].items():
        mark = "up" if comp.get("healthy") else ("running" if comp.get("running") else "down")
        print(f"{name:<14} {mark}")
    for model, s in state["models"].items():
        print(
            f"model {model}: {len(s['validated'])} validated, {len(s['quarantined'])} quarantined, "
            f"{len(s['missing'])} missing of {s['expected']} intervals"
        )
    return 0


def _cmd_suites_check(args: argparse.Namespace) -> int:
    from airloop.adapters.expectations import SuiteError
    from airloop.core.settings import paths
    from airloop.core.spec import get_spec
    from airloop.ops.suites import check

    spec = get_spec(args.model)
    try:
        report = check(spec, paths().expectations_dir, on=args.on, suite_files=args.suite)
    except SuiteError as exc:
        which = "the given suite files" if args.suite else f"the suites of {args.model}"
        print(f"FAIL: {which} do not load:\n{exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(report.lines()))
    if report.passed is False:
        return EXIT_FAILED
    return 0


def _cmd_source_load(args: argparse.Namespace) -> int:
    from airloop.adapters.csv_load import load_csv
    from airloop.adapters.db import engine_for
    from airloop.core.settings import SOURCE_CONN_ID

    report = load_csv(
        engine_for(args.connection or SOURCE_CONN_ID),
        Path(args.file),
        args.table,
        time_column=args.time_column,
        time_format=args.time_format,
        replace=args.replace,
        coerce=args.coerce,
        text_columns=frozenset(args.text or ()),
    )
    print("\n".join(report.lines()))
    return 0


def _add_source(sub: argparse._SubParsersAction) -> None:
    """``airloop source load FILE.csv --table T``: a user's CSV into a source table (see adapters.csv_load)."""
    source = sub.add_parser("source", help="the source database: load a CSV file into a table")
    source_sub = source.add_subparsers(dest="source_command", required=True, metavar="SUBCOMMAND")
    load = source_sub.add_parser("load", help="load a CSV file into a table (all rows or none; repairs reported)")
    load.add_argument("file", help="the CSV file (header line first); a FILE.sha256 beside it is verified")
    load.add_argument("--table", required=True, help="the table to write")
    load.add_argument("--connection", help="Airflow connection id of the database (default: airloop_source)")
    load.add_argument("--time-column", help="the column of event times (stored as UTC timestamps)")
    load.add_argument("--time-format", help="its strptime format, e.g. '%%m/%%d/%%Y %%H:%%M:%%S' (default: inferred)")
    load.add_argument("--replace", action="store_true", help="overwrite the table if it exists")
    load.add_argument("--coerce", action="store_true", help="set non-numbers in numeric columns to null (reported)")
    load.add_argument("--text", action="append", metavar="COLUMN", help="keep this column as text (repeatable)")
    load.set_defaults(func=_cmd_source_load)


def _cmd_model(args: argparse.Namespace) -> int:
    """``airloop model new`` / ``airloop model check`` (see airloop.ops.onboard)."""
    from airloop.core.settings import SOURCE_CONN_ID, paths
    from airloop.ops import onboard
    from airloop.ops.profiling import Request

    models_dir, expectations_dir = paths().models_dir, paths().expectations_dir
    if args.model_command == "check":
        found = onboard.check_model(args.name, models_dir, expectations_dir, on=args.on)
        print("\n".join(found.report()), file=sys.stdout if found.passed else sys.stderr)
        return 0 if found.passed else EXIT_FAILED
    request = Request(
        name=args.name,
        time_column=args.time_column,
        target=args.target,
        task=args.task,
        table=args.table,
        query=args.query,
        keys=tuple(args.keys or ()),
        leakage=tuple(args.leakage or ()),
        connection=args.connection or SOURCE_CONN_ID,
        start=args.start,
        every=args.every,
        cron=args.cron,
    )
    made = onboard.new_model(request, models_dir, expectations_dir, force=args.force)
    print("\n".join(made.lines()))
    return 0


def _add_model(sub: argparse._SubParsersAction) -> None:
    """``airloop model new NAME ...`` and ``airloop model check NAME [--on DATE]``."""
    model = sub.add_parser("model", help="onboard a model: draft its spec and suites from the data, check them")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")
    new = model_sub.add_parser(
        "new", help="profile a source and write a starter spec (include/models/NAME.yaml) and suites to edit"
    )
    new.add_argument("name", help="the model's name: lower-case letters, digits and _")
    what = new.add_mutually_exclusive_group(required=True)
    what.add_argument("--table", help="the source table")
    what.add_argument("--query", help="or a query binding :start and :end on the time column")
    new.add_argument("--time-column", required=True, help="the column of event times")
    new.add_argument("--target", required=True, help="the column to predict")
    new.add_argument("--task", required=True, choices=["classification", "regression"])
    new.add_argument("--keys", nargs="+", metavar="COLUMN", help="columns that identify a row (default: the time)")
    new.add_argument("--leakage", action="append", metavar="COLUMN", help="a column known only after the fact")
    new.add_argument("--connection", help="Airflow connection id of the source (default: airloop_source)")
    new.add_argument("--start", type=_date, help="the schedule's start, and profile from it (default: first row)")
    every = new.add_mutually_exclusive_group()
    every.add_argument("--every", help="a fixed interval, e.g. 1d, 7d, 6h (default: suggested from the data)")
    every.add_argument("--cron", help="or a cron expression, e.g. '0 0 1 * *' for months")
    new.add_argument("--force", action="store_true", help="rewrite an existing spec and the generated suite files")
    new.set_defaults(func=_cmd_model)
    check = model_sub.add_parser("check", help="load a model's spec and suites and dry-run one interval (no writes)")
    check.add_argument("name", help="the model's name")
    check.add_argument("--on", type=_date, help="a date in the interval to dry-run (default: the newest with data)")
    check.set_defaults(func=_cmd_model)


def _cmd_ci(args: argparse.Namespace) -> int:
    """``airloop ci``: every model's spec, suites, dry run and gate, and the DAG folder (see airloop.ops.ci)."""
    from airloop.core.settings import paths
    from airloop.ops.ci import Options, run_ci

    found = paths()
    options = Options(
        models_dir=found.models_dir,
        expectations_dir=found.expectations_dir,
        dags_dir=Path(args.dags) if args.dags else found.project / "dags",
        on=args.on,
        require_source=args.require_source,
        gate=not args.no_gate,
    )
    import contextlib

    # Airflow's and GX's log lines go to stdout; with --json, stdout carries the JSON alone.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = run_ci(options)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    if args.github:
        print("\n".join(report.annotations(found.project)), file=sys.stderr if args.json else sys.stdout)
    return 0 if report.passed else EXIT_FAILED


def _add_ci(sub: argparse._SubParsersAction) -> None:
    """``airloop ci [--on DATE] [--require-source] [--no-gate] [--dags DIR] [--json] [--github]``."""
    ci = sub.add_parser(
        "ci",
        help="CI of a project: every spec, suite, dry run and champion's gate checks, and DAG integrity; "
        "exit 1 on any failure",
    )
    ci.add_argument("--on", type=_date, help="dry-run each model on the interval holding this date (default: newest)")
    ci.add_argument(
        "--require-source", action="store_true", help="fail (not skip) when a model's source is unreachable or empty"
    )
    ci.add_argument("--no-gate", action="store_true", help="leave out the champion's gate checks")
    ci.add_argument("--dags", metavar="DIR", help="the DAG folder (default: dags/ in the project)")
    ci.add_argument("--json", action="store_true", help="machine-readable output")
    ci.add_argument(
        "--github", action="store_true", help="also print each failure as a GitHub Actions annotation on its file"
    )
    ci.set_defaults(func=_cmd_ci)


def _cmd_warehouse(args: argparse.Namespace) -> int:
    from airloop.adapters import migrations, warehouse
    from airloop.adapters.db import describe, engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    if args.warehouse_command == "revision":
        path = migrations.draft_revision(args.message, warehouse.metadata)
        print(f"Wrote {path}: read it, run `make format`, then `make test`.")
        return 0
    engine = engine_for(WAREHOUSE_CONN_ID)
    if args.warehouse_command == "upgrade":
        done = warehouse.upgrade(engine)
        how = "adopted at the baseline and upgraded" if done.adopted else "upgraded"
        change = f"{how} from {done.before or 'nothing'} to {done.after}" if done.changed else f"at {done.after}"
        print(f"Warehouse {describe(engine)}: {change} (head).")
        return 0
    found, newest = warehouse.current_revision(engine), migrations.head()
    print(f"Warehouse {describe(engine)}: revision {found or 'none'}, head {newest}.")
    if found != newest:
        print("Not at head: run `airloop warehouse upgrade`.", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_auth(args: argparse.Namespace) -> int:
    import os

    from airloop.core.settings import paths
    from airloop.core.spec import load_specs
    from airloop.ops import auth

    if args.auth_command == "roles":
        models = [spec.name for spec in load_specs(paths().models_dir)]
        for change in auth.sync_roles(models):
            how = "created" if change.created else "updated" if change.added or change.removed else "unchanged"
            print(f"Role {change.role}: {how} (+{change.added} -{change.removed} permissions).")
        print(f"Per-DAG permissions for the models: {', '.join(models) or 'none'}.")
        return 0
    if args.password_env:
        password = os.environ.get(args.password_env, "")
        if not password:
            raise ValueError(f"auth user {args.username}: environment variable {args.password_env} is empty or unset")
    else:
        password = sys.stdin.readline().rstrip("\n")
    created = auth.ensure_user(args.username, args.role, password, email=args.email)
    role = auth.PERSONAS[args.role].role
    print(f"User {args.username}: {'created' if created else 'updated'} with role {role} (persona {args.role}).")
    return 0


def _add_auth(sub: argparse._SubParsersAction) -> None:
    from airloop.ops.auth import PERSONAS

    auth = sub.add_parser("auth", help="production auth (FAB auth manager): the personas' roles and users")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True, metavar="SUBCOMMAND")
    auth_sub.add_parser(
        "roles", help="create or update the personas' roles for the models in the models folder (safe to repeat)"
    )
    user = auth_sub.add_parser(
        "user", help="create a user with a persona's role, or set an existing user's role and password"
    )
    user.add_argument("username")
    user.add_argument("--role", required=True, choices=list(PERSONAS), help="the persona")
    user.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable (default: the first line of standard input)",
    )
    user.add_argument("--email", help="the user's e-mail (default: <username>@airloop.invalid)")
    auth.set_defaults(func=_cmd_auth)


def _cmd_ledger_at(args: argparse.Namespace) -> int:
    """Which version served at TIME (or served a prediction), since when, who moved it and why."""
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID
    from airloop.core.spec import get_spec
    from airloop.core.times import moment
    from airloop.stages.promote.ledger import NoSuchPrediction, champion_at, champion_of_prediction

    if (args.time is None) == (args.prediction is None):
        raise ValueError("give either TIME (ISO 8601, or now) or --prediction PARTITION:ROW_KEY, not both or none.")
    model = get_spec(args.model).name  # an unknown model is named with the known ones
    engine = engine_for(WAREHOUSE_CONN_ID)
    prediction = None
    if args.prediction is not None:
        partition, sep, row_key = args.prediction.partition(":")
        if not sep or not partition or not row_key:
            raise ValueError(
                f"--prediction is {args.prediction!r}: give PARTITION:ROW_KEY (the row_key as stored in predictions), "
                "e.g. 2012-12-01T000000Z:2012-12-01T05:00:00"
            )
        try:
            prediction, answer = champion_of_prediction(engine, model, partition, row_key)
        except NoSuchPrediction as exc:
            print(f"airloop ledger at: {exc}", file=sys.stderr)
            return EXIT_FAILED
    else:
        answer = champion_at(engine, model, moment(args.time, "TIME"))
    if args.json:
        body = answer.to_dict()
        if prediction is not None:
            body["prediction"] = prediction
        print(json.dumps(body, indent=2, default=str))
        return 0
    if prediction is not None:
        print(
            f"prediction {args.prediction} of {model}: scored by v{prediction['model_version']} "
            f"(run {prediction['dag_run_id'] or '?'}); the decision that made v{prediction['model_version']} champion:"
        )
    print(answer.text())
    return 0


def _add_ledger(sub: argparse._SubParsersAction) -> None:
    """``airloop ledger at``: who was champion when, and why."""
    ledger = sub.add_parser("ledger", help="the promotion ledger: who was champion when, and why")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    at = ledger_sub.add_parser(
        "at", help="which version served at TIME (or a prediction), since when, who moved it, the reason and evidence"
    )
    at.add_argument("time", nargs="?", metavar="TIME", help="ISO 8601 (no zone = UTC), or now")
    at.add_argument("--model", required=True, help="model name (a spec in include/models/)")
    at.add_argument(
        "--prediction",
        metavar="PARTITION:ROW_KEY",
        help="instead of TIME: the prediction row with this partition and row key (its version's decision)",
    )
    at.add_argument("--json", action="store_true", help="machine-readable output")
    at.set_defaults(func=_cmd_ledger_at)


def _cmd_lake_gc(args: argparse.Namespace) -> int:
    """``airloop lake gc [--model M] [--apply]``: kept partition versions no registered version names."""
    from airloop.adapters.lake import default_lake
    from airloop.adapters.registry import tracking_uri
    from airloop.core.urls import mask_url
    from airloop.stages.train import rebuild

    lake = default_lake()
    models = [args.model] if args.model else lake.models()
    lineages = {m: rebuild.registered_lineages(m) for m in models}
    # Which registry was asked matters: one that is not the models' own would name nothing.
    counts = ", ".join(f"{m} {len(found)}" for m, found in lineages.items()) or "no models"
    print(f"Registered versions in the MLflow registry at {mask_url(tracking_uri())}: {counts}.")
    plan = rebuild.plan_gc(lake, lineages)
    for line in plan.named:
        print(f"keep   {line}")
    verb = "delete" if args.apply else "would delete"
    for c in plan.collectable:
        print(f"{verb} {c.line()}")
    if not plan.collectable:
        print(f"Nothing to collect in {lake.url} ({', '.join(models) or 'no models'}): every kept version is named.")
        return 0
    if not args.apply:
        print(
            f"Dry run: {len(plan.collectable)} version(s), {plan.size} bytes would be deleted. "
            "Run again with --apply to delete them."
        )
        return 0
    freed = rebuild.collect(lake, plan)
    print(f"Deleted {len(plan.collectable)} version(s), {freed} bytes.")
    return 0


def _cmd_lineage_rebuild(args: argparse.Namespace) -> int:
    """``airloop lineage rebuild --model M --version V [--out FILE]``: rebuild and check a version's training data."""
    from airloop.adapters.lake import default_lake
    from airloop.core.spec import get_spec
    from airloop.stages.train import rebuild

    try:
        found = rebuild.read_lineage(args.model, args.version)
        rebuilt = rebuild.rebuild(default_lake(), found, get_spec(args.model).source.time_column)
    except rebuild.RebuildProblem as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(rebuilt.lines()))
    if args.out:
        out = Path(args.out)
        if out.suffix == ".csv":
            rebuilt.frame.to_csv(out, index=False)
        else:
            rebuilt.frame.to_parquet(out, index=False)
        print(f"Wrote {len(rebuilt.frame)} rows to {out}.")
    return 0


def _add_lake_and_lineage(sub: argparse._SubParsersAction) -> None:
    """``airloop lake gc`` and ``airloop lineage rebuild``."""
    lake = sub.add_parser("lake", help="the lake's kept partition versions")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True, metavar="SUBCOMMAND")
    gc = lake_sub.add_parser(
        "gc", help="list (dry run) or delete kept partition versions that no registered model version names"
    )
    gc.add_argument("--model", help="only this model (default: every model in the lake)")
    gc.add_argument("--apply", action="store_true", help="delete them (default: only list what would be deleted)")
    gc.set_defaults(func=_cmd_lake_gc)
    lineage = sub.add_parser("lineage", help="a registered model version's training data")
    lineage_sub = lineage.add_subparsers(dest="lineage_command", required=True, metavar="SUBCOMMAND")
    rb = lineage_sub.add_parser(
        "rebuild", help="rebuild a version's training frame from the partition versions it names; check digests"
    )
    rb.add_argument("--model", required=True, help="the registered model")
    rb.add_argument("--version", required=True, help="its version number")
    rb.add_argument("--out", metavar="FILE", help="write the frame here (.parquet, or .csv)")
    rb.set_defaults(func=_cmd_lineage_rebuild)


def _cmd_demo(args: argparse.Namespace) -> int:
    from airloop.ops.demo import MODEL, run_demo

    return run_demo(keep_running=not args.exit, model=args.model or MODEL)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD, e.g. 2011-03-10") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airloop", description="Run the airloop MLOps pipeline on Airflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sd = sub.add_parser("seed", help="load the vendored data sets (include/data/*/dataset.yaml) into the source")
    sd.add_argument("--dataset", metavar="NAME", help="only this data set (its folder's name); default: every one")
    sd.set_defaults(func=_cmd_seed)
    sub.add_parser("up", help="start Airflow and MLflow on 127.0.0.1 under AIRLOOP_HOME").set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=_cmd_down)
    st = sub.add_parser("status", help="components, URLs and per-model interval state")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_cmd_status)
    suites = sub.add_parser("suites", help="data steward tools for expectation suites")
    suites_sub = suites.add_subparsers(dest="suites_command", required=True, metavar="SUBCOMMAND")
    chk = suites_sub.add_parser("check", help="check a model's suites load; with --on, dry-run them on that interval")
    chk.add_argument("model", help="model name (a spec in include/models/)")
    chk.add_argument(
        "--on",
        metavar="DATE|PARTITION",
        help="dry-run on the interval that contains a date (YYYY-MM-DD) or has a partition key (2011-02-26T000000Z)",
    )
    chk.add_argument(
        "--suite",
        metavar="FILE",
        type=Path,
        action="append",
        help="check (and dry-run) only this suite file, e.g. a draft; repeat for several (default: the model's folder)",
    )
    chk.set_defaults(func=_cmd_suites_check)
    _add_source(sub)
    _add_model(sub)
    _add_ci(sub)

    wh = sub.add_parser("warehouse", help="the warehouse's schema migrations")
    wh_sub = wh.add_subparsers(dest="warehouse_command", required=True, metavar="SUBCOMMAND")
    wh_sub.add_parser("upgrade", help="migrate the warehouse to the newest revision (safe to repeat)")
    wh_sub.add_parser("current", help="the warehouse's revision and the newest; exit 1 when behind")
    rev = wh_sub.add_parser("revision", help="developers: draft the next revision from the tables in the code")
    rev.add_argument("message", help="what changes, e.g. 'add predictions.proba'")
    wh.set_defaults(func=_cmd_warehouse)
    _add_auth(sub)
    _add_ledger(sub)
    _add_lake_and_lineage(sub)
    demo = sub.add_parser("demo", help="seed, start and run the pipeline on the demo data, then summarise")
    demo.add_argument("--exit", action="store_true", help="stop the servers when the demo is done")
    demo.add_argument(
        "--model",
        default=None,
        help="the model whose story is told (default: bikes; the vendored data sets tell bikes and birds)",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from airloop.adapters.db import ConnectionProblem
    from airloop.adapters.source import ChecksumMismatch, SourceProblem
    from airloop.core.spec import SpecError

    try:
        return int(args.func(args))
    except (SpecError, SourceProblem, ChecksumMismatch, ConnectionProblem, ValueError) as exc:
        print(f"airloop {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SQLAlchemyError as exc:
        print(
            f"airloop {args.command}: database error: {str(exc).splitlines()[0]}. "
            "Check the connection (airloop_source / airloop_warehouse) and that AIRLOOP_HOME is writable.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except RuntimeError as exc:
        print(f"airloop {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
