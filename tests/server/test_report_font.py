"""Issue #25 item 8: the HTML 核对报告 carries the glyphs of every Chinese character it uses (a
subset of a freely licensed font from the service's host), so that it reads on a computer with
no Chinese font. The browser half is tests/e2e/test_report_font.py.

What the embedded font must hold is worked out from the report's text as a reader sees it (the
HTML parsed, styles left out), not from the report's own code."""

from __future__ import annotations

import base64
import io
import logging
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hedui.proto.v1 import common_pb2, verification_pb2
from hedui.server import report
from hedui.server.report import render_html
from hedui.server.requests import without_figures
from tests.server.test_report import CLOCK, _source, _verdict

ttLib = pytest.importorskip("fontTools.ttLib", reason="WeasyPrint (the dev extra) brings fontTools")
FONT_FACE = re.compile(
    r'@font-face \{ font-family: "([^"]+)"; src: url\(data:(font/woff2?);base64,([A-Za-z0-9+/=]+)\)'
)


class _Text(HTMLParser):
    """The text a reader sees: every text node but those of <style> and <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def text_of(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "".join(parser.parts)


def wide(text: str) -> set[str]:
    """The characters a Latin font has no glyph for: hanzi and Chinese punctuation."""
    return {c for c in text if unicodedata.east_asian_width(c) in "WF"}


def embedded_font(html: str) -> tuple[str, object]:
    """The family name and the font (fontTools) of the report's data: URL."""
    faces = FONT_FACE.findall(html)
    assert len(faces) == 1, "the report carries no @font-face with a data: URL"
    family, _, data = faces[0]
    return family, ttLib.TTFont(io.BytesIO(base64.b64decode(data)))


def no_cjk_fontconfig(root: Path) -> Path:
    """A fontconfig configuration (for FONTCONFIG_FILE) whose only font is one Latin font of
    this host: a computer without any Chinese font."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        pytest.fail("fontconfig's fc-list is missing (Debian: fontconfig)", pytrace=False)

    def files(pattern: str) -> set[str]:
        out = subprocess.run([fc_list, "--format", "%{file}\n", pattern], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        return set(out.split())

    latin = sorted(f for f in files(":lang=en") - files(":lang=zh") if "DejaVuSans." in f)
    latin = latin or sorted(files(":lang=en") - files(":lang=zh"))
    if not latin:
        pytest.fail("this host has no Latin font for fontconfig to fall back on", pytrace=False)
    fonts, cache = root / "fonts", root / "cache"
    fonts.mkdir(parents=True)
    cache.mkdir()
    shutil.copy(latin[0], fonts)
    config = root / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n'
        f"<fontconfig><dir>{fonts}</dir><cachedir>{cache}</cachedir></fontconfig>\n",
        encoding="utf-8",
    )
    out = subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True, check=False,
                         env={"FONTCONFIG_FILE": str(config), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout
    return config


@pytest.fixture
def host_font() -> None:
    if report.embeddable_font() is None:
        pytest.fail(
            "no freely licensed Chinese font on this host: .ci/run installs fonts-wqy-microhei",
            pytrace=False,
        )


def _reports() -> Iterator[tuple[str, str]]:
    """Reports of every kind: both languages, figures withheld or not available (their legends),
    figures removed by retention."""
    v = _verdict()
    yield "zh", render_html(_source(v), "zh", CLOCK, CLOCK.now())
    yield "en", render_html(_source(v), "en", CLOCK, CLOCK.now())
    v.rules.add(
        id="assets",
        outcome=common_pb2.PASSED,
        threshold=5,
        comparison="<=",
        title_zh="家庭金融资产",
    )
    v.rules.add(
        id="car", outcome=common_pb2.UNDECIDED, missing_sources=["hrss"], title_zh="机动车辆"
    )
    yield "zh", render_html(_source(v), "zh", CLOCK, CLOCK.now())
    kept = verification_pb2.Verdict.FromString(without_figures(v.SerializeToString()))
    yield "zh", render_html(_source(kept), "zh", CLOCK, CLOCK.now())


@pytest.mark.usefixtures("host_font")
def test_the_embedded_font_has_a_glyph_for_every_chinese_character_of_the_report() -> None:
    for lang, html in _reports():
        needed = wide(text_of(html))
        assert len(needed) > (100 if lang == "zh" else 5), lang
        family, font = embedded_font(html)
        cmap = font.getBestCmap()  # type: ignore[attr-defined]
        missing = sorted(c for c in needed if ord(c) not in cmap)
        assert not missing, f"no glyph for {''.join(missing)}"
        # only the report's own characters: a subset, not the font
        assert {chr(u) for u in cmap} <= needed
        assert cmap, "an empty font"
        glyf = font["glyf"]  # type: ignore[index]
        assert all(glyf[cmap[ord(c)]].numberOfContours for c in needed if not c.isspace())
        # first in the report's font stack, and the stack goes on to common desktop fonts
        stack = re.search(r"html \{ font-family: ([^;]+);", html)
        assert stack is not None
        names = [n.strip().strip('"') for n in stack.group(1).split(",")]
        assert names[0] == family and names[-1] == "sans-serif"
        assert {"Microsoft YaHei", "PingFang SC", "Noto Sans CJK SC"} <= set(names)
        # its licence travels with it: the name table and a comment next to the rule
        licence = str(font["name"].getName(13, 3, 1, 0x409))  # type: ignore[index]
        assert "Apache License" in licence or "Open Font License" in licence, licence
        assert "/* " in html.split("@font-face")[0].split("<style>")[1]


@pytest.mark.usefixtures("host_font")
def test_the_font_costs_tens_of_kilobytes_not_megabytes() -> None:
    html = render_html(_source(_verdict()), "zh", CLOCK, CLOCK.now())
    _, font = embedded_font(html)
    assert font.flavor in ("woff2", "woff")  # type: ignore[attr-defined]  # compressed
    assert len(html.encode()) < 64_000, len(html.encode())


def test_a_report_with_no_chinese_character_carries_no_font() -> None:
    v = _verdict()
    del v.rules[0].references[:]
    html = render_html(_source(v), "en", CLOCK, CLOCK.now())
    assert not wide(text_of(html))
    assert "@font-face" not in html and "sans-serif" in html


def test_without_a_chinese_font_on_the_host_the_report_still_renders_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FONTCONFIG_FILE", str(no_cjk_fontconfig(tmp_path)))
    monkeypatch.setattr(report, "_KNOWN_FONT_FILES", ())
    report.embeddable_font.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="hedui.server"):
            first = render_html(_source(_verdict()), "zh", CLOCK, CLOCK.now())
            second = render_html(_source(_verdict()), "en", CLOCK, CLOCK.now())
    finally:
        report.embeddable_font.cache_clear()
    assert "家庭经济状况核对报告" in first and "Household" in second
    assert "@font-face" not in first + second
    assert '"Microsoft YaHei"' in first  # the common desktop fonts still named
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "fonts-wqy-microhei" in warnings[0].getMessage()
