"""A text space for free-form Unicode observations and actions.

Gymnasium's `Text` space only contains strings over a fixed character set. Model output and tool
output can hold any Unicode character, so `UnicodeText` accepts every `str` up to a length bound
while keeping `Text`'s sampling, and it plugs into the vector-env helpers (including the
shared memory of `AsyncVectorEnv`) by storing code points.
"""

from __future__ import annotations

import multiprocessing as mp
import string

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import shared_memory as _shm

# What `sample()` draws from: printable ASCII plus a few multi-byte characters, so random samples
# exercise both the JSON parser and non-ASCII handling.
_SAMPLE_CHARSET = string.printable + "éßλЖ中😀"
_PAD = -1  # code points are >= 0, so -1 marks the unused tail of a shared-memory slot


class UnicodeText(Text):
    """Any Python string of at most `max_length` characters."""

    def __init__(self, max_length: int, *, seed: int | np.random.Generator | None = None):
        super().__init__(max_length=max_length, min_length=0, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: object) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnicodeText) and other.max_length == self.max_length


@_shm.create_shared_memory.register(UnicodeText)
def _create(space: UnicodeText, n: int = 1, ctx=mp):
    return ctx.Array(np.dtype(np.int32).char, n * space.max_length)


@_shm.write_to_shared_memory.register(UnicodeText)
def _write(space: UnicodeText, index: int, value: str, shared_memory) -> None:
    size = space.max_length
    slot = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[index * size : (index + 1) * size]
    codes = np.frombuffer(value[:size].encode("utf-32-le", "surrogatepass"), dtype=np.int32)
    slot[: len(codes)] = codes
    slot[len(codes) :] = _PAD


@_shm.read_from_shared_memory.register(UnicodeText)
def _read(space: UnicodeText, shared_memory, n: int = 1) -> tuple[str, ...]:
    data = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length))
    return tuple(row[row != _PAD].tobytes().decode("utf-32-le", "surrogatepass") for row in data)
