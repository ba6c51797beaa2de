# The airloop image: the official Apache Airflow image of the locked version, with exactly the locked
# dependencies (uv.lock, not Airflow's constraint files) and the airloop package. Every Airflow service of
# docker-compose.yaml runs it; `docker compose build` builds it (tag airloop:${AIRLOOP_IMAGE_TAG:-local}).
#
#   AIRLOOP_GIT_COMMIT=$(git rev-parse HEAD) docker compose build   # records the commit on training runs
#
# Reproducible builds: pin the base images by digest as well as by tag, e.g.
#   docker buildx imagetools inspect apache/airflow:3.3.2-python3.11   # prints "Digest: sha256:..."
#   FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}@sha256:<that digest>
# (same for ghcr.io/astral-sh/uv). tests/unit/test_compose.py checks that AIRFLOW_VERSION equals the
# apache-airflow version in uv.lock and that no image is untagged or `latest`.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION

USER root
COPY --from=uv /uv /usr/local/bin/uv
# /opt/airloop: the project (specs, suites, DAGs, plugin); /opt/airflow/airloop: AIRLOOP_HOME (reports, and
# the lake when AIRLOOP_LAKE_URL is unset), a volume shared by the api-server and the workers.
RUN install -d -o airflow -g 0 -m 0775 /opt/airloop /opt/airflow/airloop
# The official image's convention: install and run as the `airflow` user (UID 50000, GID 0).
USER airflow

# The image's own virtualenv (~/.local, on PATH) becomes exactly the locked environment: `uv sync` removes
# what the lock does not hold (the image's other providers) and installs the pinned versions.
ENV UV_PROJECT_ENVIRONMENT=/home/airflow/.local \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /opt/airloop

# 1. Dependencies only (this layer is rebuilt only when pyproject.toml or uv.lock change).
COPY --chown=airflow:0 pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/tmp/.cache/uv,uid=50000,gid=0 \
    uv sync --frozen --no-dev --no-install-project \
    && installed="$(python -c 'import airflow; print(airflow.__version__)')" \
    && if [ "${installed}" != "${AIRFLOW_VERSION}" ]; then \
         echo "uv.lock installs apache-airflow ${installed}, the base image is ${AIRFLOW_VERSION}" >&2; exit 1; \
       fi

# 2. The project, installed as a package (its dependencies are already there: nothing else changes).
COPY --chown=airflow:0 README.md ./
COPY --chown=airflow:0 include/ include/
COPY --chown=airflow:0 dags/ dags/
COPY --chown=airflow:0 plugins/ plugins/
COPY --chown=airflow:0 expectations/ expectations/
COPY --chown=airflow:0 docker/ docker/
RUN --mount=type=cache,target=/tmp/.cache/uv,uid=50000,gid=0 \
    uv sync --frozen --no-dev --no-editable \
    && python -c "import airloop.core.settings, airloop.core.spec"

# Late, so a new commit does not invalidate the layers above.
ARG AIRLOOP_GIT_COMMIT=unknown
ENV AIRLOOP_PROJECT_DIR=/opt/airloop \
    AIRLOOP_HOME=/opt/airflow/airloop \
    AIRLOOP_GIT_COMMIT=${AIRLOOP_GIT_COMMIT} \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airloop/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airloop/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    GX_ANALYTICS_ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
WORKDIR /opt/airflow
