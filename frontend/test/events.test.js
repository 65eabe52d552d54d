import { describe, it, expect, vi } from "vitest";
import {
  compareStreamIds,
  parseStreamId,
  dedupeEvents,
  EventCursor,
  emptyMetrics,
  mergeMetrics,
  applyEventToMetrics,
  metricsArrays,
  RunEventStream,
} from "../src/events.js";

const ev = (id, type, data) => ({ id, type, run_id: "r1", ts: 0, data });

describe("stream ids", () => {
  it("parse and compare numerically, not as strings", () => {
    expect(parseStreamId("1732770000000-12")).toEqual([1732770000000, 12]);
    expect(parseStreamId("")).toBeNull();
    expect(compareStreamIds("9-0", "10-0")).toBeLessThan(0);
    expect(compareStreamIds("10-2", "10-10")).toBeLessThan(0);
    expect(compareStreamIds("10-3", "10-3")).toBe(0);
  });

  it("dedupes replayed events by stream id", () => {
    const a = [
      ev("1-0", "progress", {}),
      ev("2-0", "progress", {}),
      ev("2-0", "progress", {}),
      ev("1-0", "progress", {}),
      ev("3-0", "epoch", {}),
    ];
    expect(dedupeEvents(a).map((e) => e.id)).toEqual(["1-0", "2-0", "3-0"]);
    expect(dedupeEvents(a, "2-0").map((e) => e.id)).toEqual(["3-0"]);
  });

  it("lets id-less server state events through", () => {
    const c = new EventCursor("5-0");
    expect(c.accept(ev("", "status", { status: "running" }))).toBe(true);
    expect(c.lastId).toBe("5-0");
  });
});

describe("metrics merging", () => {
  it("merges REST and stream points by step without duplicates", () => {
    const m = emptyMetrics();
    mergeMetrics(m, {
      steps: [
        { step: 1, epoch: 0, loss: 2.3, accuracy: 0.1 },
        { step: 2, epoch: 0, loss: 2.2, accuracy: 0.12 },
      ],
      epochs: [],
    });
    applyEventToMetrics(
      m,
      ev("1-0", "progress", { step: 2, epoch: 0, loss: 2.2, accuracy: 0.12, total_steps: 10 }),
    );
    applyEventToMetrics(m, ev("2-0", "progress", { step: 3, epoch: 0, loss: 2.1, accuracy: 0.2 }));
    applyEventToMetrics(m, ev("3-0", "epoch", { epoch: 1, step: 3, val_loss: 2.0, val_accuracy: 0.3 }));
    applyEventToMetrics(m, ev("4-0", "epoch", { epoch: 1, step: 3, val_loss: 2.0, val_accuracy: 0.3 }));
    const { steps, epochs } = metricsArrays(m);
    expect(steps.map((p) => p.step)).toEqual([1, 2, 3]);
    expect(epochs).toHaveLength(1);
    expect(steps[2]).toMatchObject({ loss: 2.1, accuracy: 0.2 });
  });

  it("ignores progress events without loss (e.g. queued state)", () => {
    const m = emptyMetrics();
    applyEventToMetrics(m, ev("", "progress", { step: 0, total_steps: 10, loss: null, accuracy: null }));
    expect(m.steps.size).toBe(0);
  });
});

class FakeWS {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    FakeWS.instances.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  send(e) {
    this.onmessage?.({ data: JSON.stringify(e) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
  close() {
    this.drop(1000);
  }
}

describe("RunEventStream", () => {
  it("reconnects with since=<last id> and never delivers an event twice", async () => {
    vi.useFakeTimers();
    FakeWS.instances = [];
    const got = [];
    const states = [];
    new RunEventStream("r1", {
      WebSocketImpl: FakeWS,
      urlFor: (id, since) => `ws://x/api/runs/${id}/events${since ? `?since=${since}` : ""}`,
      onEvent: (e) => got.push(e.id),
      onState: (st) => states.push(st),
    }).start();
    const w1 = FakeWS.instances[0];
    expect(w1.url).toBe("ws://x/api/runs/r1/events");
    w1.open();
    w1.send(ev("100-0", "progress", { step: 1 }));
    w1.send(ev("100-1", "progress", { step: 2 }));
    w1.drop();
    expect(states).toContain("reconnecting");
    await vi.advanceTimersByTimeAsync(10000);
    const w2 = FakeWS.instances[1];
    expect(w2.url).toBe("ws://x/api/runs/r1/events?since=100-1");
    w2.open();
    // a server that replays from (inclusive) the cursor must not produce duplicates
    w2.send(ev("100-1", "progress", { step: 2 }));
    w2.send(ev("101-0", "progress", { step: 3 }));
    w2.send(ev("102-0", "status", { status: "succeeded" }));
    w2.drop(1000);
    await vi.advanceTimersByTimeAsync(10000);
    expect(FakeWS.instances).toHaveLength(2);
    expect(got).toEqual(["100-0", "100-1", "101-0", "102-0"]);
    expect(states[states.length - 1]).toBe("ended");
    vi.useRealTimers();
  });

  it("stops on a 4xxx close (unknown run)", async () => {
    vi.useFakeTimers();
    FakeWS.instances = [];
    const states = [];
    new RunEventStream("nope", {
      WebSocketImpl: FakeWS,
      urlFor: () => "ws://x",
      onEvent: () => {},
      onState: (s) => states.push(s),
    }).start();
    FakeWS.instances[0].drop(4404);
    await vi.advanceTimersByTimeAsync(10000);
    expect(FakeWS.instances).toHaveLength(1);
    expect(states).toContain("refused");
    vi.useRealTimers();
  });

  it("close() stops reconnecting", async () => {
    vi.useFakeTimers();
    FakeWS.instances = [];
    const s = new RunEventStream("r1", {
      WebSocketImpl: FakeWS,
      urlFor: () => "ws://x",
      onEvent: () => {},
    }).start();
    FakeWS.instances[0].drop();
    s.close();
    await vi.advanceTimersByTimeAsync(20000);
    expect(FakeWS.instances).toHaveLength(1);
    vi.useRealTimers();
  });
});
