"""The one connection factory for raw_db, staging_db, semantic_db and dwh_db.

Embedded: TCP to 127.0.0.1 with scram-sha-256; the password lives in a libpq passfile under
``$STRATA_HOME/secrets`` so every DSN Strata prints is usable as is and contains no secret.
External: ``STRATA_PG_DSN`` (one server for all four, database name replaced) or the
per-database ``STRATA_<DB>_DSN``; a password missing from the DSN comes from
``STRATA_PG_PASSWORD`` / ``STRATA_PG_PASSWORD_FILE`` (or libpq's own PGPASSFILE).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from strata.errors import ConfigError, StrataError
from strata.settings import DATABASES, Settings

MAINTENANCE_DB = "postgres"
# Appended to the server options of every Strata session, after the DSN's ``options`` (or
# PGOPTIONS), which are kept; the later setting wins. UTC: text forms of timestamps (content
# hashes, surrogate keys) never depend on the server's or the client's time zone.
SESSION_OPTIONS = "-c TimeZone=UTC"


def session_options(params: dict[str, str]) -> str:
    """The DSN's own ``options`` (else PGOPTIONS), then :data:`SESSION_OPTIONS`."""
    own = params.get("options") or os.environ.get("PGOPTIONS", "")
    return f"{own} {SESSION_OPTIONS}".strip()


@dataclass(frozen=True)
class Target:
    """How to reach one database: libpq parameters plus where the password comes from."""

    params: dict[str, str]
    password: str | None
    password_source: str

    @property
    def conninfo(self) -> str:
        return make_conninfo(**self.params)

    @property
    def url(self) -> str:
        """A password-free ``postgresql://`` URL for people and tools."""
        p = self.params
        user = f"{p['user']}@" if p.get("user") else ""
        port = f":{p['port']}" if p.get("port") else ""
        extra = "&".join(
            f"{k}={v}" for k, v in p.items() if k not in ("host", "port", "user", "dbname")
        )
        return f"postgresql://{user}{p.get('host', '')}{port}/{p.get('dbname', '')}" + (
            f"?{extra}" if extra else ""
        )


def _check_db(db: str) -> None:
    if db not in DATABASES and db != MAINTENANCE_DB:
        raise ConfigError(f"unknown database {db!r}; expected one of {', '.join(DATABASES)}")


def target(settings: Settings, db: str, *, admin: bool = False) -> Target:
    """Connection parameters for ``db`` as the pipeline (or as the admin, for bootstrap)."""
    _check_db(db)
    if settings.embedded_pg:
        from strata.services.postgres import ADMIN_USER, PIPELINE_USER, EmbeddedPostgres

        pg = EmbeddedPostgres(settings)
        port = pg.status().port
        if port is None:
            raise StrataError("the embedded PostgreSQL has never been started; run `strata up`")
        return Target(
            params={
                "host": "127.0.0.1",
                "port": str(port),
                "dbname": db,
                "user": ADMIN_USER if admin else PIPELINE_USER,
                "passfile": str(pg.passfile),
                "sslmode": "disable",
            },
            password=None,
            password_source=str(pg.passfile),
        )
    if admin:
        base = settings.pg_admin_dsn or settings.pg_dsn
        if base is None:
            base = settings.database_dsn_override(db) if db in DATABASES else None  # type: ignore[arg-type]
    else:
        base = (settings.database_dsn_override(db) if db in DATABASES else None) or settings.pg_dsn  # type: ignore[arg-type]
    if base is None:
        raise ConfigError(f"no DSN for {db}: set STRATA_PG_DSN or STRATA_{db.upper()}_DSN")
    params = {k: str(v) for k, v in conninfo_to_dict(base).items()}
    params["dbname"] = db
    inline = params.pop("password", None)
    if inline is not None:
        return Target(params, inline, "the DSN")
    # the admin DSN may have its own password; without one, or without an admin DSN, the
    # pipeline's password is tried (the admin is then often the pipeline's own role)
    own = admin and settings.pg_admin_dsn and settings.pg_admin_password is not None
    name = "pg_admin_password" if own else "pg_password"
    secret: SecretStr | None = getattr(settings, name)
    if secret is not None:
        file = getattr(settings, f"{name}_file")
        variable = f"STRATA_{name.upper()}"
        source = f"{variable}_FILE ({file})" if file else variable
        return Target(params, secret.get_secret_value(), source)
    return Target(params, None, params.get("passfile", "libpq defaults (PGPASSFILE, ~/.pgpass)"))


def connect(
    settings: Settings, db: str, *, admin: bool = False, autocommit: bool = False
) -> psycopg.Connection:
    """Open a connection; errors name the database and the password-free DSN."""
    t = target(settings, db, admin=admin)
    extra = {"password": t.password} if t.password is not None else {}
    try:
        return psycopg.connect(
            t.conninfo,
            autocommit=autocommit,
            application_name="strata",
            options=session_options(t.params),
            **extra,
        )
    except psycopg.OperationalError as exc:
        # every line: libpq puts the cause (e.g. "password authentication failed") before a
        # trailing note such as where the password came from
        reason = "; ".join(x.strip() for x in str(exc).splitlines() if x.strip())
        reason = reason or type(exc).__name__
        raise StrataError(f"cannot connect to {db} at {t.url}: {reason}") from exc
