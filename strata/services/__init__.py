"""Embedded services (``strata up | down | status``) and how the rest of Strata reaches S3.

When ``STRATA_PG_DSN`` / ``STRATA_<DB>_DSN`` or ``STRATA_S3_ENDPOINT_URL`` are set, the
corresponding embedded server is never started: the same code paths use the external ones.
"""

from __future__ import annotations

from typing import Any

from strata.errors import StrataError
from strata.objectstore import is_s3_url, split_s3_url
from strata.services.postgres import EmbeddedPostgres
from strata.services.s3 import EmbeddedS3
from strata.services.state import ServiceState
from strata.settings import DATABASES, Settings


def s3_connection(settings: Settings) -> tuple[str | None, str | None, str | None]:
    """(endpoint, access key, secret) for boto3; ``None`` members mean boto3's own defaults."""
    if settings.embedded_s3:
        s3 = EmbeddedS3(settings)
        creds = s3.credentials()
        return s3.endpoint(), creds["access_key_id"], creds["secret_access_key"]
    secret = settings.s3_secret_access_key
    return (
        settings.s3_endpoint_url,
        settings.s3_access_key_id,
        secret.get_secret_value() if secret else None,
    )


def up(settings: Settings) -> dict[str, Any]:
    """Start what is embedded (idempotent), then bootstrap databases, schemas and buckets."""
    from strata.bootstrap import bootstrap

    with ServiceState(settings.home).locked():
        if settings.embedded_pg:
            EmbeddedPostgres(settings).ensure_running()
        if settings.embedded_s3:
            EmbeddedS3(settings).ensure_running()
    report = bootstrap(settings)
    return {"created": report.created, **status(settings)}


def down(settings: Settings) -> list[str]:
    """Stop the embedded servers; their data stays under ``$STRATA_HOME``."""
    stopped = []
    with ServiceState(settings.home).locked():
        if settings.embedded_s3:
            s3 = EmbeddedS3(settings)
            if s3.status().pid is not None:
                stopped.append("s3")
            s3.stop()
        if settings.embedded_pg:
            pg = EmbeddedPostgres(settings)
            if pg.status().pid is not None:
                stopped.append("postgres")
            pg.stop()
    return stopped


def status(settings: Settings) -> dict[str, Any]:
    """Everything a person or a script needs to reach this installation (no secrets)."""
    from strata.db import target

    out: dict[str, Any] = {"home": str(settings.home), "services": {}, "databases": {}}
    if settings.embedded_pg:
        pg = EmbeddedPostgres(settings).status()
        out["services"]["postgres"] = {
            "mode": "embedded",
            "running": pg.running,
            "pid": pg.pid,
            "address": f"127.0.0.1:{pg.port}" if pg.port else None,
            "data": str(settings.home / "pg" / "data"),
        }
    else:
        out["services"]["postgres"] = {"mode": "external", "running": None}
    for db in DATABASES:
        try:
            t = target(settings, db)
            out["databases"][db] = {"dsn": t.url, "password_from": t.password_source}
        except StrataError as exc:
            out["databases"][db] = {"dsn": None, "error": str(exc)}

    if settings.embedded_s3:
        s3 = EmbeddedS3(settings)
        st = s3.status()
        out["services"]["s3"] = {
            "mode": "embedded",
            "running": st.running,
            "pid": st.pid,
            "endpoint": f"http://127.0.0.1:{st.port}" if st.port else None,
            "credentials_from": str(s3.credentials_file),
            "data": str(s3.data),
        }
    elif not uses_s3(settings):
        out["services"]["s3"] = {"mode": "unused (no s3:// location)"}
    else:
        out["services"]["s3"] = {
            "mode": "external",
            "endpoint": settings.s3_endpoint_url,
            "credentials_from": (
                "STRATA_S3_SECRET_ACCESS_KEY_FILE"
                if settings.s3_secret_access_key_file
                else (
                    "STRATA_S3_SECRET_ACCESS_KEY"
                    if settings.s3_secret_access_key
                    else "boto3 default chain"
                )
            ),
        }
    out["locations"] = {"source": settings.source_url, "lake": settings.lake_url}
    out["layers"] = layer_counts(settings)
    out["buckets"] = sorted(
        {split_s3_url(u)[0] for u in (settings.source_url, settings.lake_url) if is_s3_url(u)}
    )
    return out


def uses_s3(settings: Settings) -> bool:
    return any(is_s3_url(u) for u in (settings.source_url, settings.lake_url))


def layer_counts(settings: Settings) -> dict[str, Any]:
    """Batches and rows applied per layer, from each database's audit ledger."""
    import psycopg

    from strata.db import connect

    counts: dict[str, Any] = {}
    pg_up = not settings.embedded_pg or EmbeddedPostgres(settings).status().running
    if not pg_up:
        return counts
    for db in DATABASES:
        try:
            with connect(settings, db) as conn:
                if conn.execute("select to_regclass('audit.batches')").fetchone()[0] is None:
                    continue
                for layer, batches, rows in conn.execute(
                    "select layer, count(*), coalesce(sum(rows), 0) from audit.batches group by 1"
                ).fetchall():
                    counts[layer] = {"database": db, "batches": batches, "rows": int(rows)}
                    if layer != "raw":
                        from dwh_pipelines.warehouse import layer_status

                        counts[layer].update(layer_status(conn, layer))
                if (
                    db == "raw_db"
                    and conn.execute("select to_regclass('audit.lake_objects')").fetchone()[0]
                ):
                    batches, rows, quarantined = conn.execute(
                        "select count(*), coalesce(sum(rows_accepted), 0),"
                        " coalesce(sum(rows_quarantined), 0) from audit.lake_objects"
                    ).fetchone()
                    counts["lake"] = {
                        "database": db,
                        "batches": batches,
                        "rows": int(rows),
                        "quarantined": int(quarantined),
                    }
        except (StrataError, psycopg.Error) as exc:
            counts[db] = {"error": str(exc).strip().splitlines()[0]}
    order = ["lake", "raw", "staging", "semantic", "dwh"]
    return dict(sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
