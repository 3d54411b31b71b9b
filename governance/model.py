"""The governance declaration (``governance/roles.yaml``), read and checked once.

Everything apply and check need is derived here: per database which group reads or creates in
which schema, which groups see coordinates coarsened, and which column names are precise
(harvested from the ``sensitivity`` tags of every ``table.yaml``, so a new sensitive column is
governed as soon as it is declared).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from strata.bootstrap import SCHEMAS
from strata.errors import ConfigError
from strata.settings import DATABASES, DbName
from strata.tables import load_table

ROOT = Path(__file__).resolve().parents[1]
DECLARATION = Path(__file__).with_name("roles.yaml")
DECLARED_TABLES = ("datalake_pipelines", "dwh_pipelines")
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    precise_geolocation: bool
    select: dict[DbName, tuple[str, ...]]
    create: dict[DbName, tuple[str, ...]]

    @property
    def databases(self) -> tuple[DbName, ...]:
        return tuple(db for db in DATABASES if db in self.select or db in self.create)

    def reads(self, db: str, schema: str) -> bool:
        return schema in self.select.get(db, ())  # type: ignore[call-overload]

    def creates(self, db: str, schema: str) -> bool:
        return schema in self.create.get(db, ())  # type: ignore[call-overload]


@dataclass(frozen=True)
class Declaration:
    owner: str
    groups: tuple[Group, ...]
    sensitivity: str
    decimals: int
    coarse_schema: str
    precise_columns: tuple[str, ...]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        known = ", ".join(g.name for g in self.groups)
        raise ConfigError(f"unknown group role {name!r}; expected one of {known}")

    @property
    def governed_roles(self) -> tuple[str, ...]:
        return (self.owner, *(g.name for g in self.groups))

    def coarse_groups(self, db: str, schema: str) -> tuple[str, ...]:
        """Groups that read ``db.schema`` but must not see precise columns there."""
        if schema == self.coarse_schema:
            return ()
        return tuple(
            g.name for g in self.groups if not g.precise_geolocation and g.reads(db, schema)
        )

    def coarse_schemas(self, db: str) -> tuple[str, ...]:
        """Schemas of ``db`` where precise columns are withheld from some reader."""
        return tuple(s for s in SCHEMAS[db] if self.coarse_groups(db, s))  # type: ignore[index]

    def schemas(self, db: str) -> tuple[str, ...]:
        """Every schema governance manages in ``db``: bootstrap's, plus ``coarse`` if needed."""
        extra = (self.coarse_schema,) if self.coarse_schemas(db) else ()
        return (*SCHEMAS[db], *extra)  # type: ignore[index]

    def readers(self, db: str, schema: str) -> tuple[str, ...]:
        if schema == self.coarse_schema:
            return tuple(
                g.name
                for g in self.groups
                if any(g.name in self.coarse_groups(db, s) for s in self.coarse_schemas(db))
            )
        return tuple(g.name for g in self.groups if g.reads(db, schema))

    def creators(self, db: str, schema: str) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups if g.creates(db, schema))

    def sandbox(self, db: str, schema: str) -> bool:
        """People own what they create here; relations in it are theirs, not governed."""
        return bool(self.creators(db, schema))

    def connects(self, db: str) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups if db in g.databases)


def _names(where: str, values: object) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{DECLARATION}: {where} must be a list of schema names")
    return tuple(values)


def precise_columns(sensitivity: str) -> tuple[str, ...]:
    """Column names tagged ``sensitivity`` in any table declaration of the project."""
    found: set[str] = set()
    for package in DECLARED_TABLES:
        for path in sorted((ROOT / package).rglob("table.yaml")):
            spec = load_table(path)
            found.update(n for n, tag in spec.sensitive_columns.items() if tag == sensitivity)
    return tuple(sorted(found))


@cache
def load_declaration(path: Path = DECLARATION) -> Declaration:
    """Read and validate the declaration; every problem names the file and the entry."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the governance declaration: {exc}") from exc
    try:
        owner = raw["owner_role"]
        coarsen = raw["coarsen"]
        entries = raw["groups"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: missing key {exc}") from None
    groups = []
    for name, entry in entries.items():
        if not NAME.match(name):
            raise ConfigError(f"{path}: group {name!r} is not a lowercase identifier")
        select: dict[DbName, tuple[str, ...]] = {}
        create: dict[DbName, tuple[str, ...]] = {}
        for db, access in (entry.get("databases") or {}).items():
            if db not in DATABASES:
                raise ConfigError(f"{path}: {name}: unknown database {db!r}")
            unknown_keys = set(access) - {"select", "create"}
            if unknown_keys:
                raise ConfigError(f"{path}: {name}.{db}: unknown keys {sorted(unknown_keys)}")
            for kind, target in (("select", select), ("create", create)):
                schemas = _names(f"{name}.{db}.{kind}", access.get(kind, []))
                for schema in schemas:
                    if schema not in SCHEMAS[db]:
                        raise ConfigError(f"{path}: {name}.{db}.{kind}: no schema {schema!r}")
                if schemas:
                    target[db] = schemas
        if "precise_geolocation" not in entry:
            raise ConfigError(f"{path}: {name}: say precise_geolocation: true or false")
        groups.append(
            Group(
                name=name,
                description=str(entry.get("description", "")).strip(),
                precise_geolocation=bool(entry["precise_geolocation"]),
                select=select,
                create=create,
            )
        )
    for g in groups:
        for db, schemas in g.create.items():
            both = set(schemas) & {s for other in groups for s in other.select.get(db, ())}
            if both:
                raise ConfigError(
                    f"{path}: {g.name}.{db}: {sorted(both)} is both a sandbox and read as"
                    " published data; keep sandboxes apart"
                )
    sensitivity = str(coarsen["sensitivity"])
    return Declaration(
        owner=owner,
        groups=tuple(groups),
        sensitivity=sensitivity,
        decimals=int(coarsen["decimals"]),
        coarse_schema=str(coarsen["schema"]),
        precise_columns=precise_columns(sensitivity),
    )
