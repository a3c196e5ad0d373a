"""The one exception root of rowcast, and its family.

Driver errors (redis-py, psycopg) are translated once, at the boundary that
meets them, with ``raise ... from e``.
"""

from __future__ import annotations


class RowcastError(Exception):
    """Root of every error rowcast raises on purpose."""


class ConfigError(RowcastError):
    """Bad settings or command-line usage (the CLI exits 2)."""


class InvalidEntry(RowcastError):
    """An entry that breaks the contract's field limits; never sent."""


class Unavailable(RowcastError):
    """Redis or PostgreSQL cannot be reached."""


class ReceiptTimeout(RowcastError):
    """No receipt arrived in time; the entry may still be stored later."""


class Rejected(RowcastError):
    """The writer refused the entry; ``reason`` says why (it is in the dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"entry rejected by the writer: {reason}")
        self.reason = reason


class Fenced(RowcastError):
    """This writer lost its shard to a newer lease holder."""

    def __init__(self, message: str, held: int | None = None) -> None:
        super().__init__(message)
        self.held = held
        """The fencing number PostgreSQL holds for the shard, when known."""


class CheckFailed(RowcastError):
    """A verification found violations (the CLI exits 1)."""
