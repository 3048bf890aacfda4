"""Exceptions with messages meant for people: each names the thing and what to do."""


class EmbeddingsError(Exception):
    """Base class: the message is shown to the user as it is."""


class CatalogueError(EmbeddingsError):
    """A catalogue cannot be read or created."""


class ImageError(EmbeddingsError):
    """An image cannot be decoded (not an image, truncated, too large...)."""


class ModelLoadError(EmbeddingsError):
    """A model's weights cannot be loaded; the message says where they were looked for."""


class IndexMismatchError(EmbeddingsError):
    """An index on disk was built for another model or another version of the catalogue."""


class IndexMissingError(EmbeddingsError):
    """No index has been built for this model in this catalogue."""


class QueryError(EmbeddingsError):
    """A search query cannot be answered (unknown item, text on an image-only model...)."""


def describe_os_error(exc: OSError, *, building: bool = False) -> str:
    """A one-line message for a failed write or read: which file, why, what to do, and what
    was kept. `building`: the failure stopped a build (`build`, the app's Catalogue page), whose
    finished chunks are kept; any other command (search, export, evaluate...) built nothing. A
    file in the models cache is named as such, with the setting that moves it."""
    import errno

    where = exc.filename or "a file"
    cache = _models_cache_of(where)
    elsewhere = (
        f"set EMBEDDINGS_MODELS to a folder you can write to (the models cache is {cache})"
        if cache
        else ("choose another --out" if building else "choose another folder")
    )
    advice = {
        errno.ENOSPC: "the disk is full; free some space",
        errno.EROFS: f"the folder is on a read-only file system; {elsewhere}",
        errno.EACCES: f"permission denied; {elsewhere}",
        errno.EPERM: f"permission denied; {elsewhere}",
        errno.EDQUOT: "the disk quota is exceeded; free some space",
    }.get(exc.errno, f"check the path; {elsewhere}" if cache else "check the path")
    kept = (
        "Indexes built before are unchanged; finished chunks of this build are kept, so the "
        "same command continues after the fix."
        if building
        else "Nothing built before was changed; run the same command again after the fix."
    )
    return f"cannot use {where}: {exc.strerror or exc} ({advice}). {kept}"


def _models_cache_of(path) -> str | None:
    """The models cache folder (`EMBEDDINGS_MODELS`) when `path` is inside it, else None."""
    from pathlib import Path

    from embeddings.config import models_home

    try:
        home = Path(models_home()).absolute()
        Path(path).absolute().relative_to(home)
    except (ValueError, TypeError, OSError):
        return None
    return str(home)


class CatalogueChangedError(EmbeddingsError):
    """A build committed a new version of the catalogue after this process opened it: open it
    again (the catalogue and its indexes are then consistent)."""
