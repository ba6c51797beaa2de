#!/usr/bin/env bash
# Create airloop's databases and their owners on a Postgres server, and set each owner's password.
#
# Idempotent: roles and databases are created when absent; passwords are set on every run, so editing a
# password in .env and running `docker compose up -d` rotates it (the `postgres-init` service runs this
# before anything that logs in). Works against any server the superuser can reach, the bundled one or an
# existing one:  PGHOST=db.example.com PGUSER=postgres PGPASSWORD=... AIRFLOW_DB_PASSWORD=... ... ./init-databases.sh
#
# AIRLOOP_DATABASES lists "database:owner" pairs; the password of owner <role> is read from <ROLE>_DB_PASSWORD
# (airflow -> AIRFLOW_DB_PASSWORD). Each database belongs to its owner alone: PUBLIC may not connect to it.
set -euo pipefail

databases="${AIRLOOP_DATABASES:-airflow:airflow warehouse:warehouse source:source mlflow:mlflow mlflow_auth:mlflow}"

for _ in $(seq 1 60); do
    pg_isready --quiet && break
    sleep 1
done
pg_isready --quiet || { echo "init-databases: Postgres at ${PGHOST:-localhost}:${PGPORT:-5432} does not answer" >&2; exit 1; }

for pair in ${databases}; do
    db="${pair%%:*}"
    role="${pair#*:}"
    var="$(printf '%s' "${role}" | tr '[:lower:]-' '[:upper:]_')_DB_PASSWORD"
    password="${!var:-}"
    if [[ -z "${password}" ]]; then
        echo "init-databases: ${var} is not set (password of role ${role}, owner of database ${db})" >&2
        exit 1
    fi
    # Values go in as psql variables and are quoted by format(%I / %L): no SQL is built from them by hand.
    psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v db="${db}" -v role="${role}" -v password="${password}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT ALL ON DATABASE %I TO %I', :'db', :'role') \gexec
SQL
    echo "init-databases: database ${db} (owner ${role}) ready"
done
