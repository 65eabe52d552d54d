import { describe, it, expect } from "vitest";
import { createApi, errorFromBody, locToPath, decodeTensorPayload, eventsUrl } from "../src/api.js";
import { encodeNpy } from "../src/npy.js";

function response(status, body, headers = {}) {
  const isBytes = body instanceof Uint8Array;
  const text = isBytes
    ? ""
    : typeof body === "string"
      ? body
      : body === undefined
        ? ""
        : JSON.stringify(body);
  const h = new Map(
    Object.entries({ "Content-Type": isBytes ? "application/x-npy" : "application/json", ...headers }).map(
      ([k, v]) => [k.toLowerCase(), v],
    ),
  );
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: (k) => h.get(k.toLowerCase()) ?? null },
    text: async () => text,
    arrayBuffer: async () => body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength),
  };
}

describe("API errors", () => {
  it("turns FastAPI validation details into field paths", () => {
    const e = errorFromBody(422, {
      detail: [
        { loc: ["body", "training", "lr"], msg: "Input should be greater than 0", type: "greater_than" },
        {
          loc: ["body", "model", "inline", "layers", 2, "conv2d", "out_channels"],
          msg: "Input should be greater than or equal to 1",
        },
      ],
    });
    expect(e.status).toBe(422);
    expect(e.fields.map((f) => f.path)).toEqual(["training.lr", "model.inline.layers.2.conv2d.out_channels"]);
    expect(e.message).toContain("training.lr: Input should be greater than 0");
  });

  it("keeps a plain string detail as the message", () => {
    const e = errorFromBody(404, { detail: "run r9 not found" });
    expect(e.message).toBe("run r9 not found");
    expect(e.fields).toEqual([]);
  });

  it("describes bodies without detail", () => {
    expect(errorFromBody(502, "<html>bad gateway</html>").message).toBe("<html>bad gateway</html>");
    expect(errorFromBody(500, null).message).toBe("Server error (500)");
  });

  it("locToPath strips the body/query prefix", () => {
    expect(locToPath(["body", "capture", "every"])).toBe("capture.every");
    expect(locToPath(["query", "from"])).toBe("from");
  });
});

describe("createApi", () => {
  it("calls relative api/ paths with JSON bodies", async () => {
    const calls = [];
    const api = createApi({
      fetch: async (url, init) => (calls.push({ url, init }), response(201, { id: "r1", status: "queued" })),
    });
    const run = await api.createRun({ name: "x" });
    expect(run.id).toBe("r1");
    expect(calls[0].url).toBe("api/runs");
    expect(calls[0].init.method).toBe("POST");
    expect(JSON.parse(calls[0].init.body)).toEqual({ name: "x" });
  });

  it("throws ApiError with fields on 422", async () => {
    const api = createApi({
      fetch: async () => response(422, { detail: [{ loc: ["body", "training", "lr"], msg: "bad" }] }),
    });
    await expect(api.createRun({})).rejects.toMatchObject({
      name: "ApiError",
      status: 422,
      fields: [{ path: "training.lr", msg: "bad" }],
    });
  });

  it("reports an unreachable server", async () => {
    const api = createApi({
      fetch: async () => {
        throw new TypeError("Failed to fetch");
      },
    });
    await expect(api.listRuns()).rejects.toMatchObject({
      status: 0,
      message: "Cannot reach the netlapse server",
    });
  });

  it("polls while the analyzer answers 202", async () => {
    let n = 0;
    const api = createApi({
      fetch: async () =>
        ++n < 3
          ? response(202, { status: "pending" }, { "Retry-After": "0.001" })
          : response(200, { x: [1], y: [2] }),
    });
    const r = await api.scatter("r1", "conv1.weight", { from: 0, to: 5 });
    expect(r.x).toEqual([1]);
    expect(n).toBe(3);
  });

  it("decodes tensors sent as .npy or JSON", async () => {
    const npy = encodeNpy([1, 2, 3, 4], [2, 2]);
    let accept;
    const api = createApi({
      fetch: async (url, init) => ((accept = init.headers.Accept), response(200, npy)),
    });
    const t = await api.tensor("r1", "fc.weight", 3);
    expect(accept).toContain("application/x-npy");
    expect(t.shape).toEqual([2, 2]);
    expect(Array.from(t.data)).toEqual([1, 2, 3, 4]);
    expect(t.step).toBe(3);
    const api2 = createApi({
      fetch: async () =>
        response(200, { name: "b", step: 1, shape: [2], dtype: "float32", data: [0.5, null] }),
    });
    const t2 = await api2.tensor("r1", "b", 1);
    expect(t2.data).toBeInstanceOf(Float32Array);
    expect(t2.data[0]).toBe(0.5);
    expect(Number.isNaN(t2.data[1])).toBe(true);
  });

  it("encodes path parts and query params", async () => {
    let seen;
    const api = createApi({ fetch: async (url) => ((seen = url), response(200, { data: [], shape: [0] })) });
    await api.diff("r 1", "conv1.weight", 0, 10);
    expect(seen).toBe("api/runs/r%201/diff/conv1.weight?from=0&to=10");
  });

  it("builds ws:// and wss:// event URLs with since", () => {
    expect(eventsUrl("r1", null, { href: "http://h:8000/" })).toBe("ws://h:8000/api/runs/r1/events");
    expect(eventsUrl("r1", "1732770000000-0", { href: "https://x.org/" })).toBe(
      "wss://x.org/api/runs/r1/events?since=1732770000000-0",
    );
  });

  it("decodeTensorPayload keeps float64 precision when the dtype says so", () => {
    const t = decodeTensorPayload({ dtype: "float64", data: [0.1] });
    expect(t.data).toBeInstanceOf(Float64Array);
    expect(t.data[0]).toBe(0.1);
  });
});
