// @vitest-environment jsdom
import { describe, it, expect, beforeEach } from "vitest";
import {
  TOKEN_KEY,
  normalizeToken,
  readToken,
  writeToken,
  clearToken,
  authHeaders,
  createAuthBar,
} from "../src/auth.js";
import { createApi, eventsUrl, ApiError } from "../src/api.js";
import { RunEventStream } from "../src/events.js";

/** A localStorage stand-in (Map-backed). */
function memoryStorage(init = {}) {
  const m = new Map(Object.entries(init));
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
    map: m,
  };
}

const throwing = {
  getItem() {
    throw new Error("SecurityError");
  },
  setItem() {
    throw new Error("SecurityError");
  },
  removeItem() {
    throw new Error("SecurityError");
  },
};

function json(status, body) {
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: (k) => (k.toLowerCase() === "content-type" ? "application/json" : null) },
    text: async () => JSON.stringify(body),
  };
}

const GOOD = "tok-alice-0123456789";
const NEED = "this server requires an API token: send the header `Authorization: Bearer <token>`";

/** A fake server: /api/me answers alice for GOOD, 401 otherwise; records the Authorization header it saw. */
function server({ authRequired = true } = {}) {
  const seen = [];
  const fetch = async (url, init) => {
    const auth = init.headers.Authorization ?? null;
    seen.push({ url, auth });
    if (!authRequired) return json(200, { user: "local", auth_required: false });
    if (auth === `Bearer ${GOOD}`) return json(200, { user: "alice", auth_required: true });
    return json(401, { detail: auth ? "this API token is not valid (unknown or revoked)" : NEED });
  };
  return { fetch, seen };
}

beforeEach(() => {
  document.body.innerHTML = "";
});

describe("token storage", () => {
  it("normalises pasted tokens", () => {
    expect(normalizeToken("  abc \n")).toBe("abc");
    expect(normalizeToken("Bearer abc")).toBe("abc");
    expect(normalizeToken("bearer   abc ")).toBe("abc");
    expect(normalizeToken(null)).toBe("");
  });

  it("writes, reads and clears under netlapse_token", () => {
    const s = memoryStorage();
    expect(readToken(s)).toBeNull();
    expect(writeToken(" abc ", s)).toBe("abc");
    expect(s.map.get(TOKEN_KEY)).toBe("abc");
    expect(readToken(s)).toBe("abc");
    clearToken(s);
    expect(readToken(s)).toBeNull();
    writeToken("abc", s);
    expect(writeToken("   ", s)).toBeNull(); // an empty token clears
    expect(s.map.has(TOKEN_KEY)).toBe(false);
  });

  it("survives storage that throws (privacy mode) or is missing", () => {
    expect(readToken(throwing)).toBeNull();
    expect(writeToken("abc", throwing)).toBeNull();
    expect(() => clearToken(throwing)).not.toThrow();
    expect(readToken(null)).toBeNull();
  });

  it("builds the bearer header only with a token", () => {
    expect(authHeaders("abc")).toEqual({ Authorization: "Bearer abc" });
    expect(authHeaders(null)).toEqual({});
  });
});

describe("api.js sends the token", () => {
  it("as Authorization: Bearer on fetches, and nothing without one", async () => {
    let token = null;
    const { fetch, seen } = server({ authRequired: false });
    const api = createApi({ fetch, getToken: () => token });
    await api.me();
    token = GOOD;
    await api.listRuns();
    expect(seen.map((s) => s.auth)).toEqual([null, `Bearer ${GOOD}`]);
  });

  it("reads localStorage by default", async () => {
    localStorage.setItem(TOKEN_KEY, GOOD);
    const { fetch, seen } = server();
    expect(await createApi({ fetch }).me()).toEqual({ user: "alice", auth_required: true });
    expect(seen[0].auth).toBe(`Bearer ${GOOD}`);
    localStorage.removeItem(TOKEN_KEY);
  });

  it("reports every 401 with the token it sent, then throws", async () => {
    const heard = [];
    const { fetch } = server();
    const api = createApi({
      fetch,
      getToken: () => "revoked",
      onUnauthorized: (e, sent) => heard.push([e.status, sent]),
    });
    await expect(api.getRun("r1")).rejects.toMatchObject({
      status: 401,
      message: expect.stringContaining("not valid"),
    });
    expect(heard).toEqual([[401, "revoked"]]);
    api.unauthorized("stream refused");
    expect(heard[1]).toEqual([401, "revoked"]);
  });

  it("does not report other errors as 401", async () => {
    const heard = [];
    const api = createApi({
      fetch: async () => json(404, { detail: "run 'r1' not found" }),
      onUnauthorized: () => heard.push(1),
    });
    await expect(api.getRun("r1")).rejects.toBeInstanceOf(ApiError);
    expect(heard).toEqual([]);
  });

  it("never puts the token in the WebSocket URL: it trades it for a single-use ticket first", async () => {
    const loc = { href: "http://h:8000/" };
    expect(eventsUrl("r1", null, loc, "api/", "a b+c")).toBe("ws://h:8000/api/runs/r1/events?ticket=a+b%2Bc");
    expect(eventsUrl("r1", "5-0", loc, "api/", null)).toBe("ws://h:8000/api/runs/r1/events?since=5-0");
    const calls = [];
    const api = createApi({
      getToken: () => "SECRET-TOKEN",
      fetch: async (url, init) => (calls.push([url, init]), json(200, { ticket: "t1", expires_in: 30 })),
    });
    const url = await api.eventsUrl("r1", "5-0", loc);
    expect(url).toBe("ws://h:8000/api/runs/r1/events?since=5-0&ticket=t1");
    expect(url).not.toContain("SECRET-TOKEN");
    expect(calls[0][0]).toBe("api/ws-ticket");
    expect(calls[0][1].method).toBe("POST");
    expect(calls[0][1].headers.Authorization).toBe("Bearer SECRET-TOKEN");
    expect(calls[0][1].headers["Content-Type"]).toBe("application/json");
    const anon = createApi({
      getToken: () => null,
      fetch: async () => {
        throw new Error("no request without a token");
      },
    });
    expect(await anon.eventsUrl("r1", null, loc)).toBe("ws://h:8000/api/runs/r1/events");
  });

  it("waits and retries a 429 that says Retry-After (analyses in flight), not one without it", async () => {
    const busy = {
      ...json(429, { detail: "you have 8 analyses in progress" }),
      headers: {
        get: (k) => ({ "retry-after": "0.001", "content-type": "application/json" })[k.toLowerCase()] ?? null,
      },
    };
    let calls = 0;
    const api = createApi({ fetch: async () => (++calls < 3 ? busy : json(200, { ok: 1 })) });
    expect(await api.request("GET", "runs/r1/trajectory/w", { query: { index: "0" } })).toEqual({ ok: 1 });
    expect(calls).toBe(3);
    const quota = createApi({
      fetch: async () => json(429, { detail: "you have 4 runs queued or running" }),
    });
    await expect(quota.createRun({})).rejects.toMatchObject({ status: 429 });
  });

  it("opens the socket once an async URL (a ticket) is ready", async () => {
    const opened = [];
    class FakeWS {
      constructor(url) {
        opened.push(url);
      }
      close() {}
    }
    new RunEventStream("r1", { WebSocketImpl: FakeWS, urlFor: async () => "ws://x?ticket=t" }).start();
    await new Promise((r) => setTimeout(r, 0));
    expect(opened).toEqual(["ws://x?ticket=t"]);
  });

  it("passes the WebSocket's 4401 close code on with the refused state", () => {
    const states = [];
    class FakeWS {
      constructor() {
        FakeWS.last = this;
      }
      close() {}
    }
    new RunEventStream("r1", {
      WebSocketImpl: FakeWS,
      urlFor: () => "ws://x",
      onState: (s, code) => states.push([s, code]),
    }).start();
    FakeWS.last.onclose({ code: 4401 });
    expect(states.at(-1)).toEqual(["refused", 4401]);
  });
});

describe("top-bar sign-in", () => {
  function setup({ authRequired = true, stored = null } = {}) {
    const storage = memoryStorage(stored ? { [TOKEN_KEY]: stored } : {});
    const { fetch, seen } = server({ authRequired });
    let bar = null;
    const api = createApi({
      fetch,
      getToken: () => readToken(storage),
      onUnauthorized: (e, sent) => bar.unauthorized(e, sent),
    });
    const slot = document.body.appendChild(document.createElement("div"));
    const changes = [];
    bar = createAuthBar(slot, { api, storage, onChange: () => changes.push(1) });
    return { bar, slot, storage, seen, changes, api };
  }
  const q = (id) => document.querySelector(`[data-testid=${id}]`);

  it("stays hidden when the server does not need tokens", async () => {
    const { bar, slot } = setup({ authRequired: false });
    await bar.check();
    expect(bar.state).toBe("off");
    expect(slot.hidden).toBe(true);
    expect(q("token-form")).toBeNull();
  });

  it("asks for a token on 401, stores a good one and shows the user with a sign-out button", async () => {
    const { bar, slot, storage, seen, changes } = setup();
    await bar.check();
    expect(slot.dataset.state).toBe("ask");
    expect(slot.hidden).toBe(false);
    expect(q("token-message").textContent).toBe("API token needed");
    expect(q("token-message").title).toContain("requires an API token"); // the server's own words on hover
    q("token-input").value = `  ${GOOD} `;
    q("token-form").dispatchEvent(new Event("submit", { cancelable: true }));
    await new Promise((r) => setTimeout(r, 0));
    expect(storage.map.get(TOKEN_KEY)).toBe(GOOD);
    expect(seen.at(-1).auth).toBe(`Bearer ${GOOD}`);
    expect(slot.dataset.state).toBe("signed-in");
    expect(q("auth-user").textContent).toBe("alice");
    expect(q("token-input")).toBeNull();
    expect(changes.length).toBe(1); // the view reloads with the token

    q("sign-out").click();
    expect(storage.map.has(TOKEN_KEY)).toBe(false);
    expect(slot.dataset.state).toBe("ask");
    expect(q("token-input").value).toBe(""); // the token is not left in the form
    expect(changes.length).toBe(2);
  });

  it("rejects a bad token without storing it", async () => {
    const { bar, storage, changes } = setup();
    expect(await bar.save("wrong")).toBe(false);
    expect(storage.map.has(TOKEN_KEY)).toBe(false);
    expect(bar.state).toBe("ask");
    expect(q("token-message").textContent).toContain("not accepted");
    expect(changes.length).toBe(0);
    expect(await bar.save("   ")).toBe(false);
  });

  it("a revoked stored token is dropped on its first 401 and the form comes back", async () => {
    const { bar, storage, api } = setup({ stored: "revoked" });
    await expect(api.listRuns()).rejects.toMatchObject({ status: 401 });
    expect(storage.map.has(TOKEN_KEY)).toBe(false);
    expect(bar.state).toBe("ask");
  });

  it("a late 401 from before sign-in neither drops the new token nor wipes what is typed", async () => {
    const { bar, storage } = setup();
    await bar.check();
    q("token-input").value = "half-typed";
    bar.unauthorized(new ApiError("need a token", { status: 401 }), null);
    expect(q("token-input").value).toBe("half-typed");
    await bar.save(GOOD);
    bar.unauthorized(new ApiError("need a token", { status: 401 }), null); // answer to an old tokenless request
    expect(storage.map.get(TOKEN_KEY)).toBe(GOOD);
    expect(bar.state).toBe("signed-in");
  });
});
