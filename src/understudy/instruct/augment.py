"""Instruction variants for training: each word replaced, at a fixed rate, by a WordNet synonym or hypernym
(EDA's synonym replacement, Wei & Zou 2019, widened to direct hypernyms).

Demonstrations come with a handful of wordings per task, so a policy can tie a task to one word its wordings
share ("puck" in every push and pick-place instruction) and fail on a paraphrase that says "disc". Variants made
from a lexical database show it other words for the same things; they never look at held-out paraphrases.
Variants are generated once, before training, from a seeded generator (the same on every machine), and encoded
with the policy's own text encoder; each sampled window then reads its sentence or one of that sentence's
variants, uniformly.
"""

from __future__ import annotations

import numpy as np

from understudy.language.tokenizer import words
from understudy.types import UnderstudyError


def instruction_variants(sentences: list[str], wordnet, count: int, rate: float, seed: int) -> list[list[str]]:
    """`count` variants of each sentence (a list per sentence, in order): each word that WordNet relates to
    others is replaced by one of them, chosen uniformly, with probability `rate`; words WordNet does not know
    ("the", "to") are kept. A variant may equal its sentence when no word was drawn."""
    if count < 0 or not 0 <= rate <= 1:
        raise UnderstudyError(f"Instruction variants need a count >= 0 and a word rate in [0, 1] "
                              f"(got {count} and {rate}).")
    rng = np.random.default_rng(seed)
    related: dict[str, list[str]] = {}
    out = []
    for sentence in sentences:
        tokens = words(sentence)
        for token in tokens:
            if token not in related:
                related[token] = wordnet.related_words(token)
        variants = []
        for _ in range(count):
            replaced = [related[t][rng.integers(len(related[t]))] if related[t] and rng.random() < rate else t
                        for t in tokens]
            variants.append(" ".join(replaced))
        out.append(variants)
    return out


def variant_table(rows: int, count: int) -> np.ndarray:
    """[rows, 1 + count] int32: column 0 is each sentence's own row, columns 1.. the rows of its variants, which
    follow the `rows` sentences in the instruction table (sentence i's variants at rows + i * count + j)."""
    own = np.arange(rows, dtype=np.int32)[:, None]
    return np.concatenate([own, rows + own * count + np.arange(count, dtype=np.int32)[None]], axis=1)
