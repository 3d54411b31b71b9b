"""The in-database half of governance: what keeps relations created *later* governed.

Default privileges give every reader SELECT on a relation the owner role creates. For a
relation with precise columns that is one grant too many for the roles that must see them
coarsened, and default privileges cannot name columns. So an event trigger (``ddl_command_end``
on CREATE/ALTER of tables and views) calls ``public.strata_governance_secure`` in the same
transaction as the DDL: it swaps those roles' table-level SELECT for column-level SELECT on the
other columns and (re)creates ``coarse.<relation>``. The pipeline's reporting views are dropped
and recreated on every run; the coarse view of a view is built from the view's definition, not
on the view, so the pipeline's ``drop view`` never meets a dependent object.

``apply`` installs this per database and calls the same function for existing relations: one
implementation of the rule, whenever the relation was made.
"""

from __future__ import annotations

from governance.model import Declaration

SECURE = "strata_governance_secure"
ON_DDL = "strata_governance_on_ddl"
TRIGGER = "strata_governance"
TAGS = (
    "CREATE TABLE",
    "CREATE TABLE AS",
    "SELECT INTO",
    "CREATE VIEW",
    "CREATE MATERIALIZED VIEW",
    "CREATE FOREIGN TABLE",
    "ALTER TABLE",
    "ALTER VIEW",
)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _array(values: tuple[str, ...] | list[str]) -> str:
    return "array[" + ", ".join(_literal(v) for v in values) + "]::text[]"


def secure_body(decl: Declaration, db: str) -> str:
    """PL/pgSQL of ``strata_governance_secure(rel oid, refresh boolean)`` for ``db``."""
    cases = " ".join(
        f"when {_literal(s)} then {_array(decl.coarse_groups(db, s))}"
        for s in decl.coarse_schemas(db)
    )
    precise = _array(decl.precise_columns)
    coarse = _literal(decl.coarse_schema)
    owner = _literal(decl.owner)
    dec = int(decl.decimals)
    return f"""
declare
  nsp text; rname text; kind "char"; readers text[]; precise text[]; others text[];
  g text; sel text; src text; note text; existing text;
begin
  select n.nspname, c.relname, c.relkind into nsp, rname, kind
    from pg_class as c join pg_namespace as n on n.oid = c.relnamespace where c.oid = rel;
  readers := case nsp {cases} else null end;
  if readers is null or kind not in ('r', 'p', 'v', 'm', 'f') then
    return;
  end if;
  select array_agg(a.attname::text order by a.attnum) filter (where a.attname = any({precise})),
         array_agg(quote_ident(a.attname) order by a.attnum)
           filter (where a.attname <> all({precise}))
    into precise, others
    from pg_attribute as a where a.attrelid = rel and a.attnum > 0 and not a.attisdropped;
  if precise is null then
    return;
  end if;
  foreach g in array readers loop
    if exists (select 1 from pg_class as c, aclexplode(c.relacl) as x
               where c.oid = rel and x.grantee = g::regrole and x.privilege_type = 'SELECT') then
      execute format('revoke select on %I.%I from %I', nsp, rname, g);
    end if;
    if exists (select 1 from pg_attribute as a, aclexplode(a.attacl) as x
               where a.attrelid = rel and a.attname = any(precise) and x.grantee = g::regrole) then
      execute format('revoke select (%s) on %I.%I from %I',
                     (select string_agg(quote_ident(p), ', ') from unnest(precise) as p),
                     nsp, rname, g);
    end if;
    if others is not null and (select count(*) from pg_attribute as a, aclexplode(a.attacl) as x
        where a.attrelid = rel and a.attnum > 0 and not a.attisdropped
          and a.attname <> all(precise) and x.grantee = g::regrole
          and x.privilege_type = 'SELECT') < cardinality(others) then
      execute format('grant select (%s) on %I.%I to %I',
                     array_to_string(others, ', '), nsp, rname, g);
    end if;
  end loop;
  if to_regnamespace({coarse}) is null then
    raise warning 'strata governance: schema % is missing, so %.% has no coarse view;'
      ' run `strata governance apply`', {coarse}, nsp, rname;
    return;
  end if;
  existing := obj_description(to_regclass(format('%I.%I', {coarse}, rname)), 'pg_class');
  note := format('%s.%s with %s rounded to {dec} decimals (about 1 km), for the roles that'
                 ' may not see precise geolocation', nsp, rname, array_to_string(precise, ', '));
  if existing is not null and existing <> note then
    raise exception 'strata governance: %.% is the coarse view of another relation (%);'
      ' rename one of them', {coarse}, rname, existing;
  end if;
  if not refresh and existing is not null then
    return;
  end if;
  select string_agg(case when a.attname = any(precise)
                              and a.atttypid in ('float8'::regtype, 'float4'::regtype,
                                                 'numeric'::regtype)
                         then format('round(s.%1$I::numeric, {dec})::float8 as %1$I', a.attname)
                         when a.attname = any(precise)  -- not a number (e.g. json): withheld
                         then format('null::%s as %I', format_type(a.atttypid, a.atttypmod),
                                     a.attname)
                         else format('s.%I', a.attname) end, ', ' order by a.attnum)
    into sel
    from pg_attribute as a where a.attrelid = rel and a.attnum > 0 and not a.attisdropped;
  src := case when kind = 'v'
              then '(' || rtrim(pg_get_viewdef(rel), E'; \\n') || ')'
              else format('%I.%I', nsp, rname) end;
  begin
    execute format('create or replace view %I.%I as select %s from %s as s',
                   {coarse}, rname, sel, src);
  exception when invalid_table_definition then
    execute format('drop view %I.%I', {coarse}, rname);
    execute format('create view %I.%I as select %s from %s as s', {coarse}, rname, sel, src);
  end;
  execute format('comment on view %I.%I is %L', {coarse}, rname, note);
  if (select pg_get_userbyid(relowner) from pg_class
      where oid = to_regclass(format('%I.%I', {coarse}, rname))) <> {owner} then
    execute format('alter view %I.%I owner to %I', {coarse}, rname, {owner});
  end if;
end
"""


def on_ddl_body(decl: Declaration, db: str) -> str:
    schemas = _array(decl.coarse_schemas(db))
    return f"""
declare
  cmd record;
begin
  for cmd in select * from pg_event_trigger_ddl_commands() loop
    if cmd.object_type in ('table', 'view', 'materialized view', 'foreign table')
       and cmd.schema_name = any({schemas}) then
      perform public.{SECURE}(cmd.objid, cmd.command_tag <> 'ALTER TABLE');
    end if;
  end loop;
end
"""


def install_sql(decl: Declaration, db: str) -> list[str]:
    """The functions (run as the owner role, which then owns them)."""
    return [
        f"create or replace function public.{SECURE}(rel oid, refresh boolean) returns void"
        f" language plpgsql set search_path = pg_catalog as $strata${secure_body(decl, db)}$strata$",
        f"create or replace function public.{ON_DDL}() returns event_trigger"
        f" language plpgsql set search_path = pg_catalog as $strata${on_ddl_body(decl, db)}$strata$",
    ]


def trigger_sql() -> str:
    """The event trigger itself (PostgreSQL requires a superuser for this one)."""
    tags = ", ".join(_literal(t) for t in TAGS)
    return (
        f"create event trigger {TRIGGER} on ddl_command_end when tag in ({tags})"
        f" execute function public.{ON_DDL}()"
    )
