"""People: login roles that are members of exactly one group role, and nothing else.

Passwords travel to the server already hashed (libpq's SCRAM-SHA-256 verifier, computed
client-side), so a plaintext password never appears in a statement, a server log or
``pg_stat_activity``. Removing a person reassigns what they own (their sandbox objects) to the
owner role, drops their remaining privileges in every database, ends their sessions and drops
the role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from governance.engine import admin_connection, pipeline_user, servers
from governance.model import NAME, Declaration, load_declaration
from strata.credentials import generate_secret, read_private, write_private
from strata.errors import ConfigError, StrataError
from strata.settings import DATABASES, Settings

DEMO_PREFIX = "demo_"
DEMO_SECRETS = "governance-demo-users.json"


@dataclass(frozen=True)
class Person:
    name: str
    group: str
    password: str | None  # only when generated here (shown once), never read back


def _validate_name(name: str, decl: Declaration, settings: Settings) -> None:
    if not NAME.match(name) or name.startswith("pg_"):
        raise ConfigError(
            f"user name {name!r}: use lowercase letters, digits and _ (not starting with pg_)"
        )
    from strata.services.postgres import ADMIN_USER

    reserved = {*decl.governed_roles, pipeline_user(settings), ADMIN_USER, "public"}
    if name in reserved:
        raise ConfigError(f"{name!r} is a role governance manages, not a person")


def _verifier(conn: psycopg.Connection, name: str, password: str) -> str:
    return conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()


def _groups_of(conn: psycopg.Connection, name: str, decl: Declaration) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select pg_get_userbyid(m.roleid) from pg_auth_members as m"
            " join pg_roles as r on r.oid = m.member where r.rolname = %s"
            " and pg_get_userbyid(m.roleid) = any(%s)",
            (name, [g.name for g in decl.groups]),
        ).fetchall()
    ]


def add_user(
    settings: Settings,
    name: str,
    group: str,
    password: str | None = None,
    *,
    decl: Declaration | None = None,
) -> Person:
    """Create login role ``name`` as a member of ``group``; a password is generated when none
    is given (returned once). Refuses an existing role: use remove-user first."""
    decl = decl or load_declaration()
    decl.group(group)
    _validate_name(name, decl, settings)
    generated = password is None
    password = password if password is not None else generate_secret(24)
    if not password:
        raise ConfigError(f"empty password for {name}")
    for db in servers(settings).values():
        with admin_connection(settings, db) as conn:
            if conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
                raise StrataError(f"role {name} already exists; remove-user {name} first")
            for g in (g.name for g in decl.groups):
                if not conn.execute("select 1 from pg_roles where rolname = %s", (g,)).fetchone():
                    raise StrataError(f"group role {g} is missing; run `strata governance apply`")
            conn.execute(
                sql.SQL(
                    "create role {} login nosuperuser nocreatedb nocreaterole noreplication"
                    " inherit password {} in role {}"
                ).format(
                    sql.Identifier(name),
                    sql.Literal(_verifier(conn, name, password)),
                    sql.Identifier(group),
                )
            )
            conn.commit()
    return Person(name, group, password if generated else None)


CLEAR_GRANTS = """
do $strata$
declare relation text; routine text; grantee text;
begin
  for relation in select c.oid::regclass::text from pg_class as c
                  where c.relowner = {person}::regrole and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
  loop
    execute format('revoke all on table %s from public', relation);
    for grantee in select distinct pg_get_userbyid(x.grantee) from pg_class as c,
                   aclexplode(c.relacl) as x
                   where c.oid = relation::regclass and x.grantee not in (0, c.relowner)
    loop
      execute format('revoke all on table %s from %I', relation, grantee);
    end loop;
  end loop;
  for routine in select p.oid::regprocedure::text from pg_proc as p
                 where p.proowner = {person}::regrole and p.prokind in ('f', 'p')
  loop
    execute format('revoke all on routine %s from public', routine);
    execute format('alter routine %s security invoker', routine);
  end loop;
end $strata$
"""


def remove_user(settings: Settings, name: str, *, decl: Declaration | None = None) -> list[str]:
    """Revoke and drop a person; returns what was done, one line per step."""
    decl = decl or load_declaration()
    _validate_name(name, decl, settings)
    done: list[str] = []
    hosts = servers(settings)
    for db in hosts.values():
        with admin_connection(settings, db) as conn:
            row = conn.execute(
                "select rolcanlogin from pg_roles where rolname = %s", (name,)
            ).fetchone()
            if row is None:
                raise StrataError(f"no role {name}")
            if not _groups_of(conn, name, decl):
                raise StrataError(
                    f"{name} is not a member of any group role; remove-user removes people only"
                )
    for db in DATABASES:
        with admin_connection(settings, db) as conn:
            # the person's own grants on their objects (to PUBLIC, to colleagues) would stay,
            # granted by the owner role once the objects are its; a SECURITY DEFINER routine
            # would run as the owner role: both go before the objects change hands
            conn.execute(sql.SQL(CLEAR_GRANTS).format(person=sql.Literal(name)))
            conn.execute(
                sql.SQL("reassign owned by {} to {}").format(
                    sql.Identifier(name), sql.Identifier(decl.owner)
                )
            )
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            conn.commit()
            done.append(f"{db}: reassigned {name}'s objects to {decl.owner}, dropped its grants")
    for db in hosts.values():
        with admin_connection(settings, db) as conn:
            ended = conn.execute(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = %s",
                (name,),
            ).fetchone()[0]
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
            conn.commit()
            done.append(f"dropped role {name}" + (f" (ended {ended} sessions)" if ended else ""))
    return done


def demo_secrets_path(settings: Settings) -> Path:
    return settings.secrets_dir / DEMO_SECRETS


def demo_users(settings: Settings, *, decl: Declaration | None = None) -> dict[str, dict]:
    """One person per group role (``demo_<group>``), passwords kept 0600 under
    ``$STRATA_HOME/secrets``. Idempotent: existing demo users keep their stored password."""
    decl = decl or load_declaration()
    path = demo_secrets_path(settings)
    stored: dict[str, dict] = json.loads(read_private(path)) if path.exists() else {}
    for g in decl.groups:
        name = f"{DEMO_PREFIX}{g.name}"
        entry = stored.get(name)
        exists = False
        for db in servers(settings).values():
            with admin_connection(settings, db) as conn:
                exists = bool(
                    conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
                )
        if exists and entry and entry.get("role") == g.name:
            continue
        if exists:
            remove_user(settings, name, decl=decl)
        person = add_user(settings, name, g.name, decl=decl)
        stored[name] = {"role": g.name, "password": person.password}
        write_private(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return stored
