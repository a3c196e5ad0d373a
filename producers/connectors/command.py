"""What Claude Code writes for a slash command, a local command's output and a
``!`` shell command: XML-like tags around the text, often with terminal colour
codes. Here they become what the user typed and what the command printed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rowcast.producers.connectors.row import strip_ansi

_TAG = re.compile(r"<([a-z][a-z-]*)>(.*?)</\1>", re.DOTALL)
_COMMAND_TAGS = frozenset({"command-name", "command-message", "command-args"})
_OUTPUT_TAGS = frozenset(
    {"local-command-stdout", "local-command-stderr", "bash-stdout", "bash-stderr"}
)


@dataclass(frozen=True, slots=True)
class Command:
    """A command the user ran: ``/name args`` or ``! shell``."""

    name: str
    args: str

    @property
    def text(self) -> str:
        if self.name == "!":
            return f"! {self.args}"
        return f"{self.name} {self.args}".rstrip()


@dataclass(frozen=True, slots=True)
class Output:
    """What a local command printed (tags and escape codes removed)."""

    text: str


def parse(text: str) -> Command | Output | None:
    """The command or command output that ``text`` carries, or None for any other
    text (which then reads as it is)."""
    stripped = text.strip()
    if not stripped.startswith("<"):
        return None
    tags = {m.group(1): m.group(2) for m in _TAG.finditer(stripped)}
    if not tags or _TAG.sub("", stripped).strip():
        return None  # prose around the tags: a message that quotes them
    if "command-name" in tags:
        name = strip_ansi(tags["command-name"]).strip()
        if not name.startswith("/"):
            name = "/" + name
        return Command(name, strip_ansi(tags.get("command-args", "")).strip())
    if "bash-input" in tags:
        return Command("!", strip_ansi(tags["bash-input"]).strip())
    if set(tags) == {"local-command-caveat"}:  # Claude Code's own notice, not output
        return Output("")
    outputs = [strip_ansi(v).strip() for k, v in tags.items() if k in _OUTPUT_TAGS]
    if outputs or set(tags) <= _COMMAND_TAGS:
        return Output("\n".join(o for o in outputs if o))
    return None
