"""The one exception tree of rowcast (in the style of psycopg's ``errors``).

Driver errors (redis-py, psycopg) are translated once, at the boundary that
meets them, with ``raise ... from e``. The CLI maps the tree to exit codes:
``ConfigError`` and ``Unavailable`` 2, ``CheckFailed`` and the rest 1.

    RowcastError
    ├── ConfigError        bad settings or usage
    ├── Unavailable        Redis or PostgreSQL cannot be reached
    │   └── NotQueued      some entries of one push were not stored (or not replicated)
    ├── InvalidEntry       an entry that breaks the contract's limits
    ├── ReceiptTimeout     no receipt in time
    ├── Rejected           the writer dead-lettered the entry
    ├── CheckFailed        a verification found violations
    ├── BadRequest         an HTTP or WebSocket request the broadcaster refuses
    └── WriterError        the writer's own control flow
        ├── Fenced         PostgreSQL holds a newer fencing number
        ├── AlreadyApplied the batch starts at or below the stored offset
        └── LeaseLost      Redis says the lease is someone else's
"""

from __future__ import annotations

from typing import Any


def one_line(e: BaseException) -> str:
    """The first line of an exception's text (drivers put context below it)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class RowcastError(Exception):
    """Root of every error rowcast raises on purpose."""


class ConfigError(RowcastError):
    """Bad settings or command-line usage (the CLI exits 2)."""


class InvalidEntry(RowcastError):
    """An entry that breaks the contract's field limits; never sent."""


class Unavailable(RowcastError):
    """Redis or PostgreSQL cannot be reached."""


class NotQueued(Unavailable):
    """Some entries of one push were not stored, or (``durable``) not confirmed
    by a replica; the others were. Entry ``i`` of the push: ``ids[i]`` is its
    stream id (None: not stored), ``errors[i]`` why it is not acknowledged
    (None: it is)."""

    def __init__(self, message: str, ids: list[str | None], errors: list[str | None]) -> None:
        super().__init__(message)
        self.ids = ids
        self.errors = errors


class ReceiptTimeout(RowcastError):
    """No receipt arrived in time; the entry may still be stored later."""


class Rejected(RowcastError):
    """The writer refused the entry; ``reason`` says why (it is in the dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"entry rejected by the writer: {reason}")
        self.reason = reason


class CheckFailed(RowcastError):
    """A verification found violations (the CLI exits 1)."""


class BadRequest(RowcastError):
    """A request the broadcaster refuses: ``status`` is the HTTP status (or the
    WebSocket error code), ``extra`` more fields for the JSON error."""

    def __init__(self, why: str, status: int = 400, **extra: Any) -> None:
        super().__init__(why)
        self.why = why
        self.status = status
        self.extra = extra


class WriterError(RowcastError):
    """The writer's control flow: each makes it re-read its shard's state."""


class Fenced(WriterError):
    """This writer lost its shard to a newer lease holder."""

    def __init__(self, message: str, held: int | None = None) -> None:
        super().__init__(message)
        self.held = held
        """The fencing number PostgreSQL holds for the shard, when known."""


class AlreadyApplied(WriterError):
    """The batch starts at or below the stored offset: recover and re-read."""


class LeaseLost(WriterError):
    """Redis says the lease is no longer this writer's."""


SQLSTATES: dict[str, type[WriterError]] = {"RC001": Fenced, "RC002": AlreadyApplied}
"""The SQLSTATEs rowcast's own functions raise (``rowcast.advance``,
``rowcast.claim`` in ops/schema/migrations), by the error they mean."""
