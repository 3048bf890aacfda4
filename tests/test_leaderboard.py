"""The Marqo fashion leaderboard protocol (kagl): its figures by hand on tiny cases, the check
that title queries are unseen by every bridge, and the recipe pick-titles -> build -> evaluate."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from embeddings.bridge import train_bridge_for_catalogue
from embeddings.bridge.exclusion import ExcludedTitles
from embeddings.catalogue import Catalogue
from embeddings.cli import main
from embeddings.errors import EmbeddingsError
from embeddings.quality.kagl import (
    evaluate_leaderboard,
    load_leaderboard,
    pick_title_queries,
    save_leaderboard,
    unseen_title_problem,
)
from embeddings.quality.kagl_metrics import label_figures, random_mrr, title_figures
from embeddings.search.searcher import Hit

MODEL = "efficientnet-lite0"


def test_title_figures_by_hand():
    # 10 products; query A has relevant {0, 1}, query B has relevant {5}, query C {7, 8, 9}.
    relevant = [{0, 1}, {5}, {7, 8, 9}]
    found = np.array(
        [
            [3, 0, 4, 1, 2, -1, -1, -1, -1, -1],  # A: first relevant at rank 2; both in top 10
            [5, 0, 1, 2, 3, 4, 6, 7, 8, 9],  # B: at rank 1
            [0, 1, 2, 3, 4, 5, 6, 9, -1, -1],  # C: one of three, first at rank 8
        ]
    )
    figures = title_figures(found, relevant, n_items=10)
    assert figures["recall@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert figures["recall@10"] == pytest.approx((2 / 2 + 1 / 1 + 1 / 3) / 3)
    assert figures["mrr@10"] == pytest.approx((1 / 2 + 1 + 1 / 8) / 3)
    assert figures["chance_recall@1"] == pytest.approx(0.1)
    assert figures["chance_recall@10"] == pytest.approx(1.0)


def test_random_mrr_equals_the_average_over_every_ranking():
    n, relevant_rows, depth = 6, {0, 3}, 3
    total, count = 0.0, 0
    for order in itertools.permutations(range(n)):
        ranks = [i + 1 for i, row in enumerate(order[:depth]) if row in relevant_rows]
        total += 1 / ranks[0] if ranks else 0
        count += 1
    assert random_mrr(len(relevant_rows), n, depth) == pytest.approx(total / count)


def test_label_figures_by_hand():
    relevant = [{0, 1, 2}, {3}]
    found = np.array([[0, 5, 1, 2], [4, 3, 5, 0]])
    figures = label_figures(found, relevant, n_items=6, ks=(1, 4))
    assert figures["precision@1"] == pytest.approx((1 + 0) / 2)
    assert figures["precision@4"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert figures["chance_precision@1"] == pytest.approx((3 / 6 + 1 / 6) / 2)


class FixedSearcher:
    """Answers every text with a fixed ranking (ids), like `Searcher.search_texts`."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    def search_texts(self, texts, models, k):
        return [{m: [Hit(i, 1.0) for i in self.answers[t][:k]] for m in models} for t in texts]


def tiny_catalogue(tmp_path) -> Catalogue:
    """Six products: two share a title; labels colour and kind."""
    items = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f"],
            "path": [f"{i}.png" for i in "abcdef"],
            "title": ["Red Tee", "Red Tee", "Blue Tee", "Blue Jeans", "Red Jeans", "Green Cap"],
            "colour": ["Red", "Red", "Blue", "Blue", "Red", "Green"],
            "kind": ["Tee", "Tee", "Tee", "Jeans", "Jeans", "Cap"],
        }
    )
    info = {
        "root": str(tmp_path),
        "label_fields": ["colour", "kind"],
        "main_label": "kind",
        "fingerprint": "x",
    }
    return Catalogue(tmp_path, info, items)


def test_protocol_figures_on_a_tiny_catalogue_by_hand(tmp_path):
    catalogue = tiny_catalogue(tmp_path)
    answers = {
        "Red Tee": ["e", "b", "a", "c", "d", "f"],  # relevant a, b: first at rank 2, both in top 10
        "Green Cap": ["c", "d", "e", "a", "b", "f"],  # relevant f at rank 6
        "Red": ["a", "c", "b", "e", "d", "f"],  # 3 red in the top 10 (all 6 ranked)
        "Blue": ["c", "a", "b", "d", "e", "f"],
        "Green": ["a", "b", "c", "d", "e", "f"],
        "Tee": ["a", "b", "c", "d", "e", "f"],
        "Jeans": ["d", "e", "a", "b", "c", "f"],
        "Cap": ["a", "b", "c", "d", "e", "f"],
    }
    result = evaluate_leaderboard(
        catalogue,
        ["clip"],  # a native text tower: no bridge to check
        ["Red Tee", "Green Cap"],
        searcher=FixedSearcher(answers),
    )
    title = result.figures["clip"]["title"]
    assert title["recall@1"] == pytest.approx((0 + 0) / 2)
    assert title["recall@10"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    assert title["mrr@10"] == pytest.approx((1 / 2 + 1 / 6) / 2)
    assert title["chance_recall@10"] == pytest.approx(1.0)  # 10 >= the 6 products
    colour = result.figures["clip"]["labels"]["colour"]
    # Red: P@1 1, P@10 3/10; Blue: P@1 1, 2/10; Green: P@1 0, 1/10.
    assert colour["precision@1"] == pytest.approx(2 / 3)
    assert colour["precision@10"] == pytest.approx((3 + 2 + 1) / 10 / 3)
    assert colour["chance_precision@1"] == pytest.approx((3 / 6 + 2 / 6 + 1 / 6) / 3)
    kind = result.figures["clip"]["labels"]["kind"]
    assert kind["precision@1"] == pytest.approx((1 + 1 + 0) / 3)
    assert result.manifest["title_queries"] == 2 and result.manifest["refused_titles"] == {}
    with pytest.raises(EmbeddingsError, match="titles of no product"):
        evaluate_leaderboard(catalogue, ["clip"], ["Purple Hat"], searcher=FixedSearcher({}))


def test_pick_title_queries_is_seeded_and_distinct(built_catalogue):
    first = pick_title_queries(built_catalogue, 10, seed=0)
    assert first == pick_title_queries(built_catalogue, 10, seed=0)
    assert first != pick_title_queries(built_catalogue, 10, seed=1)
    assert len(set(first)) == 10 and first == sorted(first)
    assert len(pick_title_queries(built_catalogue, 1000)) == 48  # all of them when fewer


@pytest.fixture(scope="module")
def excluded_bridge(built_catalogue, copy_catalogue):
    """A copy of the synthetic catalogue whose efficientnet-lite0 bridge excludes 8 titles."""
    catalogue = copy_catalogue(built_catalogue)
    titles = pick_title_queries(catalogue, 8, seed=3)
    train_bridge_for_catalogue(
        catalogue, MODEL, holdout_fraction=0.1, exclude=ExcludedTitles.of(titles)
    )
    return catalogue, titles


def test_title_queries_must_be_unseen_by_the_bridge(excluded_bridge):
    catalogue, titles = excluded_bridge
    assert unseen_title_problem(catalogue, MODEL, titles) is None
    trained = [t for t in catalogue.items["title"] if t not in titles][:5]
    problem = unseen_title_problem(catalogue, MODEL, trained)
    assert problem and "trained on" in problem and "--exclude-titles" in problem
    result = evaluate_leaderboard(catalogue, [MODEL], trained, label_fields=["shape"])
    assert result.figures[MODEL]["title"] is None  # refused, with the reason
    assert "trained on" in result.manifest["refused_titles"][MODEL]
    assert result.figures[MODEL]["labels"]["shape"]["precision@1"] >= 0  # labels still measured


def test_recipe_pick_build_evaluate_from_the_cli(excluded_bridge, tmp_path, capsys):
    catalogue, titles = excluded_bridge
    # evaluate reads the query titles back from the bridge when none are given
    assert main(["evaluate", "--catalog", str(catalogue.directory), "--protocol", "kagl"]) == 0
    out = capsys.readouterr().out
    assert "FashionCLIP 2.0 (their table)" in out and f"| {MODEL} |" in out
    saved = load_leaderboard(catalogue)
    assert saved is not None and saved.manifest["title_queries"] == len(titles)
    figures = saved.figures[MODEL]
    assert figures["title"]["recall@10"] >= figures["title"]["chance_recall@10"]
    assert (
        figures["labels"]["folder"]["precision@10"]
        > figures["labels"]["folder"]["chance_precision@10"]
    )
    # pick-titles writes the same draw as the core
    out_file = tmp_path / "titles.txt"
    args = ["pick-titles", "--catalog", str(catalogue.directory), "-n", "8", "--seed", "3"]
    assert main([*args, "--out", str(out_file)]) == 0
    assert out_file.read_text(encoding="utf-8").splitlines() == titles


@pytest.mark.slow
def test_saved_figures_go_stale_when_the_bridge_is_retrained(excluded_bridge, copy_catalogue):
    catalogue, titles = excluded_bridge
    catalogue = copy_catalogue(catalogue)
    result = evaluate_leaderboard(catalogue, [MODEL], titles, label_fields=["folder"])
    save_leaderboard(catalogue, result)
    assert load_leaderboard(catalogue) is not None
    train_bridge_for_catalogue(
        catalogue, MODEL, holdout_fraction=0.1, exclude=ExcludedTitles.of(titles), force=True
    )
    assert load_leaderboard(catalogue) is None


@pytest.mark.slow
def test_evaluate_without_recorded_exclusions_says_what_to_do(
    built_catalogue, capsys, copy_catalogue
):
    copy = copy_catalogue(built_catalogue).directory
    train_bridge_for_catalogue(Catalogue.open(copy), MODEL, holdout_fraction=0.1, recipe="linear")
    assert main(["evaluate", "--catalog", str(copy), "--protocol", "kagl"]) == 2
    err = capsys.readouterr().err
    assert "--title-queries" in err and "pick-titles" in err
