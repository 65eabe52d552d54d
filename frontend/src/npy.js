// A tiny .npy (NumPy format 1.0) encoder for float32 arrays and a decoder for what the api sends.

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function shapeLiteral(shape) {
  if (shape.length === 0) return "()";
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(", ")})`;
}

/**
 * Encode numbers as a little-endian float32 .npy file, C order.
 * @param {ArrayLike<number>} values flat row-major values
 * @param {number[]} shape product must equal values.length
 * @returns {Uint8Array}
 */
export function encodeNpy(values, shape = [values.length]) {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n !== values.length)
    throw new Error(`shape ${shapeLiteral(shape)} does not match ${values.length} values`);
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeLiteral(shape)}, }`;
  // magic(6) + version(2) + header length(2) + header, padded with spaces and ended by \n to 64 bytes.
  const preamble = 10;
  const total = Math.ceil((preamble + header.length + 1) / 64) * 64;
  header = header + " ".repeat(total - preamble - header.length - 1) + "\n";
  const out = new Uint8Array(total + n * 4);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  out[8] = header.length & 0xff;
  out[9] = (header.length >> 8) & 0xff;
  for (let i = 0; i < header.length; i++) out[preamble + i] = header.charCodeAt(i);
  const view = new DataView(out.buffer, total);
  for (let i = 0; i < n; i++) view.setFloat32(i * 4, values[i], true);
  return out;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Decode a .npy buffer into {shape, dtype, data} with data as a typed array (Float64Array for
 * 64-bit ints, so values stay plain numbers).
 * @param {ArrayBuffer|Uint8Array} buf
 */
export function decodeNpy(buf) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new Error("not a .npy file");
  }
  const major = bytes[6];
  let headerLen;
  let offset;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (major === 1) {
    headerLen = dv.getUint16(8, true);
    offset = 10;
  } else {
    headerLen = dv.getUint32(8, true);
    offset = 12;
  }
  const header = new TextDecoder("latin1").decode(bytes.subarray(offset, offset + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1] === "True";
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (fortran) throw new Error("fortran-order .npy is not supported");
  const n = shape.reduce((a, b) => a * b, 1);
  const start = offset + headerLen;
  const little = descr[0] !== ">";
  const kind = descr.slice(1);
  const size = Number(kind.slice(1));
  const body = new DataView(bytes.buffer, bytes.byteOffset + start, n * size);
  let data;
  const read = {
    f4: (i) => body.getFloat32(i * 4, little),
    f8: (i) => body.getFloat64(i * 8, little),
    f2: (i) => halfToFloat(body.getUint16(i * 2, little)),
    i1: (i) => body.getInt8(i),
    u1: (i) => body.getUint8(i),
    b1: (i) => body.getUint8(i),
    i2: (i) => body.getInt16(i * 2, little),
    u2: (i) => body.getUint16(i * 2, little),
    i4: (i) => body.getInt32(i * 4, little),
    u4: (i) => body.getUint32(i * 4, little),
    i8: (i) => Number(body.getBigInt64(i * 8, little)),
    u8: (i) => Number(body.getBigUint64(i * 8, little)),
  }[kind];
  if (!read) throw new Error(`unsupported .npy dtype ${descr}`);
  data = kind === "f4" ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = read(i);
  const dtype = {
    f4: "float32",
    f8: "float64",
    f2: "float16",
    i1: "int8",
    u1: "uint8",
    b1: "bool",
    i2: "int16",
    u2: "uint16",
    i4: "int32",
    u4: "uint32",
    i8: "int64",
    u8: "uint64",
  }[kind];
  return { shape, dtype, data };
}
