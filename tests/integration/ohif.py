"""The OHIF Viewer (npm ``@ohif/app``, its built ``dist/``) served on loopback against Orthanc.

One origin serves both the viewer's static files and Orthanc's DICOMweb (``/dicom-web``,
``/wado`` are proxied to Orthanc with its credentials added), so the browser makes no
cross-origin request and never sees Orthanc's password.

The viewer is not vendored: ``.ci/run`` fetches the pinned version from the npm registry into
``~/.cache/meddet-ohif/<version>/package``; :func:`ohif_dist` finds it (or ``MEDDET_OHIF_DIST``).
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: The pinned viewer (npm ``@ohif/app``); .ci/run reads this line.
OHIF_VERSION = "3.13.2"
CHROMIUM = "/usr/bin/chromium"
#: Canvas pixels of a segment's colour that count as "the segmentation is drawn" (a box of the
#: synthetic study covers thousands at the viewport's scale).
SEG_PIXELS = 100
#: Paths forwarded to Orthanc (its DICOMweb plugin's roots, deploy/orthanc/orthanc.json).
PROXIED = ("/dicom-web/", "/wado")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "meddet-ohif" / OHIF_VERSION


def ohif_dist() -> Path | None:
    """The built viewer (a folder holding ``index.html`` and ``app-config.js``), None if absent."""
    override = os.environ.get("MEDDET_OHIF_DIST")
    candidates = [Path(override)] if override else [cache_dir() / "package" / "dist"]
    for dist in candidates:
        if (dist / "index.html").is_file() and (dist / "app-config.js").is_file():
            return dist
    return None


def unavailable_reason() -> str | None:
    """Why the viewer test cannot run here (for pytest.skip), None when it can."""
    if ohif_dist() is None:
        return (
            f"@ohif/app@{OHIF_VERSION} not found under {cache_dir()} (.ci/run fetches it: "
            f"npm pack @ohif/app@{OHIF_VERSION}, unpacked there) nor in MEDDET_OHIF_DIST"
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (Debian package chromium)"
    return None


def app_config(data_source_name: str = "orthanc") -> str:
    """``app-config.js``: one DICOMweb data source, Orthanc behind this same origin."""
    config = {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "defaultDataSourceName": data_source_name,
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": data_source_name,
                "configuration": {
                    "friendlyName": "Orthanc (MedDet test PACS)",
                    "name": "orthanc",
                    "wadoUriRoot": "/wado",
                    "qidoRoot": "/dicom-web",
                    "wadoRoot": "/dicom-web",
                    "qidoSupportsIncludeField": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "omitQuotationForMultipartRequest": True,
                    "bulkDataURI": {"enabled": True},
                },
            }
        ],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files of ``dist`` (``index.html`` for the viewer's routes), DICOMweb proxied."""

    server: ViewerServer
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
    }

    def __init__(self, request: Any, client_address: Any, server: ViewerServer) -> None:
        super().__init__(request, client_address, server, directory=str(server.dist))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.log is not None:
            self.server.log.append(format % args)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith(PROXIED):
            return self._proxy()
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            return self._send(200, self.server.config.encode(), "application/javascript")
        if path != "/" and not Path(self.translate_path(path)).is_file():
            self.path = "/index.html"  # a route of the single-page app (/viewer, /segmentation...)
        return super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        return self._proxy() if self.path.startswith(PROXIED) else self._send(405, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type", "range")}
        headers["Authorization"] = self.server.authorization
        request = urllib.request.Request(
            self.server.upstream + self.path, data=body, headers=headers, method=self.command
        )
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            self.send_response(response.status)
            for key, value in response.headers.items():
                if key.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                    self.send_header(key, value)
            payload = response.read()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)


class ViewerServer(http.server.ThreadingHTTPServer):
    """The viewer and Orthanc's DICOMweb on one loopback origin; ``start()`` serves on a thread."""

    daemon_threads = True

    def __init__(self, dist: Path, upstream: str, authorization: str, port: int = 0, config: str | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.dist = dist
        self.upstream = upstream.rstrip("/")
        self.authorization = authorization
        self.config = config if config is not None else app_config()
        self.log: list[str] | None = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> ViewerServer:
        self._thread = threading.Thread(target=self.serve_forever, name="ohif-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def chromium_args() -> list[str]:
    """Headless Chromium with software WebGL (SwiftShader): the viewer's images are WebGL."""
    return [
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--ignore-gpu-blocklist",
        "--no-sandbox",
        "--disable-dev-shm-usage",
    ]


# --- the browser check (runs where Orthanc is reachable: inside the test's network namespace) ---

#: Counts the viewport canvas's coloured pixels (the MR image is grey: any colour is an overlay
#: drawn into the canvas, i.e. a segmentation; annotations are SVG above it) and, among them, the
#: warm ones (red/orange: our segments' recommended colours).
_CANVAS_COLOURS = """() => {
  const canvas = document.querySelector('[data-cy="viewport-pane"] canvas.cornerstone-canvas');
  if (!canvas) return null;
  const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let coloured = 0, warm = 0;
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 40) {
      coloured++;
      if (r > g + 40 && r > b + 40) warm++;
    }
  }
  return {width: canvas.width, height: canvas.height, coloured, warm};
}"""


class Viewer:
    """One Chromium page on the OHIF viewer of one study; each method reads the page's DOM."""

    def __init__(self, page: Any, base_url: str, out: Path, timeout_ms: int = 45_000) -> None:
        self.page = page
        self.base_url = base_url
        self.out = out
        self.timeout = timeout_ms

    def open_study(self, study_uid: str, n_series: int) -> list[dict]:
        """Open the study (longitudinal mode, /viewer); wait for its series and the first image."""
        page = self.page
        page.goto(f"{self.base_url}/viewer?StudyInstanceUIDs={study_uid}", timeout=self.timeout)
        page.wait_for_function(
            "n => document.querySelectorAll('[id^=\"thumbnail-\"]').length >= n",
            arg=n_series,
            timeout=self.timeout,
        )
        page.locator('[data-cy="viewport-pane"] canvas.cornerstone-canvas').first.wait_for(timeout=self.timeout)
        return self.series()

    def series(self) -> list[dict]:
        """The study browser's series: modality, description, and the viewer's messages about it
        (the warning icon's tooltip: e.g. "SOP Class UID is not supported")."""
        rows = []
        for thumb in self.page.locator('[id^="thumbnail-"]').all():
            modality = thumb.locator('[data-cy="series-modality-label"]')
            description = thumb.locator('[data-cy="series-description-label"]')
            row = {
                "modality": modality.first.inner_text().strip() if modality.count() else None,
                "description": description.first.inner_text().strip()
                if description.count()
                else thumb.inner_text().strip().splitlines()[0],
                "messages": [],
            }
            warning = thumb.locator('button[id^="display-set-tooltip-"]')
            if warning.count():
                warning.first.hover()
                tooltip = self.page.locator('[role="tooltip"]').first
                tooltip.wait_for(timeout=5_000)
                row["messages"] = [line.split(". ", 1)[-1] for line in tooltip.inner_text().splitlines()[1:]]
                self.page.mouse.move(700, 450)  # away from the icon (the tooltip may linger)
            rows.append(row)
        return rows

    def _thumbnail(self, description: str) -> Any:
        return self.page.locator('[id^="thumbnail-"]', has=self.page.get_by_text(description, exact=True)).first

    def load(self, description: str) -> None:
        """Open a series in the viewport (double click on its thumbnail, as a user would)."""
        self._thumbnail(description).dblclick()

    def accept_prompt(self) -> str:
        """Answer "Yes" to the viewport's prompt ("track measurements?", "open this Segmentation?");
        returns the prompt's text."""
        prompt = self.page.locator('[data-cy="viewport-notification"]').first
        prompt.wait_for(timeout=self.timeout)
        text = prompt.inner_text().splitlines()[0].strip()
        prompt.get_by_role("button", name="Yes").click()
        prompt.wait_for(state="detached", timeout=self.timeout)
        return text

    def overlay_texts(self) -> list[str]:
        """The text drawn over the image (SVG annotation layer), one string per label block."""
        self.page.locator('[data-cy="viewport-pane"] svg.svg-layer text').first.wait_for(timeout=self.timeout)
        return self.page.evaluate("""() => [...document.querySelectorAll(
            '[data-cy="viewport-pane"] svg.svg-layer text')].map(
            text => [...text.querySelectorAll('tspan')].map(t => t.textContent.trim()).join(' | '))""")

    def overlay_boxes(self) -> int:
        return self.page.locator('[data-cy="viewport-pane"] svg.svg-layer :is(rect, polyline, path)').count()

    def open_panel(self, name: str) -> None:
        """Open the right-hand panel: ``trackedMeasurements`` or ``panelSegmentation`` (waiting
        until the other one's rows are gone, so that :meth:`rows` reads this one)."""
        self.page.locator(f'[data-cy="{name}-btn"]').first.click()
        if name == "panelSegmentation":
            self.page.locator('[data-cy^="all-segments-visibility-toggle"]').first.wait_for(timeout=self.timeout)
            self.page.wait_for_function(
                "() => !document.querySelector('[data-cy^=\"measurement-table-row-\"]')", timeout=self.timeout
            )

    def rows(self, minimum: int) -> list[dict]:
        """The open panel's rows (measurements or segments): title and detail lines."""
        page = self.page
        page.wait_for_function(
            "n => document.querySelectorAll('[data-cy=\"data-row-title\"]').length >= n",
            arg=minimum,
            timeout=self.timeout,
        )
        rows = []
        for row in page.locator('[data-cy="data-row"]').all():
            title = row.locator('[data-cy="data-row-title"]')
            if not title.count():
                continue
            parent = row.locator("xpath=..")
            rows.append(
                {
                    "title": title.first.inner_text().strip(),
                    "details": [
                        d.strip() for d in parent.locator('[data-cy="data-row-detail-line"]').all_inner_texts()
                    ],
                }
            )
        return rows

    def canvas_colours(self) -> dict | None:
        return self.page.evaluate(_CANVAS_COLOURS)

    def viewport_text(self) -> str:
        return self.page.locator('[data-cy="viewport-pane"]').first.inner_text()

    def screenshot(self, name: str) -> str:
        """The page as ``name`` (JPEG: ~150 kB instead of ~500 kB, for docs/figures)."""
        path = self.out / name
        self.page.screenshot(path=str(path), type="jpeg", quality=80)
        return str(path)


def check_study(base_url: str, study_uid: str, expected: dict, out: Path) -> dict:
    """Drive OHIF through the study's result series; return what the page showed.

    ``expected``: ``{"series": n, "sr": description, "seg": description or None,
    "gsps": description, "sc": description or None, "measurements": n, "segments": n}``.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"console_errors": [], "seconds": {}}
    started = time.monotonic()

    def lap(step: str) -> None:
        report["seconds"][step] = round(time.monotonic() - started, 1)

    viewer: Viewer | None = None
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        except PlaywrightError as exc:
            lines = str(exc).splitlines()  # Playwright's message, then Chromium's own log
            return {"chromium_error": " ".join([lines[0], *(line.strip() for line in lines[-4:])])[:800]}
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            # No onboarding tour over the viewport (OHIF remembers the tours shown here).
            context.add_init_script("localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))")
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and report["console_errors"].append(m.text[:300]))
            viewer = Viewer(page, base_url, out)
            lap("browser")
            report["series"] = viewer.open_study(study_uid, expected["series"])
            lap("study")

            # SR: the overlay of the SR viewport (read-only), then loaded as tracked measurements.
            viewer.load(expected["sr"])
            report["sr_prompt"] = (
                page.locator('[data-cy="viewport-notification"]')
                .first.inner_text(timeout=viewer.timeout)
                .splitlines()[0]
            )
            report["sr_overlay"] = viewer.overlay_texts()
            report["screenshots"] = [viewer.screenshot("ohif-sr-overlay.jpg")]
            viewer.accept_prompt()
            viewer.open_panel("trackedMeasurements")
            report["measurements"] = viewer.rows(expected["measurements"])
            report["measurement_boxes"] = viewer.overlay_boxes()
            report["screenshots"].append(viewer.screenshot("ohif-sr-measurements.jpg"))
            lap("sr")

            if expected.get("seg"):
                viewer.load(expected["seg"])
                report["seg_prompt"] = viewer.accept_prompt()
                viewer.open_panel("panelSegmentation")
                report["segments"] = viewer.rows(expected["segments"])
                try:  # until the segment is drawn; the test judges what was there
                    page.wait_for_function(f"() => ({_CANVAS_COLOURS})()?.warm > {SEG_PIXELS}", timeout=viewer.timeout)
                except PlaywrightError:
                    pass
                report["seg_canvas"] = viewer.canvas_colours()
                report["screenshots"].append(viewer.screenshot("ohif-seg.jpg"))
                lap("seg")

            if expected.get("sc"):
                viewer.load(expected["sc"])
                page.wait_for_function(
                    "d => document.querySelector('[data-cy=\"viewport-pane\"]')?.innerText.includes(d)",
                    arg=expected["sc"],
                    timeout=viewer.timeout,
                )
                report["sc_viewport"] = viewer.viewport_text()
                report["screenshots"].append(viewer.screenshot("ohif-sc.jpg"))
                lap("sc")
        except PlaywrightError as exc:
            report["error"] = str(exc)[:2000]
            if viewer is not None:
                report.setdefault("screenshots", []).append(viewer.screenshot("ohif-failure.jpg"))
        finally:
            browser.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.integration.ohif STUDY_UID EXPECTED_JSON OUT_DIR``: serve the viewer
    against Orthanc (``ORTHANC_URL``, ``ORTHANC_AUTHORIZATION``), check the study, print a JSON report."""
    import sys

    study_uid, expected, out = (argv or sys.argv[1:])[:3]
    dist = ohif_dist()
    if dist is None:
        print(json.dumps({"error": unavailable_reason()}))
        return 2
    server = ViewerServer(dist, os.environ["ORTHANC_URL"], os.environ["ORTHANC_AUTHORIZATION"]).start()
    try:
        report = check_study(server.url, study_uid, json.loads(expected), Path(out))
    finally:
        server.stop()
    report["http_errors"] = [line for line in server.log or [] if '" 200 ' not in line and '" 304 ' not in line]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
