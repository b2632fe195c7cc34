"""Our own Server-Sent Events writer."""

from aichat.sse.writer import SSEWriter, encode_event, encode_text

__all__ = ["SSEWriter", "encode_event", "encode_text"]
