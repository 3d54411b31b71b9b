#!/bin/sh
# Runs once in the postgres container on an empty volume: the pipeline's login role, and
# Airflow's own role and metadata database. The warehouse databases, schemas and buckets are
# created by `strata init` (idempotent).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v pipeline_password="$STRATA_PG_PASSWORD" -v airflow_password="$AIRFLOW_DB_PASSWORD" <<'SQL'
select format('create role strata_pipeline login createdb password %L', :'pipeline_password')
where not exists (select from pg_roles where rolname = 'strata_pipeline') \gexec
select format('create role airflow login password %L', :'airflow_password')
where not exists (select from pg_roles where rolname = 'airflow') \gexec
select 'create database airflow owner airflow'
where not exists (select from pg_database where datname = 'airflow') \gexec
revoke connect on database airflow from public;
SQL
