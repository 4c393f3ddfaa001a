/**
 * The fuzzing harness's mutations and the layouts they aim at: each does what its description
 * says, to the bytes the layout names.
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { Random } from "../../src/data/random.ts";
import { createImage, encodePng } from "../../src/data/image.ts";
import { encodeTiff } from "../../src/eval/tiff.ts";
import { encodeSafetensors } from "../../src/nn/checkpoint.ts";
import {
  jpegLayout,
  pngLayout,
  repairPngChecksums,
  safetensorsLayout,
  tiffLayout,
} from "../../src/fuzz/layouts.ts";
import {
  mutateBinary,
  mutateJson,
  setDimensionsHuge,
  truncateAtBoundary,
} from "../../src/fuzz/mutators.ts";
import { FUZZ_TARGETS } from "../../src/fuzz/targets.ts";

const png = encodePng(createImage(5, 3, 3));
const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.length);

Deno.test("the PNG layout finds every chunk, and repaired checksums are valid", () => {
  const layout = pngLayout(png);
  const chunkTypes = layout.fields.filter((f) => f.what.endsWith(" length")).map((f) => f.what);
  assert.deepEqual(chunkTypes, ["IHDR length", "IDAT length", "IEND length"]);
  assert.ok(layout.boundaries.includes(8) && layout.boundaries.includes(png.length));
  const width = layout.fields.find((f) => f.what === "IHDR width")!;
  assert.equal(view(png).getUint32(width.at, width.littleEndian), 5);

  const huge = setDimensionsHuge(png, layout, ["IHDR width", "IHDR height"], new Random(3));
  const sides = [16, 20].map((at) => view(huge.bytes).getUint32(at));
  assert.equal(sides[0], sides[1]);
  assert.match(huge.description, new RegExp(`IHDR width and IHDR height all set to ${sides[0]}`));
  // The IHDR checksum no longer fits, until repaired.
  const ihdrCrc = (bytes: Uint8Array) => view(bytes).getUint32(8 + 8 + 13);
  const computed = (bytes: Uint8Array) => crc32(bytes.subarray(12, 8 + 8 + 13));
  if (sides[0] !== 5) assert.notEqual(ihdrCrc(huge.bytes), computed(huge.bytes));
  const repaired = repairPngChecksums(huge.bytes);
  assert.equal(ihdrCrc(repaired), computed(repaired));
  assert.deepEqual(repairPngChecksums(png), png, "a valid file is left as it is");
});

Deno.test("the TIFF layout names each IFD entry's fields where they are", () => {
  const tiff = encodeTiff(new Float32Array(6 * 4), 6, 4, { rowsPerStrip: 1 });
  const layout = tiffLayout(tiff);
  const field = (what: string) => {
    const found = layout.fields.find((f) => f.what === what)!;
    return found.bytes === 2
      ? view(tiff).getUint16(found.at, true)
      : view(tiff).getUint32(found.at, true);
  };
  assert.equal(field("ImageWidth value"), 6);
  assert.equal(field("ImageLength value"), 4);
  assert.equal(field("StripOffsets count"), 4);
  assert.equal(field("StripOffsets value 0"), 8);
  assert.equal(field("StripByteCounts value 3"), 6 * 4);
  // Every strip's start is a boundary.
  for (let strip = 0; strip < 4; strip++) assert.ok(layout.boundaries.includes(8 + strip * 24));
});

Deno.test("the safetensors layout has the header's end and each tensor's data as boundaries", () => {
  const bytes = encodeSafetensors(
    new Map([["a", { shape: [2], data: Float32Array.of(1, 2) }], ["b", {
      shape: [1],
      data: Float32Array.of(3),
    }]]),
  );
  const layout = safetensorsLayout(bytes);
  const dataStart = bytes.length - 12;
  for (const at of [dataStart, dataStart + 8, dataStart + 12]) {
    assert.ok(layout.boundaries.includes(at), `${at}`);
  }
  assert.deepEqual(layout.fields, [{ at: 0, bytes: 8, littleEndian: true, what: "header length" }]);
});

Deno.test("cuts at a boundary land on it or one byte either side", () => {
  const layout = pngLayout(png);
  for (let seed = 0; seed < 50; seed++) {
    const cut = truncateAtBoundary(png, layout, new Random(seed));
    const boundary = Number(/structural boundary (\d+)/.exec(cut.description)![1]);
    assert.ok(layout.boundaries.includes(boundary));
    assert.ok(Math.abs(cut.bytes.length - boundary) <= 1);
    assert.deepEqual(cut.bytes, png.subarray(0, cut.bytes.length));
  }
});

Deno.test("random byte mutations spare the magic number, which has a mutation of its own", () => {
  const layout = pngLayout(png);
  const kinds = new Set<string>();
  for (let seed = 0; seed < 300; seed++) {
    const mutated = mutateBinary(png, layout, new Random(seed));
    const kind = mutated.description.split(/[:=,(]/)[0].trim();
    kinds.add(kind);
    if (/^(bits flipped|bytes set)/.test(mutated.description)) {
      assert.deepEqual(mutated.bytes.subarray(0, 8), png.subarray(0, 8), mutated.description);
    }
  }
  for (const expected of ["another format's magic", "zeroed magic", "IHDR width"]) {
    assert.ok([...kinds].some((kind) => kind.startsWith(expected)), `${expected} in ${[...kinds]}`);
  }
  assert.deepEqual(png, encodePng(createImage(5, 3, 3)), "the seed itself is never changed");
});

Deno.test("JSON mutations write what JSON.stringify cannot: NaN, 1e999, deep nesting", () => {
  const document = new TextEncoder().encode(JSON.stringify({ shape: [2, 3], name: "w" }));
  const seen = new Map<string, string>();
  for (let seed = 0; seed < 400; seed++) {
    const mutated = mutateJson(document, new Random(seed));
    const text = new TextDecoder().decode(mutated.bytes);
    const kind = / = (NaN|1e999|nesting \d+ deep|an array of \d+)|removed|added/.exec(
      mutated.description,
    )?.[0];
    if (kind && !seen.has(kind)) seen.set(kind, text);
  }
  const example = (pattern: RegExp) =>
    [...seen].find(([kind]) => pattern.test(kind)) ?? assert.fail(`no ${pattern} in ${[...seen]}`);
  assert.match(example(/ = NaN/)[1], /[:,[]NaN[,\]}]/, "NaN as a bare word, not a string");
  assert.throws(() => JSON.parse(example(/ = NaN/)[1]), SyntaxError);
  // 1e999 is valid JSON, for Infinity.
  assert.match(example(/ = 1e999/)[1], /[:,[]1e999[,\]}]/);
  assert.ok(JSON.stringify(JSON.parse(example(/ = 1e999/)[1])).includes("null"));
  const [deep, deepText] = example(/nesting \d+ deep/);
  const depth = Number(/\d+/.exec(deep)![0]);
  assert.ok(deepText.includes("[".repeat(depth)) || deepText.includes('{"a":'.repeat(depth)));
  const [array, arrayText] = example(/an array of \d+/);
  assert.ok(arrayText.length > Number(/\d+/.exec(array)![0]));
  example(/removed/);
  example(/added/);
});

Deno.test("the JPEG layout finds the segments, the frame's sides and the entropy-coded data", async () => {
  const target = FUZZ_TARGETS.find((t) => t.name === "jpeg")!;
  const jpeg = (await target.seed()).get("image.jpg")!.bytes;
  const layout = jpegLayout(jpeg);
  const field = (what: string) => {
    const found = layout.fields.find((f) => f.what === what)!;
    return view(jpeg).getUint16(found.at);
  };
  assert.equal(field("frame width"), 16);
  assert.equal(field("frame height"), 12);
  // The data after the start-of-scan header runs to the end-of-image marker.
  assert.ok(layout.boundaries.includes(jpeg.length - 2));
  assert.deepEqual([...jpeg.subarray(jpeg.length - 2)], [0xff, 0xd9]);
});
