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


def describe_os_error(exc: OSError) -> str:
    """A one-line message for a failed write or read: which file, why, and what was kept."""
    import errno

    where = exc.filename or "a file"
    advice = {
        errno.ENOSPC: "the disk is full; free some space",
        errno.EROFS: "the folder is on a read-only file system; choose another --out",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EDQUOT: "the disk quota is exceeded; free some space",
    }.get(exc.errno, "check the path")
    return (
        f"cannot use {where}: {exc.strerror or exc} ({advice}). Indexes built before are "
        "unchanged; finished chunks of this build are kept, so the same command "
        "continues after the fix."
    )


class CatalogueChangedError(EmbeddingsError):
    """A build committed a new version of the catalogue after this process opened it: open it
    again (the catalogue and its indexes are then consistent)."""
