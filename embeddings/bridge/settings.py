"""The bridge settings a catalogue keeps: the titles no bridge trains on, and the recipe.

They belong to the catalogue, not to one bridge: `catalog.json` records them (`SETTINGS_KEY`),
and every later `build`, `bridge` and app build reuses them unless the user changes them. So a
model added later (`build --catalog C --models colour`) trains its bridge without the same
titles, and a benchmark's query titles stay unseen by every bridge.

    "bridge_settings": {
      "recipe": "memory",
      "excluded_titles": ["Nike Men Navy Blue Shorts", ...] | null,
      "excluded_titles_sha256": "...",   # of their normal forms (`ExcludedTitles.sha256`)
      "excluded_titles_from": "kagl-titles.txt"   # where they came from, for people
    }

A catalogue built before the settings existed has none: its settings are then taken from its
bridges when they agree (`adopt_from_bridges`), so a later build does not forget an exclusion.
`resolve` applies a request's changes (a new title file or recipe replaces the setting; an empty
list of titles clears it) and says what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embeddings.bridge.artefact import read_bridge_manifest, read_excluded_titles
from embeddings.bridge.exclusion import ExcludedTitles
from embeddings.bridge.recipes import DEFAULT_RECIPE, check_recipe

SETTINGS_KEY = "bridge_settings"


@dataclass(frozen=True)
class BridgeSettings:
    """How a catalogue's bridges are made: `recipe`, and the titles `exclude`d from training
    (`origin`: where they came from, e.g. the file's name)."""

    recipe: str = DEFAULT_RECIPE
    exclude: ExcludedTitles | None = None
    origin: str | None = None

    @classmethod
    def recorded(cls, info: dict) -> BridgeSettings | None:
        """The settings `catalog.json`'s `info` records, or None when it records none."""
        raw = info.get(SETTINGS_KEY)
        if not isinstance(raw, dict):
            return None
        titles = raw.get("excluded_titles")
        exclude = ExcludedTitles.of(map(str, titles)) if isinstance(titles, list) else None
        return cls(
            recipe=str(raw.get("recipe") or DEFAULT_RECIPE),
            exclude=exclude or None,
            origin=raw.get("excluded_titles_from") if exclude else None,
        )

    def record(self) -> dict:
        """What `catalog.json` keeps (see the module docstring)."""
        return {
            "recipe": self.recipe,
            "excluded_titles": list(self.exclude.titles) if self.exclude else None,
            "excluded_titles_sha256": self.exclude.sha256 if self.exclude else None,
            "excluded_titles_from": self.origin if self.exclude else None,
        }

    def fit_options(self) -> dict:
        """`fit_bridge` keywords."""
        return {"recipe": self.recipe, **({"exclude": self.exclude} if self.exclude else {})}

    def matches(self, bridge_manifest: dict) -> bool:
        """Whether a bridge was trained with these settings."""
        return bridge_manifest.get("recipe", DEFAULT_RECIPE) == self.recipe and bridge_manifest.get(
            "excluded_titles_sha256"
        ) == (self.exclude.sha256 if self.exclude else None)

    def describe(self) -> str:
        titles = (
            f"{len(self.exclude):,} titles kept out of training"
            + (f" (from {self.origin})" if self.origin else "")
            if self.exclude
            else "no titles kept out of training"
        )
        return f"recipe {self.recipe}; {titles}"


def catalogue_settings(catalogue) -> BridgeSettings:
    """The catalogue's settings: recorded, else adopted from its bridges, else the defaults."""
    return (
        BridgeSettings.recorded(catalogue.info)
        or adopt_from_bridges(catalogue, catalogue.directory / "bridges")
        or BridgeSettings()
    )


def adopt_from_bridges(catalogue, bridges_root) -> BridgeSettings | None:
    """The settings the bridges of a catalogue built before settings existed agree on: the same
    excluded titles and the same recipe in every bridge (None when there is no bridge, or they
    disagree)."""
    if not bridges_root.is_dir():
        return None
    found = set()
    for folder in sorted(p for p in bridges_root.iterdir() if p.is_dir()):
        manifest = read_bridge_manifest(folder)
        if manifest is None or manifest.get("model_id") != folder.name:
            continue
        titles = (
            tuple(sorted(read_excluded_titles(folder)))
            if manifest.get("excluded_titles_sha256")
            else ()
        )
        found.add((manifest.get("recipe", DEFAULT_RECIPE), titles))
    if len(found) != 1:
        return None
    ((recipe, titles),) = found
    exclude = ExcludedTitles.of(titles) if titles else None
    return BridgeSettings(recipe, exclude, "the bridges built before" if exclude else None)


def resolve(
    current: BridgeSettings,
    *,
    exclude_titles: Sequence[str] | None = None,
    origin: str | None = None,
    recipe: str | None = None,
) -> tuple[BridgeSettings, list[str]]:
    """`current` with a request's changes, and one sentence per change.

    `exclude_titles`: None keeps the current titles; a list replaces them (an empty list
    clears them). `recipe`: None keeps the current recipe.
    """
    changes = []
    exclude, source = current.exclude, current.origin
    if exclude_titles is not None:
        new = ExcludedTitles.of(exclude_titles) if exclude_titles else None
        if (new.sha256 if new else None) != (exclude.sha256 if exclude else None):
            before = f"{len(exclude):,} titles" if exclude else "none"
            after = (
                f"{len(new):,} titles" + (f" from {origin}" if origin else "") if new else "none"
            )
            changes.append(f"titles kept out of bridge training: {before} -> {after}")
        exclude, source = new, (origin if new else None)
    new_recipe = check_recipe(recipe) if recipe else current.recipe
    if new_recipe != current.recipe:
        changes.append(f"bridge recipe: {current.recipe} -> {new_recipe}")
    return BridgeSettings(new_recipe, exclude, source), changes
