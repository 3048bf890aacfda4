"""The points the Map page sends to the browser: compact binary arrays, decoded by the component.

Everything a hover needs is sent once (coordinates, colour, title, labels, id); thumbnails are not
(they are fetched on demand, `app_support.map_ui.thumbnail_fragment`). For n products on m maps:

- `coords`: uint16, m x n x 2 — each map's coordinates scaled to 0..65534 within its bounds
  (`maps[i]["bounds"]`: xmin, xmax, ymin, ymax); 65535 marks a product absent from that map. A
  step is 1/65534 of the map's extent, far below a pixel at any zoom the page offers.
- `colours`: uint8, n — the position of the product's colour value in `legend`.
- `labels`: uint16, n x fields — codes into `label_values[field]`.
- `titles`, `ids`: UTF-8 strings laid end to end, with `title_ends` / `id_ends` (uint32, n).

About 44 bytes per product for two maps and eight label fields plus its title and id: 2.3 MB at
44,441 products of the fashion set before compression. `decode` reads the arrays back (for tests
and the benchmark); the component's JavaScript does the same in the browser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

MISSING = 65535
STEPS = 65534
MAX_CODES = 65535


def _strings(values: Sequence[str]) -> tuple[bytes, bytes]:
    encoded = [str(v).encode("utf-8") for v in values]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.uint64)
    if len(ends) and ends[-1] >= 2**32:
        raise ValueError("the strings of a map exceed 4 GiB")
    return b"".join(encoded), ends.astype("<u4").tobytes()


def quantize(coords: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """uint16 (n, 2) coordinates within the finite points' bounds, and those bounds."""
    coords = np.asarray(coords, dtype=np.float64)
    finite = np.isfinite(coords).all(axis=1)
    if finite.any():
        low, high = coords[finite].min(axis=0), coords[finite].max(axis=0)
    else:
        low, high = np.zeros(2), np.ones(2)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.rint((np.nan_to_num(coords) - low) / span * STEPS)
    out = np.clip(scaled, 0, STEPS).astype("<u2")
    out[~finite] = MISSING
    return out, [float(low[0]), float(high[0]), float(low[1]), float(high[1])]


def label_codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """uint16 codes and the distinct values, in order of first appearance (rarer values past
    65,535 distinct ones share the last code, shown as "…")."""
    codes, uniques = _factorize([("" if v is None else str(v)) for v in values])
    if len(uniques) > MAX_CODES:
        codes = np.minimum(codes, MAX_CODES - 1)
        uniques = [*uniques[: MAX_CODES - 1], "…"]
    return codes.astype("<u2"), uniques


def _factorize(values: list[str]) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=False)
    return np.asarray(codes, dtype=np.int64), [str(u) for u in uniques]


def encode(
    *,
    ids: Sequence[str],
    titles: Sequence[str],
    labels: dict[str, Sequence[str]],
    colour_codes: np.ndarray,
    legend: list[dict],
    colour_field: str | None,
    maps: dict[str, np.ndarray],
) -> dict:
    """The component's arguments for `ids` (n products) on `maps` ({model: float (n, 2), NaN
    where the map lacks the product}); `colour_codes[i]` indexes `legend` ([{value, colour}])."""
    count = len(ids)
    quantized, described = [], []
    for model_id, coords in maps.items():
        if coords.shape != (count, 2):
            raise ValueError(f"the map of {model_id} has {coords.shape} coordinates for {count}")
        values, bounds = quantize(coords)
        quantized.append(values)
        described.append({"model": model_id, "bounds": bounds})
    fields = list(labels)
    codes, values = [], []
    for name in fields:
        field_codes, field_values = label_codes(labels[name])
        codes.append(field_codes)
        values.append(field_values)
    title_blob, title_ends = _strings(titles)
    id_blob, id_ends = _strings(ids)
    coords_bytes = np.stack(quantized).tobytes() if quantized else b""
    label_bytes = np.stack(codes, axis=1).astype("<u2").tobytes() if codes else b""
    return {
        "count": count,
        "maps": described,
        "coords": coords_bytes,
        "colours": np.asarray(colour_codes, dtype=np.uint8).tobytes(),
        "legend": legend,
        "colour_field": colour_field,
        "label_fields": fields,
        "label_values": values,
        "labels": label_bytes,
        "titles": title_blob,
        "title_ends": title_ends,
        "ids": id_blob,
        "id_ends": id_ends,
        "version": hashlib.sha256(coords_bytes + id_blob).hexdigest()[:16],
    }


def _split(blob: bytes, ends: bytes) -> list[str]:
    stops = np.frombuffer(ends, dtype="<u4")
    starts = np.concatenate([[0], stops[:-1]]).astype(np.int64)
    return [blob[a:b].decode("utf-8") for a, b in zip(starts, stops.astype(np.int64), strict=True)]


def decode(args: dict) -> dict:
    """The arrays of `encode`'s arguments, read back: ids, titles, labels ({field: [value]}),
    colours (legend values), and coords ({model: float64 (n, 2), NaN where absent})."""
    count = args["count"]
    coords = np.frombuffer(args["coords"], dtype="<u2").reshape(len(args["maps"]), count, 2)
    maps = {}
    for position, described in enumerate(args["maps"]):
        xmin, xmax, ymin, ymax = described["bounds"]
        q = coords[position].astype(np.float64)
        out = np.column_stack(
            [xmin + q[:, 0] / STEPS * (xmax - xmin), ymin + q[:, 1] / STEPS * (ymax - ymin)]
        )
        out[coords[position][:, 0] == MISSING] = np.nan
        maps[described["model"]] = out
    fields = args["label_fields"]
    codes = np.frombuffer(args["labels"], dtype="<u2").reshape(count, len(fields))
    legend = [entry["value"] for entry in args["legend"]]
    return {
        "ids": _split(args["ids"], args["id_ends"]),
        "titles": _split(args["titles"], args["title_ends"]),
        "labels": {
            name: [args["label_values"][f][c] for c in codes[:, f]] for f, name in enumerate(fields)
        },
        "colours": [legend[c] for c in np.frombuffer(args["colours"], dtype=np.uint8)],
        "coords": maps,
    }
