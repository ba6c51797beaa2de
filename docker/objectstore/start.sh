#!/bin/sh
# Start SeaweedFS (master, volume server, filer and S3 gateway in one process) with three S3 identities
# built from the environment, never from a file in the repository:
#   admin  - S3_ADMIN_ACCESS_KEY_ID / S3_ADMIN_SECRET_ACCESS_KEY: everything (used only to create buckets)
#   lake   - LAKE_ACCESS_KEY_ID / LAKE_SECRET_ACCESS_KEY: read, write, list on LAKE_BUCKET only (Airflow)
#   mlflow - MLFLOW_ACCESS_KEY_ID / MLFLOW_SECRET_ACCESS_KEY: read, write, list on MLFLOW_BUCKET only
# The identities file is written to a private temporary directory at every start, so rotating a key is
# editing .env and `docker compose up -d` (which recreates this service and the ones using the key).
set -eu

for var in S3_ADMIN_ACCESS_KEY_ID S3_ADMIN_SECRET_ACCESS_KEY LAKE_ACCESS_KEY_ID LAKE_SECRET_ACCESS_KEY \
           MLFLOW_ACCESS_KEY_ID MLFLOW_SECRET_ACCESS_KEY LAKE_BUCKET MLFLOW_BUCKET; do
    eval "value=\${${var}:-}"
    if [ -z "${value}" ]; then
        echo "objectstore: ${var} is not set" >&2
        exit 1
    fi
    case "${value}" in
        *[!A-Za-z0-9._~=-]*)
            echo "objectstore: ${var} may only hold A-Z a-z 0-9 . _ ~ = - (it is written into JSON)" >&2
            exit 1
            ;;
    esac
done

if [ "${S3_ADMIN_ACCESS_KEY_ID}" = "${LAKE_ACCESS_KEY_ID}" ] || [ "${S3_ADMIN_ACCESS_KEY_ID}" = "${MLFLOW_ACCESS_KEY_ID}" ] \
   || [ "${LAKE_ACCESS_KEY_ID}" = "${MLFLOW_ACCESS_KEY_ID}" ]; then
    echo "objectstore: the admin, lake and mlflow access key ids must differ (one identity each)" >&2
    exit 1
fi

umask 077
conf_dir="$(mktemp -d)"
cat > "${conf_dir}/s3.json" <<EOF
{
  "identities": [
    {
      "name": "admin",
      "credentials": [{"accessKey": "${S3_ADMIN_ACCESS_KEY_ID}", "secretKey": "${S3_ADMIN_SECRET_ACCESS_KEY}"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    },
    {
      "name": "lake",
      "credentials": [{"accessKey": "${LAKE_ACCESS_KEY_ID}", "secretKey": "${LAKE_SECRET_ACCESS_KEY}"}],
      "actions": ["Read:${LAKE_BUCKET}", "Write:${LAKE_BUCKET}", "List:${LAKE_BUCKET}", "Tagging:${LAKE_BUCKET}"]
    },
    {
      "name": "mlflow",
      "credentials": [{"accessKey": "${MLFLOW_ACCESS_KEY_ID}", "secretKey": "${MLFLOW_SECRET_ACCESS_KEY}"}],
      "actions": ["Read:${MLFLOW_BUCKET}", "Write:${MLFLOW_BUCKET}", "List:${MLFLOW_BUCKET}", "Tagging:${MLFLOW_BUCKET}"]
    }
  ]
}
EOF
unset S3_ADMIN_SECRET_ACCESS_KEY LAKE_SECRET_ACCESS_KEY MLFLOW_SECRET_ACCESS_KEY

exec weed server \
    -dir=/data \
    -ip.bind=0.0.0.0 \
    -master.volumeSizeLimitMB="${VOLUME_SIZE_LIMIT_MB:-1024}" \
    -volume.max=0 \
    -s3 \
    -s3.port=8333 \
    -s3.config="${conf_dir}/s3.json"
