/**
 * The PNG codec of src/data/image.ts: every format decodes exactly, the encoder's formats round
 * trip, and each kind of broken or hostile file is refused with an ImageFormatError that names it.
 *
 * Files to decode come from `referencePng`, a writer of its own here, written for plainness rather
 * than speed and sharing no code with the module (zlib and CRC-32 come from node:zlib), so that the
 * decoder is not checked against its own encoder's mistakes. It uses all five filter types in
 * turn and splits the data over two IDAT chunks.
 */

import assert from "node:assert/strict";
import { crc32, deflateSync } from "node:zlib";
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
  type PngBitDepth,
  type PngColorType,
  readImage,
  readImageHeader,
} from "../../src/data/image.ts";
import { Random } from "../../src/data/random.ts";
import { InputError } from "../../src/util/errors.ts";

const SAMPLES_PER_PIXEL: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

interface ReferencePng {
  width: number;
  height: number;
  colorType: number;
  bitDepth: number;
  interlaced?: boolean;
  /** Interleaved samples, `SAMPLES_PER_PIXEL[colorType]` per pixel (palette indices for type 3). */
  samples: number[];
  /** PLTE bytes. */
  palette?: number[];
  /** tRNS bytes. */
  transparency?: number[];
  /** Extra chunks written before the IDAT chunks. */
  extraChunks?: [string, Uint8Array][];
  /** Replaces the scanline bytes before compression (to make them too short or too long). */
  editRaw?: (raw: number[]) => number[];
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const body = new Uint8Array([...new TextEncoder().encode(type), ...data]);
  const out = new Uint8Array(body.length + 8);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(body, 4);
  view.setUint32(4 + body.length, crc32(body));
  return out;
}

function ihdr(
  width: number,
  height: number,
  bitDepth: number,
  colorType: number,
  methods = [0, 0, 0],
): Uint8Array {
  const data = new Uint8Array(13);
  const view = new DataView(data.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  data.set([bitDepth, colorType, ...methods], 8);
  return chunk("IHDR", data);
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function pngFile(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array([...SIGNATURE, ...chunks.flatMap((c) => [...c])]);
}

/** The bytes of one row of samples, packed to the bit depth from the most significant bit. */
function packRow(samples: number[], bitDepth: number): number[] {
  if (bitDepth === 16) return samples.flatMap((s) => [s >> 8, s & 255]);
  if (bitDepth === 8) return samples;
  const bytes = new Array(Math.ceil((samples.length * bitDepth) / 8)).fill(0);
  samples.forEach((s, i) => {
    const bit = i * bitDepth;
    bytes[Math.floor(bit / 8)] |= s << (8 - bitDepth - (bit % 8));
  });
  return bytes;
}

function paethPredictor(a: number, b: number, c: number): number {
  const p = a + b - c;
  const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}

/** Filters rows of bytes with filter type (row + first) mod 5, as the specification defines. */
function filterRows(rows: number[][], bytesPerPixel: number, first: number): number[] {
  const out: number[] = [];
  rows.forEach((row, y) => {
    const type = (y + first) % 5;
    const above = y > 0 ? rows[y - 1] : row.map(() => 0);
    out.push(type);
    row.forEach((value, i) => {
      const a = i >= bytesPerPixel ? row[i - bytesPerPixel] : 0;
      const b = above[i];
      const c = i >= bytesPerPixel ? above[i - bytesPerPixel] : 0;
      const predictor = [0, a, b, Math.floor((a + b) / 2), paethPredictor(a, b, c)][type];
      out.push((value - predictor) & 255);
    });
  });
  return out;
}

const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

function referencePng(spec: ReferencePng): Uint8Array {
  const { width, height, colorType, bitDepth } = spec;
  const perPixel = SAMPLES_PER_PIXEL[colorType];
  const bytesPerPixel = Math.max(1, (perPixel * bitDepth) / 8);
  const pixel = (x: number, y: number) =>
    spec.samples.slice((y * width + x) * perPixel, (y * width + x + 1) * perPixel);
  const passes = spec.interlaced ? ADAM7 : [[0, 0, 1, 1]];
  let raw: number[] = [];
  passes.forEach(([x0, y0, dx, dy], pass) => {
    const rows: number[][] = [];
    for (let y = y0; y < height; y += dy) {
      const samples: number[] = [];
      for (let x = x0; x < width; x += dx) samples.push(...pixel(x, y));
      if (samples.length > 0) rows.push(packRow(samples, bitDepth));
    }
    raw = raw.concat(filterRows(rows, bytesPerPixel, pass));
  });
  if (spec.editRaw) raw = spec.editRaw(raw);
  const zlib = new Uint8Array(deflateSync(new Uint8Array(raw)));
  const half = Math.floor(zlib.length / 2);
  return pngFile([
    ihdr(width, height, bitDepth, colorType, [0, 0, spec.interlaced ? 1 : 0]),
    ...(spec.palette ? [chunk("PLTE", new Uint8Array(spec.palette))] : []),
    ...(spec.transparency ? [chunk("tRNS", new Uint8Array(spec.transparency))] : []),
    ...(spec.extraChunks ?? []).map(([type, data]) => chunk(type, data)),
    chunk("IDAT", zlib.subarray(0, half)),
    chunk("IDAT", zlib.subarray(half)),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

/** Every colour type with every bit depth PNG allows for it. */
const FORMATS: { colorType: number; bitDepth: number }[] = [
  ...[1, 2, 4, 8, 16].map((bitDepth) => ({ colorType: 0, bitDepth })),
  ...[8, 16].map((bitDepth) => ({ colorType: 2, bitDepth })),
  ...[1, 2, 4, 8].map((bitDepth) => ({ colorType: 3, bitDepth })),
  ...[8, 16].map((bitDepth) => ({ colorType: 4, bitDepth })),
  ...[8, 16].map((bitDepth) => ({ colorType: 6, bitDepth })),
];

/** What a PNG must decode to, computed from its samples by the specification's rules. */
function expectedPixels(spec: ReferencePng) {
  const { colorType, bitDepth, samples, palette, transparency } = spec;
  const perPixel = SAMPLES_PER_PIXEL[colorType];
  const max = 2 ** bitDepth - 1;
  const pixels = spec.width * spec.height;
  const planes: number[][] = [];
  const rgba: number[] = [];
  for (let p = 0; p < pixels; p++) {
    const s = samples.slice(p * perPixel, (p + 1) * perPixel);
    let color: number[]; // float planes
    let color8: number[];
    let alpha = 255;
    if (colorType === 3) {
      color8 = palette!.slice(3 * s[0], 3 * s[0] + 3);
      color = color8.map((v) => v / 255);
      alpha = transparency?.[s[0]] ?? 255;
    } else {
      const colorSamples = colorType === 0 || colorType === 4 ? 1 : 3;
      color = s.slice(0, colorSamples).map((v) => v / max);
      const scaled = s.map((v) => Math.round((v * 255) / max));
      color8 = colorSamples === 1 ? [scaled[0], scaled[0], scaled[0]] : scaled.slice(0, 3);
      if (perPixel > colorSamples) alpha = scaled[colorSamples];
      if (transparency) {
        const key = Array.from(
          { length: colorSamples },
          (_, i) => transparency[2 * i] * 256 + transparency[2 * i + 1],
        );
        if (key.every((k, i) => k === s[i])) alpha = 0;
      }
    }
    color.forEach((v, c) => (planes[c] ??= []).push(v));
    rgba.push(...color8, alpha);
  }
  return { channels: planes.length, floats: planes.flat(), rgba };
}

function randomSpec(
  random: Random,
  format: { colorType: number; bitDepth: number },
  width: number,
  height: number,
  interlaced: boolean,
  withTransparency: boolean,
): ReferencePng {
  const { colorType, bitDepth } = format;
  const perPixel = SAMPLES_PER_PIXEL[colorType];
  const entries = colorType === 3 ? Math.min(2 ** bitDepth, 200) : 0;
  const top = colorType === 3 ? entries : 2 ** bitDepth;
  // The extremes 0 and max appear on purpose; the rest is random.
  const samples = Array.from(
    { length: width * height * perPixel },
    (_, i) => i < perPixel ? 0 : i < 2 * perPixel ? top - 1 : random.int(0, top),
  );
  const spec: ReferencePng = { width, height, colorType, bitDepth, interlaced, samples };
  if (colorType === 3) {
    spec.palette = Array.from({ length: 3 * entries }, () => random.int(0, 256));
    if (withTransparency) {
      spec.transparency = Array.from({ length: Math.ceil(entries / 2) }, () => random.int(0, 256));
    }
  } else if (withTransparency && (colorType === 0 || colorType === 2)) {
    // The key is the first pixel's colour, so that some pixels match it.
    spec.transparency = samples.slice(0, perPixel).flatMap((s) => [s >> 8, s & 255]);
  }
  return spec;
}

Deno.test("every PNG colour type and bit depth decodes exactly, interlaced or not", async () => {
  const random = new Random(15);
  let files = 0;
  for (const format of FORMATS) {
    for (const [width, height] of [[13, 11], [1, 1], [3, 9], [10, 2]]) {
      for (const interlaced of [false, true]) {
        for (const withTransparency of [false, true]) {
          if (withTransparency && (format.colorType === 4 || format.colorType === 6)) continue;
          const spec = randomSpec(random, format, width, height, interlaced, withTransparency);
          const png = referencePng(spec);
          const label = `type ${format.colorType}, ${format.bitDepth} bits, ${width}x${height}` +
            `${interlaced ? ", interlaced" : ""}${withTransparency ? ", tRNS" : ""}`;
          const expected = expectedPixels(spec);
          assert.equal(parseImageHeader(png, label).channels, expected.channels, label);
          const image = await decodeImage(png, label);
          assert.deepEqual(
            [image.width, image.height, image.channels],
            [width, height, expected.channels],
            label,
          );
          const wrong = expected.floats.findIndex((v, i) => image.data[i] !== Math.fround(v));
          assert.equal(wrong, -1, `${label}: value ${wrong} is ${image.data[wrong]}`);
          const picture = await decodeRgba(png, label);
          assert.deepEqual(Array.from(picture.data), expected.rgba, label);
          files++;
        }
      }
    }
  }
  // 15 formats, 11 of them also with tRNS; 4 sizes; interlaced or not.
  assert.equal(files, (15 + 11) * 4 * 2);
});

Deno.test("16-bit samples keep their precision: s maps to s / 65535, not to 8 bits", async () => {
  const samples = [0, 1, 255, 256, 257, 32768, 65534, 65535];
  for (const [colorType, perPixel] of [[0, 1], [4, 2], [2, 3], [6, 4]]) {
    const spec = {
      width: samples.length,
      height: 1,
      colorType,
      bitDepth: 16,
      samples: samples.flatMap((s) => new Array(perPixel).fill(s)),
    };
    const image = await decodeImage(referencePng(spec), "deep.png");
    assert.deepEqual(
      Array.from(image.data.subarray(0, samples.length)),
      samples.map((s) => Math.fround(s / 65535)),
    );
    // 1 and 256 are distinct at 16 bits; truncating to 8 bits would merge 0 and 1.
    assert.notEqual(image.data[0], image.data[1]);
  }
});

Deno.test("alpha is ignored: a transparent pixel keeps its stored colour", async () => {
  // Pixel 0 is opaque, pixel 1 fully transparent, pixel 2 half transparent.
  const grayAlpha = referencePng({
    width: 3,
    height: 1,
    colorType: 4,
    bitDepth: 8,
    samples: [10, 255, 200, 0, 90, 128],
  });
  const gray = await decodeImage(grayAlpha, "ga.png");
  assert.equal(gray.channels, 1, "gray with alpha is a 1-channel image");
  assert.deepEqual(Array.from(gray.data), [10, 200, 90].map((v) => Math.fround(v / 255)));
  assert.deepEqual(
    Array.from((await decodeRgba(grayAlpha, "ga.png")).data),
    [10, 10, 10, 255, 200, 200, 200, 0, 90, 90, 90, 128],
  );
  const rgba = referencePng({
    width: 1,
    height: 1,
    colorType: 6,
    bitDepth: 16,
    samples: [65535, 0, 257, 0],
  });
  assert.deepEqual(
    Array.from((await decodeImage(rgba, "rgba.png")).data),
    [1, 0, 257 / 65535].map(Math.fround),
  );
  // A grayscale tRNS colour is transparent in the picture, and its stored value in the image.
  const keyed = referencePng({
    width: 2,
    height: 1,
    colorType: 0,
    bitDepth: 8,
    samples: [7, 8],
    transparency: [0, 7],
  });
  assert.deepEqual(
    Array.from((await decodeImage(keyed, "key.png")).data),
    [7 / 255, 8 / 255].map(Math.fround),
  );
  assert.deepEqual(Array.from((await decodeRgba(keyed, "key.png")).data), [
    7,
    7,
    7,
    0,
    8,
    8,
    8,
    255,
  ]);
});

Deno.test("requested channels: colour to BT.601 luma of the samples, gray copied", async () => {
  const spec = {
    width: 2,
    height: 1,
    colorType: 2,
    bitDepth: 16,
    samples: [65535, 0, 0, 100, 200, 300],
  };
  const luma = await decodeImage(referencePng(spec), "rgb16.png", 1);
  assert.deepEqual(
    Array.from(luma.data),
    [0.299, (0.299 * 100 + 0.587 * 200 + 0.114 * 300) / 65535].map(Math.fround),
  );
  const palette = referencePng({
    width: 2,
    height: 1,
    colorType: 3,
    bitDepth: 1,
    samples: [1, 0],
    palette: [0, 0, 0, 255, 255, 255],
  });
  assert.deepEqual(Array.from((await decodeImage(palette, "p.png", 1)).data), [1, 0]);
  const gray = referencePng({ width: 2, height: 1, colorType: 0, bitDepth: 2, samples: [1, 3] });
  const rgb = await decodeImage(gray, "g2.png", 3);
  assert.deepEqual(Array.from(rgb.data), [1 / 3, 1, 1 / 3, 1, 1 / 3, 1].map(Math.fround));
  await assert.rejects(() => decodeImage(gray, "g2.png", 2 as 1), /channels must be 1 or 3/);
});

/** A float image whose values sit exactly on the levels of `bitDepth`. */
function levelImage(
  random: Random,
  width: number,
  height: number,
  channels: 1 | 3,
  bitDepth: number,
): FloatImage {
  const max = 2 ** bitDepth - 1;
  const data = Float32Array.from(
    { length: width * height * channels },
    () => random.int(0, max + 1) / max,
  );
  return { width, height, channels, data };
}

Deno.test("every encoder format decodes back to its source, 16 bits exactly", async () => {
  const random = new Random(7);
  const cases: { colorType: PngColorType; bitDepth: PngBitDepth; channels: 1 | 3; code: number }[] =
    [
      ...([1, 2, 4, 8, 16] as const).map((bitDepth) => ({
        colorType: "gray" as const,
        bitDepth,
        channels: 1 as const,
        code: 0,
      })),
      ...([8, 16] as const).map((bitDepth) => ({
        colorType: "rgb" as const,
        bitDepth,
        channels: 3 as const,
        code: 2,
      })),
      ...([8, 16] as const).map((bitDepth) => ({
        colorType: "gray-alpha" as const,
        bitDepth,
        channels: 1 as const,
        code: 4,
      })),
      ...([8, 16] as const).map((bitDepth) => ({
        colorType: "rgba" as const,
        bitDepth,
        channels: 3 as const,
        code: 6,
      })),
    ];
  for (const { colorType, bitDepth, channels, code } of cases) {
    for (const interlaced of [false, true]) {
      const image = levelImage(random, 17, 10, channels, bitDepth);
      const withAlpha = colorType === "gray-alpha" || colorType === "rgba";
      const alpha = withAlpha
        ? Float32Array.from({ length: 170 }, (_, i) => (i % 5) / 4)
        : undefined;
      const png = encodePng(image, { colorType, bitDepth, interlaced, alpha });
      const label = `${colorType} ${bitDepth} bits${interlaced ? " interlaced" : ""}`;
      assert.deepEqual([png[24], png[25], png[28]], [bitDepth, code, interlaced ? 1 : 0], label);
      const back = await decodeImage(png, label);
      assert.equal(back.channels, channels, label);
      assert.deepEqual(back.data, image.data, label);
      if (alpha) {
        const picture = await decodeRgba(png, label);
        const alphas = Array.from({ length: 170 }, (_, p) => picture.data[4 * p + 3]);
        assert.deepEqual(alphas, Array.from(alpha, (a) => Math.round(a * 255)), label);
      }
    }
  }
});

Deno.test("palette PNGs: smallest depth for the colours, tRNS from alpha, exact", async () => {
  const random = new Random(3);
  for (const [colors, depth] of [[2, 1], [3, 2], [16, 4], [17, 8], [256, 8]]) {
    const levels = Array.from({ length: colors }, (_, i) => i / 255);
    const rgb: FloatImage = {
      width: 20,
      height: 13,
      channels: 3,
      // Colour i is (i, 255 - i, i) / 255; each appears at least once.
      data: (() => {
        const index = Array.from({ length: 260 }, (_, p) => p < colors ? p : random.int(0, colors));
        const data = new Float32Array(3 * 260);
        index.forEach((i, p) => {
          data[p] = levels[i];
          data[260 + p] = (255 - i) / 255;
          data[520 + p] = levels[i];
        });
        return data;
      })(),
    };
    for (const interlaced of [false, true]) {
      const png = encodePng(rgb, { colorType: "palette", interlaced });
      assert.deepEqual([png[24], png[25]], [depth, 3], `${colors} colours`);
      assert.deepEqual((await decodeImage(png, "p.png")).data, rgb.data, `${colors} colours`);
    }
  }
  // A grayscale image as a palette, with alpha: tRNS holds the alphas, the image the colours.
  const gray: FloatImage = {
    width: 4,
    height: 1,
    channels: 1,
    data: Float32Array.from([0, 1, 0, 1]),
  };
  const alpha = Float32Array.from([1, 1, 0, 128 / 255]);
  const png = encodePng(gray, { colorType: "palette", alpha, bitDepth: 8 });
  assert.equal(png[24], 8);
  const back = await decodeImage(png, "gp.png");
  assert.equal(back.channels, 3, "a palette PNG is a 3-channel image");
  assert.deepEqual(Array.from(back.data), [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
  assert.deepEqual(
    Array.from((await decodeRgba(png, "gp.png")).data),
    [0, 0, 0, 255, 255, 255, 255, 255, 0, 0, 0, 0, 255, 255, 255, 128],
  );
});

Deno.test("encodePng refuses options that do not fit the image", () => {
  const gray: FloatImage = {
    width: 2,
    height: 2,
    channels: 1,
    data: Float32Array.from([0, 0.2, 0.4, 1]),
  };
  const rgb: FloatImage = { width: 2, height: 2, channels: 3, data: new Float32Array(12) };
  assert.throws(
    () => encodePng(gray, { colorType: "rgb" }),
    /"rgb" needs a 3-channel image, got 1/,
  );
  assert.throws(
    () => encodePng(rgb, { colorType: "gray-alpha" }),
    /needs a 1-channel image, got 3/,
  );
  assert.throws(
    () => encodePng(rgb, { bitDepth: 4 }),
    /bit depth 4 is not allowed for colorType "rgb"/,
  );
  assert.throws(() => encodePng(gray, { colorType: "palette", bitDepth: 16 }), /bit depth 16/);
  assert.throws(
    () => encodePng(gray, { alpha: new Float32Array(4), colorType: "gray" }),
    /no alpha/,
  );
  assert.throws(
    () => encodePng(gray, { alpha: new Float32Array(3) }),
    /alpha has 3 values, expected 2x2/,
  );
  assert.throws(
    () => encodePng(gray, { colorType: "palette", bitDepth: 1 }),
    /4 colours do not fit a palette of bit depth 1/,
  );
  const many: FloatImage = { width: 300, height: 1, channels: 3, data: new Float32Array(900) };
  for (let i = 0; i < 300; i++) {
    [many.data[i], many.data[300 + i]] = [(i % 256) / 255, (i >> 8) / 255];
  }
  assert.throws(() => encodePng(many, { colorType: "palette" }), /more than 256 colours/);
  assert.throws(
    () => encodePng(gray, { colorType: "cmyk" as "rgb" }),
    /colorType "cmyk" is not one of/,
  );
  const picture = { width: 1, height: 1, data: new Uint8Array(4) };
  assert.throws(() => encodePng(picture, { bitDepth: 16 }), /always stored as 8-bit RGBA/);
  // A number alone is the zlib level, as before: its stream header says so (byte 41 starts IDAT).
  assert.deepEqual([...encodePng(gray, 0).subarray(41, 43)], [0x78, 0x01]);
  assert.deepEqual([...encodePng(gray, { compressionLevel: 9 }).subarray(41, 43)], [0x78, 0xda]);
});

/** Asserts that `action` rejects with an ImageFormatError whose message matches every pattern. */
async function assertImageError(
  action: () => unknown,
  ...patterns: RegExp[]
): Promise<void> {
  await assert.rejects(async () => await action(), (error: Error) => {
    assert.ok(error instanceof ImageFormatError, `${error.name}: ${error.message}`);
    assert.ok(error instanceof InputError);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("a header claiming a huge image is refused before any allocation", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const [width, height] of [[100_000, 100_000], [MAX_IMAGE_SIDE + 1, 1], [20_000, 20_000]]) {
      // A complete, valid file around the header: only the size is wrong, and the error must be
      // the size's, not the inflated data's length (which would mean it got that far).
      const png = pngFile([
        ihdr(width, height, 8, 0),
        chunk("IDAT", new Uint8Array(deflateSync(new Uint8Array(10)))),
        chunk("IEND", new Uint8Array(0)),
      ]);
      const claim = new RegExp(`huge\\.png" claims to be ${width}x${height} pixels`);
      const limit = new RegExp(`${MAX_IMAGE_SIDE} pixels per side and ${MAX_IMAGE_PIXELS} pixels`);
      await assertImageError(() => parseImageHeader(png.subarray(0, 33), "huge.png"), claim, limit);
      await assertImageError(() => decodeImage(png, "huge.png"), claim, limit);
      await assertImageError(() => decodeRgba(png, "huge.png"), claim);
      const path = join(dir, "huge.png");
      await Deno.writeFile(path, png);
      await assertImageError(() => readImageHeader(path), claim);
      await assertImageError(() => readImage(path), claim);
    }
    // At the limits exactly, the header is accepted.
    const widest = pngFile([ihdr(MAX_IMAGE_SIDE, 1, 8, 0)]);
    assert.equal(parseImageHeader(widest, "wide.png").width, MAX_IMAGE_SIDE);
    const side = Math.sqrt(MAX_IMAGE_PIXELS);
    assert.equal(parseImageHeader(pngFile([ihdr(side, side, 1, 0)]), "big.png").height, side);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bit depths and colour types that PNG forbids are refused", async () => {
  const allowed: Record<number, number[]> = {
    0: [1, 2, 4, 8, 16],
    2: [8, 16],
    3: [1, 2, 4, 8],
    4: [8, 16],
    6: [8, 16],
  };
  let refused = 0;
  for (const colorType of [0, 1, 2, 3, 4, 5, 6, 7]) {
    for (const bitDepth of [0, 1, 2, 3, 4, 8, 12, 16, 32]) {
      if (allowed[colorType]?.includes(bitDepth)) continue;
      const header = pngFile([ihdr(4, 4, bitDepth, colorType)]);
      const expected = allowed[colorType]
        ? new RegExp(
          `bit depth ${bitDepth} is not allowed for colour type ${colorType} .*expected ${
            allowed[colorType].join(", ")
          }`,
        )
        : new RegExp(`colour type ${colorType} does not exist \\(expected 0, 2, 3, 4 or 6\\)`);
      await assertImageError(() => parseImageHeader(header, "combo.png"), /combo\.png/, expected);
      refused++;
    }
  }
  assert.equal(refused, 8 * 9 - 15);
  for (const methods of [[1, 0, 0], [0, 1, 0], [0, 0, 2]]) {
    await assertImageError(
      () => parseImageHeader(pngFile([ihdr(4, 4, 8, 0, methods)]), "m.png"),
      new RegExp(
        `compression method ${methods[0]}, filter method ${methods[1]} and interlace method ${
          methods[2]
        }; expected 0, 0 and 0 or 1`,
      ),
    );
  }
  await assertImageError(
    () => parseImageHeader(pngFile([ihdr(0, 4, 8, 0)]), "z.png"),
    /z\.png.*0x4 \(zero\)/,
  );
});

Deno.test("damaged PNGs: CRC, data of the wrong length, palette index, filter", async () => {
  const base: ReferencePng = {
    width: 4,
    height: 3,
    colorType: 0,
    bitDepth: 8,
    samples: new Array(12).fill(9),
  };
  const good = referencePng(base);
  assert.equal((await decodeImage(good, "good.png")).width, 4);
  // A changed byte inside IDAT's data no longer matches its CRC.
  const idat = good.findIndex((_, i) => String.fromCharCode(...good.subarray(i, i + 4)) === "IDAT");
  const flipped = good.slice();
  flipped[idat + 6] ^= 0x10;
  await assertImageError(
    () => decodeImage(flipped, "crc.png"),
    /crc\.png/,
    /CRC mismatch in chunk IDAT at byte 33/,
  );
  const headerFlipped = good.slice();
  headerFlipped[20] ^= 1; // inside IHDR
  await assertImageError(
    () => parseImageHeader(headerFlipped, "h.png"),
    /CRC mismatch in chunk IHDR/,
  );
  // Scanlines one byte short and one byte long, each a valid zlib stream.
  await assertImageError(
    () => decodeImage(referencePng({ ...base, editRaw: (raw) => raw.slice(1) }), "short.png"),
    /short\.png.*inflates to 14 bytes, expected 15/,
  );
  await assertImageError(
    () => decodeImage(referencePng({ ...base, editRaw: (raw) => [...raw, 0] }), "long.png"),
    /long\.png.*inflates to more than the 15 bytes/,
  );
  const palette = {
    ...base,
    colorType: 3,
    palette: [0, 0, 0, 9, 9, 9],
    samples: [...new Array(11).fill(1), 5],
  };
  await assertImageError(
    () => decodeImage(referencePng(palette), "pal.png"),
    /pal\.png.*palette index 5 in row 2, but its palette has only 2 entries/,
  );
  await assertImageError(() => decodeRgba(referencePng(palette), "pal.png"), /palette index 5/);
  const badFilter = referencePng({
    ...base,
    editRaw: (raw) => raw.map((v, i) => (i === 5 ? 5 : v)),
  });
  await assertImageError(
    () => decodeImage(badFilter, "f.png"),
    /f\.png.*filter type 5 in row 1 \(expected 0 to 4\)/,
  );
  const badFilterInterlaced = referencePng({
    ...base,
    interlaced: true,
    editRaw: (raw) => [9, ...raw.slice(1)],
  });
  await assertImageError(
    () => decodeImage(badFilterInterlaced, "fi.png"),
    /filter type 9 in row 0 of interlace pass 1/,
  );
});

Deno.test("PNG chunk structure: truncation, missing and unknown chunks", async () => {
  const base: ReferencePng = {
    width: 2,
    height: 2,
    colorType: 3,
    bitDepth: 8,
    samples: [0, 1, 1, 0],
    palette: [0, 0, 0, 255, 255, 255],
  };
  const good = referencePng(base);
  assert.equal((await decodeImage(good, "ok.png")).channels, 3);
  await assertImageError(
    () => decodeImage(good.subarray(0, good.length - 12), "cut.png"),
    /cut\.png.*no IEND chunk/,
  );
  await assertImageError(
    () => decodeImage(good.subarray(0, good.length - 20), "cut.png"),
    /truncated inside chunk IDAT/,
  );
  await assertImageError(
    () => decodeImage(good.subarray(0, 20), "cut.png"),
    /truncated at 20 bytes, inside its IHDR header \(33 needed\)/,
  );
  await assertImageError(
    () => decodeImage(referencePng({ ...base, palette: undefined }), "np.png"),
    /a palette image without a PLTE chunk/,
  );
  await assertImageError(
    () => decodeImage(referencePng({ ...base, palette: [1, 2, 3, 4] }), "pl.png"),
    /PLTE has 4 bytes; expected 3 per entry/,
  );
  await assertImageError(
    () => decodeImage(referencePng({ ...base, transparency: [1, 2, 3] }), "t.png"),
    /tRNS gives 3 alpha values for a palette of 2 entries/,
  );
  const grayKey = {
    width: 1,
    height: 1,
    colorType: 0,
    bitDepth: 8,
    samples: [0],
    transparency: [0, 0, 0],
  };
  await assertImageError(
    () => decodeImage(referencePng(grayKey), "t.png"),
    /tRNS of a grayscale image has 3 bytes; expected 2/,
  );
  // Unknown ancillary chunks are skipped; an unknown critical one cannot be.
  const ancillary = referencePng({ ...base, extraChunks: [["vpAg", new Uint8Array(9)]] });
  assert.deepEqual(
    (await decodeImage(ancillary, "a.png")).data,
    (await decodeImage(good, "ok.png")).data,
  );
  await assertImageError(
    () =>
      decodeImage(
        referencePng({ ...base, extraChunks: [["CgBI", new Uint8Array(4)]] }),
        "apple.png",
      ),
    /apple\.png.*unknown critical chunk CgBI/,
  );
  await assertImageError(
    () =>
      decodeImage(
        referencePng({ ...base, extraChunks: [["IHDR", new Uint8Array(13)]] }),
        "two.png",
      ),
    /second IHDR chunk/,
  );
  await assertImageError(
    () =>
      decodeImage(
        referencePng({ ...base, extraChunks: [["a\u0000cd", new Uint8Array(0)]] }),
        "bad.png",
      ),
    /no valid chunk at byte/,
  );
  const noData = pngFile([ihdr(1, 1, 8, 0), chunk("IEND", new Uint8Array(0))]);
  await assertImageError(() => decodeImage(noData, "empty.png"), /no image data \(IDAT chunk\)/);
  // A zlib header followed by a deflate block of the reserved type 3, with the CRC made right.
  const garbage = good.slice();
  const idat = good.findIndex((_, i) => String.fromCharCode(...good.subarray(i, i + 4)) === "IDAT");
  garbage.set([0x78, 0x9c, 0xff, 0xff], idat + 4);
  const fixedCrc = fixChunkCrcs(garbage);
  await assertImageError(
    () => decodeImage(fixedCrc, "zlib.png"),
    /zlib\.png.*damaged image data \(zlib/,
  );
});

/** Rewrites every chunk's CRC, so that a mutation reaches the parts of the decoder behind it. */
function fixChunkCrcs(png: Uint8Array): Uint8Array {
  const out = png.slice();
  const view = new DataView(out.buffer);
  let offset = 8;
  while (offset + 12 <= out.length) {
    const length = view.getUint32(offset);
    if (offset + 12 + length > out.length) break;
    view.setUint32(offset + 8 + length, crc32(out.subarray(offset + 4, offset + 8 + length)));
    offset += 12 + length;
  }
  return out;
}

Deno.test("JPEG: truncated, zero-size or oversized frames are refused", async () => {
  const image = new Image(32, 16);
  image.fill(0x4080c0ff);
  const jpeg = await image.encodeJPEG(90);
  assert.deepEqual(parseImageHeader(jpeg, "ok.jpg"), {
    format: "jpeg",
    width: 32,
    height: 16,
    channels: 3,
  });
  // Cut at every segment boundary, and inside the scan data and before the end marker.
  const cuts = [2, jpeg.length - 2, jpeg.length - 1, Math.floor(jpeg.length * 0.8)];
  for (let offset = 2; offset < jpeg.length && jpeg[offset + 1] !== 0xda;) {
    offset += 2 + ((jpeg[offset + 2] << 8) | jpeg[offset + 3]);
    cuts.push(offset);
  }
  for (const cut of cuts) {
    await assertImageError(() => decodeImage(jpeg.subarray(0, cut), "cut.jpg"), /cut\.jpg/);
  }
  const sof = jpeg.findIndex((v, i) => v === 0xff && jpeg[i + 1] === 0xc0);
  const withSize = (width: number, height: number) => {
    const edited = jpeg.slice();
    edited.set([height >> 8, height & 255, width >> 8, width & 255], sof + 5);
    return edited;
  };
  await assertImageError(
    () => decodeImage(withSize(0, 16), "zero.jpg"),
    /zero\.jpg.*0x16 \(zero\)/,
  );
  await assertImageError(
    () => parseImageHeader(withSize(65535, 65535), "huge.jpg"),
    /JPEG "huge\.jpg" claims to be 65535x65535 pixels, over the limit/,
  );
  // A size within the limits that the file is far too short for (its decoder would make up the
  // missing pixels): 3,000 x 4,000 needs at least one bit per 8x8 block, 23,438 bytes.
  await assertImageError(
    () => decodeImage(withSize(4000, 3000), "lie.jpg"),
    new RegExp(
      `lie\\.jpg.*4000x3000, which needs at least 23438 bytes .*the file has ${jpeg.length}`,
    ),
  );
  const badLength = jpeg.slice();
  badLength.set([0, 1], 4); // APP0 length 1
  await assertImageError(
    () => parseImageHeader(badLength, "len.jpg"),
    /segment at byte 2 has length 1/,
  );
});
