"""Named, reproducible random streams: one torch.Generator per (purpose, seed, index)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch


def stream_seed(*keys: object) -> int:
    """A 63-bit seed that depends only on the keys, stable across processes and platforms."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*keys: object) -> torch.Generator:
    """A CPU generator for the stream named by `keys`, e.g. ("train", seed, step)."""
    return torch.Generator().manual_seed(stream_seed(*keys))


@contextlib.contextmanager
def global_stream(device: torch.device, *keys: object) -> Iterator[None]:
    """Seed torch's global generator (dropout) from `keys` inside the block, restoring it after.

    Dropout draws from the global generator; seeding it per step makes dropout masks part
    of the common random numbers and of a resumed run.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(stream_seed(*keys))
        yield
