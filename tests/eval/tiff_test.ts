import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decodeTiff,
  encodeTiff,
  readTiffFile,
  TiffError,
  writeTiffFile,
} from "../../src/eval/tiff.ts";
import { InputError } from "../../src/util/errors.ts";

type Entry = [tag: number, type: number, values: number[]];

/**
 * Builds a TIFF by hand: header, IFD at offset 8, out-of-line values, then `data`.
 * `entries(dataOffset)` lists the IFD entries (sorted by tag) given where data starts.
 */
function buildTiff(
  littleEndian: boolean,
  entries: (dataOffset: number) => Entry[],
  data: Uint8Array,
): Uint8Array {
  const typeSize: Record<number, number> = { 1: 1, 3: 2, 4: 4 };
  const sizing = entries(0);
  const outOfLine = sizing.reduce((sum, [, type, values]) => {
    const size = typeSize[type] * values.length;
    return sum + (size > 4 ? size : 0);
  }, 0);
  const ifdSize = 2 + sizing.length * 12 + 4;
  const dataOffset = 8 + ifdSize + outOfLine;
  const bytes = new Uint8Array(dataOffset + data.length);
  const view = new DataView(bytes.buffer);
  bytes.set(littleEndian ? [0x49, 0x49] : [0x4d, 0x4d], 0);
  view.setUint16(2, 42, littleEndian);
  view.setUint32(4, 8, littleEndian);
  view.setUint16(8, sizing.length, littleEndian);
  let extraAt = 8 + ifdSize;
  entries(dataOffset).forEach(([tag, type, values], i) => {
    const at = 10 + i * 12;
    view.setUint16(at, tag, littleEndian);
    view.setUint16(at + 2, type, littleEndian);
    view.setUint32(at + 4, values.length, littleEndian);
    const size = typeSize[type] * values.length;
    let valuesAt = at + 8;
    if (size > 4) {
      view.setUint32(at + 8, extraAt, littleEndian);
      valuesAt = extraAt;
      extraAt += size;
    }
    values.forEach((value, k) => {
      const offset = valuesAt + k * typeSize[type];
      if (type === 1) view.setUint8(offset, value);
      else if (type === 3) view.setUint16(offset, value, littleEndian);
      else view.setUint32(offset, value, littleEndian);
    });
  });
  bytes.set(data, dataOffset);
  return bytes;
}

const SHORT = 3;
const LONG = 4;

Deno.test("encodeTiff writes a little-endian float32 TIFF that decodes back exactly", () => {
  const map = Float32Array.from({ length: 35 }, (_, i) => (i - 17) * 0.37);
  const bytes = encodeTiff(map, 7, 5);
  assert.deepEqual(Array.from(bytes.subarray(0, 4)), [0x49, 0x49, 42, 0]);
  // One strip of 7*5*4 bytes right after the 8-byte header.
  assert.equal(new DataView(bytes.buffer).getFloat32(8 + 4 * 3, true), map[3]);
  assert.deepEqual(decodeTiff(bytes), { map, width: 7, height: 5 });
  // Several strips with a short last strip (rows 2 + 2 + 1).
  assert.deepEqual(decodeTiff(encodeTiff(map, 7, 5, { rowsPerStrip: 2 })).map, map);
});

Deno.test("decodeTiff reads big-endian uint16 strips", () => {
  // 3x2 image, one row per strip: [1, 2, 300] and [65535, 0, 7].
  const values = [1, 2, 300, 65535, 0, 7];
  const data = new Uint8Array(12);
  values.forEach((value, i) => new DataView(data.buffer).setUint16(2 * i, value, false));
  const bytes = buildTiff(false, (dataOffset) => [
    [256, SHORT, [3]],
    [257, SHORT, [2]],
    [258, SHORT, [16]],
    [259, SHORT, [1]],
    [273, LONG, [dataOffset, dataOffset + 6]],
    [277, SHORT, [1]],
    [278, SHORT, [1]],
    [279, LONG, [6, 6]],
  ], data);
  assert.deepEqual(decodeTiff(bytes), { map: Float32Array.from(values), width: 3, height: 2 });
});

Deno.test("decodeTiff reads little-endian float64 tiles, dropping tile padding", () => {
  // 3x3 image with value x + 10y, stored as 2x2 tiles (4 tiles, right/bottom padded with -1).
  const tiles = [[0, 1, 10, 11], [2, -1, 12, -1], [20, 21, -1, -1], [22, -1, -1, -1]];
  const data = new Uint8Array(4 * 4 * 8);
  tiles.flat().forEach((value, i) => new DataView(data.buffer).setFloat64(8 * i, value, true));
  const bytes = buildTiff(true, (dataOffset) => [
    [256, SHORT, [3]],
    [257, SHORT, [3]],
    [258, SHORT, [64]],
    [259, SHORT, [1]],
    [277, SHORT, [1]],
    [322, SHORT, [2]],
    [323, SHORT, [2]],
    [324, LONG, [0, 1, 2, 3].map((t) => dataOffset + 32 * t)],
    [325, LONG, [32, 32, 32, 32]],
    [339, SHORT, [3]],
  ], data);
  const decoded = decodeTiff(bytes);
  assert.deepEqual(Array.from(decoded.map), [0, 1, 2, 10, 11, 12, 20, 21, 22]);
});

Deno.test("decodeTiff reads uint8 without StripByteCounts", () => {
  const bytes = buildTiff(true, (dataOffset) => [
    [256, LONG, [2]],
    [257, LONG, [2]],
    [258, SHORT, [8]],
    [273, LONG, [dataOffset]],
  ], Uint8Array.from([0, 128, 255, 9]));
  assert.deepEqual(Array.from(decodeTiff(bytes).map), [0, 128, 255, 9]);
});

Deno.test("decodeTiff names the file and the problem for bad input", () => {
  const good = encodeTiff(new Float32Array(16), 4, 4);
  const wrongMagic = good.slice();
  wrongMagic[2] = 41;
  assert.throws(
    () => decodeTiff(wrongMagic, "maps/a.tiff"),
    /maps\/a\.tiff: not a TIFF file \(magic number 41/,
  );
  const bigTiff = good.slice();
  bigTiff[2] = 43;
  assert.throws(() => decodeTiff(bigTiff, "b.tiff"), /BigTIFF/);
  assert.throws(
    () => decodeTiff(new TextEncoder().encode("PK\u0003\u0004 zip"), "c.tiff"),
    /c\.tiff: not a TIFF file \(byte-order mark/,
  );
  assert.throws(() => decodeTiff(good.subarray(0, 5), "d.tiff"), /d\.tiff: file is truncated/);
  // Our encoder puts the IFD last: cutting the end loses the directory.
  assert.throws(
    () => decodeTiff(good.subarray(0, 80), "e.tiff"),
    (error: unknown) =>
      error instanceof TiffError && error.source === "e.tiff" && /truncated/.test(error.message),
  );
  // Pixel data cut short (data follows the IFD in hand-built files).
  const entries = (dataOffset: number): Entry[] => [
    [256, SHORT, [4]],
    [257, SHORT, [4]],
    [258, SHORT, [32]],
    [259, SHORT, [1]],
    [273, LONG, [dataOffset]],
    [279, LONG, [64]],
    [339, SHORT, [3]],
  ];
  const full = buildTiff(true, entries, new Uint8Array(64));
  assert.equal(decodeTiff(full).map.length, 16);
  assert.throws(
    () => decodeTiff(full.subarray(0, full.length - 4), "f.tiff"),
    /f\.tiff: file is truncated: strip 0/,
  );
  const compressed = buildTiff(true, (dataOffset) => [
    [256, SHORT, [2]],
    [257, SHORT, [1]],
    [258, SHORT, [8]],
    [259, SHORT, [5]],
    [273, LONG, [dataOffset]],
  ], new Uint8Array(2));
  assert.throws(() => decodeTiff(compressed, "g.tiff"), /g\.tiff: compression 5 is not supported/);
  const rgb = buildTiff(true, (dataOffset) => [
    [256, SHORT, [1]],
    [257, SHORT, [1]],
    [258, SHORT, [8, 8, 8]],
    [273, LONG, [dataOffset]],
    [277, SHORT, [3]],
  ], new Uint8Array(3));
  assert.throws(() => decodeTiff(rgb, "h.tiff"), /3 samples per pixel/);
  const float16 = buildTiff(true, (dataOffset) => [
    [256, SHORT, [1]],
    [257, SHORT, [1]],
    [258, SHORT, [16]],
    [273, LONG, [dataOffset]],
    [339, SHORT, [3]],
  ], new Uint8Array(2));
  assert.throws(() => decodeTiff(float16, "i.tiff"), /unsupported sample type: 16-bit float/);
});

Deno.test("writeTiffFile writes atomically and readTiffFile reports missing files", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const path = join(directory, "nested", "map.tiff");
    const map = Float32Array.from([0.25, -1, 3e-8, 1e20]);
    await writeTiffFile(path, map, 2, 2);
    assert.deepEqual(await readTiffFile(path), { map, width: 2, height: 2 });
    // No temporary files left behind.
    const names = [...Deno.readDirSync(join(directory, "nested"))].map((entry) => entry.name);
    assert.deepEqual(names, ["map.tiff"]);
    const missing = join(directory, "missing.tiff");
    await assert.rejects(readTiffFile(missing), new RegExp(`${missing}: file not found`));
    await assert.rejects(writeTiffFile(path, map, 3, 2), /map\.tiff: map has 4 values/);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a TIFF header claiming 100000x100000 is refused before any buffer is made", () => {
  const claim = (width: number, height: number) =>
    buildTiff(true, (dataOffset) => [
      [256, LONG, [width]],
      [257, LONG, [height]],
      [258, SHORT, [32]],
      [273, LONG, [dataOffset]],
      [339, SHORT, [3]],
    ], new Uint8Array(64));
  // Allocating first would have thrown a RangeError (a 40 GB Float32Array): a TiffError says
  // the size was refused before.
  assert.throws(
    () => decodeTiff(claim(100000, 100000), "maps/huge.tiff"),
    (error: unknown) =>
      error instanceof TiffError && error instanceof InputError &&
      error.message.startsWith("maps/huge.tiff: image is 100000x100000 (10000000000 pixels); ") &&
      /the reader takes at most 268435456 pixels/.test(error.message),
  );
  assert.throws(() => decodeTiff(claim(2 ** 32 - 1, 2), "wide.tiff"), /at most 268435456/);
  // Within the limit, the data the map needs must be in the file, before the map is made.
  const external = Deno.memoryUsage().external;
  assert.throws(
    () => decodeTiff(claim(16384, 16384), "big.tiff"),
    /^TiffError: big\.tiff: file is truncated: strip 0 needs bytes \d+\.\.1073741\d+ but the file/,
  );
  assert.ok(Deno.memoryUsage().external - external < 2 ** 26, "no 1 GiB map was allocated");
});

Deno.test("strips that share their bytes cannot make a small TIFF decode to a huge map", () => {
  // 4096 rows, one per strip, every strip at the same 16 KiB of data: 64 MiB of map from a file
  // of 32 KiB, were it read.
  const width = 4096;
  const height = 4096;
  const shared = buildTiff(true, (dataOffset) => [
    [256, LONG, [width]],
    [257, LONG, [height]],
    [258, SHORT, [32]],
    [273, LONG, new Array(height).fill(dataOffset)],
    [278, LONG, [1]],
    [339, SHORT, [3]],
  ], new Uint8Array(width * 4));
  assert.throws(
    () => decodeTiff(shared, "shared.tiff"),
    /^TiffError: shared\.tiff: its 4096 strips or tiles claim 67108864 bytes in all, more than/,
  );
});

Deno.test("zero, negative and missing sizes in a TIFF header are refused", () => {
  const withSizes = (rowsPerStrip: number, widthType = LONG, width = 4) =>
    buildTiff(true, (dataOffset) => [
      [256, widthType, [width]],
      [257, LONG, [4]],
      [258, SHORT, [8]],
      [273, LONG, [dataOffset]],
      [278, LONG, [rowsPerStrip]],
    ], new Uint8Array(16));
  assert.equal(decodeTiff(withSizes(4)).map.length, 16);
  assert.throws(
    () => decodeTiff(withSizes(0), "a.tiff"),
    /^TiffError: a\.tiff: RowsPerStrip is 0; expected a positive size/,
  );
  assert.throws(
    () => decodeTiff(withSizes(4, LONG, 0), "b.tiff"),
    /^TiffError: b\.tiff: ImageWidth is 0; expected a positive size/,
  );
  // A signed LONG (SLONG, 9) lets a file say -1; it was once read as a map of no strips.
  const negative = withSizes(4);
  const view = new DataView(negative.buffer);
  const rowsEntry = 10 + 4 * 12; // the fifth entry
  view.setUint16(rowsEntry + 2, 9, true);
  view.setInt32(rowsEntry + 8, -1, true);
  assert.throws(
    () => decodeTiff(negative, "c.tiff"),
    /^TiffError: c\.tiff: RowsPerStrip is -1; expected a positive size/,
  );
  const tiled = buildTiff(true, (dataOffset) => [
    [256, LONG, [4]],
    [257, LONG, [4]],
    [258, SHORT, [8]],
    [322, LONG, [0]],
    [323, LONG, [4]],
    [324, LONG, [dataOffset]],
  ], new Uint8Array(16));
  assert.throws(
    () => decodeTiff(tiled, "d.tiff"),
    /^TiffError: d\.tiff: TileWidth is 0; expected a positive size/,
  );
});
