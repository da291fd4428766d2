#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d), as the owner role
# (POSTGRES_USER, fleet): one login role per service and one for MLflow, each with its own password from the
# environment. The owner keeps the schema; `fleet db upgrade` (the db-migrate job) migrates it and grants each
# service role exactly what its code uses (fleet/db/roles.py). MLflow gets its own database, which it owns.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v recorder="$POSTGRES_RECORDER_PASSWORD" -v learner="$POSTGRES_LEARNER_PASSWORD" \
  -v dashboard="$POSTGRES_DASHBOARD_PASSWORD" -v mlflow="$POSTGRES_MLFLOW_PASSWORD" <<'SQL'
CREATE ROLE fleet_recorder LOGIN PASSWORD :'recorder';
CREATE ROLE fleet_learner LOGIN PASSWORD :'learner';
CREATE ROLE fleet_dashboard LOGIN PASSWORD :'dashboard';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE fleet FROM PUBLIC;
GRANT CONNECT ON DATABASE fleet TO fleet_recorder, fleet_learner, fleet_dashboard;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
