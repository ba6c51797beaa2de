#!/usr/bin/env bash
# airloop's checks of a project's model specs, suites and DAGs: `airloop ci` (docs/ci-for-your-models.md).
# Copy it into your repository as ci/airloop-checks.sh; .github/workflows/airloop-checks.yml runs it on every change.
#
# Usage: ci/airloop-checks.sh [--seed] [options of `airloop ci`: --on DATE, --require-source, --no-gate,
#        --dags DIR, --json]
#   --seed  first load the sample data sets the project vendors (include/data/*/dataset.yaml) into the embedded
#           source (`airloop seed`), so the dry runs have data when CI cannot reach the real source.
# Runs on the project in AIRLOOP_PROJECT_DIR, else the working directory. Exit 0: every check passed or was
# skipped; 1: a check failed (its line says which file and why); 2: bad usage or configuration.
set -euo pipefail

seed=0
args=()
for arg in "$@"; do
  case "$arg" in
    --seed) seed=1 ;;
    *) args+=("$arg") ;;
  esac
done

export AIRLOOP_PROJECT_DIR="${AIRLOOP_PROJECT_DIR:-$PWD}"
# What airloop writes here (the embedded source, Airflow's config) goes to a throw-away folder unless set.
AIRLOOP_HOME="${AIRLOOP_HOME:-$(mktemp -d)/airloop}"
export AIRLOOP_HOME
export AIRFLOW_HOME="${AIRFLOW_HOME:-$AIRLOOP_HOME/airflow}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export GX_ANALYTICS_ENABLED=False MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

# airloop from the project's locked environment when uv is there, else the one on PATH (an activated virtualenv).
if command -v uv >/dev/null 2>&1; then
  airloop=(uv run --frozen airloop)
else
  airloop=(airloop)
fi

if [ "$seed" = 1 ]; then
  if [ -n "${AIRFLOW_CONN_AIRLOOP_SOURCE:-}" ]; then
    echo "airloop-checks: --seed loads sample data into the embedded source only, and AIRFLOW_CONN_AIRLOOP_SOURCE" \
      "names another one: leave out --seed, or unset the connection" >&2
    exit 2
  fi
  "${airloop[@]}" seed
fi
# On GitHub Actions, each failure is also an annotation on the file it names (shown in the pull request).
if [ "${GITHUB_ACTIONS:-}" = true ]; then
  args+=(--github)
fi
exec "${airloop[@]}" ci ${args[@]+"${args[@]}"}
