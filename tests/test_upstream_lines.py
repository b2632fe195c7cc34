"""The upstream line splitter: linear, any split of the bytes, and a cap on one line."""

from __future__ import annotations

import pytest

from aichat.upstream.client import ProviderError, _Lines


def split_all(pieces: list[bytes], max_bytes: int = 1000) -> list[bytes]:
    lines = _Lines(max_bytes)
    return [line for piece in pieces for line in lines.feed(piece)]


def test_lines_come_out_whole_however_the_bytes_are_cut():
    stream = b"data: a\n\ndata: bb\r\n: ping\ndata: ccc\n"
    expected = stream.split(b"\n")[:-1]
    for size in range(1, len(stream) + 1):
        pieces = [stream[i:i + size] for i in range(0, len(stream), size)]
        assert split_all(pieces) == expected, size


def test_a_line_past_the_cap_is_refused_without_a_newline_ever_coming():
    lines = _Lines(100)
    lines.feed(b"data: " + b"x" * 50)
    with pytest.raises(ProviderError) as refused:
        lines.feed(b"x" * 60)
    assert refused.value.kind == "garbage" and "longer than 100 bytes" in str(refused.value)


def test_a_long_line_inside_one_piece_is_refused_too():
    with pytest.raises(ProviderError):
        _Lines(10).feed(b"short\n" + b"y" * 11 + b"\nrest")


def test_the_pending_text_is_kept_as_pieces_not_copied_per_read():
    lines = _Lines(10_000)
    for _ in range(100):
        assert lines.feed(b"z" * 50) == []
    assert len(lines._pending) == 100  # joined once, when the line ends
    assert lines.feed(b"\n") == [b"z" * 5000]
    assert lines._pending == []
