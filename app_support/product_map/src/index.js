// The Map page's maps: every model's 2-D map side by side, drawn with deck.gl (WebGL 2).
//
// A Streamlit component (components.v1, static build): Python sends the points once as compact
// binary arrays (see app_support/map_payload.py) and they stay here between hovers; Streamlit's
// message cache keeps them in the browser between reruns. Hover is handled here, with no rerun:
// the product under the pointer is ringed on every map and its title and labels shown at once;
// its thumbnail is asked for on a BroadcastChannel that a small fragment of the page answers
// (app_support/map_ui.py), and kept. A click reports the product, a box (shift + drag, or the
// "Select" mode) reports its corners in map coordinates; Python does the rest.
//
// Product data is text, never markup: titles and labels go in with textContent only.
import { Deck, OrthographicView } from '@deck.gl/core';
import { PathLayer, ScatterplotLayer } from '@deck.gl/layers';

const GAP = 18;
const TITLE_HEIGHT = 24;
const WORLD = 1000; // each map is scaled into [0, WORLD] x [0, WORLD]
const MISSING = 65535; // a product absent from a map
const HOVER_RADIUS = 8; // CSS pixels: the rings are DOM elements over the canvas (see placeRings)
const MARK_RADIUS = 11;
const THUMB_NEIGHBOURS = 12; // thumbnails asked for with the hovered one (the pointer moves on)
// While a map moves, a map of more points draws an even sample of this many, and every point
// again once it has not moved for SETTLE_MS: with software rendering (SwiftShader, two cores) a
// drag over a million points queued a full frame per step (44 s from release to the next frame
// in the benchmark), while a frame of the sample costs what a 44K map's does.
const MOVING_POINTS = 50000;
const SETTLE_MS = 300;

// -- the Streamlit components.v1 protocol (a handful of postMessage calls) --------------------
function send(type, extra) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, '*');
}
const setComponentValue = (value) => send('streamlit:setComponentValue', { value, dataType: 'json' });
const setFrameHeight = (height) => send('streamlit:setFrameHeight', { height });

// -- state -------------------------------------------------------------------------------------
const state = {
  deck: null,
  data: null, // decoded arrays, rebuilt when args.version changes
  args: null,
  hovered: -1, // row under the pointer
  hoveredView: -1,
  marked: [],
  box: null, // {view, x: [lo, hi], y: [lo, hi]} in world coordinates, kept after the drag
  selecting: false,
  viewStates: {},
  pointSets: [], // per map: {all, moving} deck.gl data, kept (see pointSets)
  moving: false, // a map moved less than SETTLE_MS ago: the samples are drawn
  drawnPerMap: 0,
  dragging: false,
  frameLog: [], // points per map of the last 100 frames (tests read it)
  settle: null,
  thumbs: new Map(), // id -> data URI, kept for the page's life
  asked: new Map(), // id -> when it was asked for (asked again after 2 s without an answer)
  channel: null,
  events: 0,
  timings: { hover: [], thumbnail: [] }, // milliseconds, for the benchmark
  width: 0,
};
window.productMap = state; // tests and the benchmark read positions and state here

// -- decoding ----------------------------------------------------------------------------------
function view(bytes, Type) {
  // A typed array over a copy: bytes from Streamlit may sit at any offset of a shared buffer.
  const copy = bytes.slice();
  return new Type(copy.buffer, 0, copy.byteLength / Type.BYTES_PER_ELEMENT);
}

function strings(blob, ends) {
  const decoder = new TextDecoder();
  const text = new Uint8Array(blob);
  const stops = view(ends, Uint32Array);
  return (row) => decoder.decode(text.subarray(row ? stops[row - 1] : 0, stops[row]));
}

function decode(args) {
  const count = args.count;
  const maps = args.maps.length;
  const quantized = view(args.coords, Uint16Array); // [map][row][x, y]
  const positions = [];
  for (let m = 0; m < maps; m++) {
    const out = new Float32Array(count * 2);
    for (let row = 0; row < count; row++) {
      const qx = quantized[(m * count + row) * 2];
      const qy = quantized[(m * count + row) * 2 + 1];
      if (qx === MISSING) {
        out[row * 2] = -1e9;
        out[row * 2 + 1] = -1e9;
      } else {
        out[row * 2] = (qx / 65534) * WORLD;
        out[row * 2 + 1] = (qy / 65534) * WORLD;
      }
    }
    positions.push(out);
  }
  const fields = args.label_fields;
  const labelCodes = args.labels ? view(args.labels, Uint16Array) : new Uint16Array(0);
  const colours = new Uint8Array(args.colours);
  const rowOf = new Map();
  const idOf = strings(args.ids, args.id_ends);
  for (let row = 0; row < count; row++) rowOf.set(idOf(row), row);
  return {
    count,
    maps,
    positions,
    colours,
    idOf,
    rowOf,
    titleOf: strings(args.titles, args.title_ends),
    labelsOf: (row) =>
      fields.map((name, f) => [name, args.label_values[f][labelCodes[row * fields.length + f]]]),
  };
}

function fillColours(data, legend) {
  const rgba = new Uint8Array(data.count * 4);
  const palette = legend.map((entry) => hexColour(entry.colour));
  for (let row = 0; row < data.count; row++) {
    const colour = palette[data.colours[row]] || [199, 201, 204];
    rgba.set([colour[0], colour[1], colour[2], 200], row * 4);
  }
  return rgba;
}

function pointSets(data, rgba) {
  // Per map: every point, and above MOVING_POINTS an even sample (every stride-th row) drawn
  // while the map moves. Kept until the points or colours change: deck.gl compares `data` by
  // reference, and a new object would send every point to the GPU again.
  const stride = Math.ceil(data.count / MOVING_POINTS);
  return data.positions.map((positions) => ({
    all: pointData(positions, rgba, data.count),
    moving: stride > 1 ? pointData(...strided(positions, rgba, stride)) : null,
  }));
}

function pointData(positions, rgba, length) {
  return {
    length,
    attributes: {
      getPosition: { value: positions, size: 2 },
      getFillColor: { value: rgba, size: 4, normalized: true },
    },
  };
}

function strided(positions, rgba, stride) {
  const count = Math.ceil(positions.length / 2 / stride);
  const sampled = new Float32Array(count * 2);
  const colours = new Uint8Array(count * 4);
  for (let n = 0; n < count; n++) {
    const row = n * stride;
    sampled[n * 2] = positions[row * 2];
    sampled[n * 2 + 1] = positions[row * 2 + 1];
    colours.set(rgba.subarray(row * 4, row * 4 + 4), n * 4);
  }
  return [sampled, colours, count];
}

function hexColour(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

// -- layout ------------------------------------------------------------------------------------
function mapWidth() {
  const maps = state.data ? state.data.maps : 1;
  return Math.max(200, Math.floor((state.width - GAP * (maps - 1)) / maps));
}

function fitZoom(width, height) {
  return Math.log2((Math.min(width, height) * 0.94) / WORLD);
}

function views() {
  const width = mapWidth();
  const height = state.args.map_height;
  return state.args.maps.map(
    (_, m) =>
      new OrthographicView({
        id: `map${m}`,
        x: m * (width + GAP),
        y: 0,
        width,
        height,
        flipY: false,
        controller: state.selecting ? false : { doubleClickZoom: false, inertia: false },
      })
  );
}

function initialViewStates() {
  const zoom = fitZoom(mapWidth(), state.args.map_height);
  const states = {};
  state.args.maps.forEach((_, m) => {
    states[`map${m}`] = { target: [WORLD / 2, WORLD / 2, 0], zoom, minZoom: zoom - 1, maxZoom: zoom + 9 };
  });
  return states;
}

function pointRadius(count) {
  // Small enough not to hide each other: 4 px for a few hundred, 1 px from 200,000 on.
  return Math.max(1, Math.min(4, 4 * Math.sqrt(2000 / Math.max(count, 1))));
}

function layers() {
  const data = state.data;
  const out = [];
  const radius = pointRadius(data.count);
  for (let m = 0; m < data.maps; m++) {
    const { all, moving } = state.pointSets[m];
    const sampled = Boolean(moving) && state.moving;
    const points = (id, pointsData, visible) =>
      new ScatterplotLayer({
        id,
        data: pointsData,
        visible,
        radiusUnits: 'pixels',
        getRadius: radius,
        radiusMinPixels: 1,
        pickable: false,
      });
    out.push(points(`points${m}`, all, !sampled));
    if (moving) out.push(points(`sample${m}`, moving, sampled));
    state.drawnPerMap = sampled ? moving.length : all.length;
    if (state.box && state.box.view === m) {
      const { x, y } = state.box;
      out.push(
        new PathLayer({
          id: `box${m}`,
          data: [[[x[0], y[0]], [x[1], y[0]], [x[1], y[1]], [x[0], y[1]], [x[0], y[0]]]],
          getPath: (path) => path,
          getColor: [37, 99, 235, 255],
          widthUnits: 'pixels',
          getWidth: 1.5,
        })
      );
    }
  }
  return out;
}

function layerFilter({ layer, viewport }) {
  // Layer `points1`, `hover1`, ... belong to view `map1`.
  const own = layer.id.match(/\d+$/);
  return own !== null && own[0] === viewport.id.slice(3);
}

function redraw() {
  if (!state.deck) return;
  state.deck.setProps({ layers: layers() });
}

function moved() {
  // A map moved (drag, wheel, keys): draw the samples until it rests for SETTLE_MS, pointer up.
  if (!state.pointSets.some((set) => set.moving)) return;
  settleLater();
  if (!state.moving) {
    state.moving = true;
    redraw();
  }
}

function settleLater() {
  clearTimeout(state.settle);
  state.settle = setTimeout(() => {
    if (state.dragging) return settleLater(); // a drag held still: still moving
    state.moving = false;
    redraw();
  }, SETTLE_MS);
}

// -- rings: DOM elements over the canvas ---------------------------------------------------------
// The hovered product's ring and the query's are not drawn by WebGL: a hover then changes no
// layer, so the points are not drawn again (on software rendering a frame of 1M points takes
// seconds); the rings move with the view after each drawn frame.
function ringElement(className) {
  const ring = document.createElement('div');
  ring.className = `ring ${className}`;
  ring.hidden = true;
  document.getElementById('maps').appendChild(ring);
  return ring;
}

function placeRing(ring, m, row, radius) {
  const viewport = state.deck && state.deck.getViewports().find((v) => v.id === `map${m}`);
  const positions = state.data.positions[m];
  if (!viewport || row < 0 || positions[row * 2] < -1e8) {
    ring.hidden = true;
    return;
  }
  const [x, y] = viewport.project([positions[row * 2], positions[row * 2 + 1]]);
  const inside = x >= 0 && y >= 0 && x <= viewport.width && y <= viewport.height;
  ring.hidden = !inside;
  ring.style.left = `${viewport.x + x - radius}px`;
  ring.style.top = `${viewport.y + y - radius}px`;
  ring.dataset.id = state.data.idOf(row);
  ring.dataset.view = String(m);
}

function placeRings() {
  if (!state.data) return;
  const maps = state.data.maps;
  state.rings = state.rings || { hover: [], marked: [] };
  while (state.rings.hover.length < maps) state.rings.hover.push(ringElement('hover'));
  state.rings.hover.forEach((ring, m) => placeRing(ring, m, m < maps ? state.hovered : -1, HOVER_RADIUS));
  const wanted = maps * state.marked.length;
  while (state.rings.marked.length < wanted) state.rings.marked.push(ringElement('marked'));
  state.rings.marked.forEach((ring, n) => {
    const m = n % Math.max(maps, 1);
    const row = n < wanted ? state.marked[Math.floor(n / maps)] : -1;
    placeRing(ring, m, row, MARK_RADIUS);
  });
}

// -- picking: a grid over each map, searched on the CPU ------------------------------------
// No GPU picking: reading pixels back stalls on software rendering, and a hover must not wait
// for the GPU. A uniform grid finds the point under the pointer in microseconds, even at 1M.
const CELLS = 256;
const PICK_PIXELS = 6;

function buildGrid(positions, count) {
  const cellOf = new Int32Array(count);
  const starts = new Uint32Array(CELLS * CELLS + 1);
  for (let row = 0; row < count; row++) {
    const x = positions[row * 2];
    if (x < -1e8) {
      cellOf[row] = -1;
      continue;
    }
    const cx = Math.min(CELLS - 1, Math.max(0, Math.floor((x / WORLD) * CELLS)));
    const cy = Math.min(CELLS - 1, Math.max(0, Math.floor((positions[row * 2 + 1] / WORLD) * CELLS)));
    cellOf[row] = cy * CELLS + cx;
    starts[cellOf[row] + 1]++;
  }
  for (let c = 0; c < CELLS * CELLS; c++) starts[c + 1] += starts[c];
  const fill = starts.slice(0, CELLS * CELLS);
  const rows = new Uint32Array(count);
  for (let row = 0; row < count; row++) if (cellOf[row] >= 0) rows[fill[cellOf[row]]++] = row;
  return { starts, rows };
}

function within(m, [wx, wy], radius, visit) {
  // Calls visit(row, squared distance) for the points of map m within `radius` of (wx, wy).
  const { starts, rows } = state.grids[m];
  const positions = state.data.positions[m];
  const cell = (v) => Math.min(CELLS - 1, Math.max(0, Math.floor((v / WORLD) * CELLS)));
  for (let cy = cell(wy - radius); cy <= cell(wy + radius); cy++) {
    for (let cx = cell(wx - radius); cx <= cell(wx + radius); cx++) {
      const c = cy * CELLS + cx;
      for (let i = starts[c]; i < starts[c + 1]; i++) {
        const row = rows[i];
        const dx = positions[row * 2] - wx;
        const dy = positions[row * 2 + 1] - wy;
        const d2 = dx * dx + dy * dy;
        if (d2 <= radius * radius) visit(row, d2);
      }
    }
  }
}

function pointerAt(event) {
  // The map under a pointer event, and where on it (in world coordinates).
  const rect = document.getElementById('maps').getBoundingClientRect();
  const x = event.clientX - rect.left;
  const y = event.clientY - rect.top;
  const m = state.deck ? viewAt(x) : -1;
  if (m < 0) return null;
  const viewport = state.deck.getViewports().find((v) => v.id === `map${m}`);
  if (!viewport) return null;
  return { m, x, y, world: viewport.unproject([x - viewport.x, y - viewport.y]), zoom: viewport.zoom };
}

function pick(at) {
  let best = -1;
  let bestDistance = Infinity;
  within(at.m, at.world, PICK_PIXELS / 2 ** at.zoom, (row, d2) => {
    if (d2 < bestDistance) {
      bestDistance = d2;
      best = row;
    }
  });
  return best;
}

function nearest(at, k, skip) {
  const found = [];
  within(at.m, at.world, 40 / 2 ** at.zoom, (row, d2) => {
    if (row !== skip) found.push([d2, row]);
  });
  found.sort((a, b) => a[0] - b[0]);
  return found.slice(0, k).map(([, row]) => row);
}

// -- hover, tooltip, thumbnails ----------------------------------------------------------------
function onPointerMove(event) {
  if (!state.data || event.buttons) return; // a pan or a box under way
  const at = pointerAt(event);
  const row = at ? pick(at) : -1;
  if (row === state.hovered) {
    moveTooltip(at);
    return;
  }
  state.hovered = row;
  state.hoveredView = at ? at.m : -1;
  showTooltip(at);
  placeRings();
  // How long after the pointer event the tooltip changed (the benchmark reads it).
  state.timings.hover.push(performance.now() - event.timeStamp);
}

function showTooltip(at) {
  const tip = document.getElementById('tooltip');
  const row = state.hovered;
  const root = document.getElementById('root');
  root.dataset.hovered = row >= 0 ? state.data.idOf(row) : '';
  if (row < 0) {
    tip.hidden = true;
    return;
  }
  const id = state.data.idOf(row);
  tip.querySelector('.title').textContent = state.data.titleOf(row) || id;
  const list = tip.querySelector('.labels');
  list.replaceChildren();
  for (const [name, value] of state.data.labelsOf(row)) {
    const line = document.createElement('div');
    const key = document.createElement('b');
    key.textContent = `${name}: `;
    line.append(key, document.createTextNode(value === undefined || value === '' ? '—' : value));
    list.appendChild(line);
  }
  tip.querySelector('.id').textContent = id;
  tip.dataset.id = id;
  setThumbnail(id);
  tip.hidden = false;
  moveTooltip(at);
  askThumbnails(row, at);
}

function moveTooltip(at) {
  const tip = document.getElementById('tooltip');
  if (tip.hidden || !at) return;
  const left = at.x + 16 + 240 > state.width ? at.x - 16 - 240 : at.x + 16;
  const bottom = TITLE_HEIGHT + state.args.map_height; // keep it over the maps: flip upwards
  const top = Math.min(at.y + TITLE_HEIGHT - 20, bottom - tip.offsetHeight);
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${Math.max(0, top)}px`;
}

function setThumbnail(id) {
  const tip = document.getElementById('tooltip');
  const img = tip.querySelector('img');
  const uri = state.thumbs.get(id);
  if (uri) {
    img.src = uri;
    img.hidden = false;
    tip.dataset.thumbnail = id;
  } else {
    img.removeAttribute('src');
    img.hidden = true;
    delete tip.dataset.thumbnail;
  }
}

function askThumbnails(row, at) {
  if (!state.channel) return;
  // The products nearest the pointer come next as it moves: ask for them in the same trip.
  const wanted = [row, ...(at ? nearest(at, THUMB_NEIGHBOURS, row) : [])].map(state.data.idOf);
  const now = performance.now();
  const fresh = wanted.filter((id) => !state.thumbs.has(id) && !(now - (state.asked.get(id) || -1e9) < 2000));
  if (!fresh.length) return;
  fresh.forEach((id) => state.asked.set(id, now));
  state.channel.postMessage({ type: 'want', ids: fresh });
}

function onThumbs(message) {
  if (!message || message.type !== 'thumbs') return;
  const now = performance.now();
  for (const [id, uri] of Object.entries(message.thumbs)) {
    if (state.asked.has(id)) state.timings.thumbnail.push(now - state.asked.get(id));
    state.thumbs.set(id, uri);
    state.asked.delete(id);
  }
  const tip = document.getElementById('tooltip');
  if (!tip.hidden && message.thumbs[tip.dataset.id]) setThumbnail(tip.dataset.id);
}

// -- click and box -----------------------------------------------------------------------------
function installClick(container) {
  // A click (a press and release without moving: not the end of a pan) opens the product.
  let down = null;
  container.addEventListener('pointerdown', (event) => {
    down = { x: event.clientX, y: event.clientY };
  });
  container.addEventListener('pointerup', (event) => {
    if (!down || state.selecting || event.button !== 0) return;
    const moved = Math.hypot(event.clientX - down.x, event.clientY - down.y);
    down = null;
    const at = moved <= 4 ? pointerAt(event) : null;
    const row = at ? pick(at) : -1;
    if (row >= 0) setComponentValue({ event: 'click', id: state.data.idOf(row), n: ++state.events });
  });
}

function installBox(container) {
  const band = document.getElementById('band');
  let start = null;
  container.addEventListener(
    'pointerdown',
    (event) => {
      if (!(event.shiftKey || state.selecting) || event.button !== 0) return;
      const m = viewAt(event.offsetX);
      if (m < 0) return;
      event.stopPropagation();
      event.preventDefault();
      if (!state.selecting) setSelecting(true, true);
      start = { m, x: event.offsetX, y: event.offsetY };
      Object.assign(band.style, { left: `${start.x}px`, top: `${start.y + TITLE_HEIGHT}px`, width: '0', height: '0' });
      band.hidden = false;
      container.setPointerCapture(event.pointerId);
    },
    true
  );
  container.addEventListener('pointermove', (event) => {
    if (!start) return;
    const left = Math.min(start.x, event.offsetX);
    const top = Math.min(start.y, event.offsetY);
    Object.assign(band.style, {
      left: `${left}px`,
      top: `${top + TITLE_HEIGHT}px`,
      width: `${Math.abs(event.offsetX - start.x)}px`,
      height: `${Math.abs(event.offsetY - start.y)}px`,
    });
  });
  container.addEventListener('pointerup', (event) => {
    if (!start) return;
    band.hidden = true;
    const corners = [
      unproject(start.m, start.x, start.y),
      unproject(start.m, event.offsetX, event.offsetY),
    ];
    const temporary = state.temporarySelect;
    const m = start.m;
    start = null;
    if (temporary) setSelecting(false, false);
    if (corners[0][0] === corners[1][0] || corners[0][1] === corners[1][1]) return; // a click
    reportBox(m, corners);
  });
}

function viewAt(x) {
  const width = mapWidth();
  const m = Math.floor(x / (width + GAP));
  return x - m * (width + GAP) <= width && m < state.data.maps ? m : -1;
}

function unproject(m, x, y) {
  const viewport = state.deck.getViewports().find((v) => v.id === `map${m}`);
  return viewport.unproject([x - viewport.x, y - viewport.y]);
}

function reportBox(m, [a, b]) {
  const x = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
  const y = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
  state.box = { view: m, x, y };
  redraw();
  const [xmin, xmax, ymin, ymax] = state.args.maps[m].bounds;
  const toMap = (v, lo, hi) => lo + (v / WORLD) * (hi - lo);
  setComponentValue({
    event: 'box',
    view: m,
    x: x.map((v) => toMap(v, xmin, xmax)),
    y: y.map((v) => toMap(v, ymin, ymax)),
    n: ++state.events,
  });
}

function setSelecting(on, temporary) {
  state.selecting = on;
  state.temporarySelect = temporary;
  document.getElementById('select').setAttribute('aria-pressed', String(on));
  state.deck.setProps({ views: views() });
}

// -- setup -------------------------------------------------------------------------------------
function hasWebGL2() {
  return !!document.createElement('canvas').getContext('webgl2');
}

async function hasWebGPU() {
  // navigator.gpu exists in secure contexts even without an adapter: ask for one.
  try {
    return !!(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch (error) {
    return false;
  }
}

function noGraphics(root, webgpu) {
  root.replaceChildren();
  const message = document.createElement('div');
  message.className = 'nographics';
  message.setAttribute('role', 'alert');
  message.textContent =
    (webgpu
      ? 'The maps cannot be drawn: they need WebGL 2, and this browser offers WebGPU only. '
      : 'The maps cannot be drawn: this browser offers neither WebGPU nor WebGL. ') +
    'Turn on hardware acceleration (or WebGL) in the browser settings, or open the page in ' +
    'a current Chrome, Edge, Firefox or Safari.';
  root.appendChild(message);
  root.dataset.graphics = 'none';
  setFrameHeight(root.scrollHeight + 8);
}

function titles() {
  const bar = document.getElementById('titles');
  bar.replaceChildren();
  const width = mapWidth();
  state.args.maps.forEach((map, m) => {
    const title = document.createElement('div');
    title.className = 'map-title';
    title.textContent = map.model;
    title.style.left = `${m * (width + GAP)}px`;
    title.style.width = `${width}px`;
    bar.appendChild(title);
  });
}

function legend() {
  const box = document.getElementById('legend');
  box.replaceChildren();
  if (state.args.colour_field) {
    const name = document.createElement('b');
    name.textContent = state.args.colour_field;
    box.appendChild(name);
  }
  for (const entry of state.args.legend) {
    const item = document.createElement('span');
    item.className = 'entry';
    const dot = document.createElement('i');
    dot.style.background = entry.colour;
    item.append(dot, document.createTextNode(entry.value));
    box.appendChild(item);
  }
}

function create(root) {
  const container = document.getElementById('maps');
  container.style.height = `${state.args.map_height}px`;
  state.viewStates = initialViewStates();
  state.deck = new Deck({
    parent: container,
    width: '100%',
    height: '100%',
    views: views(),
    viewState: state.viewStates,
    onViewStateChange: ({ viewId, viewState }) => {
      state.viewStates = { ...state.viewStates, [viewId]: viewState };
      state.deck.setProps({ viewState: state.viewStates });
      moved();
    },
    onInteractionStateChange: ({ isDragging }) => {
      state.dragging = Boolean(isDragging);
    },
    layers: layers(),
    layerFilter,
    pickingRadius: 4,
    useDevicePixels: 1,
    deviceProps: { type: 'webgl', webgl: { preserveDrawingBuffer: true } },
    getCursor: ({ isDragging }) =>
      state.selecting ? 'crosshair' : isDragging ? 'grabbing' : state.hovered >= 0 ? 'pointer' : 'grab',
    onAfterRender: () => {
      placeRings();
      root.dataset.drawn = String(state.drawnPerMap); // points of each map in this frame
      state.frameLog = [...state.frameLog.slice(-99), state.drawnPerMap];
      root.dataset.frames = String(Number(root.dataset.frames || 0) + 1);
      if (!state.moving) root.dataset.full = String(Number(root.dataset.full || 0) + 1);
    },
  });
  installBox(container);
  installClick(container);
  container.addEventListener('pointermove', onPointerMove);
  container.addEventListener('pointerleave', () => {
    if (state.hovered < 0) return;
    state.hovered = -1;
    showTooltip(null);
    placeRings();
  });
  document.getElementById('select').addEventListener('click', () => setSelecting(!state.selecting, false));
  document.getElementById('reset').addEventListener('click', () => {
    state.viewStates = initialViewStates();
    state.deck.setProps({ viewState: state.viewStates });
  });
}

function render(args) {
  const root = document.getElementById('root');
  const first = !state.args;
  const fresh = first || args.version !== state.args.version;
  state.width = document.body.clientWidth;
  state.args = args;
  if (first && !hasWebGL2()) state.noGraphics = true;
  if (state.noGraphics) {
    hasWebGPU().then((webgpu) => noGraphics(root, webgpu));
    return;
  }
  if (fresh) {
    state.data = decode(args);
    state.grids = state.data.positions.map((positions) => buildGrid(positions, state.data.count));
    state.hovered = -1;
    state.box = null;
    state.thumbs.clear();
    state.asked.clear();
  }
  if (fresh || args.colour_version !== state.colourVersion) {
    state.rgba = fillColours(state.data, args.legend);
    state.colourVersion = args.colour_version;
    state.pointSets = pointSets(state.data, state.rgba);
  }
  state.marked = args.marked.map((id) => state.data.rowOf.get(id)).filter((row) => row !== undefined);
  root.dataset.marked = args.marked.join(',');
  root.dataset.count = String(state.data.count);
  if (args.channel && (!state.channel || state.channel.name !== args.channel)) {
    if (state.channel) state.channel.close();
    state.channel = new BroadcastChannel(args.channel);
    state.channel.onmessage = (event) => onThumbs(event.data);
  }
  titles();
  legend();
  if (!state.deck) create(root);
  else if (fresh) {
    state.viewStates = initialViewStates();
    state.deck.setProps({ views: views(), viewState: state.viewStates, layers: layers() });
  } else redraw();
  placeRings();
  setFrameHeight(root.scrollHeight + 4);
}

window.addEventListener('message', (event) => {
  if (event.data && event.data.type === 'streamlit:render') render(event.data.args);
});
window.addEventListener('resize', () => {
  if (!state.deck || !state.args) return;
  state.width = document.body.clientWidth;
  titles();
  state.deck.setProps({ views: views() });
});
send('streamlit:componentReady', { apiVersion: 1 });
