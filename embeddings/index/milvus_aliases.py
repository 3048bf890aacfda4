"""Swapping a model's Milvus index with an alias, so readers on other machines survive rebuilds.

Readers of a Milvus-backed model query its alias (`milvus_backend.alias_name`: one per
catalogue folder, model and weights), never a build's collection. A build fills a new
collection (`milvus_backend.push_vectors`: complete, indexed and visible before it returns);
`embeddings.index.store.commit_staged`, under the catalogue's exclusive commit lock, then

1. moves the alias to the new collection in one step (`point_alias`: `alter_alias`, or
   `create_alias` the first time). Every query after that is answered by the new collection,
   every query before by the old one: Milvus resolves the alias once per request;
2. swaps the model folder (manifest, ids) in; if that fails the alias is moved back
   (`restore_alias`);
3. drops what earlier builds left (`retire_collections`): every collection of this catalogue
   and model except the new one and the one it replaced, and every alias pointing at a dropped
   collection.

So the collection a rebuild replaces is dropped at the next rebuild, not at once and not on a
timer. Why the next rebuild: it is the only writer (readers never write, and there is no
daemon to run a timer), and until then the replaced collection still serves what may ask for
it by name: queries already in flight or sent by a proxy whose alias cache is a moment behind,
readers of manifests written before aliases existed (they name the collection), and readers
still holding a manifest of other weights (their own alias keeps pointing at it). The cost:
between two builds the server keeps both collections, so budget twice one model's memory.

Both engines used here have aliases (Milvus servers since 2.0, Zilliz Cloud, and Milvus Lite:
3.2.2 answers `create_alias`, `alter_alias`, `list_aliases`, `describe_alias` the same way;
tests/test_milvus.py runs every swap on both).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from embeddings.errors import EmbeddingsError
from embeddings.index.milvus import (
    _pymilvus,
    _short,
    collection_prefix,
    connect,
    is_alias_of,
    is_collection_of,
)


def aliases(client) -> list[str]:
    """Every alias of the database."""
    return list((client.list_aliases() or {}).get("aliases", []))


def alias_target(client, alias: str) -> str | None:
    """The collection `alias` points at, or None when there is no such alias."""
    if alias not in aliases(client):
        return None
    return client.describe_alias(alias).get("collection_name")


def point_alias(uri: str, token: str | None, alias: str, collection: str) -> str | None:
    """Point `alias` at `collection` in one step; returns the collection it pointed at before."""
    client = connect(uri, token)
    pymilvus = _pymilvus()
    try:
        before = alias_target(client, alias)
        if before is None:
            try:
                client.create_alias(collection, alias)
            except pymilvus.MilvusException:
                # A Milvus 2.3 server keeps the alias of a dropped collection half alive: not
                # listed, yet "alias already exist" on create; moving it works.
                client.alter_alias(collection, alias)
        elif before != collection:
            client.alter_alias(collection, alias)
    except pymilvus.MilvusException as exc:
        raise EmbeddingsError(
            f"Milvus at {uri} refused to point alias {alias} at {collection}: {_short(exc)}"
        ) from exc
    return before


def restore_alias(uri: str, token: str | None, alias: str, before: str | None) -> None:
    """Undo `point_alias` (the commit failed after it): point the alias back, or remove it."""
    client = connect(uri, token)
    with contextlib.suppress(Exception):  # the commit's own error is the one to report
        if before is None:
            client.drop_alias(alias)
        else:
            client.alter_alias(before, alias)


def retire_collections(
    *, catalogue_dir: Path, model_id: str, uri: str, token: str | None, keep: set[str]
) -> list[str]:
    """Drop this catalogue+model's collections not in `keep` (the builds before the one just
    replaced, killed builds), and first the aliases pointing at them. Returns what was dropped.

    Best effort: what fails to drop is left for the next build.
    """
    client = connect(uri, token)
    prefix = collection_prefix(catalogue_dir, model_id)
    dropped = []
    # Best effort, one name at a time: nothing here may fail a commit that already happened.
    with contextlib.suppress(Exception):
        for alias in aliases(client):
            if is_alias_of(prefix, alias) and alias_target(client, alias) not in keep:
                with contextlib.suppress(Exception):
                    client.drop_alias(alias)
        for name in client.list_collections():
            if is_collection_of(prefix, name) and name not in keep:
                with contextlib.suppress(Exception):
                    client.drop_collection(name)
                    dropped.append(name)
    return dropped
