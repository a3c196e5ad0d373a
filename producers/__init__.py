"""What a connector imports: the entry wire format, key names and Producer."""

from rowcast.contract.entry import Entry
from rowcast.contract.errors import (
    InvalidEntry,
    ReceiptTimeout,
    Rejected,
    RowcastError,
    Unavailable,
)
from rowcast.contract.keys import Keys, shard_of
from rowcast.producers.producer import Producer, Receipt, SyncProducer, make_entry

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
