"""The web UI in headless Chromium: a session's rows in order, a streaming row
updated in place, paging back through older rows, and recovery after the
broadcaster restarts. Writer and broadcaster run as ``rowcast`` processes.

Needs Debian's ``chromium`` and ``chromium-driver`` (skipped without them):
``apt-get update && apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from rowcast.producers.producer import Receipt, SyncProducer
from tests.integration.test_broadcaster_harness import free_socket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
ROWCAST = os.path.join(os.path.dirname(sys.executable), "rowcast")
SESSION = "ui-session"
T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not os.path.exists(CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver"
    " (apt-get install -y chromium chromium-driver)",
)


def wait(what: Callable[[], T], timeout: float = 60, message: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
            if last:
                return last  # type: ignore[no-any-return]
        except Exception as e:  # the page may be mid-update
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting: {message} (last: {last!r})")


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=err
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running_stack(
    redis_url: str, db_url: str, prefix: str, tmp_path: Path, **extra: str
) -> Iterator[dict[str, Any]]:
    """A ``rowcast writer`` and a ``rowcast broadcaster`` process (``extra``:
    more environment, e.g. ROWCAST_SECRET)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
    env.update(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db_url, ROWCAST_PREFIX=prefix)
    env.update(extra)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    writer = Process([ROWCAST, "writer"], env, tmp_path / "writer.log")
    bc = Process([ROWCAST, "broadcaster", "--port", str(port)], env, tmp_path / "bc.log")
    writer.start()
    bc.start()
    try:
        yield {
            "port": port,
            "writer": writer,
            "broadcaster": bc,
            "db_url": db_url,
            "tmp": tmp_path,
            "env": env,
        }
    finally:
        bc.stop()
        writer.stop()


@pytest.fixture
def stack(redis_url: str, db_url: str, prefix: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_stack(redis_url, db_url, prefix, tmp_path) as s:
        yield s


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def head(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_change FROM rowcast.sessions WHERE session_id = %s", (SESSION,)
        ).fetchone()
        return 0 if row is None else int(row[0])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def rows_state(driver: Any) -> list[tuple[str, int, int]]:
    """(row id, sequence, revision) of every row shown, in page order."""
    got = driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows > li'))"
        ".map(li => [li.dataset.row, Number(li.dataset.seq), Number(li.dataset.revision)])"
    )
    return [(r, s, v) for r, s, v in got]


@pytest.mark.timeout(180)
def test_the_ui_shows_streams_pages_and_recovers(
    stack: dict[str, Any], browser: Any, redis_url: str, prefix: str
) -> None:
    from selenium.webdriver.common.by import By

    port, db_url = stack["port"], stack["db_url"]
    wait(lambda: healthy(port), message="broadcaster up")
    kinds = ["user", "assistant", "tool"]
    with SyncProducer(redis_url, prefix=prefix) as p:
        for i in range(120):
            kind = kinds[i % 3]
            body: dict[str, Any] = {"text": f"message {i}"}
            if kind == "tool":
                body = {
                    "name": "bash",
                    "status": "ok",
                    "input": {"cmd": f"echo {i}"},
                    "output": f"{i}",
                }
            p.append(SESSION, f"m{i}", kind, body)
        wait(lambda: head(db_url) >= 120, message="rows stored")

        # The session list, then the session.
        browser.get(f"http://127.0.0.1:{port}/")
        wait(
            lambda: browser.find_elements(
                By.CSS_SELECTOR, f'#sessions li[data-session="{SESSION}"]'
            ),
            message="session listed",
        )
        browser.find_element(By.CSS_SELECTOR, f'#sessions li[data-session="{SESSION}"] a').click()
        wait(
            lambda: browser.find_element(By.ID, "conn").get_attribute("data-state") == "live",
            message="live",
        )
        shown = wait(lambda: (s := rows_state(browser)) and s[-1][1] == 119 and s, message="rows")
        seqs = [s for _, s, _ in shown]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert seqs == list(range(seqs[0], 120))  # the newest page, in sequence order
        assert browser.find_element(By.CSS_SELECTOR, '#rows li[data-row="m2"], #rows li.tool')

        # A streaming row: revisions replace its text in place.
        p.append(SESSION, "stream", "assistant", {"text": "Hel"})
        li = wait(
            lambda: browser.find_element(By.CSS_SELECTOR, '#rows li[data-row="stream"]'),
            message="streaming row shown",
        )
        for text in ("Hello", "Hello, wor", "Hello, world."):
            p.upsert(SESSION, "stream", "assistant", {"text": text})
        wait(lambda: li.get_attribute("data-revision") == "3", message="revision 3 shown")
        assert "Hello, world." in li.text  # the same element, updated in place
        assert len(browser.find_elements(By.CSS_SELECTOR, '#rows li[data-row="stream"]')) == 1
        assert rows_state(browser)[-1][0] == "stream"

        # Page back to the first row by scrolling up.
        def scrolled_to_start() -> bool:
            browser.execute_script("document.getElementById('scroller').scrollTop = 0")
            return rows_state(browser)[0][1] == 0

        wait(scrolled_to_start, message="paged back to sequence 0")
        seqs = [s for _, s, _ in rows_state(browser)]
        assert seqs == list(range(121))
        assert browser.find_element(By.ID, "older").get_attribute("data-state") == "start"
        browser.save_screenshot(str(stack["tmp"] / "ui.png"))

        # Restart the broadcaster while rows keep coming: the page resumes from
        # its cursor and shows everything once.
        stack["broadcaster"].stop()
        wait(
            lambda: browser.find_element(By.ID, "conn").get_attribute("data-state") != "live",
            message="disconnect noticed",
        )
        for i in range(121, 131):
            p.append(SESSION, f"m{i}", "user", {"text": f"while away {i}"})
        receipt = p.upsert(
            SESSION, "stream", "assistant", {"text": "Hello, world. Edited while away."}, wait=True
        )
        assert isinstance(receipt, Receipt) and receipt.change is not None
        stack["broadcaster"].start()
        wait(lambda: healthy(port), message="broadcaster back")
        wait(
            lambda: browser.find_element(By.ID, "conn").get_attribute("data-state") == "live",
            message="live again",
        )
        final = wait(
            lambda: (s := rows_state(browser)) and s[-1][1] == 130 and s,
            message="rows produced while away shown",
        )
        seqs = [s for _, s, _ in final]
        assert seqs == list(range(131))
        assert len({r for r, _, _ in final}) == 131
        wait(lambda: "Edited while away" in li.text, message="the edit made while away")
        browser.save_screenshot(str(stack["tmp"] / "ui-after-restart.png"))


@pytest.mark.timeout(180)
def test_malformed_links_and_dot_sessions(
    stack: dict[str, Any], browser: Any, redis_url: str, prefix: str
) -> None:
    """Issue 10, point 8: a malformed link falls back to the session list
    instead of a blank page, and a session named ``..`` (which no URL path can
    carry) is shown from the WebSocket, never by requesting another route."""
    from selenium.webdriver.common.by import By

    port = stack["port"]
    wait(lambda: healthy(port), message="broadcaster up")
    with SyncProducer(redis_url, prefix=prefix) as p:
        for i in range(3):
            p.append("..", f"d{i}", "user", {"text": f"dot {i}"})
        p.append("plain", "p0", "user", {"text": "plain"}, wait=True)

    browser.get(f"http://127.0.0.1:{port}/#/s/%E0%A4%A")
    wait(
        lambda: browser.find_elements(By.CSS_SELECTOR, '#sessions li[data-session="plain"]'),
        message="the list, after a malformed link",
    )
    assert not browser.find_element(By.ID, "sessions-view").get_attribute("hidden")

    browser.get(f"http://127.0.0.1:{port}/#/s/..")
    wait(lambda: len(rows_state(browser)) == 3, message="the '..' session's rows")
    assert [r for r, _, _ in rows_state(browser)] == ["d0", "d1", "d2"]
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not any("/api/rows" in u for u in requested), requested


@pytest.mark.timeout(180)
def test_hostile_content_stays_inert(
    stack: dict[str, Any], browser: Any, redis_url: str, prefix: str
) -> None:
    """What a body or an id says never becomes the page's own: a tool's
    status picks a colour from a fixed set, never a class (``jump`` would be
    the 'new rows below' button), and a bidi override in a session id is
    shown, not obeyed."""
    from selenium.webdriver.common.by import By

    port = stack["port"]
    wait(lambda: healthy(port), message="broadcaster up")
    spoof = "rtl:\u202eevil\u202dtxt"
    with SyncProducer(redis_url, prefix=prefix) as p:
        p.append(SESSION, "t0", "tool", {"name": "x", "status": "completed jump hidden"})
        p.append(SESSION, "t1", "tool", {"name": "y", "status": "Running"})
        p.append(spoof, "r0", "user", {"text": "hi"}, wait=True)

    browser.get(f"http://127.0.0.1:{port}/#/s/{SESSION}")
    wait(lambda: len(rows_state(browser)) == 2, message="the tool rows")
    pills = browser.find_elements(By.CSS_SELECTOR, "#rows .status")
    assert [(e.get_attribute("class"), e.get_attribute("textContent")) for e in pills] == [
        ("status", "completed jump hidden"),  # unknown: no class from the body
        ("status running", "Running"),
    ]

    browser.get(f"http://127.0.0.1:{port}/#/")
    name = wait(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#sessions li .name"), message="the list"
    )
    shown = [e.text for e in name]
    assert "rtl:\\u202eevil\\u202dtxt" in shown, shown


@pytest.mark.timeout(180)
def test_an_expired_token_says_so_instead_of_reconnecting_forever(
    redis_url: str, db_url: str, prefix: str, tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    with running_stack(redis_url, db_url, prefix, tmp_path, ROWCAST_SECRET="s" * 32) as s:
        port = s["port"]
        wait(lambda: healthy(port), message="broadcaster up")
        with SyncProducer(redis_url, prefix=prefix) as p:
            p.append(SESSION, "r0", "user", {"text": "hi"}, wait=True)
        token = subprocess.run(
            [ROWCAST, "token", "--session", SESSION, "--ttl", "4"],
            env=s["env"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        browser.get(f"http://127.0.0.1:{port}/?token={token}#/s/{SESSION}")
        wait(lambda: len(rows_state(browser)) == 1, message="the row, while the token is valid")
        # The server closes the socket when the token expires; the handshake
        # that follows is refused, and the page says why.
        conn = wait(
            lambda: (
                browser.find_element(By.ID, "conn").text.startswith("not authorized")
                and browser.find_element(By.ID, "conn").text
            ),
            timeout=60,
            message="'not authorized' once the token expired",
        )
        assert "expired" in conn, conn
