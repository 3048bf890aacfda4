"""Bridge recipes: how a text bridge is made, chosen per build and recorded in its manifest.

- `linear`: the learnt head alone, normalise(W x + b) over MiniLM vectors (the first recipe).
- `memory` (default): the same head, mixed with the bridge's memory of its training texts
  (`bridge.memory`): titles and label sentences, each with the mean image vector of the products
  it describes. A query's vector is normalise(a * head(q) + (1 - a) * memory(q)).

The memory's settings were chosen on the bridge's own held-out titles (never on a benchmark's
queries; see the README's quality section): `MemoryOptions` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from embeddings.errors import EmbeddingsError

RECIPES = {
    "linear": "linear head over MiniLM",
    "memory": "linear head + memory of training titles and label sentences",
}
DEFAULT_RECIPE = "memory"


@dataclass(frozen=True)
class MemoryOptions:
    """The `memory` recipe's settings.

    `neighbours` memory texts are looked up per query, by (1 - `lexical_weight`) * MiniLM cosine
    + `lexical_weight` * TF-IDF cosine, weighed by a softmax at `temperature`; `head_weight` is
    the head's share of the final vector; label sentences combine up to `label_fields` label
    fields (0: titles only).
    """

    neighbours: int = 10
    temperature: float = 0.03
    lexical_weight: float = 0.3
    head_weight: float = 0.5
    label_fields: int = 2


def check_recipe(name: str) -> str:
    if name not in RECIPES:
        raise EmbeddingsError(
            f"unknown bridge recipe {name!r}; recipes: "
            + ", ".join(f"{k} ({v})" for k, v in RECIPES.items())
        )
    return name
