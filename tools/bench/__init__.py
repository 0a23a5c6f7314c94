"""``make bench``: runs each benchmark module and prints ``bench <name> <value> <unit>``.

A module under ``tools/bench/`` exposes ``async def run() -> list[Figure]``; the whole
stack (``make run``) is up while they run. Figures are also written to
``bench-results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str

    def line(self) -> str:
        value = f"{self.value:.0f}" if abs(self.value) >= 100 else f"{self.value:.2f}"
        return f"bench {self.name} {value} {self.unit}"
