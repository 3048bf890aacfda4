"""The Map page's WebGL maps (a Streamlit component) and the thumbnails it fetches on demand.

- `product_maps(args, ...)`: every model's map side by side, drawn by deck.gl in the browser
  (`app_support/product_map/`: the JavaScript source, its package.json and lock file, and the
  built bundle in `build/`, committed so that nobody needs npm; rebuild with
  `cd app_support/product_map && npm ci && npm run build`). The points arrive once as binary
  arrays (`app_support.map_payload`); hover is handled in the browser without a rerun. Its value
  is the last click ({"event": "click", "id"}) or box ({"event": "box", "view", "x", "y"}),
  each with a counter `n`.
- `thumbnail_fragment(catalogue, channel)`: a fragment holding a tiny `components.v2` element
  that listens on a BroadcastChannel (named per session) for the ids the maps want, and answers
  with their thumbnails as data URIs. Only the fragment reruns, not the page; a thumbnail is sent
  when the pointer reaches its product (or one near it), never up front.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from app_support import thumbs
from embeddings.catalogue import Catalogue

BUILD = Path(__file__).resolve().parent / "product_map" / "build"
#: Longest side of a hover thumbnail (the tooltip shows it at up to 96 x 128 CSS pixels).
HOVER_THUMB_SIZE = 128
#: Thumbnails answered per trip (the hovered product and the ones nearest it).
THUMBS_PER_TRIP = 24
#: Ids waiting for an answer, at most (older ones are dropped: the pointer has moved on).
PENDING_MAX = 96

_maps_component = components.declare_component("product_maps", path=str(BUILD))


def product_maps(args: dict, *, key: str, on_change: Callable[[], None]) -> dict | None:
    """Draw the maps of `args` (`map_payload.encode` plus `marked`, `map_height`, `channel`,
    `colour_version`); `on_change` runs on a click or a box before the rerun."""
    return _maps_component(**args, key=key, on_change=on_change, default=None)


_FETCHER_JS = """
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let channel = parentElement.__mapThumbs;
  if (!channel || channel.name !== data.channel) {
    if (channel) channel.close();
    channel = new BroadcastChannel(data.channel);
    parentElement.__mapThumbs = channel;
  }
  channel.onmessage = (event) => {
    if (event.data && event.data.type === 'want' && Array.isArray(event.data.ids)) {
      setTriggerValue('want', event.data.ids.slice(0, 64));
    }
  };
  if (data.seq && data.seq !== parentElement.__mapSeq) {
    parentElement.__mapSeq = data.seq;
    channel.postMessage({ type: 'thumbs', thumbs: data.thumbs });
  }
}
"""

_fetcher = st.components.v2.component("embeddings_map_thumbs", js=_FETCHER_JS)


def _wanted(key: str) -> None:
    """Queue the ids the maps asked for (a trip interrupted by the next keeps them)."""
    state = st.session_state.get(key) or {}
    ids = state.get("want") if hasattr(state, "get") else None
    if not isinstance(ids, list):
        return
    pending = st.session_state.setdefault(f"{key}_pending", [])
    fresh = [str(i) for i in ids if isinstance(i, str) and str(i) not in pending]
    pending.extend(fresh)
    del pending[:-PENDING_MAX]


#: Set by a click or a box on the maps: the page must run whole (Streamlit may batch that event
#: with a thumbnail request into a run of the fragment alone).
FULL_RUN = "map_full_run"


@st.fragment
def thumbnail_fragment(catalogue: Catalogue, channel: str, key: str = "map_thumbs") -> None:
    """Answer the maps' thumbnail requests on `channel` (see the module docstring)."""
    if st.session_state.pop(FULL_RUN, False):
        st.rerun()  # the whole page: a whole run pops the flag before it gets here
    pending = st.session_state.get(f"{key}_pending") or []
    served, rest = pending[-THUMBS_PER_TRIP:], pending[:-THUMBS_PER_TRIP]
    st.session_state[f"{key}_pending"] = rest
    answer = {
        item_id: thumbs.thumbnail(catalogue, item_id, HOVER_THUMB_SIZE)
        for item_id in served
        if item_id in catalogue
    }
    seq = st.session_state.get(f"{key}_seq", 0) + (1 if answer else 0)
    st.session_state[f"{key}_seq"] = seq
    _fetcher(
        key=key,
        data={"channel": channel, "thumbs": answer, "seq": seq},
        on_want_change=lambda: _wanted(key),
        height=0,
    )
