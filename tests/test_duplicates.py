"""Near-duplicates (embeddings/derived/duplicates.py): planted copies and near-copies are found
with the index's own range search, groups match a brute-force computation, the default threshold
comes from the score distribution, saved pairs go stale on a rebuild, Milvus agrees with FAISS,
the CLI prints the documented JSON, and search results fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings.artefacts import StaleArtefactError
from embeddings.building.catalogue import BuildRequest, IndexOptions, build_catalogue
from embeddings.catalogue import Catalogue, create_catalogue
from embeddings.derived import duplicates
from embeddings.errors import IndexMissingError
from embeddings.index.base import score_tolerance
from embeddings.index.opening import open_index
from embeddings.search.hits import Hit, distinct_top_k, fold_near_duplicates
from embeddings.search.query import Query
from embeddings.search.searcher import make_searcher
from tests.harness.cli import cli
from tests.harness.products import EXACT, NEAR, make_product_folder, plant


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Catalogue:
    """48 synthetic products + 5 planted copies, with `pixels` and `efficientnet-lite0`.
    Read-only: tests that write (saved pairs, rebuilds) copy it."""
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    root = tmp_path_factory.mktemp("planted")
    products = plant(make_product_folder(root / "products"))
    catalogue = create_catalogue(str(products), root / "data" / "planted")
    for model_id in ("pixels", "efficientnet-lite0"):
        build_model_index(catalogue, load_model(model_id))
    return catalogue


@pytest.fixture
def own_planted(planted, copy_catalogue, tmp_path) -> Catalogue:
    """A writable copy of the planted catalogue (same image root)."""
    return copy_catalogue(planted, tmp_path / "data" / "planted")


def brute_force_groups(vectors: np.ndarray, ids: list[str], threshold: float) -> list[set[str]]:
    """Groups computed the plain way: all cosine pairs (in float64), then a depth-first walk."""
    scores = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    eps = score_tolerance(vectors.shape[1])
    linked = (scores >= threshold - eps) & ~np.eye(len(ids), dtype=bool)
    seen, groups = set(), []
    for start in range(len(ids)):
        if start in seen or not linked[start].any():
            continue
        stack, members = [start], set()
        while stack:
            row = stack.pop()
            if row in members:
                continue
            members.add(row)
            stack.extend(np.flatnonzero(linked[row]).tolist())
        seen |= members
        groups.append({ids[r] for r in members})
    return groups


@pytest.mark.parametrize("model_id", ["pixels", "efficientnet-lite0"])
def test_groups_equal_a_brute_force_computation(planted, model_id):
    index = open_index(planted, model_id)
    vectors = index.reconstruct_batch(np.arange(len(index))).astype(np.float64)  # the reference
    eps = score_tolerance(index.dim)  # how far the index's float32 scores may stray from it
    floor = duplicates.default_threshold(index).floor
    first, second, scores, facts = duplicates.find_pairs(index, floor)
    assert facts["method"] == "faiss range_search" and facts["backend"] == "faiss"
    assert (first < second).all() and (scores >= floor - eps).all()
    for threshold in (floor, (floor + 1) / 2, 1.0):
        keep = scores >= threshold - eps
        groups = duplicates.group_pairs(index.ids, first[keep], second[keep], scores[keep])
        assert sorted(map(sorted, (set(g.ids) for g in groups))) == sorted(
            map(sorted, brute_force_groups(vectors, index.ids, threshold))
        )
        assert [len(g.ids) for g in groups] == sorted((len(g.ids) for g in groups), reverse=True)
        for group in groups:  # the weakest pair that links the group
            rows = [index.row_of[i] for i in group.ids]
            within = vectors[rows] @ vectors[rows].T
            linked = within[(within >= threshold - eps) & ~np.eye(len(rows), dtype=bool)]
            assert group.min_score >= threshold - eps
            assert group.min_score == pytest.approx(float(linked.min()), abs=eps)


def test_planted_copies_are_found_at_the_default_thresholds(planted):
    pixels = duplicates.find_duplicates(planted.directory, "pixels", save=False).groups
    found = [set(g.ids) for g in pixels]
    for planted_group in EXACT + NEAR:  # raw pixels: copies and near-copies, each its own group
        assert planted_group in found, (planted_group, found)
    cnn = duplicates.find_duplicates(planted.directory, "efficientnet-lite0", save=False)
    found, threshold = [set(g.ids) for g in cnn.groups], cnn.threshold
    for planted_group in EXACT:
        assert planted_group in found, (planted_group, found)
    # At 1.0 only identical images are grouped, in every model.
    for model_id in ("pixels", "efficientnet-lite0"):
        exact = duplicates.find_duplicates(planted.directory, model_id, 1.0, save=False).groups
        assert sorted(map(sorted, (set(g.ids) for g in exact))) == sorted(map(sorted, EXACT))
        eps = score_tolerance(open_index(planted, model_id).dim)
        assert all(g.min_score == pytest.approx(1.0, abs=eps) for g in exact)
    assert 0.9 < threshold < 1.0


def test_the_default_threshold_follows_the_score_distribution():
    """1 - 0.1 x the median distance to the nearest neighbour (0.3 x for the floor)."""

    class Vectors:
        """A `ModelIndex` stand-in over given unit vectors (exact search)."""

        backend = "faiss"

        def __init__(self, vectors):
            self.vectors = vectors

        def __len__(self):
            return len(self.vectors)

        def reconstruct_batch(self, rows):
            return self.vectors[np.asarray(rows)]

        def search(self, queries, k):
            scores = queries @ self.vectors.T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, order, axis=1), order

    # Pairs of points at a known angle: each point's nearest neighbour scores cos(angle).
    angles = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    pairs = []
    for number, angle in enumerate(angles):
        base = 2 * number  # well-separated directions in 10-d
        for turn in (0.0, angle):
            vector = np.zeros(10)
            vector[base], vector[base + 1] = np.cos(turn), np.sin(turn)
            pairs.append(vector)
    index = Vectors(np.array(pairs, dtype=np.float32))
    nearest = duplicates.nearest_neighbour_scores(index)
    np.testing.assert_allclose(np.sort(nearest), np.sort(np.repeat(np.cos(angles), 2)), atol=1e-6)
    thresholds = duplicates.default_threshold(index)
    median_distance = 1 - np.cos(0.3)
    assert thresholds.default == pytest.approx(1 - 0.1 * median_distance, abs=1e-4)
    assert thresholds.floor == pytest.approx(1 - 0.3 * median_distance, abs=1e-4)
    assert thresholds.default <= 1 - 0.1 * median_distance  # rounded down, never up


def test_saved_pairs_regroup_at_any_threshold_and_go_stale_on_a_rebuild(own_planted):
    with pytest.raises(IndexMissingError, match="python -m embeddings duplicates --catalog"):
        duplicates.load_pairs(own_planted, "pixels")
    found = duplicates.find_duplicates(own_planted.directory, "pixels")
    groups, pairs, threshold = found.groups, found.pairs, found.threshold
    assert found.not_saved is None
    saved = duplicates.load_pairs(Catalogue.open(own_planted.directory), "pixels")
    assert saved.floor == pairs.floor <= threshold
    assert saved.groups(threshold) == groups
    assert (
        saved.groups(1.0)
        == duplicates.find_duplicates(own_planted.directory, "pixels", 1.0, save=False).groups
    )
    with pytest.raises(Exception, match="needs a new search"):
        saved.groups(saved.floor - 0.01)
    build_catalogue(
        BuildRequest(
            out=own_planted.directory,
            models=["pixels"],
            bridges=False,
            index=IndexOptions(force=True),
        )
    )
    with pytest.raises(StaleArtefactError, match="python -m embeddings duplicates"):
        duplicates.load_pairs(Catalogue.open(own_planted.directory), "pixels")


@pytest.mark.milvus
def test_milvus_range_search_finds_the_same_pairs(planted, tmp_path):
    from embeddings.building.model import build_model_index
    from embeddings.models import load_model

    catalogue = create_catalogue(planted.info["root"], tmp_path / "milvus")
    build_model_index(catalogue, load_model("pixels"), backend="milvus")
    milvus = open_index(catalogue, "pixels")
    assert milvus.backend == "milvus"
    reference = open_index(planted, "pixels")
    floor = duplicates.default_threshold(reference).floor
    got = duplicates.find_pairs(milvus, floor)
    want = duplicates.find_pairs(reference, floor)
    assert got[3]["method"] == "milvus range search" and got[3]["capped_queries"] == 0
    # Same products, same rows: the pair lists agree (scores within float rounding).
    assert milvus.ids == reference.ids
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], atol=2 * score_tolerance(milvus.dim))


@pytest.mark.slow
def test_cli_json_and_text(own_planted):
    done = cli("duplicates", "--catalog", str(own_planted.directory), "--model", "pixels", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows and all(set(row) == {"ids", "min_score"} for row in rows)
    assert all(isinstance(i, str) for row in rows for i in row["ids"])
    assert [len(r["ids"]) for r in rows] == sorted((len(r["ids"]) for r in rows), reverse=True)
    assert {frozenset(r["ids"]) for r in rows} >= {frozenset(g) for g in EXACT + NEAR}
    assert (own_planted.directory / "duplicates" / "pixels" / "manifest.json").is_file()
    exact = cli(
        "duplicates",
        "--catalog",
        str(own_planted.directory),
        "--model",
        "pixels",
        "--threshold",
        "1",
        "--json",
        "--no-save",
    )
    assert sorted(sorted(r["ids"]) for r in json.loads(exact.stdout)) == sorted(map(sorted, EXACT))
    text = cli("duplicates", "--catalog", str(own_planted.directory), "--model", "pixels")
    assert text.returncode == 0, text.stderr
    assert "groups" in text.stdout and "faiss range_search at" in text.stdout
    assert "red/circle_0" in text.stdout
    wrong = cli("duplicates", "--catalog", str(own_planted.directory), "--model", "pixel")
    assert wrong.returncode == 2 and "pixel" in wrong.stderr
    bad = cli(
        "duplicates", "--catalog", str(own_planted.directory), "--model", "pixels",
        "--threshold", "1.5",
    )  # fmt: skip
    assert bad.returncode == 2 and "between -1 and 1" in bad.stderr


# -- folding search results -----------------------------------------------------------------------
def unit(*values):
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_near_duplicate_results_fold_into_the_higher_ranked_one():
    a, b, c = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)
    near_a = unit(1, 0.01, 0)
    hits = [Hit("a", 0.9), Hit("a2", 0.89), Hit("b", 0.8), Hit("a3", 0.7), Hit("c", 0.6)]
    vectors = np.stack([a, near_a, b, a, c])
    folded = fold_near_duplicates(hits, vectors, 0.99, k=3)
    assert [f.id for f in folded] == ["a", "b", "c"]
    assert [[h.id for h in f.folded] for f in folded] == [["a2", "a3"], [], []]
    assert [f.id for f in fold_near_duplicates(hits, vectors, 0.99, k=2)] == [
        "a",
        "b",
    ]
    # Nothing is folded when the threshold is above every pair.
    assert len(fold_near_duplicates(hits, vectors, 1.5, k=5)) == 5


def test_distinct_top_k_asks_for_more_until_k_distinct_products():
    ids = [f"copy{i}" for i in range(30)] + ["other1", "other2"]
    vectors = {i: unit(1, 0, 0) for i in ids[:30]}
    vectors.update({"other1": unit(0, 1, 0), "other2": unit(0, 0, 1)})
    asked = []

    def fetch(n):
        asked.append(n)
        return [Hit(i, 1.0 - rank / 100) for rank, i in enumerate(ids[:n])]

    def vectors_of(chosen):
        return np.stack([vectors[i] for i in chosen])

    folded = distinct_top_k(fetch, vectors_of, 3, 0.99, most=1000)
    assert [f.id for f in folded] == ["copy0", "other1", "other2"]
    assert len(folded[0].folded) == 29
    assert asked == [13, 26, 52]  # 3k (at least k + 10), then doubled until enough


def test_a_busy_catalogue_still_gets_its_groups(own_planted):
    """Saving the pairs needs the build lock; the search does not: its result is never lost."""
    from embeddings.locks import build_lock

    with build_lock(own_planted.directory):
        found = duplicates.find_duplicates(own_planted.directory, "pixels")
        done = cli("duplicates", "--catalog", str(own_planted.directory), "--model", "pixels")
    assert found.not_saved and "right now" in found.not_saved
    assert {frozenset(g) for g in EXACT} <= {frozenset(g.ids) for g in found.groups}
    assert not (own_planted.directory / "duplicates" / "pixels").exists()
    assert done.returncode == 0 and "red/circle_0" in done.stdout
    assert "the pairs were not saved" in done.stderr and "right now" in done.stderr


def test_the_searcher_folds_near_duplicates_when_asked(planted):
    """`Searcher.search(fold=...)`: k different products, the planted copies folded into the
    first of them; without `fold` the copies fill the list."""
    searcher = make_searcher(planted)
    query = Query(item="red/circle_0")  # its two exact copies score 1.0
    plain = searcher.search(query, ["pixels"], 5)["pixels"]
    folded = searcher.search(query, ["pixels"], 5, fold=lambda model_id: 0.999)["pixels"]
    assert len(folded) == 5 and not any(h.folded for h in plain)
    copies = {"copies/same_red_circle", "copies/same_red_circle_again"}
    assert {h.id for h in plain[:2]} == copies
    kept = [h for h in folded if h.id in copies]
    assert len(kept) == 1 and {h.id for h in kept[0].folded} == copies - {kept[0].id}
    assert len({h.id for h in folded}) == 5
    # fused models have no vectors of their own: never folded, still answered
    fused = searcher.search(query, ["efficientnet-lite0+pixels"], 5, fold=lambda m: 0.999)
    assert len(fused["efficientnet-lite0+pixels"]) == 5


def test_cli_search_hides_near_duplicates(planted):
    args = ("search", "--catalog", str(planted.directory), "--model", "pixels",
            "--item", "red/circle_0", "-k", "5", "--json")  # fmt: skip
    plain = json.loads(cli(*args).stdout)
    done = cli(*args, "--hide-duplicates")
    assert done.returncode == 0, done.stderr
    folded = json.loads(done.stdout)
    assert len(folded) == 5 and not any("folded" in row for row in plain)
    copies = {"copies/same_red_circle", "copies/same_red_circle_again"}
    kept = [row for row in folded if row["id"] in copies]
    assert len(kept) == 1 and set(kept[0]["folded"]) == copies - {kept[0]["id"]}
