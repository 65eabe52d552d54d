import { describe, it, expect } from "vitest";
import { encodeNpy, decodeNpy } from "../src/npy.js";

describe(".npy encoder", () => {
  it("writes magic, version 1.0, a 64-byte aligned header and float32 data", () => {
    const bytes = encodeNpy([1, -2.5, 3, 0.25, 5, 6], [2, 3]);
    expect(Array.from(bytes.slice(0, 8))).toEqual([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    const hlen = bytes[8] | (bytes[9] << 8);
    expect((10 + hlen) % 64).toBe(0);
    const header = new TextDecoder().decode(bytes.slice(10, 10 + hlen));
    expect(header).toMatch(/^\{'descr': '<f4', 'fortran_order': False, 'shape': \(2, 3\), \}\s*\n$/);
    expect(bytes.length).toBe(10 + hlen + 6 * 4);
    const data = new Float32Array(bytes.buffer.slice(10 + hlen));
    expect(Array.from(data)).toEqual([1, -2.5, 3, 0.25, 5, 6]);
  });

  it("writes 1-D shapes as (n,)", () => {
    const bytes = encodeNpy(new Float32Array(3));
    expect(new TextDecoder().decode(bytes.slice(10, 80))).toContain("'shape': (3,)");
  });

  it("rejects a shape that does not match the data", () => {
    expect(() => encodeNpy([1, 2, 3], [2, 2])).toThrow();
  });

  it("round-trips through the decoder", () => {
    const vals = Float32Array.from({ length: 32 * 9 }, (_, i) => Math.sin(i) * 0.1);
    const out = decodeNpy(encodeNpy(vals, [32, 1, 3, 3]));
    expect(out.shape).toEqual([32, 1, 3, 3]);
    expect(out.dtype).toBe("float32");
    expect(Array.from(out.data)).toEqual(Array.from(vals));
  });

  it("decodes other dtypes numpy writes (<f8, <i8)", () => {
    const make = (descr, shape, body) => {
      let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
      const total = Math.ceil((10 + header.length + 1) / 64) * 64;
      header += " ".repeat(total - 10 - header.length - 1) + "\n";
      const out = new Uint8Array(total + body.byteLength);
      out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
      for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
      out.set(new Uint8Array(body.buffer), total);
      return out;
    };
    const f8 = decodeNpy(make("<f8", "(2,)", new Float64Array([1.5, -2])));
    expect(Array.from(f8.data)).toEqual([1.5, -2]);
    const i8 = decodeNpy(make("<i8", "(3,)", new BigInt64Array([1n, -7n, 42n])));
    expect(Array.from(i8.data)).toEqual([1, -7, 42]);
    expect(i8.dtype).toBe("int64");
  });
});
