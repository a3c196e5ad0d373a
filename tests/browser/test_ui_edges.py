"""The web UI on odd input (issue 10, point 8): a malformed link falls back to
the session list instead of a blank page, and a session named ``..`` (which
no URL path can carry) is shown from the WebSocket, never by requesting
another route. The page runs under its strict Content-Security-Policy."""

from __future__ import annotations

from typing import Any

import pytest

from rowcast.producers.producer import SyncProducer
from tests.browser.test_broadcaster_ui import (  # noqa: F401 - fixtures
    browser,
    healthy,
    pytestmark,
    rows_state,
    stack,
    wait,
)


@pytest.mark.timeout(180)
def test_malformed_links_and_dot_sessions(
    stack: dict[str, Any], browser: Any, redis_url: str, prefix: str
) -> None:
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
