/**
 * Seeded mutation of PNG and JPEG files: every broken file must be refused with the project's own
 * InputError (an ImageFormatError naming the file), quickly, through each entry point the rest of
 * the project and the fuzzing harness use (parseImageHeader, decodeImage, decodeRgba, and
 * readImage / readImageHeader on a file).
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { join } from "node:path";
import { Image } from "imagescript";
import {
  decodeImage,
  decodeRgba,
  encodePng,
  type FloatImage,
  ImageFormatError,
  MAX_IMAGE_PIXELS,
  MAX_IMAGE_SIDE,
  parseImageHeader,
  readImage,
  readImageHeader,
} from "../../src/data/image.ts";
import { Random } from "../../src/data/random.ts";
import { isInputError } from "../../src/util/errors.ts";

/** Seconds any one case may take (the fuzzing bar of issue 15). */
const CASE_LIMIT_MS = 5000;

/** How a case mutates its base file. */
type MutationKind =
  | "bit flips"
  | "bit flips, CRCs fixed"
  | "truncation at a boundary"
  | "random bytes"
  | "huge or zero size"
  | "bad CRC"
  | "length outside the file"
  | "random file";

/** Kinds whose every case is broken for sure, so must be refused. */
const ALWAYS_REFUSED: ReadonlySet<MutationKind> = new Set<MutationKind>([
  "truncation at a boundary",
  "huge or zero size",
  "bad CRC",
  "length outside the file",
  "random file",
]);

interface Case {
  readonly kind: MutationKind;
  readonly bytes: Uint8Array;
}

interface Outcome {
  readonly kind: MutationKind;
  /** The message when refused, null when decoded. */
  readonly refusal: string | null;
}

function flipBits(random: Random, bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  const flips = random.int(1, 5);
  for (let i = 0; i < flips; i++) out[random.int(8, out.length)] ^= 1 << random.int(0, 8);
  return out;
}

function overwriteRandomBytes(random: Random, bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  const start = random.int(8, out.length);
  const end = Math.min(out.length, start + random.int(1, 33));
  for (let i = start; i < end; i++) out[i] = random.int(0, 256);
  return out;
}

/** Offsets where each PNG chunk starts (the signature's end included). */
function pngChunkStarts(png: Uint8Array): number[] {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const starts: number[] = [];
  for (let offset = 8; offset + 12 <= png.length; offset += 12 + view.getUint32(offset)) {
    starts.push(offset);
  }
  return starts;
}

/** Rewrites every chunk's CRC, so that a mutation reaches the decoding behind the CRC check. */
function fixChunkCrcs(png: Uint8Array): Uint8Array {
  const out = png.slice();
  const view = new DataView(out.buffer);
  for (const offset of pngChunkStarts(out)) {
    const length = view.getUint32(offset);
    if (offset + 12 + length > out.length) break;
    view.setUint32(offset + 8 + length, crc32(out.subarray(offset + 4, offset + 8 + length)));
  }
  return out;
}

/** Sizes that are zero or over {@link MAX_IMAGE_SIDE} / {@link MAX_IMAGE_PIXELS}. */
function hugeOrZeroSize(random: Random): [number, number] {
  const sides = [0, MAX_IMAGE_SIDE + 1, 100_000, 2 ** 31 - 1, 2 ** 32 - 1];
  // Squares over this side have too many pixels, though each side is within its limit.
  const areaSide = Math.ceil(Math.sqrt(MAX_IMAGE_PIXELS)) + 1;
  const [width, height] = random.chance(0.5)
    ? [random.pick(sides), random.int(1, 100)]
    : [areaSide + random.int(0, 40_000), areaSide + random.int(0, 40_000)];
  return random.chance(0.5) ? [width, height] : [height, width];
}

function pngCases(random: Random, base: Uint8Array, count: number): Case[] {
  const starts = pngChunkStarts(base);
  // Every chunk start, and a few bytes either side of it, in turn.
  const boundaries = starts.flatMap((s) => [s, s + 1, s + 4, s + 8, s - 1]).filter((s) =>
    s > 0 && s < base.length
  );
  const kinds: MutationKind[] = [
    "bit flips",
    "bit flips, CRCs fixed",
    "truncation at a boundary",
    "random bytes",
    "huge or zero size",
    "bad CRC",
    "length outside the file",
    "random file",
  ];
  return Array.from({ length: count }, (_, i): Case => {
    const kind = kinds[i % kinds.length];
    const view = (bytes: Uint8Array) => new DataView(bytes.buffer);
    switch (kind) {
      case "bit flips":
        return { kind, bytes: flipBits(random, base) };
      case "bit flips, CRCs fixed":
        return { kind, bytes: fixChunkCrcs(flipBits(random, base)) };
      case "truncation at a boundary":
        return {
          kind,
          bytes: base.slice(0, boundaries[Math.floor(i / kinds.length) % boundaries.length]),
        };
      case "random bytes": {
        const bytes = overwriteRandomBytes(random, base);
        return { kind, bytes: random.chance(0.5) ? fixChunkCrcs(bytes) : bytes };
      }
      case "huge or zero size": {
        const bytes = base.slice();
        const [width, height] = hugeOrZeroSize(random);
        view(bytes).setUint32(16, width);
        view(bytes).setUint32(20, height);
        return { kind, bytes: fixChunkCrcs(bytes) };
      }
      case "bad CRC": {
        const bytes = base.slice();
        const start = random.pick(starts);
        const crcAt = start + 8 + view(bytes).getUint32(start);
        bytes[crcAt + random.int(0, 4)] ^= 1 << random.int(0, 8);
        return { kind, bytes };
      }
      case "length outside the file": {
        const bytes = base.slice();
        const start = random.pick(starts);
        const length = random.chance(0.5)
          ? 2 ** 32 - 1 - random.int(0, 1000)
          : base.length + random.int(0, 1000);
        view(bytes).setUint32(start, length);
        return { kind, bytes };
      }
      case "random file": {
        const bytes = Uint8Array.from({ length: random.int(16, 200) }, () => random.int(0, 256));
        // The signature, and maybe the start of IHDR.
        bytes.set(base.subarray(0, random.chance(0.5) ? 8 : 16));
        return { kind, bytes };
      }
    }
  });
}

/** Offsets of a JPEG's segments, up to and including its first scan (SOS). */
function jpegSegmentStarts(jpeg: Uint8Array): number[] {
  const starts: number[] = [];
  let offset = 2;
  while (offset + 4 <= jpeg.length) {
    starts.push(offset);
    if (jpeg[offset + 1] === 0xda) break;
    offset += 2 + ((jpeg[offset + 2] << 8) | jpeg[offset + 3]);
  }
  return starts;
}

function jpegCases(random: Random, base: Uint8Array, count: number): Case[] {
  const starts = jpegSegmentStarts(base);
  const sof = starts.find((s) => base[s + 1] === 0xc0)!;
  const boundaries = [
    ...starts.flatMap((s) => [s, s + 1, s + 2, s + 4]),
    base.length - 2, // before EOI
    ...Array.from({ length: 8 }, (_, k) => starts.at(-1)! + 20 + k * 40), // inside the scan
  ].filter((s) => s > 0 && s < base.length);
  const kinds: MutationKind[] = [
    "bit flips",
    "truncation at a boundary",
    "random bytes",
    "huge or zero size",
    "length outside the file",
    "random file",
  ];
  return Array.from({ length: count }, (_, i): Case => {
    const kind = kinds[i % kinds.length];
    switch (kind) {
      case "truncation at a boundary":
        return {
          kind,
          bytes: base.slice(0, boundaries[Math.floor(i / kinds.length) % boundaries.length]),
        };
      case "huge or zero size": {
        // JPEG sizes are 16-bit: zero, or over the limit in area, or far more than the data holds.
        const bytes = base.slice();
        const sides = [0, 65535, 40_000 + random.int(0, 25_000), 4096 + random.int(0, 4096)];
        const [width, height] = [random.pick(sides), random.pick(sides)];
        bytes.set([height >> 8, height & 255, width >> 8, width & 255], sof + 5);
        return { kind, bytes };
      }
      case "length outside the file": {
        const bytes = base.slice();
        const start = random.pick(starts.slice(0, -1));
        const length = random.chance(0.5) ? random.int(0, 2) : random.int(base.length, 65536);
        bytes.set([length >> 8, length & 255], start + 2);
        return { kind, bytes };
      }
      case "random file": {
        const bytes = Uint8Array.from({ length: random.int(3, 300) }, () => random.int(0, 256));
        bytes.set([0xff, 0xd8, 0xff]);
        return { kind, bytes };
      }
      case "random bytes":
        return { kind, bytes: overwriteRandomBytes(random, base) };
      default:
        return { kind: "bit flips", bytes: flipBits(random, base) };
    }
  });
}

/**
 * Runs every case through each entry point; returns what happened. Anything thrown that is not an
 * InputError, or an ImageFormatError that does not name the file, or a case slower than the limit,
 * fails the test at once with the case's kind and index.
 */
async function runCases(cases: Case[], format: string, dir: string): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (const [index, { kind, bytes }] of cases.entries()) {
    const name = `${format}-case-${index}`;
    const path = join(dir, name);
    const started = performance.now();
    let refusal: string | null = null;
    const attempts: (() => unknown)[] = [
      () => parseImageHeader(bytes, name),
      () => decodeImage(bytes, name),
      () => decodeRgba(bytes, name),
    ];
    if (index % 10 === 0) {
      await Deno.writeFile(path, bytes);
      attempts.push(() => readImage(path), () => readImageHeader(path));
    }
    for (const attempt of attempts) {
      try {
        const result = await attempt();
        if (typeof result === "object" && result !== null && "data" in result) {
          // A file that decodes must decode to what its header says.
          const header = parseImageHeader(bytes, name);
          const image = result as FloatImage;
          assert.deepEqual([image.width, image.height], [header.width, header.height], name);
        }
      } catch (error) {
        const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        assert.ok(isInputError(error), `${format} case ${index} (${kind}) crashed: ${message}`);
        if (error instanceof ImageFormatError) {
          assert.ok(message.includes(name), `${format} case ${index}: "${message}" names no file`);
        }
        refusal ??= message;
      }
    }
    const elapsed = performance.now() - started;
    assert.ok(elapsed < CASE_LIMIT_MS, `${format} case ${index} (${kind}) took ${elapsed} ms`);
    outcomes.push({ kind, refusal });
  }
  return outcomes;
}

function assertBrokenOnesRefused(outcomes: Outcome[], format: string): void {
  const accepted = outcomes.flatMap((o, i) =>
    ALWAYS_REFUSED.has(o.kind) && o.refusal === null ? [`${i} (${o.kind})`] : []
  );
  assert.deepEqual(accepted, [], `${format} cases that are broken for sure but decoded`);
}

/** A base image with structure in it (gradients and noise), as cameras give. */
function testImage(random: Random, width: number, height: number, channels: 1 | 3): FloatImage {
  const data = Float32Array.from(
    { length: width * height * channels },
    (_, i) => (((i % width) / width) * 0.7 + random.next() * 0.3),
  );
  return { width, height, channels, data };
}

Deno.test("mutated PNGs: each failure an InputError naming the file, under 5 s", async () => {
  const random = new Random(2024);
  const gray = testImage(random, 23, 17, 1);
  const rgb = testImage(random, 23, 17, 3);
  const alpha = Float32Array.from({ length: 23 * 17 }, (_, i) => (i % 3) / 2);
  // 8 colours, each opaque or transparent: at most 16 entries, indexed with 4 bits.
  const binary: FloatImage = { ...rgb, data: rgb.data.map(Math.round) };
  const binaryAlpha = alpha.map(Math.round);
  const bases: [string, Uint8Array][] = [
    ["gray16-adam7", encodePng(gray, { bitDepth: 16, interlaced: true })],
    ["palette-trns", encodePng(binary, { colorType: "palette", alpha: binaryAlpha, bitDepth: 4 })],
    ["rgba8", encodePng(rgb, { alpha })],
    ["gray2", encodePng(gray, { bitDepth: 2 })],
  ];
  const dir = await Deno.makeTempDir();
  try {
    const outcomes: Outcome[] = [];
    for (const [label, base] of bases) {
      assert.equal((await decodeImage(base, label)).width, 23, `${label} decodes unmutated`);
      outcomes.push(...await runCases(pngCases(random, base, 100), `png-${label}`, dir));
    }
    assert.equal(outcomes.length, 400);
    assertBrokenOnesRefused(outcomes, "PNG");
    // The mutations reach past the chunk checks into the decoder (zlib, lengths, filters, sizes).
    const refusals = outcomes.flatMap((o) => o.refusal ?? []);
    for (
      const reason of [/CRC mismatch/, /zlib|inflates to/, /truncated/, /claims to be/, /not a PNG/]
    ) {
      assert.ok(refusals.some((r) => reason.test(r)), `no refusal says ${reason}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mutated JPEGs: each failure an InputError naming the file, under 5 s", async () => {
  const random = new Random(99);
  const image = new Image(40, 24);
  for (let y = 1; y <= 24; y++) {
    for (let x = 1; x <= 40; x++) {
      image.setPixelAt(x, y, Image.rgbaToColor(x * 6, y * 10, random.int(0, 256), 255));
    }
  }
  const base = await image.encodeJPEG(85);
  assert.equal((await decodeImage(base, "base.jpg")).width, 40);
  const dir = await Deno.makeTempDir();
  try {
    const outcomes = await runCases(jpegCases(random, base, 300), "jpeg", dir);
    assertBrokenOnesRefused(outcomes, "JPEG");
    const refusals = outcomes.flatMap((o) => o.refusal ?? []);
    for (
      const reason of [
        /no frame header/,
        /claims to be|\(zero\)/,
        /needs at least/,
        /not a PNG or JPEG|expected a marker/,
      ]
    ) {
      assert.ok(refusals.some((r) => reason.test(r)), `no refusal says ${reason}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
