"""Catalogues: dataset adapters, saved catalogue folders, stratified subsets."""

from __future__ import annotations

import os
from pathlib import Path

from embeddings.catalogue.adapters import ADAPTERS, KAGGLE_HANDLES, detect_adapter
from embeddings.catalogue.base import (
    Catalogue,
    ScanResult,
    Skipped,
    fingerprint_items,
    safe_relative_path,
    save_catalogue,
)
from embeddings.catalogue.sampling import stratified_sample
from embeddings.errors import CatalogueError

__all__ = [
    "Catalogue",
    "ScanResult",
    "Skipped",
    "create_catalogue",
    "resolve_source",
    "scan_source",
    "fingerprint_items",
    "safe_relative_path",
    "stratified_sample",
    "ADAPTERS",
    "default_catalogue_name",
]


def resolve_source(source: str) -> tuple[Path, str | None]:
    """A local folder, or a Kaggle handle ('owner/dataset') downloaded with kagglehub.

    Returns the folder and the adapter a known Kaggle handle implies (else None).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), None
    if path.exists():
        raise CatalogueError(f"--source {source}: is a file; point it at the dataset's folder")
    handle = source.strip().rstrip("/")
    if handle.count("/") == 1 and not handle.startswith((".", "/")):
        try:
            import kagglehub
        except ImportError as exc:
            raise CatalogueError(
                f"--source {source}: looks like a Kaggle handle, but kagglehub is not installed"
            ) from exc
        try:
            downloaded = Path(kagglehub.dataset_download(handle))
        except Exception as exc:  # network, credentials, unknown dataset
            raise CatalogueError(
                f"--source {source}: no such folder, and downloading it from Kaggle failed "
                f"({type(exc).__name__}: {str(exc)[:200]}). Download it by hand and "
                "pass the folder."
            ) from exc
        return downloaded, KAGGLE_HANDLES.get(handle)
    raise CatalogueError(
        f"--source {source}: no such folder (nor a Kaggle handle like owner/dataset)"
    )


def default_catalogue_name(source: str, limit: int | None) -> str:
    """A folder name for a source: its last path part (or Kaggle dataset name), plus the limit."""
    name = Path(source.rstrip("/")).name or "catalogue"
    return f"{name}-{limit}" if limit else name


def scan_source(
    source: str, *, adapter: str | None = None, sidecar: str | None = None
) -> tuple[ScanResult, str]:
    """Resolve and scan a source; returns the scan and the adapter used."""
    root, implied = resolve_source(source)
    adapter = adapter or implied or detect_adapter(root)
    if adapter not in ADAPTERS:
        raise CatalogueError(f"unknown adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
    options = {"sidecar": Path(sidecar)} if sidecar and adapter == "folder" else {}
    return ADAPTERS[adapter](root, **options), adapter


def create_catalogue(
    source: str,
    out: str | os.PathLike,
    *,
    adapter: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    sidecar: str | None = None,
    write: bool = True,
) -> Catalogue:
    """Scan `source`, take the stratified subset, and save the catalogue into `out`.

    With `write=False` nothing is written: a build (`embeddings.building.catalogue`) saves the
    catalogue together with its indexes, so a build that fails entirely leaves the previous
    catalogue (and the indexes built for it) loadable.
    """
    scan, adapter = scan_source(source, adapter=adapter, sidecar=sidecar)
    if limit is not None:
        if limit < 1:
            raise CatalogueError(f"--limit must be at least 1 (got {limit})")
        scan.items = stratified_sample(scan.items, limit, label=scan.main_label, seed=seed)
    return save_catalogue(
        Path(out),
        scan,
        source=source,
        adapter=adapter,
        limit=limit,
        seed=seed,
        sidecar=sidecar,
        write=write,
    )
