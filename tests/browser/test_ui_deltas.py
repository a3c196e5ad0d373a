"""The web UI in headless Chromium on a streamed answer: it subscribes with
deltas, applies them on the revision it holds, and shows exactly the text
PostgreSQL holds (skipped without Chromium, like the other UI test)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from rowcast.producers.producer import SyncProducer
from tests.browser.test_broadcaster_ui import (  # noqa: F401  (fixtures)
    browser,
    healthy,
    pytestmark,
    stack,
    wait,
)

SESSION = "ui-deltas"

# Counts what the page's WebSocket receives, before the app's own scripts run.
_SPY = """
window.__frames = {deltas: 0, whole: 0};
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener('message', (ev) => {
      const m = JSON.parse(ev.data);
      for (const c of m.changes || []) {
        if ('body' in c) window.__frames.whole += 1; else window.__frames.deltas += 1;
      }
    });
  }
};
"""


@pytest.mark.timeout(180)
def test_the_ui_applies_deltas_of_a_streamed_answer(
    stack: dict[str, Any],  # noqa: F811
    browser: Any,  # noqa: F811
    redis_url: str,
    prefix: str,
) -> None:
    from selenium.webdriver.common.by import By

    port, db_url = stack["port"], stack["db_url"]
    wait(lambda: healthy(port), message="broadcaster up")
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _SPY})
    chunks = [f"word{i} " if i % 5 else f'"q{i}" é😀\n' for i in range(60)]
    with SyncProducer(redis_url, prefix=prefix) as p:
        p.append(SESSION, "q", "user", {"text": "question"}, wait=True)
        browser.get(f"http://127.0.0.1:{port}/#/s/{SESSION}")
        wait(
            lambda: browser.find_element(By.ID, "conn").get_attribute("data-state") == "live",
            message="live",
        )
        p.append(SESSION, "a", "assistant", {"text": ""})
        li = wait(
            lambda: browser.find_element(By.CSS_SELECTOR, '#rows li[data-row="a"]'),
            message="answer row shown",
        )
        for chunk in chunks:
            p.extend(SESSION, "a", "assistant", {"text": chunk})
            time.sleep(0.02)
        receipt = p.extend(SESSION, "a", "assistant", {"text": "."}, wait=True)
        assert not isinstance(receipt, str)
        wait(
            lambda: li.get_attribute("data-revision") == str(receipt.revision),
            message="last revision shown",
        )
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT body->>'text' FROM rowcast.rows WHERE session_id = %s AND row_id = 'a'",
            (SESSION,),
        ).fetchone()
    assert row is not None and row[0] == "".join(chunks) + "."
    shown = browser.execute_script(
        "return document.querySelector('#rows li[data-row=\"a\"] .bubble').textContent"
    )
    assert shown == row[0]
    frames = browser.execute_script("return window.__frames")
    assert frames["deltas"] > 0, frames
