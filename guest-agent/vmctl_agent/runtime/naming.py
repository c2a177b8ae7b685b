"""Names for containers created without --name, Docker style: `adjective_scientist`."""

from __future__ import annotations

import random
from collections.abc import Callable

_ADJECTIVES = (
    "admiring", "bold", "brave", "busy", "calm", "clever", "cool", "eager", "elastic",
    "festive", "focused", "gallant", "gifted", "happy", "hopeful", "jolly", "keen", "kind",
    "loving", "modest", "nifty", "optimistic", "peaceful", "quirky", "relaxed", "serene",
    "sharp", "stoic", "tender", "trusting", "upbeat", "vibrant", "wizardly", "youthful", "zen",
)  # fmt: skip
_NAMES = (
    "archimedes", "babbage", "bohr", "curie", "darwin", "dijkstra", "euclid", "euler",
    "faraday", "fermat", "galileo", "gauss", "hopper", "hypatia", "kepler", "knuth", "lamarr",
    "lovelace", "meitner", "newton", "noether", "pascal", "ritchie", "shannon", "tesla",
    "thompson", "torvalds", "turing", "wozniak", "yonath",
)  # fmt: skip


def generate(taken: Callable[[str], bool]) -> str:
    """A free name; a digit is appended when the plain ones collide, as Docker does."""
    rng = random.SystemRandom()
    for attempt in range(100):
        name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_NAMES)}"
        if attempt >= 10:
            name += str(rng.randint(1, 99))
        if not taken(name):
            return name
    raise RuntimeError("no free container name found")
