"""What a connector imports: the entry wire format, key names and Producer."""

from producers.entry import Entry
from producers.errors import (
    InvalidEntry,
    ReceiptTimeout,
    Rejected,
    RowcastError,
    Unavailable,
)
from producers.keys import Keys, shard_of
from producers.producer import Producer, Receipt, SyncProducer, make_entry

__all__ = [
    "Entry",
    "InvalidEntry",
    "Keys",
    "Producer",
    "Receipt",
    "ReceiptTimeout",
    "Rejected",
    "RowcastError",
    "SyncProducer",
    "Unavailable",
    "make_entry",
    "shard_of",
]
