"""Bootstrap: the four databases, their schemas and the buckets. Idempotent by construction.

Every statement is guarded (``IF NOT EXISTS`` or a catalog lookup) so running it after every
``up`` changes nothing once it has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from strata.audit import ensure_audit_schema
from strata.db import MAINTENANCE_DB, connect, target
from strata.objectstore import is_s3_url, s3_client, split_s3_url
from strata.settings import DATABASES, DbName, Settings

SCHEMAS: dict[DbName, tuple[str, ...]] = {
    "raw_db": ("raw", "audit", "sandbox"),
    "staging_db": ("dev", "prod", "audit", "sandbox"),
    "semantic_db": ("dev", "prod", "audit", "sandbox"),
    "dwh_db": ("dev", "prod", "reporting", "audit", "sandbox"),
}


@dataclass
class BootstrapReport:
    created: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.created.append(what)


def bootstrap(settings: Settings) -> BootstrapReport:
    report = BootstrapReport()
    _databases(settings, report)
    for db in DATABASES:
        _schemas(settings, db, report)
    _buckets(settings, report)
    return report


def _databases(settings: Settings, report: BootstrapReport) -> None:
    owner = target(settings, DATABASES[0]).params.get("user")
    embedded = settings.embedded_pg
    can_admin = embedded or settings.pg_admin_dsn is not None or settings.pg_dsn is not None
    if not can_admin:
        return  # per-database DSNs: the databases are provisioned by whoever gave them
    with connect(settings, MAINTENANCE_DB, admin=True, autocommit=True) as conn:
        if embedded:
            from strata.services.postgres import PIPELINE_USER, EmbeddedPostgres

            exists = conn.execute(
                "select 1 from pg_roles where rolname = %s", (PIPELINE_USER,)
            ).fetchone()
            if not exists:
                password = EmbeddedPostgres(settings).password(PIPELINE_USER)
                conn.execute(
                    sql.SQL("create role {} login password {}").format(
                        sql.Identifier(PIPELINE_USER), sql.Literal(password)
                    )
                )
                report.add(f"role {PIPELINE_USER}")
        for db in DATABASES:
            if conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone():
                continue
            statement = sql.SQL("create database {}").format(sql.Identifier(db))
            if owner:
                statement += sql.SQL(" owner {}").format(sql.Identifier(owner))
            conn.execute(statement)
            # PUBLIC gets no CONNECT: access is granted to roles explicitly (governance)
            conn.execute(
                sql.SQL("revoke connect, temporary on database {} from public").format(
                    sql.Identifier(db)
                )
            )
            report.add(f"database {db}")


def _schemas(settings: Settings, db: DbName, report: BootstrapReport) -> None:
    with connect(settings, db, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select nspname from pg_namespace").fetchall()}
        for schema in SCHEMAS[db]:
            if schema in existing:
                continue
            conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
            report.add(f"schema {db}.{schema}")
        exists = conn.execute("select to_regclass('audit.etl_runs')").fetchone()
        if exists is None or exists[0] is None:
            ensure_audit_schema(conn)
            report.add(f"{db}: audit tables")
        if "public" in existing:
            has_create = conn.execute(
                "select has_schema_privilege('public', 'public', 'CREATE')"
            ).fetchone()
            if has_create and has_create[0]:
                conn.execute("revoke create on schema public from public")
                report.add(f"{db}: revoked CREATE on schema public from PUBLIC")


def _buckets(settings: Settings, report: BootstrapReport) -> None:
    urls = [u for u in (settings.source_url, settings.lake_url) if is_s3_url(u)]
    if not urls:
        return
    from botocore.exceptions import ClientError

    client = s3_client(settings)
    for url in urls:
        bucket, _ = split_s3_url(url)
        try:
            client.head_bucket(Bucket=bucket)
            continue
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
        client.create_bucket(Bucket=bucket)
        report.add(f"bucket {bucket}")
