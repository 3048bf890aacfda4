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
