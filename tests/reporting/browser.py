"""A small headless-Chromium driver over the DevTools protocol, for the report tests.

Why the DevTools protocol rather than ``--screenshot`` and ``--enable-logging``: it reports
JavaScript exceptions (``Runtime.exceptionThrown``), console errors and failed loads as
structured events instead of log lines to grep, it lists every request the page makes (so
"nothing left the machine" is checked, not assumed), and it takes the screenshot *after* the
plots have been drawn instead of at an arbitrary moment after load. ``websockets`` (already
pinned in requirements.txt) is the client.

Networking is off three ways: a proxy that points nowhere (``--proxy-server`` to port 9 with
no loopback bypass), ``Network.emulateNetworkConditions(offline)``, and Chromium's own
``--disable-background-networking``. Pages are opened from disk as ``file://`` URLs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from websockets.sync.client import connect

from strata.services.state import wait_until

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
WIDTH = 1400


@dataclass
class PageVisit:
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: Image.Image | None = None

    @property
    def remote_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES)]


class Chromium:
    def __init__(self, binary: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="strata-chromium-"))
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stopped as a whole, by id
        )
        port = self._port()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        if not pages:
            raise RuntimeError("chromium started without a page target")
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Network.emulateNetworkConditions",
            offline=True,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )

    def _port(self) -> int:
        """Wait (deadline 30 s) until Chromium writes its DevTools port, or fail if it exits."""
        marker = self.profile / "DevToolsActivePort"

        def port_written_or_exited() -> bool:
            return self.process.poll() is not None or (
                marker.is_file() and bool(marker.read_text().split())
            )

        if not wait_until(port_written_or_exited, timeout=30, interval=0.05):
            raise RuntimeError("chromium did not open its DevTools port within 30 s")
        if self.process.poll() is not None:
            raise RuntimeError(
                f"chromium exited {self.process.returncode}: "
                f"{self.process.stderr.read().decode(errors='replace')[-2000:]}"  # type: ignore[union-attr]
            )
        return int(marker.read_text().split()[0])

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._id += 1
        ident = self._id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def _pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str) -> Any:
        found = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in found:
            raise RuntimeError(f"{expression}: {found['exceptionDetails']}")
        return found["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            self._pump(0.2)

    def visit(self, path: Path, ready: str = "document.readyState === 'complete'") -> PageVisit:
        """Open ``path``, wait until ``ready`` holds, collect errors and requests, and take a
        screenshot of the whole page."""
        self.events.clear()
        visit = PageVisit(path.resolve().as_uri())
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=visit.url)
        self.wait_for("document.readyState === 'complete'")
        self.wait_for(ready)
        height = min(int(self.evaluate("document.documentElement.scrollHeight")), 12_000)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self._pump(1.0)  # late errors, relayout after the resize
        shot = self.send("Page.captureScreenshot", format="png", timeout=60)
        visit.screenshot = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                visit.errors.append(f"exception: {text}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]
                )
                visit.errors.append(f"console.{params['type']}: {args}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                visit.errors.append(f"log: {entry['text']} {entry.get('url', '')}")
            elif method == "Network.loadingFailed":
                visit.errors.append(f"load failed: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
        return visit

    def close(self) -> None:
        """Stop the browser's own process group (started by us, with its own session)."""
        try:
            self._stack.close()
        finally:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)


def colored_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Pixels in ``box`` with a saturated colour (max - min channel > 60): the data marks.

    The plot background (white) and its grid lines (light grey-blue) are unsaturated, so an
    empty plot area counts zero however its grid looks."""
    region = np.asarray(image.crop(box), dtype=np.int16)
    return int(((region.max(axis=2) - region.min(axis=2)) > 60).sum())


def non_background_pixels(image: Image.Image) -> int:
    """Pixels that differ from the page's most common colour."""
    rgb = np.asarray(image, dtype=np.uint32).reshape(-1, 3)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    _, counts = np.unique(packed, return_counts=True)
    return int(len(packed) - counts.max())
