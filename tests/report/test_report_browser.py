"""``report.html`` loaded by a real headless browser (Chromium's ``--dump-dom``).

Needs Chromium: installed from Debian's ``chromium`` package when running as root with apt-get
(as CI does); otherwise skips saying why (fails instead when ``CI=true``).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from report_inputs import MODEL, Inputs

from lookright.stages.report import load_report_config, run_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Dom(HTMLParser):
    """What the tests read from the browser's DOM: ids, table rows and cells, images."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.images: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.external: list[str] = []
        self.not_available = 0
        self._tables: list[str] = []
        self._in_body = False
        self._column: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if "not-available" in a.get("class", "").split():
            self.not_available += 1
        if tag == "table":
            self._tables.append(a.get("id", ""))
            self.rows.setdefault(a.get("id", ""), [])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._tables:
            self.rows[self._tables[-1]].append({})
        elif tag == "td" and self._in_body:
            self._column = a.get("data-column")
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._tables:
            self._tables.pop()
        elif tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._column = None

    def handle_data(self, data: str) -> None:
        if self._column and self._tables:
            row = self.rows[self._tables[-1]][-1]
            row[self._column] = row.get(self._column, "") + data.strip()


def _install_chromium() -> str:
    """apt-get install Debian's ``chromium`` when root with apt; '' or why it could not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root with apt-get, so it cannot be installed here"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    for command in (install, ["apt-get", "update", "-q"], install):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if command is not install:
            continue
        if done.returncode == 0 and find_chromium():
            return ""
    return f"apt-get install chromium failed: {done.stderr.strip()[-300:]}"


def require_chromium() -> str:
    """The browser; installs it when possible. Skips saying why, or fails on CI (CI=true)."""
    browser = find_chromium()
    if browser is None:
        why = _install_chromium()
        browser = find_chromium()
        if browser is None:
            reason = (
                "Chromium is not installed (no chromium / chromium-browser / google-chrome on "
                f"PATH) and {why}: install it with `apt-get install -y chromium`"
            )
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"the browser test must run on CI: {reason}", pytrace=False)
            pytest.skip(reason)
    return browser


def dump_dom(browser: str, html_path: Path, profile: Path) -> str:
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<table" in result.stdout, result.stderr[-2000:]
    return result.stdout


def _decode_image(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    data = base64.b64decode(src[len(prefix) :], validate=True)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # raises on a corrupt PNG
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_report_html_in_a_headless_browser(inputs: Inputs, tmp_path: Path) -> None:
    browser = require_chromium()
    out = tmp_path / "report"
    cfg = load_report_config({"report": {"gallery_samples": 4, "smooth_window": 2}})
    run_report(cfg, inputs.evaluations(), inputs.grpo_samples(), inputs.data_dir, out)
    dom = Dom()
    dom.feed(dump_dom(browser, out / "report.html", tmp_path / "chromium-profile"))

    assert {"answers", "saliency", "faithfulness-curves", "grpo-rewards", "gallery"} <= dom.ids
    assert {"answers-table", "saliency-table", f"gallery-{MODEL}"} <= dom.ids
    assert len(dom.rows["answers-table"]) == 3
    assert len(dom.rows["saliency-table"]) == 4
    assert len(dom.rows[f"gallery-{MODEL}"]) == 3  # 4 asked, the fixtures have 3 samples
    # numbers in their cells, as the browser shows them
    answers = dom.rows["answers-table"]
    assert [r["strategy"] for r in answers] == ["greedy", "sgrs", "greedy"]
    assert answers[1]["pope_f1"] == "0.855" and answers[1]["chair_i"] == "0.080"
    saliency = dom.rows["saliency-table"]
    assert saliency[2]["method"] == "logit_decomposition" and saliency[2]["del_5"] == "60.0"
    assert saliency[3]["nss_mean"] == "—"

    plots = [img for img in dom.images if img.get("class") == "plot"]
    overlays = [img for img in dom.images if img.get("class") == "overlay"]
    assert len(plots) == 5  # 2 deletion/insertion, 2 reward sets, 1 comparison
    assert len(overlays) == 3 * 4  # 3 samples x (2 sources x 2 methods)
    assert len(dom.images) == len(plots) + len(overlays)
    for img in dom.images:
        image = _decode_image(img["src"])
        assert image.width > 0 and image.height > 0
    assert {_decode_image(img["src"]).size for img in overlays} == {(160, 160)}

    assert dom.not_available == 0
    assert dom.external == [] and "script" not in dom.tags
