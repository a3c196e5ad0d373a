"""The JSON log lines of rowcast's commands."""

from __future__ import annotations

import logging

import orjson

from rowcast.ops.logs import JsonFormatter


def test_a_json_line_keeps_extras_but_not_terminal_colours() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, "Started %s", ("x",), None)
    record.color_message = "Started \x1b[1m%s\x1b[0m"  # what uvicorn adds
    record.shard = 3
    line = JsonFormatter().format(record)
    assert "\x1b" not in line and "\\u001b" not in line
    doc = orjson.loads(line)
    assert doc["msg"] == "Started x" and doc["shard"] == 3 and "color_message" not in doc
