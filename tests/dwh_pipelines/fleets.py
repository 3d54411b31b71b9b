"""Fleets and warehouses for the tests: simulate a fleet into a folder, load it, compare.

Content checksums cover every prod table and leave out only bookkeeping that says *when*
rather than *what* (``_seq``, ``ingested_at``).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from datalake_pipelines.source_simulator import SimulationConfig, simulate
from strata.db import connect
from strata.objectstore import open_store
from strata.pipeline import run
from strata.settings import Settings
from tests.support import make_settings

BOOKKEEPING = {"_seq", "ingested_at"}
LAYER_DBS = ("staging_db", "semantic_db", "dwh_db")


def simulate_fleet(folder: Path, **config: object) -> Path:
    """Simulate a fleet into a local folder (the source); returns the manifest folder."""
    manifests = folder.parent / f"{folder.name}-manifest"
    simulate(SimulationConfig(**config), open_store(str(folder), None), manifests)  # type: ignore[arg-type]
    return manifests


def warehouse_settings(services: Settings, source: Path) -> Settings:
    return make_settings(
        services.home,
        source_url=str(source),
        lake_url=f"s3://strata-lake/wh-{uuid.uuid4().hex[:8]}",
    )


def checksums(settings: Settings) -> dict[str, tuple[int, str]]:
    """{db.prod.table: (rows, md5 over the sorted row hashes of its content columns)}."""
    found: dict[str, tuple[int, str]] = {}
    for db in LAYER_DBS:
        with connect(settings, db) as conn:
            tables = conn.execute(
                "select table_name from information_schema.tables"
                " where table_schema = 'prod' order by 1"
            ).fetchall()
            for (table,) in tables:
                columns = [
                    r[0]
                    for r in conn.execute(
                        "select column_name from information_schema.columns"
                        " where table_schema = 'prod' and table_name = %s order by ordinal_position",
                        (table,),
                    )
                    if r[0] not in BOOKKEEPING
                ]
                cols = ", ".join(f'"{c}"' for c in columns)
                rows, digest = conn.execute(
                    f"select count(*), md5(coalesce(string_agg(h, '' order by h), ''))"
                    f" from (select md5(row({cols})::text) as h from prod.{table}) as t"
                ).fetchone()
                found[f"{db}.{table}"] = (rows, digest)
    return found


def loaded(services: Settings, source: Path, **config: object) -> Settings:
    """Simulate a fleet into ``source`` and run the whole pipeline on it once."""
    simulate_fleet(source, **config)
    settings = warehouse_settings(services, source)
    run(settings)
    return settings


def assert_answer_is(settings: Settings, expected: dict[str, tuple[int, float]]) -> None:
    got = published_answer(settings)
    assert sorted(got) == sorted(expected)
    for period, (vehicles, avg) in expected.items():
        assert got[period][0] == vehicles, period
        assert got[period][1] == pytest.approx(avg, rel=1e-9, abs=0.0), period


def published_answer(settings: Settings) -> dict[str, tuple[int, float]]:
    with connect(settings, "dwh_db") as conn:
        rows = conn.execute(
            "select operating_period_id, vehicles, avg_distance_km"
            " from reporting.avg_distance_per_operating_period"
        ).fetchall()
    return {period: (vehicles, avg) for period, vehicles, avg in rows}


def source_lines(folder: Path) -> list[bytes]:
    return [
        line
        for f in sorted(folder.rglob("*"))
        if f.is_file()
        for line in f.read_bytes().splitlines()
    ]
