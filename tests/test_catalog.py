"""Catalogue adapters, path safety and stratified subsets."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from PIL import Image

from embeddings.catalogue import Catalogue, create_catalogue, safe_relative_path, stratified_sample
from embeddings.errors import CatalogueError
from tests.harness.fashion import HEADER


def make_fashion(root, rows, images):
    (root / "images").mkdir(parents=True)
    for item_id in images:
        Image.new("RGB", (60, 80), "white").save(root / "images" / f"{item_id}.jpg")
    (root / "styles.csv").write_bytes(HEADER.encode() + "".join(r + "\n" for r in rows).encode())
    return root


def test_fashion_recovers_unquoted_commas_and_reports_the_rest(tmp_path):
    rows = [
        "1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt",
        # unquoted commas
        "2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Tops, Tees and more, Red",
        "3,Men,Footwear,Shoes,Casual Shoes,Black,Fall,2011,Casual,No Image Shoe",  # image missing
        "4,Men,Apparel",  # too few fields
        "1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Duplicate of 1",
        "5,Women,Accessories,Bags,Handbags,Brown,Winter,2016,Casual,",  # empty title is fine
    ]
    catalogue = create_catalogue(
        str(make_fashion(tmp_path / "fashion", rows, ["1", "2", "4", "5"])), tmp_path / "cat"
    )
    assert catalogue.ids == ["1", "2", "5"]
    assert catalogue.item("2")["title"] == "Tops, Tees and more, Red"
    assert catalogue.item("2")["articleType"] == "Tops"
    assert catalogue.item("5")["title"] == ""
    assert catalogue.main_label == "articleType"
    assert "baseColour" in catalogue.label_fields and "year" not in catalogue.label_fields
    reasons = " | ".join(s["reason"] for s in catalogue.info["skipped"])
    assert "no image images/3.jpg" in reasons
    assert "3 fields where 10 were expected" in reasons
    assert "duplicate id 1" in reasons
    assert [r["where"] for r in catalogue.info["recovered"]] == ["styles.csv line 3"]
    # The saved catalogue reads back the same (ids stay strings, empty stays empty).
    again = Catalogue.open(tmp_path / "cat")
    assert (
        again.ids == ["1", "2", "5"]
        and again.item("5")["title"] == ""
        and again.fingerprint == catalogue.fingerprint
    )


def test_fashion_non_utf8_bytes_are_read_and_reported(tmp_path):
    root = make_fashion(tmp_path / "f", [], ["7"])
    (root / "styles.csv").write_bytes(
        HEADER.encode()
        + "7,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,Caf\xe9 Shirt\n".encode("cp1252")
    )
    catalogue = create_catalogue(str(root), tmp_path / "cat")
    assert catalogue.item("7")["title"] == "Café Shirt"
    assert "not valid UTF-8" in catalogue.info["recovered"][0]["reason"]


def test_fashion_missing_columns_is_a_clear_error(tmp_path):
    root = tmp_path / "f"
    (root / "images").mkdir(parents=True)
    (root / "styles.csv").write_text("id,gender\n1,Men\n")
    with pytest.raises(CatalogueError, match="missing column.*productDisplayName"):
        create_catalogue(str(root), tmp_path / "cat")


def test_folder_ids_labels_and_sidecar(product_folder, tmp_path):
    catalogue = create_catalogue(str(product_folder), tmp_path / "cat")
    assert len(catalogue) == 48
    assert "red/circle_0" in catalogue
    row = catalogue.item("red/circle_0")
    assert row["path"] == "red/circle_0.png" and row["folder"] == "red" and row["shape"] == "circle"
    assert row["title"] == "Red circle product 0"
    assert catalogue.label_fields == ["folder", "shape"] and catalogue.main_label == "folder"
    assert catalogue.image_path("red/circle_0").is_file()


def test_sidecar_paths_that_escape_are_refused_and_reported(tmp_path):
    root = tmp_path / "products"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "a" / "x.png")
    (tmp_path / "secret.png").write_bytes(b"")
    (root / "metadata.csv").write_text(
        "file,title\n../secret.png,Escape\n/etc/passwd,Absolute\na/x.png,Fine\n"
        "a/missing.png,Nope\na/x.png,twice\n"
    )
    catalogue = create_catalogue(str(root), tmp_path / "cat")
    assert catalogue.ids == ["a/x"] and catalogue.item("a/x")["title"] == "Fine"
    reasons = " | ".join(s["reason"] for s in catalogue.info["skipped"])
    assert "leaves the catalogue folder" in reasons
    assert "is absolute" in reasons
    assert "no such image" in reasons
    assert "duplicate entry" in reasons


def test_symlink_out_of_the_folder_is_ignored(tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    root = tmp_path / "products"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "inside.png")
    os.symlink(outside, root / "link.png")
    assert create_catalogue(str(root), tmp_path / "cat").ids == ["inside"]


@pytest.mark.parametrize(
    "raw", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:/x.jpg", "a\\..\\..\\x.jpg", ""]
)
def test_safe_relative_path_refuses(tmp_path, raw):
    with pytest.raises(CatalogueError):
        safe_relative_path(raw, tmp_path)


def test_image_path_refuses_a_tampered_items_csv(product_folder, tmp_path):
    catalogue = create_catalogue(str(product_folder), tmp_path / "cat")
    items = pd.read_csv(tmp_path / "cat" / "items.csv", dtype=str, keep_default_na=False)
    items.loc[0, "path"] = "../../etc/passwd"
    items.to_csv(tmp_path / "cat" / "items.csv", index=False)
    tampered = Catalogue.open(tmp_path / "cat")
    with pytest.raises(CatalogueError, match="leaves the catalogue folder"):
        tampered.image_path(tampered.ids[0])
    assert catalogue.image_path(catalogue.ids[0]).is_file()


def test_digikala_uses_colour_folders(tmp_path):
    root = tmp_path / "digikala"
    for colour in ("black", "white"):
        (root / "train" / colour).mkdir(parents=True)
        for n in range(2):
            Image.new("RGB", (8, 8), colour).save(root / "train" / colour / f"{n}.jpg")
    catalogue = create_catalogue(str(root), tmp_path / "cat", adapter="digikala")
    assert catalogue.label_fields == ["color"] and catalogue.main_label == "color"
    assert catalogue.item("train/black/0")["color"] == "black"


def test_stratified_sample_keeps_shares_and_is_seeded():
    items = pd.DataFrame(
        {"id": [str(i) for i in range(1000)], "label": ["a"] * 600 + ["b"] * 300 + ["c"] * 100}
    )
    sample = stratified_sample(items, 100, label="label", seed=3)
    assert len(sample) == 100
    assert sample["label"].value_counts().to_dict() == {"a": 60, "b": 30, "c": 10}
    assert (
        sample["id"].tolist() == stratified_sample(items, 100, label="label", seed=3)["id"].tolist()
    )
    assert (
        sample["id"].tolist() != stratified_sample(items, 100, label="label", seed=4)["id"].tolist()
    )
    assert list(sample.index) == sorted(sample.index)  # original order kept


def test_limit_must_be_positive(product_folder, tmp_path):
    with pytest.raises(CatalogueError, match="--limit"):
        create_catalogue(str(product_folder), tmp_path / "cat", limit=0)


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogueError, match="no such folder"):
        create_catalogue(str(tmp_path / "nowhere" / "deep" / "x"), tmp_path / "cat")


@pytest.mark.shared_data
def test_shared_dataset_catalogue(shared_fashion, tmp_path):
    catalogue = create_catalogue(str(shared_fashion), tmp_path / "cat", limit=3000, seed=0)
    assert len(catalogue) == 3000
    full_share = pd.read_csv(shared_fashion / "styles.csv", dtype=str)["articleType"].value_counts(
        normalize=True
    )
    sample_share = catalogue.items["articleType"].value_counts(normalize=True)
    assert abs(sample_share["Tshirts"] - full_share["Tshirts"]) < 0.002
    # The five styles.csv rows without an image are reported, not silently lost.
    whole = create_catalogue(str(shared_fashion), tmp_path / "all")
    assert len(whole) == 44441
    assert sum("no image" in s["reason"] for s in whole.info["skipped"]) == 5
