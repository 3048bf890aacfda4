"""Refining a search: composed queries, words mixed into a product or an upload, and
steering by liked and disliked products, on FAISS and on Milvus Lite.

The synthetic shop (tests/harness/products.py): 4 colours (folder label) x 3 shapes x 4 variants,
titled "Red circle product 0". Raw pixels see colour; EfficientNet-Lite0 sees shape more.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from embeddings.building.model import build_model_index
from embeddings.catalogue import Catalogue
from embeddings.errors import QueryError
from embeddings.index.store import load_vectors
from embeddings.models import load_model
from embeddings.search.query import (
    DEFAULT_STEERING,
    MAX_STEERING,
    Query,
    Steering,
    check_query,
    mix_text,
    normalise_segments,
    steer,
)
from embeddings.search.searcher import make_searcher
from tests.harness.products import draw_product

MODELS = ("pixels", "efficientnet-lite0")


def ids_where(catalogue: Catalogue, colour: str, shape: str | None = None) -> list[str]:
    items = catalogue.items
    mask = items["folder"] == colour
    if shape is not None:
        mask &= items["shape"] == shape
    return items.index[mask].tolist()


def labels(catalogue: Catalogue, hits, field: str) -> list[str]:
    return [catalogue.items.at[hit.id, field] for hit in hits]


def brute_force(catalogue: Catalogue, model_id: str, vector: np.ndarray, k: int, excluded):
    """The exact top-k ids of `vector` over the model's stored vectors (numpy, no index)."""
    ids, vectors = load_vectors(catalogue.model_dir(model_id))
    scores = vectors @ vector
    order = [ids[i] for i in np.argsort(-scores, kind="stable") if ids[i] not in excluded]
    return order[:k], np.sort(scores)[::-1]


@pytest.fixture(scope="module")
def milvus_bridged(bridged_catalogue, copy_catalogue) -> Catalogue:
    """The bridged shop with both models' indexes rebuilt in Milvus Lite (bridges kept)."""
    catalogue = copy_catalogue(bridged_catalogue)
    for model_id in MODELS:
        build_model_index(catalogue, load_model(model_id), backend="milvus")
    return catalogue


# -- the query itself ------------------------------------------------------------------------
def test_a_query_is_checked_before_any_search(built_catalogue):
    red = ids_where(built_catalogue, "red")
    image = draw_product("red", "circle", 0)
    cases = {
        "not both": Query(item=red[0], image=image),
        "query is empty": Query(),
        "text query is empty": Query(item=red[0], text="   "),
        "from 0 to 1": Query(item=red[0], text="blue", text_weight=1.5),
        "number from 0 to 1": Query(item=red[0], text="blue", text_weight="lots"),
        "both liked and disliked": Query(item=red[0], liked=(red[1],), disliked=(red[1],)),
        "'nope' (liked)": Query(item=red[0], liked=("nope",)),
        "'gone' (disliked)": Query(text="red", disliked=("gone",)),
        "'missing' (query)": Query(item="missing"),
        f"at most {MAX_STEERING}": Query(item=red[0], liked=tuple(f"x{i}" for i in range(51))),
    }
    searcher = make_searcher(built_catalogue)
    for expected, query in cases.items():
        with pytest.raises(QueryError, match=re.escape(expected)):
            searcher.search(query, ["pixels"], 5)
    checked = check_query(Query(text="  blue  ", liked=[red[1], red[1]]), built_catalogue)
    assert checked.text == "blue" and checked.liked == (red[1],)
    assert checked.kind == "text" and Query(liked=(red[1],)).kind == "steering"


def test_vector_arithmetic_is_rocchio_part_by_part():
    rng = np.random.default_rng(0)
    q, a, b = (normalise_segments(rng.normal(size=6), (4, 2)) for _ in range(3))
    out = steer(q, np.stack([a]), np.stack([b]), Steering(1.0, 0.75, 0.25), (4, 2))
    want = q + 0.75 * a - 0.25 * b
    want = np.concatenate(
        [want[:4] / np.linalg.norm(want[:4]), want[4:] / np.linalg.norm(want[4:])]
    )
    np.testing.assert_allclose(out, want, atol=1e-6)
    mixed = mix_text(q, a, 0.3, (4, 2))
    want = 0.7 * q + 0.3 * a
    np.testing.assert_allclose(mixed[:4], want[:4] / np.linalg.norm(want[:4]), atol=1e-6)
    assert np.allclose(mix_text(q, a, 0.0, (6,)), normalise_segments(q, (6,)), atol=1e-6)
    assert DEFAULT_STEERING.base == 1.0 and DEFAULT_STEERING.liked > DEFAULT_STEERING.disliked


# -- steering --------------------------------------------------------------------------------
def test_more_like_this_pulls_the_liked_colour_in(built_catalogue):
    searcher = make_searcher(built_catalogue)
    query = ids_where(built_catalogue, "red", "circle")[0]
    liked = tuple(ids_where(built_catalogue, "blue", "circle")[:2])
    before = searcher.search(Query(item=query), ["pixels"], 8)["pixels"]
    after = searcher.search(Query(item=query, liked=liked), ["pixels"], 8)["pixels"]
    assert labels(built_catalogue, before, "folder").count("blue") == 0
    assert labels(built_catalogue, after, "folder").count("blue") >= 3
    assert not {hit.id for hit in after} & {query, *liked}  # judged products are left out


def test_less_like_this_pushes_the_disliked_kind_down(built_catalogue):
    searcher = make_searcher(built_catalogue)
    query = ids_where(built_catalogue, "red", "circle")[0]
    squares = ids_where(built_catalogue, "red", "square")
    disliked, others = tuple(squares[:2]), squares[2:]

    def positions(hits):  # where the other red squares rank, the disliked ones left out
        ranked = [hit.id for hit in hits if hit.id not in disliked]
        return [ranked.index(item_id) for item_id in others]

    before = searcher.search(Query(item=query), ["pixels"], 47)["pixels"]
    after = searcher.search(Query(item=query, disliked=disliked), ["pixels"], 45)["pixels"]
    assert not set(disliked) & {hit.id for hit in after}
    assert sum(positions(after)) > sum(positions(before))
    assert all(a >= b for a, b in zip(positions(after), positions(before), strict=True))


def test_steered_ranking_is_the_exact_ranking_of_the_rocchio_vector(built_catalogue):
    searcher = make_searcher(built_catalogue)
    query = ids_where(built_catalogue, "green", "triangle")[1]
    liked = tuple(ids_where(built_catalogue, "yellow", "square")[:2])
    disliked = (ids_where(built_catalogue, "green", "circle")[0],)
    for model_id in MODELS:
        ids, vectors = load_vectors(built_catalogue.model_dir(model_id))
        row = {item_id: i for i, item_id in enumerate(ids)}
        want_vector = steer(
            vectors[row[query]],
            vectors[[row[i] for i in liked]],
            vectors[[row[i] for i in disliked]],
            DEFAULT_STEERING,
            (vectors.shape[1],),
        )
        excluded = {query, *liked, *disliked}
        want, _ = brute_force(built_catalogue, model_id, want_vector, 10, excluded)
        got = searcher.search(Query(item=query, liked=liked, disliked=disliked), [model_id], 10)
        assert [hit.id for hit in got[model_id]] == want, model_id
        kept = searcher.search(
            Query(item=query, liked=liked, disliked=disliked, exclude_steered=False),
            [model_id],
            47,
        )[model_id]
        assert set(liked) <= {hit.id for hit in kept}  # asked to keep them: they can come back


def positions(hits: dict, liked: tuple[str, ...]) -> np.ndarray:
    """Where the blue products other than `liked` rank in the pixels results (liked left out)."""
    ranked = [hit.id for hit in hits["pixels"] if hit.id not in liked]
    return np.array([ranked.index(i) for i in ranked if i.startswith("blue/")])


def test_steering_alone_and_on_text_and_uploads(bridged_catalogue):
    searcher = make_searcher(bridged_catalogue)
    blue = tuple(ids_where(bridged_catalogue, "blue", "triangle")[:2])
    alone = searcher.search(Query(liked=blue), ["pixels"], 6)["pixels"]
    # "More like these two blue triangles": the other two blue triangles first, then triangles.
    assert labels(bridged_catalogue, alone, "folder")[:2] == ["blue", "blue"]
    assert labels(bridged_catalogue, alone, "shape") == ["triangle"] * 6
    upload = draw_product("yellow", "square", 7)
    for query in (Query(text="Yellow square product", liked=blue), Query(image=upload, liked=blue)):
        plain = searcher.search(Query(text=query.text, image=query.image), ["pixels"], 48)
        steered = searcher.search(query, ["pixels"], 46)
        assert positions(steered, blue).mean() < positions(plain, blue).mean(), query


# -- words mixed in --------------------------------------------------------------------------
def test_product_plus_words_moves_towards_the_words_and_keeps_the_shape(bridged_catalogue):
    searcher = make_searcher(bridged_catalogue)
    red_circle = ids_where(bridged_catalogue, "red", "circle")[0]
    got = {
        name: searcher.search(query, ["efficientnet-lite0"], 8)["efficientnet-lite0"]
        for name, query in {
            "image": Query(item=red_circle),
            "text": Query(text="blue"),
            "mix": Query(item=red_circle, text="blue", text_weight=0.5),
        }.items()
    }

    def count(name, field, value):
        return labels(bridged_catalogue, got[name], field).count(value)

    assert count("mix", "folder", "blue") > count("image", "folder", "blue")
    assert count("mix", "shape", "circle") > count("text", "shape", "circle")
    assert red_circle not in {hit.id for hit in got["mix"]}
    heavier = searcher.search(
        Query(item=red_circle, text="blue", text_weight=0.9), ["efficientnet-lite0"], 8
    )["efficientnet-lite0"]
    assert labels(bridged_catalogue, heavier, "folder").count("blue") >= count(
        "mix", "folder", "blue"
    )


def test_upload_plus_words_is_the_exact_mix_of_both_vectors(bridged_catalogue):
    searcher = make_searcher(bridged_catalogue)
    upload = draw_product("green", "square", 9)
    embedder = load_model("pixels")
    text = searcher.text_encoder_loader("pixels").encode_texts(["Red circle product"])[0]
    picture = embedder.encode_images([upload])[0]
    want_vector = mix_text(picture, text, 0.4, (picture.shape[0],))
    want, _ = brute_force(bridged_catalogue, "pixels", want_vector, 7, set())
    got = searcher.search(
        Query(image=upload, text="Red circle product", text_weight=0.4), ["pixels"], 7
    )["pixels"]
    assert [hit.id for hit in got] == want


def test_a_mix_needs_a_model_that_takes_words(built_catalogue):
    """No bridge in this catalogue: the words cannot be mixed in, and the message says how."""
    searcher = make_searcher(built_catalogue)
    item = ids_where(built_catalogue, "red")[0]
    with pytest.raises(QueryError, match="cannot take text queries.*bridge"):
        searcher.search(Query(item=item, text="blue"), ["pixels"], 5)


# -- the same on Milvus Lite -----------------------------------------------------------------
@pytest.mark.milvus
def test_steering_and_mixes_answer_the_same_on_milvus(bridged_catalogue, milvus_bridged):
    faiss_searcher = make_searcher(bridged_catalogue)
    milvus_searcher = make_searcher(milvus_bridged)
    assert milvus_searcher.index_loader("pixels").backend == "milvus"
    query = ids_where(bridged_catalogue, "red", "circle")[0]
    queries = [
        Query(item=query, liked=tuple(ids_where(bridged_catalogue, "blue", "circle")[:2])),
        Query(item=query, disliked=tuple(ids_where(bridged_catalogue, "red", "square")[:2])),
        Query(item=query, text="blue", text_weight=0.5),
        Query(text="Green triangle product", liked=(ids_where(bridged_catalogue, "green")[0],)),
    ]
    for query_ in queries:
        for model_id in MODELS:
            want = faiss_searcher.search(query_, [model_id], 8)[model_id]
            got = milvus_searcher.search(query_, [model_id], 8)[model_id]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
            assert [h.id for h in got][:3] == [h.id for h in want][:3], (query_, model_id)
    filtered = milvus_searcher.search(queries[0], ["pixels"], 5, filters={"shape": "circle"})
    assert labels(milvus_bridged, filtered["pixels"], "shape") == ["circle"] * 5
