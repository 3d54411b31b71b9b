"""The reports of a real pipeline run (small simulated fleet, with defects) opened in headless
Chromium from disk, offline: no JavaScript error, no request leaves the machine, and the
screenshot shows plotted data in every plot area. Screenshots are kept (folder printed)."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from reporting.profiles import main_tables, sample
from reporting.render import PAGES, PLOTLY_BUNDLE
from strata.settings import Settings
from tests.reporting.browser import Chromium, colored_pixels, non_background_pixels
from tests.support import run_cli

PLOTS_DRAWN = (
    "(() => { const p = document.querySelectorAll('.js-plotly-plot');"
    " return p.length > 0 && [...p].every(d => d._fullLayout && d.querySelector('.main-svg')); })()"
)
PLOT_AREAS = (
    "[...document.querySelectorAll('.js-plotly-plot')].map(d => ({id: d.id,"
    " areas: [...d.querySelectorAll('.nsewdrag')].map(r => { const b = r.getBoundingClientRect();"
    " return [b.left + scrollX, b.top + scrollY, b.right + scrollX, b.bottom + scrollY]; }),"
    " table: d.querySelectorAll('.table .cell-text').length,"
    " points: d._fullData.reduce((n, t) => n + (t.x ? t.x.length : 0), 0)}))"
)
PROFILES = [f"profile_{t.layer}_{t.spec.name}" for t in main_tables()]


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Chromium]:
    driver = Chromium(chromium)
    yield driver
    driver.close()


def _folder(rendered: tuple[Settings, list[Path]]) -> Path:
    return rendered[1][0].parent


def test_render_writes_every_report_with_one_plotly_bundle(
    rendered: tuple[Settings, list[Path]],
) -> None:
    settings, paths = rendered
    folder = settings.home / "reports"
    assert paths[0] == folder / "index.html"
    assert [p.stem for p in paths[1:]] == [*PAGES, *PROFILES]
    assert all(p.is_file() for p in paths)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # precise paths: the owner's alone
    assert sorted(p.name for p in folder.glob("*.js")) == [PLOTLY_BUNDLE]  # once, beside them
    assert not list(folder.glob("*.tmp"))
    for name in PAGES:
        text = (folder / f"{name}.html").read_text()
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in text
        assert len(text) < 500_000, f"{name}: plotly.js embedded?"  # the bundle is ~4.7 MB
        assert not re.search(r"""(src|href)=["']https?:""", text), name


@pytest.mark.parametrize("name", ["index", *PAGES, *PROFILES])
def test_page_opens_offline_without_errors_and_shows_data(
    browser: Chromium, rendered: tuple[Settings, list[Path]], artifacts: Path, name: str
) -> None:
    path = _folder(rendered) / f"{name}.html"
    ready = PLOTS_DRAWN if name in PAGES else "document.readyState === 'complete'"
    visit = browser.visit(path, ready=ready)
    assert visit.screenshot is not None
    visit.screenshot.save(artifacts / f"{name}.png")
    assert visit.errors == [], f"{name}: {visit.errors}"
    assert visit.remote_requests == [], f"{name} tried the network: {visit.remote_requests}"
    assert visit.requests[0] == visit.url

    if name == "index":
        links = browser.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
        targets = {Path(link.removeprefix("file://")).name for link in links}
        assert targets == {f"{n}.html" for n in [*PAGES, *PROFILES]}
        assert non_background_pixels(visit.screenshot) > 1000
    elif name in PAGES:
        plots = browser.evaluate(PLOT_AREAS)
        assert plots, name
        for plot in plots:
            if plot["table"]:  # the table of checks not passing: header cells are drawn
                continue
            assert plot["points"] > 0, f"{name} {plot['id']}: no data points"
            for area in plot["areas"]:
                box = tuple(round(v) for v in area)
                colored = colored_pixels(visit.screenshot, box)  # type: ignore[arg-type]
                assert colored > 100, f"{name} {plot['id']}: plot area {box} shows no data"
    else:  # a profile: the report rendered, with the sensitive columns flagged
        text = browser.evaluate("document.body.innerText")
        assert "Overview" in text and "Variables" in text
        table = next(t for t in main_tables() if name.endswith(t.spec.name))
        for column, tag in table.spec.sensitive_columns.items():
            assert column in text
            assert f"SENSITIVE ({tag})" in text, f"{name}: {column} not flagged"
        assert non_background_pixels(visit.screenshot) > 10_000


def test_profile_sample_is_bounded_and_coarsens_geolocation(
    rendered: tuple[Settings, list[Path]],
) -> None:
    settings, _ = rendered
    dwh = next(t for t in main_tables() if t.layer == "dwh")
    frame = sample(settings, dwh, rows=50)
    assert len(frame) == 50
    assert list(frame.columns) == dwh.spec.column_names
    for column in dwh.spec.sensitive_columns:
        assert (frame[column] == frame[column].round(2)).all()
    assert frame.equals(sample(settings, dwh, rows=50))  # deterministic


def test_cli_report_writes_the_reports_and_rejects_a_bad_period(
    rendered: tuple[Settings, list[Path]],
) -> None:
    settings, _ = rendered
    done = run_cli("report", "--no-profiles", home=settings.home)
    printed = done.stdout.split()
    assert printed[0] == str(settings.home / "reports" / "index.html")
    assert [Path(p).stem for p in printed[1:]] == list(PAGES)
    bad = run_cli("report", "--since", "yesterday", home=settings.home, check=False)
    assert bad.returncode == 1
    assert "--since 'yesterday' is not an ISO-8601 timestamp" in bad.stderr
    empty = run_cli(
        "report", "--since", "2019-06-02", "--until", "2019-06-01", home=settings.home, check=False
    )
    assert empty.returncode == 1 and "the report period is empty" in empty.stderr
