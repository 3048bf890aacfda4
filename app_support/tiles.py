"""The clickable thumbnail grid: one `st.components.v2` component per grid.

Streamlit's `st.image` cannot report a click (its `link` opens a new tab), so each grid is a small
component. Every tile is a real link (`<a href="?...&item=ID">`, so a middle-click or "open in
new tab" opens that product's search), and a plain click is sent to Python as the trigger value
`clicked` instead, which reruns the page in the same session: no reload, no new session.

Result grids can also steer the query: under each tile, "more like this" and "less
like this" buttons report their action as the trigger values `liked` / `disliked` (the product
id), like the click does; liked and disliked tiles are marked.

Titles and labels are product data, not markup: the component's script puts them in the page
with `textContent` and attributes only, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import streamlit as st


@dataclass(frozen=True)
class Tile:
    """One product in a grid. `score` is None in the browse strip; `match` is None when no
    label is compared; `agree` is how many models' top-k hold this product (0: not shown)."""

    id: str
    title: str
    image: str  # a data: URI
    href: str  # the URL of this product's search (relative: ?catalog=..&item=..)
    rank: int | None = None
    score: float | None = None
    agree: int = 0
    label: str | None = None  # the product's value of the compared label field, e.g. "Tshirts"
    match: bool | None = None
    tooltip: str = ""
    similar: int = 0  # near-duplicates folded into this tile (Search's "hide near-duplicates")
    steer: str | None = None  # "liked" or "disliked" when the query is steered by this product


_CSS = """
:host { display: block; }
.grid { display: grid; gap: 10px;
  grid-template-columns: repeat(auto-fill, minmax(var(--tile-min, 96px), 1fr)); }
.empty { color: var(--st-text-color); opacity: .7; font-size: .9rem; padding: .5rem 0; }
a.tile { display: flex; flex-direction: column; gap: 3px; padding: 6px; border-radius: 10px;
  text-decoration: none; color: var(--st-text-color); background: var(--st-background-color);
  border: 1px solid rgba(128, 128, 128, .28); cursor: pointer; min-width: 0;
  transition: border-color .12s, box-shadow .12s, transform .12s; }
a.tile:hover, a.tile:focus-visible { border-color: var(--st-primary-color); outline: none;
  box-shadow: 0 2px 10px rgba(0, 0, 0, .12); transform: translateY(-1px); }
a.tile.agree { border-color: #d97706; box-shadow: inset 0 0 0 1px #d97706; }
a.tile.current { border-color: var(--st-primary-color);
  box-shadow: inset 0 0 0 2px var(--st-primary-color); }
.pic { position: relative; background: #fff; border-radius: 6px; overflow: hidden; }
.pic img { display: block; width: 100%; aspect-ratio: 3 / 4; object-fit: contain; }
.rank { position: absolute; left: 4px; top: 4px; font: 600 10px/1.4 var(--st-font, sans-serif);
  background: rgba(17, 24, 39, .72); color: #fff; border-radius: 6px; padding: 0 5px; }
.agree-badge { position: absolute; right: 4px; top: 4px;
  font: 600 10px/1.4 var(--st-font, sans-serif);
  background: #d97706; color: #fff; border-radius: 6px; padding: 0 5px; }
.similar-badge { position: absolute; left: 4px; bottom: 4px;
  font: 600 10px/1.4 var(--st-font, sans-serif);
  background: #0f766e; color: #fff; border-radius: 6px; padding: 0 5px; }
.score { display: flex; align-items: center; gap: 5px;
  font: 600 12px/1.3 ui-monospace, SFMono-Regular, Menlo, monospace; }
.bar { flex: 1; height: 4px; border-radius: 2px; background: rgba(128, 128, 128, .22);
  overflow: hidden; }
.bar > i { display: block; height: 100%; background: var(--st-primary-color); }
.title { font: 12px/1.3 var(--st-font, sans-serif); display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow: hidden; min-height: 2.6em; overflow-wrap: anywhere; }
.label { font: 11px/1.3 var(--st-font, sans-serif); white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.label.yes { color: #15803d; } .label.no { color: #9ca3af; } .label.none { opacity: .65; }
.cell { display: flex; flex-direction: column; gap: 3px; min-width: 0; }
.steer { display: flex; gap: 4px; }
.steer button { flex: 1; font: 600 11px/1.6 var(--st-font, sans-serif); cursor: pointer;
  border: 1px solid rgba(128, 128, 128, .35); border-radius: 6px; padding: 0 2px;
  background: var(--st-background-color); color: var(--st-text-color); }
.steer button:hover, .steer button:focus-visible { border-color: var(--st-primary-color); }
.steer button.more[aria-pressed=true] { background: #15803d; border-color: #15803d; color: #fff; }
.steer button.less[aria-pressed=true] { background: #b91c1c; border-color: #b91c1c; color: #fff; }
a.tile.liked { border-color: #15803d; box-shadow: inset 0 0 0 2px #15803d; }
a.tile.disliked { border-color: #b91c1c; opacity: .6; }
.steer-badge { position: absolute; left: 4px; bottom: 4px; color: #fff; border-radius: 6px;
  font: 600 10px/1.4 var(--st-font, sans-serif); padding: 0 5px; }
.steer-badge.liked { background: #15803d; } .steer-badge.disliked { background: #b91c1c; }
"""

_JS = """
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector('.grid');
  if (!root) {
    root = document.createElement('div');
    root.className = 'grid';
    parentElement.appendChild(root);
  }
  root.replaceChildren();
  root.dataset.query = data.query || '';
  root.dataset.model = data.model || '';
  root.style.setProperty('--tile-min', (data.min_width || 96) + 'px');
  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  if (!data.tiles.length) {
    root.appendChild(element('div', 'empty', data.empty || 'Nothing to show.'));
    return;
  }
  for (const tile of data.tiles) {
    const link = element('a', 'tile');
    link.href = tile.href;
    link.dataset.id = tile.id;
    link.title = tile.tooltip || tile.title || tile.id;
    if (tile.agree > 1) link.classList.add('agree');
    if (tile.id === data.current) link.classList.add('current');
    if (tile.score !== null) link.dataset.score = tile.score.toFixed(4);
    const pic = element('div', 'pic');
    const img = element('img');
    img.src = tile.image;
    img.alt = tile.title || tile.id;
    img.loading = 'lazy';
    pic.appendChild(img);
    if (tile.rank !== null) pic.appendChild(element('span', 'rank', '#' + tile.rank));
    if (tile.steer) {
      link.classList.add(tile.steer);
      link.dataset.steer = tile.steer;
      pic.appendChild(element('span', 'steer-badge ' + tile.steer,
        tile.steer === 'liked' ? '+ liked' : '\u2212 disliked'));
    }
    if (tile.agree > 1) {
      const badge = element('span', 'agree-badge', '\\u25C6 ' + tile.agree);
      badge.title = 'in the top-k of ' + tile.agree + ' models';
      pic.appendChild(badge);
    }
    if (tile.similar > 0) {
      const folded = element('span', 'similar-badge', '+' + tile.similar + ' similar');
      folded.title = tile.similar + ' near-duplicate result(s) folded into this one';
      pic.appendChild(folded);
      link.dataset.similar = String(tile.similar);
    }
    link.appendChild(pic);
    if (tile.score !== null) {
      const row = element('div', 'score');
      row.appendChild(element('span', '', tile.score.toFixed(3)));
      const bar = element('span', 'bar');
      const fill = element('i');
      fill.style.width = Math.max(0, Math.min(1, tile.score)) * 100 + '%';
      bar.appendChild(fill);
      row.appendChild(bar);
      link.appendChild(row);
    }
    link.appendChild(element('div', 'title', tile.title || tile.id));
    if (tile.label) {
      const state = tile.match === true ? 'yes' : tile.match === false ? 'no' : 'none';
      const mark = tile.match === true ? '\\u2713 ' : tile.match === false ? '\\u2717 ' : '';
      link.appendChild(element('div', 'label ' + state, mark + tile.label));
    }
    link.addEventListener('click', (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey
          || event.shiftKey || event.altKey) return;
      event.preventDefault();
      setTriggerValue('clicked', tile.id);
    });
    if (!data.steer) {
      root.appendChild(link);
      continue;
    }
    const cell = element('div', 'cell');
    cell.appendChild(link);
    const bar = element('div', 'steer');
    for (const [side, cls, text, help] of [
      ['liked', 'more', '+ More', 'More like this'],
      ['disliked', 'less', '\u2212 Less', 'Less like this'],
    ]) {
      const button = element('button', cls, text);
      button.type = 'button';
      button.title = help + (tile.steer === side ? ' (click again to undo)' : '');
      button.setAttribute('aria-label', help + ': ' + (tile.title || tile.id));
      button.setAttribute('aria-pressed', String(tile.steer === side));
      button.dataset.action = side;
      button.addEventListener('click', (event) => {
        event.preventDefault();
        setTriggerValue(side, tile.id);
      });
      bar.appendChild(button);
    }
    cell.appendChild(bar);
    root.appendChild(cell);
  }
}
"""

_grid_component = st.components.v2.component("embeddings_tile_grid", css=_CSS, js=_JS)


def tile_grid(
    tiles: Sequence[Tile],
    *,
    key: str,
    on_click: Callable[[str], None],
    query: str = "",
    model: str = "",
    current: str | None = None,
    min_width: int = 96,
    empty: str = "Nothing to show.",
    on_steer: Callable[[str, str], None] | None = None,
) -> None:
    """Show `tiles` as a grid; a click on a tile calls `on_click(item id)` before the rerun.

    `query` and `model` are written on the grid (`data-query`, `data-model`) for tests and the
    benchmark to see which query a grid shows; `current` outlines the tile of the query item.
    With `on_steer`, every tile gets "more like this" / "less like this" buttons that call
    `on_steer(item id, "liked" | "disliked")` before the rerun.
    """

    def triggered(name: str) -> str | None:
        state = st.session_state.get(key) or {}
        value = state.get(name) if hasattr(state, "get") else None
        return str(value) if value else None

    def clicked() -> None:
        if item_id := triggered("clicked"):
            on_click(item_id)

    def steered(side: str) -> None:
        if on_steer is not None and (item_id := triggered(side)):
            on_steer(item_id, side)

    _grid_component(
        key=key,
        data={
            "tiles": [asdict(tile) for tile in tiles],
            "query": query,
            "model": model,
            "current": current,
            "min_width": min_width,
            "empty": empty,
            "steer": on_steer is not None,
        },
        on_clicked_change=clicked,
        on_liked_change=lambda: steered("liked"),
        on_disliked_change=lambda: steered("disliked"),
    )
