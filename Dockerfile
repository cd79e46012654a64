# syntax=docker/dockerfile:1
# The erpsync image for docker-compose.yaml: the official Airflow image plus this project,
# installed exactly as locked in uv.lock (with the `deploy` extra: the Celery and FAB providers).
#
#   docker compose build        (or: docker build -t erpsync-airflow .)
#
# Stage 1 exports the lock to a pinned requirements file with the project's own uv version, so the
# image can never drift from uv.lock; stage 2 installs those pins on apache/airflow, without the
# image's constraints file (the lock already pins apache-airflow itself and every dependency),
# then the project's packages (include/erpsync, include/erpsync_sandbox) without dependencies.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

FROM python:3.11-slim-bookworm AS lock
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --no-dev --extra deploy --no-emit-project --no-hashes \
        --format requirements-txt --output-file /requirements.txt

FROM ${AIRFLOW_IMAGE}
USER airflow
COPY --from=lock /requirements.txt /opt/erpsync/requirements.txt
# PIP_CONSTRAINT empty: the image's Airflow constraints must not override the lock's pins.
RUN PIP_CONSTRAINT="" pip install --no-cache-dir -r /opt/erpsync/requirements.txt
COPY --chown=airflow:0 pyproject.toml README.md /opt/erpsync/
COPY --chown=airflow:0 include/ /opt/erpsync/include/
RUN PIP_CONSTRAINT="" pip install --no-cache-dir --no-deps /opt/erpsync
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 great_expectations/ /opt/airflow/great_expectations/
COPY --chown=airflow:0 airflow_settings.yaml /opt/airflow/airflow_settings.yaml
# the sandbox profile keeps its state here (a named volume takes this folder's owner)
RUN mkdir -p /home/airflow/sandbox
# erpsync finds dags/, plugins/ and airflow_settings.yaml under its project folder
ENV ERPSYNC_PROJECT_DIR=/opt/airflow
