"""Frozen pretrained token embeddings from WordLlama, for instructions the policy never saw in training.

WordLlama (PyPI `wordllama`, MIT) ships, inside its wheel, a 32,000 x 256 token-embedding table distilled from
large language models' input embeddings and trained so that the masked mean of a sentence's token vectors is a
sentence embedding (cosine similarity ~ paraphrase). It is the one pretrained text model this project can install
from a package registry alone: no hub download at run time. Only its two data files are read (the tokenizer JSON,
read with `tokenizers`, and the safetensors table); the package's own loader, which reaches for the hub, is
never called.

An instruction becomes [pooled sentence vector, token 1, ..., token L-1]: position 0 holds the unit-length mean of
all its token vectors (the sentence embedding WordLlama is trained for, over the whole sentence even when the
positions truncate it), the rest the token vectors (the table scaled once so that its median row has unit length),
so the policy can read the sentence's meaning and still attend to single words.

Files: `wordllama` reads the ones bundled in the installed package (extra `[wordllama]`); `wordllama:PATH` reads
PATH/<name>_tokenizer_config.json and PATH/<name>_<dim>.safetensors (one of each), e.g. a copy of the package's
`tokenizers/` and `weights/` files in one directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from understudy.types import UnderstudyError

TABLE_KEY = "embedding.weight"


def bundled_files() -> Optional[tuple[Path, Path]]:
    """(tokenizer JSON, embedding table) inside the installed `wordllama` package, or None without it."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.origin:
        return None
    return _files_in(Path(spec.origin).parent / "tokenizers", Path(spec.origin).parent / "weights")


def _files_in(tokenizer_dir: Path, weights_dir: Path) -> Optional[tuple[Path, Path]]:
    tokenizers = sorted(tokenizer_dir.glob("*_tokenizer_config.json"))
    tables = sorted(weights_dir.glob("*.safetensors"))
    if len(tokenizers) != 1 or len(tables) != 1:
        return None
    return tokenizers[0], tables[0]


def resolve_files(source: str) -> tuple[Path, Path]:
    """The (tokenizer, table) files of `wordllama` or `wordllama:PATH`, with an error that says how to get them."""
    if source == "wordllama":
        files = bundled_files()
        if files is None:
            raise UnderstudyError("--text-encoder wordllama reads the embedding table bundled in the `wordllama` "
                                  "package, which is not installed: `pip install -e \".[wordllama]\"` (PyPI "
                                  "wordllama==0.4.0.post1), or pass --text-encoder wordllama:PATH with a directory "
                                  "holding its <name>_tokenizer_config.json and <name>_<dim>.safetensors.")
        return files
    if not source.startswith("wordllama:"):
        raise UnderstudyError(f"{source!r} is not a WordLlama source: use wordllama or wordllama:PATH.")
    path = Path(source.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise UnderstudyError(f"--text-encoder {source}: {path} is not a directory. Point it to a directory holding "
                              "one <name>_tokenizer_config.json and one <name>_<dim>.safetensors.")
    files = _files_in(path, path)
    if files is None:
        raise UnderstudyError(f"--text-encoder {source}: {path} must hold exactly one *_tokenizer_config.json and "
                              "one *.safetensors (WordLlama's tokenizer and embedding table).")
    return files


class WordLlamaEncoder:
    """encode_tokens(sentences) -> [pooled, token vectors] [n, max_length, dim] float32 and mask [n, max_length]
    bool."""

    def __init__(self, source: str, max_length: int):
        from safetensors import SafetensorError
        from safetensors.numpy import load

        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UnderstudyError("--text-encoder wordllama needs the `tokenizers` package: "
                                  "`pip install -e \".[wordllama]\"`.") from None
        if int(max_length) < 2:
            raise UnderstudyError("A WordLlama instruction needs at least 2 positions (the pooled sentence and one "
                                  "token).")
        self.source, self.max_length = source, int(max_length)
        tokenizer_file, table_file = resolve_files(source)
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise UnderstudyError(f"{tokenizer_file} is not a tokenizers JSON file ({e}).") from None
        table_bytes = table_file.read_bytes()  # read once: parsed and fingerprinted
        try:
            tensors = load(table_bytes)
        except (SafetensorError, OSError, ValueError) as e:
            raise UnderstudyError(f"{table_file} is not a readable safetensors file ({e}).") from None
        if TABLE_KEY not in tensors or tensors[TABLE_KEY].ndim != 2:
            raise UnderstudyError(f"{table_file} holds no 2-d {TABLE_KEY!r} tensor: it is not a WordLlama "
                                  f"embedding table (found {sorted(tensors)}).")
        table = tensors[TABLE_KEY].astype(np.float32)
        # one scale for the whole table, so a typical token vector has unit length like the pooled one (the
        # relative lengths, which weigh the pooled mean towards content words, are kept)
        median_norm = float(np.median(np.linalg.norm(table, axis=1)))
        self.table = table / median_norm if median_norm > 0 else table
        if self.tokenizer.get_vocab_size() > len(self.table):
            raise UnderstudyError(f"{tokenizer_file}'s vocabulary ({self.tokenizer.get_vocab_size()}) is larger than "
                                  f"{table_file}'s table ({len(self.table)} rows): the two files do not belong "
                                  "together.")
        self.fingerprint = hashlib.sha256(tokenizer_file.read_bytes() + table_bytes).hexdigest()

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def token_ids(self, sentence: str) -> list[int]:
        return self.tokenizer.encode(sentence, add_special_tokens=False).ids

    def sentence_vector(self, sentence: str) -> np.ndarray:
        """WordLlama's sentence embedding: the unit-length mean of the token vectors (zeros for no tokens)."""
        return self._pooled(self.token_ids(sentence))

    def _pooled(self, ids: list[int]) -> np.ndarray:
        if not ids:
            return np.zeros(self.dim, np.float32)
        mean = self.table[ids].mean(0)
        norm = np.linalg.norm(mean)
        return mean / norm if norm > 0 else mean

    def encode_tokens(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        states = np.zeros((len(sentences), self.max_length, self.dim), np.float32)
        mask = np.zeros((len(sentences), self.max_length), bool)
        for i, sentence in enumerate(sentences):
            ids = self.token_ids(sentence)
            kept = ids[: self.max_length - 1]
            states[i, 0], mask[i, 0] = self._pooled(ids), True
            states[i, 1: 1 + len(kept)], mask[i, 1: 1 + len(kept)] = self.table[kept], True
        return states, mask

    def length_for(self, sentences: list[str], max_tokens: int) -> int:
        """Positions for these (training) sentences: the pooled one, the longest one's tokens, and 2 to spare for
        a longer paraphrase; at most max_tokens (every position costs compute in every layer)."""
        longest = max((len(self.token_ids(s)) for s in sentences), default=max_tokens)
        return max(2, min(int(max_tokens), longest + 3))
