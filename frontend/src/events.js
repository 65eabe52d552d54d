// Live run events over WebSocket with replay: reconnects with `since=<last id>` after a drop and
// never applies an event twice. Metrics are merged by step, so REST and stream data combine cleanly.

import { eventsUrl } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** Parse a Redis stream id "ms-seq" into [ms, seq] (numbers); invalid → null. */
export function parseStreamId(id) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(id ?? ""));
  if (!m) return null;
  return [Number(m[1]), Number(m[2] ?? 0)];
}

/** Compare two stream ids; returns <0, 0, >0. Invalid ids sort first. */
export function compareStreamIds(a, b) {
  const pa = parseStreamId(a);
  const pb = parseStreamId(b);
  if (!pa && !pb) return 0;
  if (!pa) return -1;
  if (!pb) return 1;
  return pa[0] - pb[0] || pa[1] - pb[1];
}

/**
 * Filters a sequence of events down to the ones not seen yet (by stream id, strictly increasing).
 * Events without an id (e.g. a server-synthesised "current state" after `trimmed`) always pass.
 */
export class EventCursor {
  constructor(lastId = null) {
    this.lastId = lastId;
  }
  /** True if the event is new; advances the cursor. */
  accept(event) {
    const id = event?.id;
    if (!parseStreamId(id)) return true;
    if (this.lastId && compareStreamIds(id, this.lastId) <= 0) return false;
    this.lastId = id;
    return true;
  }
}

/** De-duplicate a list of events by stream id keeping first-seen order; pure helper. */
export function dedupeEvents(events, lastId = null) {
  const cursor = new EventCursor(lastId);
  return events.filter((e) => cursor.accept(e));
}

/**
 * Metrics kept as Maps keyed by step / epoch so the same point from REST and from the stream,
 * or from a replay, is stored once.
 */
export function emptyMetrics() {
  return { steps: new Map(), epochs: new Map() };
}

/** Merge `{steps:[...], epochs:[...]}` (REST shape) into a metrics store; returns the store. */
export function mergeMetrics(store, payload) {
  for (const p of payload?.steps ?? []) {
    if (p && Number.isFinite(p.step)) store.steps.set(p.step, { ...store.steps.get(p.step), ...p });
  }
  for (const e of payload?.epochs ?? []) {
    if (e && Number.isFinite(e.epoch)) store.epochs.set(e.epoch, { ...store.epochs.get(e.epoch), ...e });
  }
  return store;
}

/** Apply one stream event to a metrics store (progress → step point, epoch → validation point). */
export function applyEventToMetrics(store, event) {
  const d = event?.data ?? {};
  if (event?.type === "progress" && Number.isFinite(d.step) && (d.loss != null || d.accuracy != null)) {
    mergeMetrics(store, { steps: [{ step: d.step, epoch: d.epoch, loss: d.loss, accuracy: d.accuracy }] });
  } else if (event?.type === "epoch" && Number.isFinite(d.epoch)) {
    mergeMetrics(store, { epochs: [d] });
  } else if (event?.type === "metrics") {
    mergeMetrics(store, d);
  }
  return store;
}

/** Sorted arrays from a metrics store, for charts. */
export function metricsArrays(store) {
  const steps = [...store.steps.values()].sort((a, b) => a.step - b.step);
  const epochs = [...store.epochs.values()].sort((a, b) => a.epoch - b.epoch);
  return { steps, epochs };
}

/**
 * WebSocket client for `/api/runs/{id}/events`. Calls `onEvent(event)` once per stream id,
 * `onState(state)` with "connecting" | "open" | "reconnecting" | "closed" | "ended".
 * Reconnects with `since=<last id>` until a terminal status arrives or `close()` is called.
 */
export class RunEventStream {
  constructor(
    runId,
    {
      onEvent,
      onState = () => {},
      WebSocketImpl = globalThis.WebSocket,
      urlFor = eventsUrl,
      maxBackoffMs = 8000,
    } = {},
  ) {
    this.runId = runId;
    this.onEvent = onEvent;
    this.onState = onState;
    this.WS = WebSocketImpl;
    this.urlFor = urlFor;
    this.maxBackoffMs = maxBackoffMs;
    this.cursor = new EventCursor();
    this.ended = false;
    this.closed = false;
    this.attempts = 0;
    this.ws = null;
    this.timer = null;
  }

  get lastId() {
    return this.cursor.lastId;
  }

  start() {
    this.connect();
    return this;
  }

  connect() {
    if (this.closed || this.ended) return;
    this.onState(this.attempts ? "reconnecting" : "connecting");
    let url;
    try {
      url = this.urlFor(this.runId, this.cursor.lastId);
    } catch {
      this.scheduleReconnect();
      return;
    }
    // `urlFor` may be async: a signed-in page first trades its token for a single-use ticket (api.eventsUrl).
    if (typeof url?.then === "function") {
      url.then(
        (u) => this.open(u),
        (e) => {
          if (e?.status === 401) {
            this.closed = true;
            this.onState("refused", 4401);
          } else this.scheduleReconnect();
        },
      );
    } else this.open(url);
  }

  open(url) {
    if (this.closed || this.ended) return;
    let ws;
    try {
      ws = new this.WS(url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempts = 0;
      this.onState("open");
    };
    ws.onmessage = (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch {
        return;
      }
      this.handle(event);
    };
    ws.onerror = () => {
      // onclose follows; reconnecting happens there.
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      // 4xxx: the server refused (4401 no valid token, 4404 unknown run, 4422 bad `since`); retrying would not help.
      if (ev?.code >= 4000 && ev.code < 5000) {
        this.closed = true;
        this.onState("refused", ev.code);
        return;
      }
      if (this.ended) {
        this.onState("ended");
        return;
      }
      this.scheduleReconnect();
    };
  }

  handle(event) {
    if (!this.cursor.accept(event)) return;
    if (event.type === "status" && TERMINAL.has(event.data?.status)) this.ended = true;
    this.onEvent?.(event);
  }

  scheduleReconnect() {
    if (this.closed || this.ended) return;
    this.attempts += 1;
    this.onState("reconnecting");
    const delay = Math.min(this.maxBackoffMs, 250 * 2 ** Math.min(this.attempts, 6));
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Stop for good (view unmounted). */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) ws.close();
    this.onState("closed");
  }
}
