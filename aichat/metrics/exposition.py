"""Counters, gauges and histograms in Prometheus's text exposition format (version 0.0.4).

Hand-written: the few types used here cost a dictionary update per observation, and the
exposition a line per series; the official client would add a dependency and its import for
nothing aichat needs. Every label value comes from a bounded set (route templates, statuses,
error kinds) or passes through `Capped`, so no client can grow the series without end.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Callable, Iterable

Labels = tuple[str, ...]
OTHER = "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _series(name: str, names: Labels, values: Labels, extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return f"{name}{{{','.join(pairs)}}}" if pairs else name


class Capped:
    """A label whose values come from outside (provider hosts): the first `limit` distinct
    values are kept, any later one is reported as `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class Metric:
    kind = ""

    def __init__(self, name: str, doc: str, labels: Labels = ()) -> None:
        self.name, self.doc, self.labels = name, doc, labels

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> Iterable[str]:
        raise NotImplementedError


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str, labels: Labels = ()) -> None:
        super().__init__(name, doc, labels)
        self.values: dict[Labels, float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def lines(self) -> Iterable[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{_series(self.name, self.labels, labels)} {_number(value)}"


class Gauge(Metric):
    """Read when scraped: `read()` gives each series' labels and value."""

    kind = "gauge"

    def __init__(self, name: str, doc: str, read: Callable[[], Iterable[tuple[Labels, float]]],
                 labels: Labels = ()) -> None:
        super().__init__(name, doc, labels)
        self.read = read

    def lines(self) -> Iterable[str]:
        for labels, value in self.read():
            yield f"{_series(self.name, self.labels, labels)} {_number(value)}"


class ReadCounter(Gauge):
    """A counter kept elsewhere (the process's CPU seconds), read when scraped."""

    kind = "counter"


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...],
                 labels: Labels = ()) -> None:
        super().__init__(name, doc, labels)
        self.bounds = buckets
        # Per series: a count per bucket (not cumulative: one increment per observation), the
        # count past the last bound, and the sum.
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        entry[0][bisect_left(self.bounds, value)] += 1
        entry[1][0] += value

    def lines(self) -> Iterable[str]:
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                yield f"{_series(self.name + '_bucket', self.labels, labels, le)} {running}"
            yield f"{_series(self.name + '_sum', self.labels, labels)} {_number(total[0])}"
            yield f"{_series(self.name + '_count', self.labels, labels)} {running}"


def render(metrics: Iterable[Metric]) -> str:
    out: list[str] = []
    for metric in metrics:
        out += metric.header()
        out += metric.lines()
    return "\n".join(out) + "\n"
