"""``apply`` and ``check``: the declaration against the catalog, as a list of differences.

Both read the catalog the same way and compute the same differences; ``check`` reports them,
``apply`` executes the statement attached to each one (revokes before grants) and then reads
the catalog again and insists that nothing differs. A second ``apply`` therefore finds nothing
to do and changes nothing (tested by comparing catalog snapshots).

What is compared, per server: the roles (NOLOGIN groups and owner role, no dangerous
attributes), the pipeline's membership of the owner role and its ``role`` setting. Per
database: owners of the database, schemas and every relation outside the sandboxes; CONNECT;
USAGE/CREATE on every schema; direct grants on every relation and column; the owner role's
default privileges; the coarse views; the event trigger. PUBLIC must hold nothing anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from governance import trigger
from governance.model import Declaration, load_declaration
from strata.db import connect, target
from strata.errors import ConfigError, StrataError
from strata.settings import DATABASES, Settings

PUBLIC = "PUBLIC"
RELKINDS = ("r", "p", "v", "m", "f", "S")
WRITE = ("INSERT", "UPDATE", "DELETE")
KIND_WORD = {"S": "sequence"}
ALTER_WORD = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
}
GROUP_ATTRS = ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")


@dataclass(frozen=True)
class Difference:
    """One way the catalog differs from the declaration, and the statement that fixes it."""

    where: str  # database (or "server")
    what: str
    fix: tuple[sql.Composable, ...] = ()
    as_owner: bool = False  # run under SET ROLE <owner> (so that the owner owns what it makes)
    first: bool = False  # revokes go before grants (a table REVOKE also drops column grants)

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Report:
    differences: list[Difference] = field(default_factory=list)
    applied: int = 0
    matrix: str = ""


def pipeline_user(settings: Settings) -> str:
    user = target(settings, DATABASES[0]).params.get("user")
    if not user:
        raise ConfigError(
            "governance needs to know the pipeline's login role: put a user in STRATA_PG_DSN"
            " (or STRATA_RAW_DB_DSN)"
        )
    return user


@contextmanager
def admin_connection(settings: Settings, db: str) -> Iterator[psycopg.Connection]:
    """A superuser connection: roles, ownership and the event trigger need one."""
    t = target(settings, db, admin=True)
    hint = (
        "governance apply needs a PostgreSQL superuser (it creates roles, reassigns the"
        " pipeline's objects to the owner role and installs an event trigger): set"
        " STRATA_PG_ADMIN_DSN to a superuser DSN"
    )
    try:
        conn = connect(settings, db, admin=True)
    except StrataError as exc:
        if settings.embedded_pg:  # the embedded server's superuser is Strata's own: not a setting
            raise
        raise StrataError(f"{exc}; {hint}") from exc
    with conn:
        (superuser,) = conn.execute(
            "select rolsuper from pg_roles where rolname = current_user"
        ).fetchone()
        if not superuser:
            raise StrataError(f"{hint} (connected to {t.url} as a role that is not one)")
        yield conn


# ---------------------------------------------------------------- reading the catalog


def _acl(conn: psycopg.Connection, query: str, params: tuple = ()) -> dict:
    """{key: {grantee: {privilege}}} from a query returning (key, grantee, privilege)."""
    found: dict = {}
    for key, grantee, privilege in conn.execute(query, params).fetchall():
        found.setdefault(key, {}).setdefault(grantee, set()).add(privilege)
    return found


GRANTEE = "case when x.grantee = 0 then 'PUBLIC' else pg_get_userbyid(x.grantee) end"


def _relations(conn: psycopg.Connection, schemas: list[str]) -> list[tuple]:
    return conn.execute(
        "select c.oid, n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner)"
        " from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = any(%s) and c.relkind::text = any(%s) order by 2, 3",
        (schemas, list(RELKINDS)),
    ).fetchall()


def _columns(conn: psycopg.Connection, oids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for oid, name in conn.execute(
        "select attrelid, attname from pg_attribute where attrelid = any(%s) and attnum > 0"
        " and not attisdropped order by attrelid, attnum",
        (oids,),
    ).fetchall():
        found.setdefault(oid, []).append(name)
    return found


# ---------------------------------------------------------------- differences


Make = Callable[[bool, list[str], sql.Composable], sql.Composable]


def _on(target_sql: sql.Composable) -> Make:
    """GRANT/REVOKE <privileges> ON <target_sql> TO/FROM <grantee>."""

    def make(revoke: bool, privileges: list[str], who: sql.Composable) -> sql.Composable:
        text = "revoke {} on {} from {}" if revoke else "grant {} on {} to {}"
        return sql.SQL(text).format(sql.SQL(", ").join(map(sql.SQL, privileges)), target_sql, who)

    return make


def _grant_diff(
    where: str,
    label: str,
    make: Make,
    want: dict[str, set[str]],
    have: dict[str, set[str]],
) -> list[Difference]:
    """Compare direct grants on one object; PUBLIC and unknown grantees must hold nothing."""
    found = []
    for grantee in sorted(set(want) | set(have)):
        missing = sorted(want.get(grantee, set()) - have.get(grantee, set()))
        extra = sorted(have.get(grantee, set()) - want.get(grantee, set()))
        who = sql.SQL("public") if grantee == PUBLIC else sql.Identifier(grantee)
        for revoke, privileges in ((True, extra), (False, missing)):
            if privileges:
                verb = "has" if revoke else "lacks"
                note = " (not declared)" if revoke else ""
                found.append(
                    Difference(
                        where,
                        f"{label}: {grantee} {verb} {', '.join(privileges)}{note}",
                        (make(revoke, privileges, who),),
                        first=revoke,
                    )
                )
    return found


def server_differences(
    conn: psycopg.Connection, decl: Declaration, pipeline: str, where: str
) -> list[Difference]:
    """Roles, memberships and the pipeline's ``role`` setting (cluster-wide objects)."""
    found: list[Difference] = []
    roles = {
        r[0]: r[1:]
        for r in conn.execute(
            f"select rolname, rolcanlogin, {', '.join(GROUP_ATTRS)} from pg_roles"
            " where rolname = any(%s)",
            (list(decl.governed_roles),),
        ).fetchall()
    }
    for role in decl.governed_roles:
        if role not in roles:
            found.append(
                Difference(
                    where,
                    f"role {role} is missing",
                    (sql.SQL("create role {} nologin").format(sql.Identifier(role)),),
                    first=True,
                )
            )
        elif any(roles[role]):
            found.append(
                Difference(
                    where,
                    f"role {role} may log in or has superuser/createdb/createrole/replication"
                    "/bypassrls (a group role must have none)",
                    (
                        sql.SQL(
                            "alter role {} nologin nosuperuser nocreatedb nocreaterole"
                            " noreplication nobypassrls"
                        ).format(sql.Identifier(role)),
                    ),
                    first=True,
                )
            )
    members = conn.execute(
        "select pg_get_userbyid(m.roleid), pg_get_userbyid(m.member), m.inherit_option,"
        " m.set_option from pg_auth_members as m"
        " where pg_get_userbyid(m.roleid) = any(%s) or pg_get_userbyid(m.member) = any(%s)",
        (list(decl.governed_roles), list(decl.governed_roles)),
    ).fetchall()
    owner = decl.owner
    have_pipeline = any(r == owner and m == pipeline and i and s for r, m, i, s in members)
    if not have_pipeline:
        found.append(
            Difference(
                where,
                f"{pipeline} is not a member of {owner} (with INHERIT and SET)",
                (
                    sql.SQL("grant {} to {} with inherit true, set true").format(
                        sql.Identifier(owner), sql.Identifier(pipeline)
                    ),
                ),
            )
        )
    group_names = {g.name for g in decl.groups}
    for role, member, _inherit, _set in members:
        # only the pipeline joins the owner role; group roles join nothing (people join them)
        if (role == owner and member != pipeline) or member in group_names:
            found.append(
                Difference(
                    where,
                    f"{member} is a member of {role} (only {pipeline} may be a member of"
                    f" {owner}; group roles are members of nothing)",
                    (_revoke_membership(role, member),),
                    first=True,
                )
            )
    found += _people_differences(conn, group_names, where)
    settings = conn.execute(
        "select s.setconfig from pg_db_role_setting as s join pg_roles as r on r.oid = s.setrole"
        " where r.rolname = %s and s.setdatabase = 0",
        (pipeline,),
    ).fetchone()
    if not settings or f"role={owner}" not in (settings[0] or []):
        found.append(
            Difference(
                where,
                f"{pipeline} does not start its sessions as {owner} (ALTER ROLE … SET role),"
                " so tables it creates would not be owned by the owner role",
                (
                    sql.SQL("alter role {} set role = {}").format(
                        sql.Identifier(pipeline), sql.Literal(owner)
                    ),
                ),
            )
        )
    return found


def _revoke_membership(role: str, member: str) -> sql.Composable:
    return sql.SQL("revoke {} from {}").format(sql.Identifier(role), sql.Identifier(member))


def _people_differences(
    conn: psycopg.Connection, group_names: set[str], where: str
) -> list[Difference]:
    """People (login roles in a group role) belong to one group role and nothing else, with
    no attribute beyond LOGIN: a grant of another role (``pg_read_all_data``, a senior group)
    or CREATEROLE would reach past the group's privileges."""
    found: list[Difference] = []
    for person, privileged, memberships in conn.execute(
        "select r.rolname::text, r.rolsuper or r.rolcreatedb or r.rolcreaterole"
        " or r.rolreplication or r.rolbypassrls,"
        " array(select pg_get_userbyid(m.roleid)::text from pg_auth_members as m"
        "       where m.member = r.oid order by 1)"
        " from pg_roles as r where r.rolcanlogin and exists (select 1 from pg_auth_members as m"
        "   where m.member = r.oid and pg_get_userbyid(m.roleid) = any(%s)) order by 1",
        (sorted(group_names),),
    ).fetchall():
        if privileged:
            found.append(
                Difference(
                    where,
                    f"{person} (a person) has superuser/createdb/createrole/replication/bypassrls",
                    (
                        sql.SQL(
                            "alter role {} nosuperuser nocreatedb nocreaterole noreplication"
                            " nobypassrls"
                        ).format(sql.Identifier(person)),
                    ),
                    first=True,
                )
            )
        groups = [m for m in memberships if m in group_names]
        for other in (m for m in memberships if m not in group_names):
            found.append(
                Difference(
                    where,
                    f"{person} (a person in {', '.join(groups)}) is a member of {other} (a"
                    " person belongs to one group role, nothing else)",
                    (_revoke_membership(other, person),),
                    first=True,
                )
            )
        if len(groups) > 1:  # which one is meant is not for apply to guess
            found.append(
                Difference(
                    where,
                    f"{person} is a member of {', '.join(groups)} (a person belongs to one group"
                    f" role): `strata governance remove-user {person}`, then add-user again",
                )
            )
    return found


def database_differences(
    conn: psycopg.Connection, decl: Declaration, pipeline: str, db: str
) -> list[Difference]:
    found: list[Difference] = []
    owner = decl.owner
    ident_db = sql.Identifier(db)

    # -- the database: owner and CONNECT
    (dba,) = conn.execute(
        "select pg_get_userbyid(datdba) from pg_database where datname = %s", (db,)
    ).fetchone()
    if dba != owner:
        found.append(_owner_fix(db, "database", ident_db, db, dba, owner))
    have = _acl(
        conn,
        f"select 1, {GRANTEE}, x.privilege_type from pg_database as d,"
        " aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) as x"
        " where d.datname = %s and x.grantee <> d.datdba",
        (db,),
    ).get(1, {})
    want = {g: {"CONNECT"} for g in decl.connects(db)}
    found += _grant_diff(
        db, f"database {db}", _on(sql.SQL("database {}").format(ident_db)), want, have
    )

    # -- schemas: existence, owner, USAGE/CREATE; PUBLIC never CREATE anywhere
    schemas = list(decl.schemas(db))
    existing = {
        name: (schema_owner, acl)
        for name, schema_owner, acl in conn.execute(
            "select nspname, pg_get_userbyid(nspowner), nspacl is not null from pg_namespace"
        ).fetchall()
    }
    schema_acl = _acl(
        conn,
        f"select n.nspname, {GRANTEE}, x.privilege_type from pg_namespace as n,"
        " aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) as x"
        " where x.grantee <> n.nspowner",
    )
    for schema in schemas:
        ident = sql.Identifier(schema)
        if schema not in existing:
            found.append(
                Difference(
                    db,
                    f"schema {schema} is missing",
                    (sql.SQL("create schema {}").format(ident),),
                    as_owner=True,
                    first=True,
                )
            )
        elif existing[schema][0] != owner:
            found.append(_owner_fix(db, "schema", ident, schema, existing[schema][0], owner))
        want = {g: {"USAGE"} for g in decl.readers(db, schema)}
        for g in decl.creators(db, schema):
            want.setdefault(g, set()).update({"USAGE", "CREATE"})
        found += _grant_diff(
            db,
            f"schema {schema}",
            _on(sql.SQL("schema {}").format(ident)),
            want,
            schema_acl.get(schema, {}),
        )
    for schema, grants in sorted(schema_acl.items()):
        if schema not in schemas and "CREATE" in grants.get(PUBLIC, set()):
            found.append(
                Difference(
                    db,
                    f"schema {schema}: PUBLIC has CREATE",
                    (
                        sql.SQL("revoke create on schema {} from public").format(
                            sql.Identifier(schema)
                        ),
                    ),
                    first=True,
                )
            )

    # -- relations outside the sandboxes: owner, table and column grants
    governed = [s for s in schemas if not decl.sandbox(db, s)]
    relations = _relations(conn, governed)
    oids = [r[0] for r in relations]
    columns = _columns(conn, oids)
    rel_acl = _acl(
        conn,
        f"select c.oid, {GRANTEE}, x.privilege_type from pg_class as c,"
        " aclexplode(coalesce(c.relacl, acldefault(case when c.relkind = 'S' then 's' else 'r'"
        ' end::"char", c.relowner))) as x where c.oid = any(%s) and x.grantee <> c.relowner',
        (oids,),
    )
    col_acl = _acl(
        conn,
        f"select a.attrelid || '.' || a.attname, {GRANTEE}, x.privilege_type"
        " from pg_attribute as a, aclexplode(a.attacl) as x where a.attrelid = any(%s)",
        (oids,),
    )
    precise = set(decl.precise_columns)
    coarse_views = []
    for oid, schema, name, kind, rel_owner in relations:
        label = f"{schema}.{name}"
        rel = sql.Identifier(schema, name)
        if rel_owner != owner:
            found.append(_owner_fix(db, ALTER_WORD[kind], rel, label, rel_owner, owner))
        cols = columns.get(oid, [])
        sensitive = [c for c in cols if c in precise]
        coarse_roles = set(decl.coarse_groups(db, schema)) if sensitive else set()
        want: dict[str, set[str]] = {}
        want_cols: dict[str, dict[str, set[str]]] = {}
        if kind != "S":
            for g in decl.readers(db, schema):
                if g in coarse_roles:
                    for c in cols:
                        if c not in precise:
                            want_cols.setdefault(c, {})[g] = {"SELECT"}
                else:
                    want[g] = {"SELECT"}
            if coarse_roles:
                coarse_views.append((label, name))
        on = sql.SQL("{} {}").format(sql.SQL(KIND_WORD.get(kind, "table")), rel)
        found += _grant_diff(db, label, _on(on), want, rel_acl.get(oid, {}))
        for col in cols:
            have_col = col_acl.get(f"{oid}.{col}", {})
            want_col = want_cols.get(col, {})
            if have_col != want_col:
                found += _grant_diff(db, f"{label}.{col}", _column(rel, col), want_col, have_col)
    # -- sandboxes: what people share is theirs to decide, but PUBLIC holds nothing there
    # either (not on a relation, not by default privileges)
    sandboxes = [s for s in schemas if decl.sandbox(db, s)]
    for schema, name, privileges in conn.execute(
        "select n.nspname::text, c.relname::text, string_agg(distinct x.privilege_type, ', ')"
        " from pg_class as c join pg_namespace as n on n.oid = c.relnamespace,"
        " aclexplode(c.relacl) as x where n.nspname = any(%s) and x.grantee = 0"
        " group by 1, 2 order by 1, 2",
        (sandboxes,),
    ).fetchall():
        found.append(
            Difference(
                db,
                f"{schema}.{name}: PUBLIC has {privileges} (PUBLIC holds nothing anywhere)",
                (
                    sql.SQL("revoke all on table {} from public").format(
                        sql.Identifier(schema, name)
                    ),
                ),
                first=True,
            )
        )
    for role, schema, kind in conn.execute(
        "select pg_get_userbyid(d.defaclrole)::text, n.nspname::text, d.defaclobjtype::text"
        " from pg_default_acl as d join pg_namespace as n on n.oid = d.defaclnamespace,"
        " aclexplode(d.defaclacl) as x where n.nspname = any(%s) and x.grantee = 0"
        " group by 1, 2, 3 order by 1, 2, 3",
        (sandboxes,),
    ).fetchall():
        objects = {"r": "tables", "S": "sequences", "f": "functions", "T": "types"}.get(kind)
        if objects is None:
            continue
        found.append(
            Difference(
                db,
                f"schema {schema}: {role}'s default privileges grant {objects} to PUBLIC"
                " (PUBLIC holds nothing anywhere)",
                (
                    sql.SQL(
                        "alter default privileges for role {} in schema {} revoke all on {}"
                        " from public"
                    ).format(sql.Identifier(role), sql.Identifier(schema), sql.SQL(objects)),
                ),
                first=True,
            )
        )
    # -- the coarse views exist (their content is the trigger function's business)
    if coarse_views:
        existing_views = {
            r[0]
            for r in conn.execute(
                "select c.relname from pg_class as c join pg_namespace as n"
                " on n.oid = c.relnamespace where n.nspname = %s and c.relkind = 'v'",
                (decl.coarse_schema,),
            ).fetchall()
        }
        for label, name in coarse_views:
            if name not in existing_views:
                # apply rebuilds every coarse view after the grants (see _refresh_coarse_views)
                found.append(
                    Difference(
                        db, f"{label} has precise columns but no view {decl.coarse_schema}.{name}"
                    )
                )

    # -- default privileges of the owner role (what covers relations created later)
    defaults = (
        _acl(
            conn,
            f"select coalesce(n.nspname, '') || ':' || d.defaclobjtype::text, {GRANTEE}, x.privilege_type"
            " from pg_default_acl as d left join pg_namespace as n on n.oid = d.defaclnamespace,"
            " aclexplode(d.defaclacl) as x where d.defaclrole = %s::regrole"
            " and d.defaclnamespace <> 0",
            (owner,),
        )
        if _role_exists(conn, owner)
        else {}
    )
    for schema in governed:
        want = {g: {"SELECT"} for g in decl.readers(db, schema)}
        found += _grant_diff(
            db,
            f"default privileges of {owner} in {schema}",
            _default(owner, schema),
            want,
            defaults.get(f"{schema}:r", {}),
        )
    for key, grants in sorted(defaults.items()):
        schema, objtype = key.rsplit(":", 1)
        if objtype == "r" and schema in governed:
            continue
        for grantee, privileges in sorted(grants.items()):
            found.append(
                Difference(
                    db,
                    f"default privileges ({objtype}) in {schema}: {grantee} gets"
                    f" {', '.join(sorted(privileges))} (not declared)",
                )
            )

    # -- the event trigger that governs relations created later
    if decl.coarse_schemas(db):
        found += _trigger_differences(conn, decl, db)
    return found


def _owner_fix(
    db: str, word: str, ident: sql.Composable, label: str, actual: str, owner: str
) -> Difference:
    return Difference(
        db,
        f"{word} {label} is owned by {actual}, not {owner}",
        (sql.SQL("alter {} {} owner to {}").format(sql.SQL(word), ident, sql.Identifier(owner)),),
        first=True,
    )


def _column(rel: sql.Composable, col: str) -> Make:
    """GRANT SELECT (col) ON TABLE t: the privilege carries the column list."""

    def make(revoke: bool, privileges: list[str], who: sql.Composable) -> sql.Composable:
        each = sql.SQL(", ").join(
            sql.SQL("{} ({})").format(sql.SQL(p), sql.Identifier(col)) for p in privileges
        )
        text = "revoke {} on table {} from {}" if revoke else "grant {} on table {} to {}"
        return sql.SQL(text).format(each, rel, who)

    return make


def _default(owner: str, schema: str) -> Make:
    """ALTER DEFAULT PRIVILEGES FOR ROLE <owner> IN SCHEMA <schema> … ON TABLES."""

    def make(revoke: bool, privileges: list[str], who: sql.Composable) -> sql.Composable:
        text = "alter default privileges for role {} in schema {} " + (
            "revoke {} on tables from {}" if revoke else "grant {} on tables to {}"
        )
        return sql.SQL(text).format(
            sql.Identifier(owner),
            sql.Identifier(schema),
            sql.SQL(", ").join(map(sql.SQL, privileges)),
            who,
        )

    return make


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is not None


def _trigger_differences(conn: psycopg.Connection, decl: Declaration, db: str) -> list[Difference]:
    found: list[Difference] = []
    functions = dict(
        conn.execute(
            "select p.proname, p.prosrc from pg_proc as p join pg_namespace as n"
            " on n.oid = p.pronamespace where n.nspname = 'public' and p.proname = any(%s)",
            ([trigger.SECURE, trigger.ON_DDL],),
        ).fetchall()
    )
    bodies = {
        trigger.SECURE: trigger.secure_body(decl, db),
        trigger.ON_DDL: trigger.on_ddl_body(decl, db),
    }
    stale = [name for name, body in bodies.items() if functions.get(name) != body]
    if stale:
        found.append(
            Difference(
                db,
                f"governance functions {', '.join(stale)} are missing or not as declared",
                tuple(sql.SQL(s) for s in trigger.install_sql(decl, db)),  # type: ignore[arg-type]
                as_owner=True,
                first=True,
            )
        )
    row = conn.execute(
        "select t.evtenabled, p.proname, t.evttags from pg_event_trigger as t"
        " join pg_proc as p on p.oid = t.evtfoid where t.evtname = %s",
        (trigger.TRIGGER,),
    ).fetchone()
    want_tags = sorted(trigger.TAGS)
    if (
        row is None
        or row[0] != "O"
        or row[1] != trigger.ON_DDL
        or sorted(row[2] or []) != want_tags
    ):
        drop = sql.SQL("drop event trigger if exists {}").format(sql.Identifier(trigger.TRIGGER))
        found.append(
            Difference(
                db,
                f"event trigger {trigger.TRIGGER} is missing, disabled or not as declared:"
                " relations created later would not be governed",
                (drop, sql.SQL(trigger.trigger_sql())),  # type: ignore[arg-type]
            )
        )
    return found


# ---------------------------------------------------------------- the matrix


def matrix(conn: psycopg.Connection, decl: Declaration, db: str) -> list[str]:
    """Effective privileges (inheritance included) per role and schema, from the catalog.

    ``r`` SELECT on every relation, ``r~`` SELECT with the precise columns withheld on some,
    ``r?`` SELECT on some relations only, ``w`` INSERT/UPDATE/DELETE on some, ``c`` CREATE,
    ``-`` nothing. An empty schema shows what the owner's default privileges would give.
    """
    roles = [*decl.governed_roles, PUBLIC]
    schemas = list(decl.schemas(db))
    present = {r[0] for r in conn.execute("select rolname from pg_roles").fetchall()}
    header = f"{db:<24}{'connect':<9}" + "".join(f"{s:<11}" for s in schemas)
    lines = [header]
    for role in roles:
        who = "public" if role == PUBLIC else role
        if role != PUBLIC and role not in present:
            lines.append(f"{role:<24}(missing)")
            continue
        (can_connect,) = conn.execute(
            "select has_database_privilege(%s, %s, 'CONNECT')", (who, db)
        ).fetchone()
        cells = []
        for schema in schemas:
            row = conn.execute(
                "select has_schema_privilege(%(r)s, n.oid, 'USAGE'),"
                " has_schema_privilege(%(r)s, n.oid, 'CREATE'),"
                " count(c.oid),"
                " count(c.oid) filter (where has_table_privilege(%(r)s, c.oid, 'SELECT')),"
                " count(c.oid) filter (where not has_table_privilege(%(r)s, c.oid, 'SELECT')"
                "   and has_any_column_privilege(%(r)s, c.oid, 'SELECT')),"
                " count(c.oid) filter (where has_table_privilege(%(r)s, c.oid,"
                "   'INSERT, UPDATE, DELETE')),"
                " exists (select 1 from pg_default_acl as d, aclexplode(d.defaclacl) as x"
                "   where d.defaclnamespace = n.oid and d.defaclobjtype = 'r'"
                "   and x.privilege_type = 'SELECT' and case when %(r)s = 'public'"
                "   then x.grantee = 0 else x.grantee = 0 or pg_has_role(%(r)s, x.grantee,"
                "   'USAGE') end) or (%(r)s <> 'public'"
                "   and case when %(r)s = 'public' then false"
                "   else pg_has_role(%(r)s, n.nspowner, 'USAGE') end)"
                " from pg_namespace as n left join pg_class as c on c.relnamespace = n.oid"
                "   and c.relkind in ('r', 'p', 'v', 'm', 'f')"
                " where n.nspname = %(s)s group by n.oid",
                {"r": who, "s": schema},
            ).fetchone()
            if row is None:
                cells.append("(none)")
                continue
            usage, create, total, selectable, column_only, writable, default_select = row
            cell = ""
            if usage:
                if total == 0:
                    cell += "r" if default_select else ""
                elif selectable == total:
                    cell += "r"
                elif selectable + column_only == total:
                    cell += "r~"
                elif selectable + column_only:
                    cell += "r?"
                if writable:
                    cell += "w"
                if create:
                    cell += "c"
            cells.append(cell or "-")
        lines.append(
            f"{role:<24}{'yes' if can_connect else 'no':<9}" + "".join(f"{c:<11}" for c in cells)
        )
    return lines


# ---------------------------------------------------------------- entry points


def servers(settings: Settings) -> dict[tuple[str, str], str]:
    """One database per distinct server: roles are cluster-wide objects."""
    found: dict[tuple[str, str], str] = {}
    for db in DATABASES:
        p = target(settings, db, admin=True).params
        found.setdefault((p.get("host", ""), p.get("port", "")), db)
    return found


def differences(settings: Settings, decl: Declaration | None = None) -> list[Difference]:
    decl = decl or load_declaration()
    pipeline = pipeline_user(settings)
    found: list[Difference] = []
    for (host, port), db in servers(settings).items():
        with admin_connection(settings, db) as conn:
            found += server_differences(conn, decl, pipeline, f"server {host}:{port}")
    for db in DATABASES:
        with admin_connection(settings, db) as conn:
            found += database_differences(conn, decl, pipeline, db)
    return found


def _run(conn: psycopg.Connection, diffs: list[Difference], owner: str) -> int:
    count = 0
    for d in sorted(diffs, key=lambda d: not d.first):
        if not d.fix:
            continue
        if d.as_owner:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(owner)))
        try:
            for statement in d.fix:
                conn.execute(statement)
        except psycopg.Error as exc:
            raise StrataError(f"governance: fixing “{d}” failed: {str(exc).strip()}") from exc
        finally:
            if d.as_owner:
                conn.execute("reset role")
        count += 1
    return count


def apply(settings: Settings, decl: Declaration | None = None) -> Report:
    """Make the catalog say what the declaration says; idempotent. Takes the run lock so that
    no pipeline session creates objects while ownership moves to the owner role."""
    from strata.locks import run_lock

    decl = decl or load_declaration()
    pipeline = pipeline_user(settings)
    report = Report()
    with run_lock(settings):
        for (host, port), db in servers(settings).items():
            with admin_connection(settings, db) as conn:
                diffs = server_differences(conn, decl, pipeline, f"server {host}:{port}")
                report.applied += _run(conn, diffs, decl.owner)
                conn.commit()
        for db in DATABASES:
            with admin_connection(settings, db) as conn:
                # objects the pipeline made before it started its sessions as the owner role
                conn.execute(
                    sql.SQL("reassign owned by {} to {}").format(
                        sql.Identifier(pipeline), sql.Identifier(decl.owner)
                    )
                )
                diffs = database_differences(conn, decl, pipeline, db)
                report.applied += _run(conn, diffs, decl.owner)
                if decl.coarse_schemas(db):
                    _refresh_coarse_views(conn, decl, db)
                conn.commit()
    report.differences = differences(settings, decl)
    if report.differences:
        listed = "; ".join(map(str, report.differences[:10]))
        raise StrataError(f"governance apply left {len(report.differences)} differences: {listed}")
    return report


def _refresh_coarse_views(conn: psycopg.Connection, decl: Declaration, db: str) -> None:
    """Rebuild every coarse view from its source's current definition (same text, same
    catalog when nothing changed)."""
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(decl.owner)))
    try:
        for oid, *_ in _relations(conn, list(decl.coarse_schemas(db))):
            conn.execute(
                sql.SQL("select public.{}(%s, true)").format(sql.Identifier(trigger.SECURE)),
                (oid,),
            )
    finally:
        conn.execute("reset role")


def check(settings: Settings, decl: Declaration | None = None) -> Report:
    """The matrix as it is and every difference from the declaration (nothing is changed)."""
    decl = decl or load_declaration()
    report = Report(differences=differences(settings, decl))
    lines: list[str] = []
    for db in DATABASES:
        with admin_connection(settings, db) as conn:
            lines += matrix(conn, decl, db)
            lines.append("")
    report.matrix = "\n".join(lines).rstrip()
    return report
