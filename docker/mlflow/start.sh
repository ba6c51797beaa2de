#!/bin/sh
# Start the MLflow tracking server: runs, models and aliases in Postgres (database mlflow), users and
# permissions of the basic-auth app in Postgres too (database mlflow_auth), artifacts proxied by the server
# to the object store (MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://airloop-mlflow/artifacts), so clients need no
# object-store credentials. Connection strings are assembled here, in a private temporary file and in the
# server's environment, so no password shows on a command line.
#
# The admin user is created from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD the first time the
# server starts against an empty user store; later changes of that variable are ignored by MLflow (rotate
# the admin password through the API: see docs/running-at-scale.md).
set -eu

for var in MLFLOW_DB_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_ARTIFACTS_DESTINATION; do
    eval "value=\${${var}:-}"
    if [ -z "${value}" ]; then
        echo "mlflow: ${var} is not set" >&2
        exit 1
    fi
done
case "${MLFLOW_DB_PASSWORD}" in
    *[!A-Za-z0-9._~=-]*)
        echo "mlflow: MLFLOW_DB_PASSWORD may only hold A-Z a-z 0-9 . _ ~ = - (it goes into a URL and an INI file)" >&2
        exit 1
        ;;
esac

db="postgresql+psycopg2://${MLFLOW_DB_USER:-mlflow}:${MLFLOW_DB_PASSWORD}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}"
umask 077
conf_dir="$(mktemp -d)"
cat > "${conf_dir}/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = ${db}/${MLFLOW_AUTH_DB:-mlflow_auth}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
export MLFLOW_AUTH_CONFIG_PATH="${conf_dir}/basic_auth.ini"
export MLFLOW_BACKEND_STORE_URI="${db}/${MLFLOW_DB:-mlflow}"
unset MLFLOW_DB_PASSWORD db

exec mlflow server \
    --host "${MLFLOW_BIND_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts \
    --app-name basic-auth \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:*,127.0.0.1,127.0.0.1:*}"
