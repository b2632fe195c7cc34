"""Our own Server-Sent Events writer."""

from .writer import SSEWriter, encode_event

__all__ = ["SSEWriter", "encode_event"]
