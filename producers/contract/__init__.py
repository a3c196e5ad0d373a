"""The public contract's pieces, shared by every stage: Redis keys, the entry
and change formats, stream ids, and the one error tree (CONTRACT.md)."""
