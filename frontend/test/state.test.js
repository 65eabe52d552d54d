import { describe, it, expect } from "vitest";
import { parseHash, buildHash, matchRoute, intParam, boolParam } from "../src/state.js";

describe("URL hash state", () => {
  it("round-trips path and params", () => {
    const hash = buildHash(["runs", "r1", "explore"], {
      tensor: "conv1.weight",
      from: 0,
      to: 468,
      mode: "diff",
    });
    expect(hash).toBe("#/runs/r1/explore?tensor=conv1.weight&from=0&to=468&mode=diff");
    const p = parseHash(hash);
    expect(p.segments).toEqual(["runs", "r1", "explore"]);
    expect(p.params).toEqual({ tensor: "conv1.weight", from: "0", to: "468", mode: "diff" });
  });

  it("drops empty params and encodes odd characters", () => {
    const hash = buildHash(["runs", "a b/c"], { x: null, y: undefined, z: "", name: "fc1.weight&x=1" });
    expect(hash).toBe("#/runs/a%20b%2Fc?name=fc1.weight%26x%3D1");
    const p = parseHash(hash);
    expect(p.segments).toEqual(["runs", "a b/c"]);
    expect(p.params.name).toBe("fc1.weight&x=1");
  });

  it("treats an empty hash as the start page", () => {
    expect(parseHash("").segments).toEqual([]);
    expect(matchRoute([]).view).toBe("runs");
    expect(matchRoute(parseHash("#/").segments).view).toBe("runs");
  });

  it("matches every route and captures the run id", () => {
    expect(matchRoute(["runs"]).view).toBe("runs");
    expect(matchRoute(["new"]).view).toBe("newrun");
    expect(matchRoute(["runs", "abc"])).toEqual({ view: "live", routeParams: { id: "abc" } });
    expect(matchRoute(["runs", "abc", "explore"]).view).toBe("explorer");
    expect(matchRoute(["runs", "abc", "scatter"]).view).toBe("scatter");
    expect(matchRoute(["runs", "abc", "activations"]).view).toBe("activations");
    expect(matchRoute(["nope"])).toBeNull();
  });

  it("reads typed params with fallbacks", () => {
    expect(intParam({ a: "12" }, "a", 0)).toBe(12);
    expect(intParam({ a: "1.5" }, "a", 7)).toBe(7);
    expect(intParam({}, "a", null)).toBeNull();
    expect(boolParam({ c: "1" }, "c", false)).toBe(true);
    expect(boolParam({ c: "0" }, "c", true)).toBe(false);
    expect(boolParam({}, "c", true)).toBe(true);
  });
});
