"""The HTML report renders in a real headless Chromium, offline: charts in the DOM, a screenshot that shows them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hybridexport.report.compare import compare
from hybridexport.report.html import COLORS, render_html

from synthetic import DEFAULT_LAYERS, measured_profile, predicted_profile

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is needed for the HTML report test: apt-get update && apt-get install -y chromium")
    return path


def _report(tmp_path: Path) -> tuple[Path, object]:
    base = [measured_profile("iformer-t", seed=1), predicted_profile("iformer-t"), predicted_profile("mobilevit-xxs")]
    new = [measured_profile("iformer-t", seed=2, scale={"stages.1.blocks.0.attn": 1.6}),
           predicted_profile("iformer-t", layers={**DEFAULT_LAYERS, "stages.2.extra": ("Conv", 0.3)}),
           predicted_profile("mobilevit-xxs", scale={k: 0.8 for k in DEFAULT_LAYERS})]
    cmp = compare(base, new)
    page = tmp_path / "report.html"
    page.write_text(render_html(cmp), encoding="utf-8")
    return page, cmp


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90, check=False)


def test_html_is_self_contained(tmp_path):
    page, _ = _report(tmp_path)
    text = page.read_text(encoding="utf-8")
    external = re.findall(r'(?:src|href)\s*=\s*"(?!#)[^"]*"', text) + re.findall(r"@import|url\(", text)
    assert external == [], f"report must not load anything: {external}"


def test_html_renders_in_headless_chromium(tmp_path):
    page, cmp = _report(tmp_path)
    dom = _run(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-ready="1"' in html, "the inline script did not run"
    svgs = re.findall(r"<svg\b[^>]*class=\"chart (\w+)", html)
    assert svgs.count("overview") == 1 and svgs.count("layers") == len(cmp.entries)
    bars = re.findall(r'<rect class="bar (\w+)"', html)
    assert bars.count("regression") >= 1 and bars.count("new") >= 3 * len(DEFAULT_LAYERS)
    assert html.count('<section class="entry"') == len(cmp.entries)

    shot = tmp_path / "shot.png"
    res = _run([f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        rgb = img.convert("RGB")
        red = tuple(int(COLORS["regression"][i:i + 2], 16) for i in (1, 3, 5))
        colors = {c: n for n, c in rgb.getcolors(maxcolors=1 << 20)}
        assert colors.get(red, 0) > 500, "no regression bars visible in the screenshot"
        assert len(colors) > 50, "screenshot looks blank"
