"""Issue #25 item 8: the HTML 核对报告 in a real browser (Debian's headless Chromium, driven by
Playwright) on a computer with no Chinese font: fontconfig (FONTCONFIG_FILE) knows one Latin font
and nothing else. Every Chinese character of the report must be drawn as its glyph, not as the
box a browser draws for a character no font has.

How: the report's own page draws each of its Chinese characters alone in a cell of a grid, in
the report's font stack. Each cell must differ from the box (a hanzi the report does not use,
drawn the same way), and must look like that same character drawn with the host's Chinese font
in a browser that has it (nearest of all the characters). The same page with its @font-face
taken out must show nothing but boxes: so the browser really had no Chinese font, and the
report of before this issue fails the test."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hedui.server import report
from hedui.server.report import render_html
from tests.server.test_report import CLOCK, _source, _verdict
from tests.server.test_report_font import no_cjk_fontconfig, text_of, wide

playwright = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
Image = pytest.importorskip("PIL.Image", reason="the dev extra installs pillow")
ImageChops = pytest.importorskip("PIL.ImageChops", reason="the dev extra installs pillow")
ImageStat = pytest.importorskip("PIL.ImageStat", reason="the dev extra installs pillow")
ttLib = pytest.importorskip("fontTools.ttLib", reason="WeasyPrint (the dev extra) brings fontTools")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
BOX = "龘"  # a hanzi no report uses: drawn as the box where no font has it
CELL, COLUMNS = 40, 16

# draws each character alone in a CELL x CELL cell, in the page's own font stack (or `family`)
GRID = """([chars, cell, columns, family]) => {
  const grid = document.createElement("div");
  grid.id = "glyphs";
  grid.style.cssText = `display: grid; grid-template-columns: repeat(${columns}, ${cell}px);
    grid-auto-rows: ${cell}px; width: ${columns * cell}px; font-size: ${cell * 0.7}px;
    line-height: ${cell}px; letter-spacing: 0; font-weight: normal; background: #fff;
    color: #000; margin: 0; padding: 0; position: absolute; left: 0; top: 0; z-index: 1;` + (family ? `font-family: "${family}";` : "");
  for (const c of chars) {
    const cellElement = document.createElement("span");
    cellElement.style.cssText = "text-align: center; overflow: hidden;";
    cellElement.textContent = c;
    grid.appendChild(cellElement);
  }
  document.body.prepend(grid);
  return document.fonts.ready.then(() => true);
}"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        yield p


def _cells(browser: Any, url: str, chars: str, family: str = "") -> list[Any]:
    """Each character's cell, drawn in the page at ``url``, as a greyscale image."""
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    try:
        page.goto(url)
        page.evaluate("document.fonts.ready")
        page.evaluate(GRID, [chars, CELL, COLUMNS, family])
        png = page.locator("#glyphs").screenshot()
    finally:
        page.close()
    grid = Image.open(io.BytesIO(png)).convert("L")
    return [
        grid.crop(((i % COLUMNS) * CELL, (i // COLUMNS) * CELL,
                   (i % COLUMNS + 1) * CELL, (i // COLUMNS + 1) * CELL))
        for i in range(len(chars))
    ]  # fmt: skip


def _distance(a: Any, b: Any) -> float:
    """How unlike two cells are: the sum of their pixels' differences (0: the same image)."""
    return float(ImageStat.Stat(ImageChops.difference(a, b)).sum[0])


def _launch(pw: Any, chromium: Path, fontconfig: Path | None) -> Any:
    env = dict(os.environ)
    if fontconfig is not None:
        env["FONTCONFIG_FILE"] = str(fontconfig)
    return pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, env=env)


def test_the_report_reads_in_a_browser_without_any_chinese_font(
    pw: Any, chromium: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    font = report.embeddable_font()
    if font is None:
        pytest.fail("no Chinese font on this host: .ci/run installs fonts-wqy-microhei")
    html = render_html(_source(_verdict()), "zh", CLOCK, CLOCK.now())
    chars = "".join(sorted(wide(text_of(html))))
    assert BOX not in chars and len(chars) > 100
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    with monkeypatch.context() as m:  # the same report without its font: the report of before
        m.setattr(report, "font_face", lambda html: "")
        unembedded = tmp_path / "report-without-font.html"
        before_html = render_html(_source(_verdict()), "zh", CLOCK, CLOCK.now())
        unembedded.write_text(before_html, encoding="utf-8")

    fontconfig = no_cjk_fontconfig(tmp_path / "fontconfig")
    browser = _launch(pw, chromium, fontconfig)
    try:
        box, *drawn = _cells(browser, page.as_uri(), BOX + chars)
        box_before, *before = _cells(browser, unembedded.as_uri(), BOX + chars)
        full = browser.new_page(viewport={"width": 900, "height": 1200})
        full.goto(page.as_uri())
        full.evaluate("document.fonts.ready")
        full.screenshot(path=str(tmp_path / "report-no-chinese-font.png"), full_page=True)
        full.close()
    finally:
        browser.close()
    if keep := os.environ.get("HEDUI_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report-no-chinese-font.png", keep)

    # the browser had no Chinese font: without the report's font every character is the box
    blank = Image.new("L", (CELL, CELL), 255)
    assert _distance(box_before, blank) > 0, "the box is not drawn at all"
    glyphs = [c for c, cell in zip(chars, before, strict=True) if _distance(cell, box_before)]
    assert not glyphs, f"without the report's font, {''.join(glyphs)} had a glyph"

    # with it, none is a box (the report font's own or the Latin font's) and none is blank
    boxes = [box, box_before, blank]
    as_box = [
        c
        for c, cell in zip(chars, drawn, strict=True)
        if min(_distance(cell, other) for other in boxes) == 0
    ]
    assert not as_box, f"drawn as a box or not at all, not as a glyph: {''.join(as_box)}"
    assert len({cell.tobytes() for cell in drawn}) == len(chars), "two characters look alike"

    # and each looks like itself drawn with the host's Chinese font (in a browser that has it)
    with ttLib.TTFont(font[0], fontNumber=font[1], lazy=True) as host:
        family = str(host["name"].getName(1, 3, 1, 0x409))
    reference = tmp_path / "reference.html"
    reference.write_text('<!DOCTYPE html><meta charset="utf-8"><body style="margin:0">')
    browser = _launch(pw, chromium, None)
    try:
        expected = _cells(browser, reference.as_uri(), chars, family)
    finally:
        browser.close()
    mistaken = [
        c
        for i, (c, cell) in enumerate(zip(chars, drawn, strict=True))
        if min(range(len(chars)), key=lambda j: _distance(cell, expected[j])) != i
    ]
    assert not mistaken, f"not drawn as themselves: {''.join(mistaken)}"
