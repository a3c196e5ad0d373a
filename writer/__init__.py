"""The consumer-group writer: read, validate, merge, one SQL call per batch,
then the Redis side effects."""

from rowcast.contract.change import Change
from rowcast.writer.writer import ShardWriter, WriterConfig

__all__ = ["Change", "ShardWriter", "WriterConfig"]
