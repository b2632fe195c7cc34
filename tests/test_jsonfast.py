"""The fast JSON path and the standard-library fallback agree on everything we send."""

from __future__ import annotations

import pytest

from aichat.http import jsonfast

SAMPLES = [
    {"type": "content", "content": "plain"},
    {"type": "content", "content": "é ü 界 😀 \u2028 \u2029"},
    {"type": "content", "content": "ctrl \x00 \x1b \n \r \t \" \\ /"},
    {"success": True, "data": {"n": [1, -2, 3.5, 0.1], "b": [True, False, None]}},
    {"usage": {"prompt_tokens": 2**62, "nested": {"a": []}}},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_dumps_matches_the_standard_library(value):
    assert jsonfast.dumps(value) == jsonfast.dumps_std(value)
    assert b"\n" not in jsonfast.dumps(value)  # one SSE line


@pytest.mark.parametrize("value", SAMPLES)
def test_loads_round_trips_in_both_paths(value):
    raw = jsonfast.dumps_std(value)
    assert jsonfast.loads(raw) == jsonfast.loads_std(raw) == value


def test_floats_agree_in_value():
    value = {"f": [1e-7, 1.5e300, -0.0]}
    assert jsonfast.loads(jsonfast.dumps(value)) == value


def test_integers_beyond_64_bits_still_encode():
    assert jsonfast.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b'{"a": "\\ud800"}',
                                 b'["x\\uDFFF"]', b"\xff", b"{"])
def test_both_paths_refuse_what_sqlite_or_json_cannot_take(raw):
    for parse in (jsonfast.loads, jsonfast.loads_std):
        with pytest.raises(ValueError):
            parse(raw)


def test_surrogate_pairs_are_fine():
    assert jsonfast.loads_std(b'"\\ud83d\\ude00"') == "😀" == jsonfast.loads(b'"\\ud83d\\ude00"')
