#!/usr/bin/env bash
# Starts the machine's PostgreSQL cluster (Debian packages) and prints a URL for a throw-away test
# database with a fresh random password. Used by `make test`; .ci/run installs PostgreSQL first.
# Prints nothing and exits 0 when PostgreSQL is not installed (the PostgreSQL tests then skip,
# except under CI=true / FLEET_REQUIRE_POSTGRES=1 where they fail).
set -euo pipefail
command -v pg_lsclusters >/dev/null 2>&1 || exit 0
cluster="$(pg_lsclusters --no-header | head -n1)"
[ -n "$cluster" ] || { echo "no PostgreSQL cluster found (pg_createcluster 15 main)" >&2; exit 0; }
read -r ver name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then pg_ctlcluster "$ver" "$name" start >&2; fi
password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=' )"
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
as_postgres "psql -q -p $port -v ON_ERROR_STOP=1 -c \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='fleet_test') THEN CREATE ROLE fleet_test LOGIN; END IF; END \\\$\\\$;\" -c \"ALTER ROLE fleet_test PASSWORD '$password' CREATEDB CREATEROLE\"" >&2
as_postgres "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname='fleet_test'\" | grep -q 1 || createdb -p $port -O fleet_test fleet_test" >&2
echo "postgresql://fleet_test:$password@127.0.0.1:$port/fleet_test"
