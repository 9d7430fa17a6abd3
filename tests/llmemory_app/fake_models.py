"""Deterministic fake embedding models for the tests (no torch, no network): each word of a text adds a dense
pseudo-random vector seeded by the word and the model's name, then the sum is normalised. Texts sharing words get
similar vectors, two models give unrelated vectors, and ties between similarities are improbable. Pure Python: the
llmemory application's venv and the tests' both import it (by path)."""
import hashlib
import math
import random
import re

WORD = re.compile(r"\w+")


def embed(text: str, dimension: int, model: str) -> list:
    vector = [0.0] * dimension
    for word in WORD.findall(text.lower()):
        rng = random.Random(hashlib.sha256(f"{model}:{word}".encode()).digest())
        for i in range(dimension):
            vector[i] += rng.gauss(0.0, 1.0)
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def literal(vector: list) -> str:
    """The vector as pgvector's text input."""
    return "[" + ",".join(repr(x) for x in vector) + "]"
