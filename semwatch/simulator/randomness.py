"""Seeded randomness: scalar draws from numpy generators, and random-looking unique ids.

Each part of the simulation (the world, the incident schedule, the benign churn, the incident runs,
the traffic) draws from a generator of its own, so that changing one part leaves the others' draws
alone.  The whole output depends on the exact *order* of draws within a stream: when editing the
simulator, keep the draws where they are (an unused draw still has to be made).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Iterable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a bijection on 64-bit ints (distinct counters -> distinct ids)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


class IdMaker:
    """Unique, random-looking ids from a counter (bijective mixing, keyed by the seed)."""

    def __init__(self, key: int, first: int = 0):
        self.key = key & MASK64
        self.count = first

    def next(self, prefix: str, width: int = 16) -> str:
        """``prefix`` + ``width`` hex digits (at most 16)."""
        self.count += 1
        digits = f"{mix64((self.count ^ self.key) & MASK64):016x}"
        return prefix + digits[:width] if width < 16 else prefix + digits


class RandomStream:
    """Scalar draws from a numpy Generator, buffered in blocks for speed.

    Uniform and normal numbers come from two buffers refilled ``block`` at a time; the refills
    interleave with the generator's other draws (``poisson``, and whatever the caller does with
    :attr:`generator`), so a stream's block size is part of its sequence.
    """

    __slots__ = ("generator", "_block", "_uniforms", "_next_uniform", "_normals", "_next_normal")

    def __init__(self, seed: np.random.SeedSequence, block: int = 8192):
        self.generator = np.random.Generator(np.random.PCG64(seed))
        self._block = block
        self._uniforms = self.generator.random(block).tolist()
        self._normals = self.generator.standard_normal(block).tolist()
        self._next_uniform = 0
        self._next_normal = 0

    def uniform(self) -> float:
        """Uniform in [0, 1)."""
        i = self._next_uniform
        if i >= self._block:
            self._uniforms = self.generator.random(self._block).tolist()
            i = 0
        self._next_uniform = i + 1
        return self._uniforms[i]

    def standard_normal(self) -> float:
        i = self._next_normal
        if i >= self._block:
            self._normals = self.generator.standard_normal(self._block).tolist()
            i = 0
        self._next_normal = i + 1
        return self._normals[i]

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.uniform() < p

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.uniform() * len(seq))]

    def weighted_pick(self, items: Sequence[T], cumulative_weights: Sequence[float]) -> T:
        """One of ``items``, with weights given as running sums (see :func:`cumulative`)."""
        i = bisect_right(cumulative_weights, self.uniform() * cumulative_weights[-1])
        return items[i if i < len(items) else len(items) - 1]

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * self.standard_normal())

    def integer_between(self, low: int, high: int) -> int:
        """Uniform integer, both ends included."""
        return low + int(self.uniform() * (high - low + 1))

    def uniform_between(self, low: float, high: float) -> float:
        return low + (high - low) * self.uniform()

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.uniform())

    def poisson(self, mean: float) -> int:
        return int(self.generator.poisson(mean)) if mean > 0 else 0


def cumulative(weights: Iterable[float]) -> list[float]:
    """Running sums of ``weights``, as :meth:`RandomStream.weighted_pick` wants them."""
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out
