"""GET /api/export?format=markdown: a zip of one Markdown file per session, written as it is
made (docs/api.md §12).

zipfile writes into `_Sink`, which cannot seek, so each entry carries its sizes after its data
(a data descriptor) and nothing written is ever revisited; what the sink holds is handed on
once it reaches FLUSH_BYTES. Memory: what the store reads at a time (at most TEXT_BUDGET
characters of message text, or one larger message), one message as Markdown, the
compressor's state (a few hundred KiB), FLUSH_BYTES of output, and the archive's directory
(about 100 bytes per session) until the end.

File names: `<n>-<title>.md`, n counting from 0001 in the sessions' order (which makes them
unique), the title reduced to letters, digits, `_` and `-` (any script) and cut to 60
characters: no path separators, dots or control characters reach a name.
"""

from __future__ import annotations

import re
import zipfile
from typing import Any, AsyncGenerator

from aichat.store import portability as store
from aichat.store.base import Reader

FLUSH_BYTES = 64 * 1024
NAME_CHARS = 60
_NOT_NAME = re.compile(r"[^\w\- ]+")
_SPACES = re.compile(r"\s+")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the oldest time a zip entry can carry


class _Sink:
    """A write-only file for zipfile: it keeps what was written until taken."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.data)
        self.data.clear()
        return data


def entry_name(number: int, title: str) -> str:
    slug = _SPACES.sub("-", _NOT_NAME.sub("", title)).strip("-_")[:NAME_CHARS].strip("-_")
    return f"{number:04d}-{slug or 'chat'}.md"


def _date_time(moment: str) -> tuple[int, int, int, int, int, int]:
    """An ISO timestamp as a zip entry's time (from 1980 on)."""
    parts = (int(moment[0:4]), int(moment[5:7]), int(moment[8:10]), int(moment[11:13]),
             int(moment[14:16]), int(moment[17:19]))
    return parts if 1980 <= parts[0] <= 2107 else _ZIP_EPOCH


def session_header(session: dict[str, Any]) -> str:
    title = _SPACES.sub(" ", session["title"]).strip()
    return (f"# {title}\n\n- Created: {session['createdAt']}\n"
            f"- Model: {session['model'] or 'unknown'}\n")


def message_text(message: dict[str, Any]) -> str:
    status = "" if message["status"] == "complete" else f" ({message['status']})"
    parts = [f"\n## {message['role'].capitalize()} · {message['createdAt']}{status}\n\n"]
    if message["reasoning"]:
        parts.append(f"<details>\n<summary>Reasoning</summary>\n\n{message['reasoning']}\n\n"
                     "</details>\n\n")
    parts.append(f"{message['content']}\n")
    usage = message["usage"]
    if usage is not None:
        parts.append(f"\n*Tokens: {usage['prompt_tokens']} prompt, "
                     f"{usage['completion_tokens']} completion, {usage['total_tokens']} total*\n")
    return "".join(parts)


async def chunks(db: Reader, user_id: int) -> AsyncGenerator[bytes, None]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        number = 0
        async for session in store.sessions(db, user_id):
            number += 1
            info = zipfile.ZipInfo(entry_name(number, session["title"]),
                                   _date_time(session["createdAt"]))
            info.compress_type = zipfile.ZIP_DEFLATED
            # force_zip64: the size is unknown until the end, and may pass 4 GiB.
            with archive.open(info, "w", force_zip64=True) as entry:
                entry.write(session_header(session).encode())
                async for message in store.messages(db, session["id"]):
                    text = message_text(message).encode()
                    for start in range(0, len(text), FLUSH_BYTES):
                        entry.write(text[start:start + FLUSH_BYTES])
                        if len(sink.data) >= FLUSH_BYTES:
                            yield sink.take()
    yield sink.take()
