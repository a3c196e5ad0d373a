"""The consumer-group writer: read, validate, merge, one SQL call per batch,
then the Redis side effects."""

from writer.change import Change
from writer.writer import ShardWriter, WriterConfig

__all__ = ["Change", "ShardWriter", "WriterConfig"]
