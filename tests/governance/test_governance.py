"""Governance proven over real connections: TCP + scram-sha-256, as each demo person.

The expected access is written here from ARCHITECTURE §6 (not read from ``roles.yaml``), so
the declaration itself is under test. After a real pipeline run on a small simulated fleet and
``apply``, the pipeline creates more tables and recreates the reporting views; the access
matrix is then probed relation by relation (many statements per connection), so "covered
without re-running apply" is part of every case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from dwh_pipelines.warehouse import apply_presentation
from governance import apply, check, demo_users
from governance.people import DEMO_PREFIX, demo_secrets_path
from strata.bootstrap import SCHEMAS
from strata.db import connect, target
from strata.pipeline import run
from strata.settings import DATABASES, Settings
from tests.dwh_pipelines.fleets import simulate_fleet, warehouse_settings
from tests.support import reset_databases, run_cli

PRECISE = ("location_lat", "location_lng", "extra")  # extra: unknown fields may be coordinates
LAYERS = ("staging_db", "semantic_db", "dwh_db")
# role -> database -> schemas it reads (ARCHITECTURE §6); seniors create in every sandbox
READS = {
    "junior_data_analyst": {"dwh_db": {"prod", "reporting"}},
    "senior_data_analyst": {"dwh_db": {"dev", "prod", "reporting"}},
    "junior_data_scientist": {
        db: {"prod"} | ({"reporting"} if db == "dwh_db" else set()) for db in LAYERS
    },
    "senior_data_scientist": {
        db: {"dev", "prod"} | ({"reporting"} if db == "dwh_db" else set()) for db in LAYERS
    },
    "junior_data_engineer": {
        "raw_db": {"raw", "audit"},
        **{db: {"prod", "audit"} | ({"reporting"} if db == "dwh_db" else set()) for db in LAYERS},
    },
    "senior_data_engineer": {
        "raw_db": {"raw", "audit"},
        **{
            db: {"dev", "prod", "audit"} | ({"reporting"} if db == "dwh_db" else set())
            for db in LAYERS
        },
    },
}
COARSENED = {"junior_data_analyst", "junior_data_scientist"}


@dataclass
class Cases:
    """Every access case: what was tried, whether it held."""

    results: list[tuple[str, bool]] = field(default_factory=list)

    def expect(self, label: str, allowed: bool, conn: psycopg.Connection, query: object) -> bool:
        """Run ``query``; it must succeed when ``allowed``, else fail with a privilege error."""
        try:
            conn.execute(query)  # type: ignore[arg-type]
            got = True
        except errors.InsufficientPrivilege:
            got = False
        self.results.append(
            (f"{label}: expected {'allowed' if allowed else 'refused'}", got == allowed)
        )
        return got

    def select(
        self, label: str, allowed: bool, conn: psycopg.Connection, rel: sql.Composable
    ) -> bool:
        return self.expect(
            f"{label} SELECT", allowed, conn, sql.SQL("select * from {} limit 1").format(rel)
        )

    def record(self, label: str, held: bool) -> None:
        self.results.append((label, held))

    @property
    def failures(self) -> list[str]:
        return [label for label, held in self.results if not held]


def _as(settings: Settings, db: str, user: str, password: str) -> psycopg.Connection:
    """A person's own connection: TCP, password auth, no passfile."""
    p = target(settings, db).params
    return psycopg.connect(
        host=p["host"],
        port=p["port"],
        dbname=db,
        user=user,
        password=password,
        sslmode="disable",
        autocommit=True,
        connect_timeout=10,
    )


LATER = "gov_later"  # tables the pipeline creates after apply
LATER_START = datetime(2019, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def governed(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    reset_databases(services)
    source = tmp_path_factory.mktemp("governance") / "source"
    simulate_fleet(source, organizations=2, vehicles=4, minutes=20, seed=11)
    settings = warehouse_settings(services, source)
    run(settings)
    first = apply(settings)
    people = demo_users(settings)
    # after apply, with no further apply: a second run on new data (it publishes, alters
    # tables and recreates the reporting views, as the owner role), then new relations
    simulate_fleet(source, organizations=2, vehicles=4, minutes=10, seed=12, start=LATER_START)
    assert run(settings).stages["dwh"]["batches"] > 0
    for db in DATABASES:
        schema = "raw" if db == "raw_db" else "prod"
        with connect(settings, db) as conn:
            conn.execute(f"create table {schema}.{LATER}_plain (id int, note text)")
            conn.execute(
                f"create table {schema}.{LATER}_geo"
                " (id int, location_lat float8, location_lng float8)"
            )
            conn.execute(f"insert into {schema}.{LATER}_plain values (1, 'x')")
            conn.execute(f"insert into {schema}.{LATER}_geo values (1, 52.523456, 13.411234)")
            conn.execute(f"create table sandbox.{LATER}_owned (id int)")  # not theirs to read
    apply_presentation(settings)
    return {"settings": settings, "people": people, "first": first}


def _relations(settings: Settings, db: str) -> list[tuple[str, str, str, list[str]]]:
    """(schema, name, relkind, columns) of every table/view in the governed schemas."""
    with connect(settings, db) as conn:
        rows = conn.execute(
            "select n.nspname, c.relname, c.relkind::text,"
            " array_agg(a.attname::text order by a.attnum)"
            " from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
            " join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
            " where n.nspname = any(%s) and c.relkind in ('r', 'p', 'v', 'm')"
            " group by 1, 2, 3 order by 1, 2",
            (list(SCHEMAS[db]) + ["coarse"],),  # type: ignore[index]
        ).fetchall()
    return [(s, n, k, list(cols)) for s, n, k, cols in rows]


def _precise_values(settings: Settings, db: str, schema: str, name: str) -> list[float]:
    with connect(settings, db) as conn:
        return [
            r[0]
            for r in conn.execute(
                sql.SQL(
                    "select location_lat from {} where location_lat is not null order by 1"
                ).format(sql.Identifier(schema, name))
            ).fetchall()
        ]


def _probe(settings: Settings, user: str, role: str, password: str, cases: Cases) -> None:
    reads = READS[role]
    for db in DATABASES:
        declared = db in reads
        try:
            conn = _as(settings, db, user, password)
            connected = True
        except psycopg.OperationalError as exc:
            connected = False
            assert "permission denied for database" in str(exc), exc
        cases.record(
            f"{user} CONNECT {db}: expected {'allowed' if declared else 'refused'}",
            connected == declared,
        )
        if not connected:
            continue
        with conn:
            relations = _relations(settings, db)
            assert any(n == f"{LATER}_geo" for _, n, _, _ in relations), "later tables missing"
            for schema, name, kind, cols in relations:
                label = f"{user} {db}.{schema}.{name}"
                rel = sql.Identifier(schema, name)
                sensitive = [c for c in cols if c in PRECISE]
                if schema == "coarse":
                    readable = role in COARSENED
                    if cases.select(label, readable, conn, rel) and sensitive:
                        got = _values_as(conn, rel)
                        cases.record(
                            f"{label} rounded to 2 decimals", all(v == round(v, 2) for v in got)
                        )
                    continue
                if schema == "sandbox":
                    cases.expect(
                        f"{label} SELECT (another's sandbox object)",
                        False,
                        conn,
                        sql.SQL("select 1 from {} limit 1").format(rel),
                    )
                    continue
                readable = schema in reads[db]
                if readable and sensitive and role in COARSENED:
                    others = [c for c in cols if c not in PRECISE]
                    cases.expect(
                        f"{label} SELECT non-precise columns",
                        True,
                        conn,
                        sql.SQL("select {} from {} limit 1").format(
                            sql.SQL(", ").join(map(sql.Identifier, others)), rel
                        ),
                    )
                    for c in sensitive:
                        cases.expect(
                            f"{label} SELECT precise {c}",
                            False,
                            conn,
                            sql.SQL("select {} from {} limit 1").format(sql.Identifier(c), rel),
                        )
                    coarse = sql.Identifier("coarse", name)
                    if cases.select(f"{label} coarse view", True, conn, coarse):
                        got = _values_as(conn, coarse)
                        precise = _precise_values(settings, db, schema, name)
                        close = len(got) == len(precise) and all(
                            abs(c - p) <= 0.005 + 1e-9 and c == round(c, 2)
                            for c, p in zip(sorted(got), sorted(precise), strict=True)
                        )
                        cases.record(
                            f"{label} coarse view = precise rounded to 2 decimals ({len(got)} rows)",
                            close,
                        )
                else:
                    if cases.select(label, readable, conn, rel) and sensitive:
                        got = _values_as(conn, rel)
                        cases.record(
                            f"{label} precise coordinates visible",
                            got == _precise_values(settings, db, schema, name),
                        )
                if kind in ("r", "p"):
                    first = sql.Identifier(cols[0])
                    cases.expect(
                        f"{label} INSERT",
                        False,
                        conn,
                        sql.SQL("insert into {0} select * from {0} where false").format(rel),
                    )
                    cases.expect(
                        f"{label} UPDATE",
                        False,
                        conn,
                        sql.SQL("update {} set {} = {} where false").format(rel, first, first),
                    )
                    cases.expect(
                        f"{label} DELETE",
                        False,
                        conn,
                        sql.SQL("delete from {} where false").format(rel),
                    )
            for schema in (*SCHEMAS[db], "coarse") if db != "raw_db" else SCHEMAS[db]:  # type: ignore[index]
                may_create = schema == "sandbox" and role.startswith("senior_")
                probe = sql.Identifier(schema, f"gov_probe_{user}")
                if cases.expect(
                    f"{user} {db}.{schema} CREATE",
                    may_create,
                    conn,
                    sql.SQL("create table {} (x int)").format(probe),
                ):
                    # what they create is theirs: they write and read it, then drop it
                    cases.expect(
                        f"{user} {db}.{schema} owns its table",
                        True,
                        conn,
                        sql.SQL(
                            "insert into {0} values (1); select * from {0}; drop table {0}"
                        ).format(probe),
                    )


def _values_as(conn: psycopg.Connection, rel: sql.Composable) -> list[float]:
    return [
        r[0]
        for r in conn.execute(
            sql.SQL("select location_lat from {} where location_lat is not null order by 1").format(
                rel
            )
        )
    ]


def test_every_declared_access_holds_for_every_demo_user(governed: dict) -> None:
    settings, people = governed["settings"], governed["people"]
    assert sorted(people) == sorted(f"{DEMO_PREFIX}{r}" for r in READS)
    cases = Cases()
    for user, entry in sorted(people.items()):
        _probe(settings, user, entry["role"], entry["password"], cases)
    print(f"\naccess cases tested: {len(cases.results)}, failed: {len(cases.failures)}")
    assert not cases.failures, "\n".join(cases.failures[:40])
    assert len(cases.results) > 500


def test_demo_passwords_are_private(governed: dict) -> None:
    path = demo_secrets_path(governed["settings"])
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(json.loads(path.read_text())) == len(READS)


def test_wrong_password_unknown_and_removed_users_are_refused(
    governed: dict, tmp_path: Path
) -> None:
    settings, people = governed["settings"], governed["people"]
    user = f"{DEMO_PREFIX}junior_data_engineer"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _as(settings, "dwh_db", user, people[user]["password"] + "x")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _as(settings, "dwh_db", "gov_nobody", "whatever")
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery staple\n")
    home = settings.home
    run_cli(
        "governance",
        "add-user",
        "gov_temp_person",
        "--role",
        "senior_data_analyst",
        "--password-file",
        str(secret),
        home=home,
    )
    with _as(settings, "dwh_db", "gov_temp_person", "correct horse battery staple") as conn:
        conn.execute("create table sandbox.gov_temp_work (x int)")
        # grants of the person's own, and a routine that would run as its owner
        conn.execute("grant select on sandbox.gov_temp_work to public, junior_data_analyst")
        conn.execute(
            "create function sandbox.gov_temp_fn() returns int language sql security definer"
            " return 1"
        )
    result = run_cli("governance", "remove-user", "gov_temp_person", home=home)
    with connect(settings, "dwh_db", admin=True) as conn:
        acl, definer, public_execute = conn.execute(
            "select (select relacl::text from pg_class where oid = 'sandbox.gov_temp_work'::regclass),"
            " prosecdef, has_function_privilege('public', p.oid, 'execute')"
            " from pg_proc as p where p.oid = 'sandbox.gov_temp_fn()'::regprocedure"
        ).fetchone()
    assert acl in (
        None,
        "{strata_owner=arwdDxtm/strata_owner}",
        "{strata_owner=arwdDxt/strata_owner}",
    )
    assert definer is False and public_execute is False  # left to no one, running as no one
    assert "dropped role gov_temp_person" in result.stderr
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _as(settings, "dwh_db", "gov_temp_person", "correct horse battery staple")
    with connect(settings, "dwh_db") as conn:
        (owner,) = conn.execute(
            "select tableowner from pg_tables where schemaname = 'sandbox' and tablename = 'gov_temp_work'"
        ).fetchone()
    assert owner == "strata_owner"  # the person's work is kept, owned by the owner role
    generated = run_cli(
        "governance", "add-user", "gov_temp_two", "--role", "junior_data_analyst", home=home
    )
    password = generated.stdout.strip().splitlines()[-1]
    with _as(settings, "dwh_db", "gov_temp_two", password) as conn:
        assert conn.execute(
            "select count(*) from reporting.avg_distance_per_operating_period"
        ).fetchone()
    run_cli("governance", "remove-user", "gov_temp_two", home=home)
    refused = run_cli("governance", "remove-user", "strata_pipeline", home=home, check=False)
    assert refused.returncode == 1 and "not a person" in refused.stderr


def _snapshot(settings: Settings) -> dict:
    """Roles, memberships, settings, owners and every ACL and default ACL, as text."""
    found: dict = {}
    with connect(settings, "dwh_db", admin=True) as conn:
        found["roles"] = conn.execute(
            "select rolname, rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb"
            " from pg_roles where rolname not like 'pg\\_%' order by 1"
        ).fetchall()
        found["members"] = conn.execute(
            "select pg_get_userbyid(roleid), pg_get_userbyid(member), admin_option,"
            " inherit_option, set_option from pg_auth_members order by 1, 2"
        ).fetchall()
        found["settings"] = conn.execute(
            "select setdatabase, pg_get_userbyid(setrole), setconfig from pg_db_role_setting order by 1, 2"
        ).fetchall()
        found["databases"] = conn.execute(
            "select datname, pg_get_userbyid(datdba), datacl::text from pg_database order by 1"
        ).fetchall()
    for db in DATABASES:
        with connect(settings, db, admin=True) as conn:
            found[db] = {
                "schemas": conn.execute(
                    "select nspname, pg_get_userbyid(nspowner), nspacl::text from pg_namespace order by 1"
                ).fetchall(),
                "relations": conn.execute(
                    "select c.relnamespace::regnamespace::text, c.relname, pg_get_userbyid(c.relowner),"
                    " c.relacl::text from pg_class as c where c.relnamespace::regnamespace::text"
                    " not in ('pg_catalog', 'information_schema', 'pg_toast') order by 1, 2"
                ).fetchall(),
                "columns": conn.execute(
                    "select attrelid::regclass::text, attname, attacl::text from pg_attribute"
                    " where attacl is not null order by 1, 2"
                ).fetchall(),
                "default_acl": conn.execute(
                    "select pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text,"
                    " defaclobjtype, defaclacl::text from pg_default_acl order by 1, 2, 3"
                ).fetchall(),
                "event_triggers": conn.execute(
                    "select evtname, evtevent, evtenabled, evttags::text from pg_event_trigger order by 1"
                ).fetchall(),
                "functions": conn.execute(
                    "select proname, pg_get_userbyid(proowner), prosrc, proacl::text from pg_proc"
                    " where pronamespace = 'public'::regnamespace order by 1"
                ).fetchall(),
            }
    return found


def test_apply_twice_gives_the_same_catalog(governed: dict) -> None:
    settings = governed["settings"]
    assert governed["first"].applied > 0
    before = _snapshot(settings)
    again = apply(settings)
    assert again.applied == 0, again
    after = _snapshot(settings)
    apply(settings)
    assert _snapshot(settings) == after == before


def test_check_names_a_hand_broken_grant_and_apply_repairs_it(governed: dict) -> None:
    settings = governed["settings"]
    assert not check(settings).differences
    with connect(settings, "dwh_db", admin=True, autocommit=True) as conn:
        conn.execute("grant insert on prod.dim_vehicle to junior_data_analyst")
        conn.execute("revoke select on prod.dim_date from senior_data_analyst")
        conn.execute(
            "grant select (location_lat) on prod.fct_vehicle_location_updates to junior_data_scientist"
        )
    broken = run_cli("governance", "check", home=settings.home, check=False)
    assert broken.returncode == 1, broken.stdout
    assert "prod.dim_vehicle: junior_data_analyst has INSERT" in broken.stdout
    assert "prod.dim_date: senior_data_analyst lacks SELECT" in broken.stdout
    assert (
        "prod.fct_vehicle_location_updates.location_lat: junior_data_scientist has SELECT"
        in broken.stdout
    )
    # a person's sandbox: shared with whom they like, but never with PUBLIC
    with connect(settings, "dwh_db", admin=True, autocommit=True) as conn:
        conn.execute("create table sandbox.gov_shared (x int)")
        conn.execute("grant select on sandbox.gov_shared to public")
        conn.execute(
            "alter default privileges for role senior_data_analyst in schema sandbox"
            " grant select on tables to public"
        )
    shared = " ".join(
        run_cli("governance", "check", home=settings.home, check=False).stdout.split()
    )
    assert "sandbox.gov_shared: PUBLIC has SELECT (PUBLIC holds nothing anywhere)" in shared
    assert (
        "schema sandbox: senior_data_analyst's default privileges grant tables to PUBLIC" in shared
    )
    # people too: one group role, nothing else, no attribute beyond LOGIN
    junior = f"{DEMO_PREFIX}junior_data_analyst"
    with connect(settings, "dwh_db", admin=True, autocommit=True) as conn:
        conn.execute(f"grant pg_read_all_data to {junior}")
        conn.execute(f"alter role {junior} createrole createdb")
    people = run_cli("governance", "check", home=settings.home, check=False).stdout
    assert f"{junior} (a person in junior_data_analyst) is a member of pg_read_all_data" in people
    assert f"{junior} (a person) has superuser/createdb/createrole" in people
    run_cli("governance", "apply", home=settings.home)
    with connect(settings, "dwh_db", admin=True, autocommit=True) as conn:
        conn.execute(f"grant senior_data_analyst to {junior}")  # which group is meant? not apply's
        two = run_cli("governance", "check", home=settings.home, check=False)
        conn.execute(f"revoke senior_data_analyst from {junior}")
    assert two.returncode == 1
    assert (
        f"{junior} is a member of junior_data_analyst, senior_data_analyst (a person belongs to"
        in " ".join(two.stdout.split())
    )
    fixed = run_cli("governance", "check", home=settings.home)
    with connect(settings, "dwh_db", admin=True, autocommit=True) as conn:
        conn.execute("drop table sandbox.gov_shared")
    print("\n" + fixed.stdout)
    assert "junior_data_analyst     yes      -          r~         r~" in fixed.stdout
