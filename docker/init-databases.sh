#!/bin/sh
# Runs once in the postgres container on an empty volume: the pipeline's login role.
# The databases, schemas and buckets are created by `strata init` (idempotent).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
do \$\$ begin
  if not exists (select from pg_roles where rolname = 'strata_pipeline') then
    create role strata_pipeline login createdb password '${STRATA_PG_PASSWORD}';
  end if;
end \$\$;
SQL
