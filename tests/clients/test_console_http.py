"""Issue #24 item 8: the web console refuses forms from other origins (``Origin: null`` too),
sends a Content-Security-Policy on every answer, and answers a paging parameter out of bounds
with a 400 naming it, not a traceback.

Raw HTTP against a real `hedui console` process, reading a log database of its own (offline):
a workdir with only the service's configuration and the auditor's copy of the log's public key,
no deployment."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.core import signing
from hedui.core.workdir import Workdir
from tests.clients.helpers import run

TEMPLATES = Path(__file__).resolve().parents[2] / "clients" / "console" / "templates"
CSP_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


class Console:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        m = re.fullmatch(r"http://(127\.0\.0\.1):(\d+)/\?token=(\S+)", url)
        assert m, url
        self.host, self.port, self.token = m.group(1), int(m.group(2)), m.group(3)
        self.origin = f"http://{self.host}:{self.port}"
        self.output: list[str] = []
        self.cookie = ""

    def request(
        self, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            sent = {"Cookie": self.cookie} if self.cookie else {}
            if body:
                sent["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body.encode() or None, headers=sent | (headers or {}))
            r = conn.getresponse()
            return r.status, r.headers, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def sign_in(self) -> None:
        status, headers, _ = self.request("GET", f"/log?token={self.token}")
        assert status == 303, status
        self.cookie = headers["set-cookie"].split(";")[0]

    def stop(self) -> str:
        """Stops the console; all it wrote to its terminal."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.readers:
            t.join(5)
        return "".join(self.output)

    readers: list[threading.Thread]


def _workdir(root: Path) -> Path:
    """A workdir the console can read offline: an empty log database, the log's public key."""
    w = Workdir(root)
    w.service_config.parent.mkdir(parents=True)
    db = root / "audit.sqlite"
    w.service_config.write_text(f'[service]\naudit_database = "sqlite:///{db}"\n')
    pub = w.keys("auditor").root / "log" / "log.pub"
    pub.parent.mkdir(parents=True)
    pub.write_bytes(signing.public_key_to_pem(Ed25519PrivateKey.generate().public_key()))
    return root


def start_console(work: Path) -> Console:
    """`hedui console --offline` on ``work``, listening; stop it with ``Console.stop``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hedui.clients.cli", "console", "--workdir", str(work),
         "--port", "0", "--offline"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    url = ""
    for _ in range(10):
        line = proc.stdout.readline()
        if m := re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line):
            url = m.group(0)
            break
    if not url:
        proc.kill()
        pytest.fail(f"hedui console printed no address: {proc.stderr.read()}")
    c = Console(proc, url)
    c.readers = [
        threading.Thread(target=lambda s=stream: c.output.extend(s), daemon=True)
        for stream in (proc.stdout, proc.stderr)
    ]
    for t in c.readers:
        t.start()
    deadline = time.monotonic() + 30  # the address is printed before uvicorn listens on it
    while True:
        try:
            socket.create_connection((c.host, c.port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"hedui console does not listen: {c.stop()}")
            time.sleep(0.05)
    return c


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    c = start_console(_workdir(tmp_path / "work"))
    yield c
    c.stop()


def test_a_form_from_another_or_an_opaque_origin_is_refused(console: Console) -> None:
    console.sign_in()
    form = "id_number=11010519491231002X"
    refused = [
        {"Origin": "null"},  # a sandboxed frame, a data: URL, a file on disk
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {},  # neither header: not a browser on this console's pages
        {"Origin": "http://127.0.0.1:9"},  # another port of this host
        {"Origin": f"http://localhost:{console.port}"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        for path in ("/search", "/login"):
            status, _, body = console.request("POST", path, form, headers)
            assert status == 403, (path, headers, body)
            assert "refused" in body and console.origin in body, body
            assert len(body) < 200
    # other state-changing methods too, before any route is looked up
    for method in ("PUT", "DELETE", "PATCH"):
        assert console.request(method, "/search", form, {"Origin": "null"})[0] == 403
    # the console's own pages: a browser sends its Origin, or at least Sec-Fetch-Site
    console.cookie = ""
    for headers in ({"Origin": console.origin}, {"Sec-Fetch-Site": "same-origin"}):
        status, answer, _ = console.request("POST", "/login", f"token={console.token}", headers)
        assert status == 303 and answer["location"] == "/log", headers


def _csp(value: str) -> set[str]:
    return {d.strip() for d in value.split(";") if d.strip()}


def test_every_answer_carries_a_content_security_policy(console: Console) -> None:
    answers = [console.request("GET", "/login"), console.request("GET", "/log")]  # redirect
    answers.append(console.request("GET", "/api/checkpoint"))  # 401
    answers.append(console.request("GET", f"/?token={console.token}"))  # signs in
    console.sign_in()
    answers += [
        console.request("GET", path)
        for path in ("/log", "/verify", "/search", "/campaigns", "/bulletin",
                     "/static/verify.js", "/entry/3", "/no-such-page", "/api/entries")
    ]  # fmt: skip
    answers.append(console.request("POST", "/search", "id_number=1", {"Origin": "null"}))
    answers.append(console.request("GET", "/api/entries?start=-1"))
    statuses = {status for status, _, _ in answers}
    assert {200, 303, 401, 403, 404, 400} <= statuses, statuses
    for status, headers, _ in answers:
        directives = _csp(headers.get("content-security-policy", ""))
        assert set(CSP_DIRECTIVES) <= directives, (status, directives)
        # no inline script, no eval, in any directive
        assert "unsafe-inline" not in headers["content-security-policy"].split("style-src")[0]
        assert "unsafe-eval" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        # no Referer beyond the console; "no-referrer" would make Chromium send the console's
        # own forms with Origin: null (tests/e2e/test_console.py)
        assert headers["referrer-policy"] == "same-origin"


def test_the_pages_have_no_inline_script_handler_or_style() -> None:
    """What the policy would block in a browser (tests/e2e/test_console.py drives one)."""
    for template in sorted(TEMPLATES.glob("*.html")):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert not re.search(r"\sstyle\s*=|<style", text), template.name
        assert "javascript:" not in text, template.name


def test_paging_parameters_are_bounded_with_a_clear_400(console: Console) -> None:
    console.sign_in()
    bad = [
        ("/api/entries?start=100000000000000000000000", "start"),  # beyond SQLite's integers
        ("/api/entries?start=1000000000001", "start"),
        ("/api/entries?start=-1", "start"),
        ("/api/entries?start=abc", "start"),
        ("/api/entries?start=1e3", "start"),
        ("/api/entries?start=+5", "start"),
        ("/api/entries?start=%D9%A5", "start"),  # an Arabic-Indic 5, which int() takes
        ("/api/entries?start=", "start"),
        ("/api/entries?start=0&end=99999999999999999999999", "end"),
        ("/api/checkpoint?size=99999999999999999999999", "size"),
        ("/api/proof/inclusion?index=99999999999999999999999&size=1", "index"),
        ("/api/proof/inclusion?index=0&size=0", "size"),
        ("/api/proof/inclusion?index=5&size=3", "index"),
        ("/api/proof/consistency?first=5&second=3", "first"),
        ("/api/proof/consistency?first=0&second=3", "first"),
        ("/api/proof/consistency?first=1&second=99999999999999999999999", "second"),
    ]
    for path, name in bad:
        status, headers, body = console.request("GET", path)
        assert status == 400, (path, status, body)
        assert headers["content-type"] == "application/json"
        assert f"'{name}'" in body, (path, body)
    for path in ("/log?page=0", "/log?page=x", "/log?page=99999999999999999999999"):
        status, _, body = console.request("GET", path)
        assert status == 400 and "page" in body, (path, status)
    # within bounds all is as before: an empty log, no such checkpoint, no such entry
    status, _, body = console.request("GET", "/api/entries?start=0&end=1000")
    assert (status, body) == (200, '{"entries":[]}')
    assert console.request("GET", "/api/checkpoint?size=7")[0] == 404
    assert console.request("GET", "/api/proof/inclusion?index=0&size=7")[0] == 404
    assert console.request("GET", "/entry/99999999999999999999999")[0] == 404
    assert console.request("GET", "/log?page=3")[0] == 200
    output = console.stop()
    assert "Traceback" not in output and "Error" not in output, output


def test_a_proxys_origin_is_admitted_only_when_given(capsys: pytest.CaptureFixture[str]) -> None:
    from starlette.requests import Request

    from hedui.clients.console.app import Console as App
    from hedui.clients.console.app import ConsoleSettings, _same_origin

    def posted(origin: str, origins: tuple[str, ...]) -> bool:
        scope = {
            "type": "http", "method": "POST", "scheme": "http", "path": "/search",
            "server": ("127.0.0.1", 8765), "headers": [(b"origin", origin.encode())],
        }  # fmt: skip
        app = App(session=None, settings=ConsoleSettings(origins=origins))  # type: ignore[arg-type]
        return _same_origin(Request(scope), app)

    proxy = "https://console.example.org"
    assert posted("http://127.0.0.1:8765", ())
    assert not posted(proxy, ())
    assert posted(proxy, (proxy,))
    assert not posted("null", (proxy,))
    code, _, err = run(capsys, "console", "--workdir", ".", "--origin", "https://x.example/path")
    assert code == 2 and "is not an origin" in err
