import assert from "node:assert/strict";
import { join } from "node:path";
import { Image } from "imagescript";
import {
  createImage,
  createRgbaImage,
  decodeImage,
  decodeRgba,
  encodePng,
  type FloatImage,
  ImageFormatError,
  parseImageHeader,
  readImage,
  readImageHeader,
  resize,
  resizePlane,
  toGrayscale,
  toRgb,
  writePng,
} from "../../src/data/image.ts";
import { writeFileAtomic } from "../../src/util/fs.ts";
import { InputError } from "../../src/util/errors.ts";

function gray(width: number, height: number, values: number[]): FloatImage {
  const image = createImage(width, height, 1);
  image.data.set(values);
  return image;
}

function assertClose(actual: ArrayLike<number>, expected: number[], tolerance = 1e-6): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tolerance,
      `index ${i}: ${actual[i]} != ${expected[i]}`,
    );
  }
}

Deno.test("bilinear upsampling 2x2 -> 4x4 matches the hand-computed align_corners=false result", () => {
  // Output x maps to source (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped to
  // 0, 0.25, 0.75, 1 (the last clamps to column 1): weights [1,0], [.75,.25], [.25,.75], [0,1].
  const out = resize(gray(2, 2, [0, 1, 2, 3]), 4, 4, "bilinear");
  const row0 = [0, 0.25, 0.75, 1];
  const row1 = row0.map((v) => v + 0.5); // 0.75 * row0 + 0.25 * (row0 + 2)
  const row2 = row0.map((v) => v + 1.5);
  const row3 = row0.map((v) => v + 2);
  assertClose(out.data, [...row0, ...row1, ...row2, ...row3]);
});

Deno.test("resize by exactly 2x averages 2x2 blocks; by more than 2x auto switches to area", () => {
  const values = Array.from({ length: 36 }, (_, i) => i);
  const six = gray(6, 6, values);
  // 6 -> 2 is a 3x shrink: area averaging gives the exact mean of each 3x3 block.
  const blockMean = (bx: number, by: number) => {
    let sum = 0;
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 3; x++) sum += values[(by * 3 + y) * 6 + bx * 3 + x];
    }
    return sum / 9;
  };
  const area = resize(six, 2, 2);
  assertClose(
    area.data,
    [blockMean(0, 0), blockMean(1, 0), blockMean(0, 1), blockMean(1, 1)],
    1e-4,
  );
  assertClose(resize(six, 2, 2, "area").data, Array.from(area.data), 1e-6);
  // Plain bilinear at 3x reads exactly the block centres (source index (o + 0.5) * 3 - 0.5 = 1, 4).
  // On a checkerboard that aliases to full-contrast pixels, where area averaging gives ~gray.
  const checker = gray(6, 6, values.map((_, i) => ((i % 6) + Math.floor(i / 6)) % 2));
  assertClose(resize(checker, 2, 2, "bilinear").data, [0, 1, 1, 0]);
  assertClose(resize(checker, 2, 2).data, [4 / 9, 5 / 9, 5 / 9, 4 / 9], 1e-6);
  // 4 -> 2 (exactly 2x) stays bilinear, which samples between the two middle pixels.
  const four = gray(4, 1, [0, 1, 2, 3]);
  assertClose(resize(four, 2, 1).data, [0.5, 2.5]);
});

Deno.test("area averaging handles non-integer factors with fractional coverage", () => {
  // 5 -> 2: footprints [0, 2.5) and [2.5, 5).
  const out = resize(gray(5, 1, [0, 1, 2, 3, 4]), 2, 1, "area");
  assertClose(out.data, [(0 + 1 + 2 * 0.5) / 2.5, (2 * 0.5 + 3 + 4) / 2.5], 1e-6);
});

Deno.test("bicubic resizing is Pillow's antialiased cubic (a = −0.5), checked against a direct sum", () => {
  const random = (seed: number) => () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const next = random(11);
  const [inW, inH] = [23, 17];
  const data = Float32Array.from({ length: inW * inH }, next);
  const source: FloatImage = { width: inW, height: inH, channels: 1, data };
  const cubic = (x: number) => {
    const t = Math.abs(x);
    return t < 1
      ? 1.5 * t ** 3 - 2.5 * t ** 2 + 1
      : t < 2
      ? -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
      : 0;
  };
  // Separable weights over every input pixel: the cubic stretched by the scale when shrinking.
  const weights = (inSize: number, outSize: number, o: number) => {
    const scale = inSize / outSize, stretch = Math.max(scale, 1);
    const w = Array.from(
      { length: inSize },
      (_, i) => cubic((i + 0.5 - (o + 0.5) * scale) / stretch),
    );
    const total = w.reduce((a, b) => a + b, 0);
    return w.map((v) => v / total);
  };
  for (const [outW, outH] of [[7, 5], [40, 31], [23, 9]]) {
    const resized = resize(source, outW, outH, "bicubic");
    let worst = 0;
    for (let y = 0; y < outH; y++) {
      const wy = weights(inH, outH, y);
      for (let x = 0; x < outW; x++) {
        const wx = weights(inW, outW, x);
        let sum = 0;
        for (let i = 0; i < inH; i++) {
          for (let j = 0; j < inW; j++) sum += wy[i] * wx[j] * data[i * inW + j];
        }
        worst = Math.max(worst, Math.abs(resized.data[y * outW + x] - sum));
      }
    }
    assert.ok(worst < 1e-6, `${outW}×${outH}: differs by ${worst}`);
  }
  // A constant stays constant; a linear ramp upsampled stays linear away from the borders.
  const flat = resize(
    { width: 9, height: 9, channels: 1, data: new Float32Array(81).fill(0.3) },
    4,
    13,
    "bicubic",
  );
  assert.ok(flat.data.every((v) => Math.abs(v - 0.3) < 1e-6));
  const ramp = resize(
    {
      width: 8,
      height: 1,
      channels: 1,
      data: Float32Array.from({ length: 8 }, (_, i) => i),
    },
    16,
    1,
    "bicubic",
  );
  for (let x = 4; x < 12; x++) {
    assert.ok(Math.abs(ramp.data[x] - ((x + 0.5) / 2 - 0.5)) < 1e-6, `ramp at ${x}`);
  }
});

Deno.test("resize keeps channels planar and returns a copy at equal size", () => {
  const image = createImage(3, 2, 3);
  image.data.set([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
  const out = resize(image, 7, 5);
  assert.equal(out.channels, 3);
  assert.equal(out.data.length, 3 * 7 * 5);
  assertClose(out.data.subarray(0, 35), new Array(35).fill(1));
  assertClose(out.data.subarray(35, 70), new Array(35).fill(0));
  assertClose(out.data.subarray(70), new Array(35).fill(0.5));
  const same = resize(image, 3, 2);
  assert.notEqual(same.data, image.data);
  assert.deepEqual(same.data, image.data);
});

Deno.test("resizePlane upsamples 2x2 to 4x4 with align_corners=false", () => {
  // Source [[0,1],[2,3]]. Output x samples source x = (x+0.5)/2-0.5 = -0.25, 0.25, 0.75, 1.25,
  // clamped to 0, 0.25, 0.75, 1; same for y. Row 0: 0, 0.25, 0.75, 1; each source row
  // step adds 2, so rows at y = 0.25, 0.75, 1 add 0.5, 1.5, 2 (matches PyTorch).
  const output = resizePlane(Float32Array.from([0, 1, 2, 3]), 2, 2, 4, 4);
  // deno-fmt-ignore
  const expected = [
    0, 0.25, 0.75, 1,
    0.5, 0.75, 1.25, 1.5,
    1.5, 1.75, 2.25, 2.5,
    2, 2.25, 2.75, 3,
  ];
  assert.deepEqual(Array.from(output), expected);
});

Deno.test("resizePlane downsamples by sampling between source pixels", () => {
  // 4 -> 2: output x samples (x+0.5)*2-0.5 = 0.5 and 2.5.
  assert.deepEqual(Array.from(resizePlane(Float32Array.from([0, 1, 2, 3]), 4, 1, 2, 1)), [
    0.5,
    2.5,
  ]);
  // Different aspect ratio: 1x2 -> 3x1 (x clamps to the single column, y samples 0.5).
  assert.deepEqual(Array.from(resizePlane(Float32Array.from([2, 4]), 1, 2, 3, 1)), [3, 3, 3]);
});

Deno.test("resizePlane copies same-size input and checks sizes", () => {
  const source = Float32Array.from([1, 2, 3]);
  const copy = resizePlane(source, 3, 1, 3, 1);
  assert.deepEqual(copy, source);
  assert.notEqual(copy, source);
  assert.throws(() => resizePlane(source, 2, 2, 4, 4), /expected 2x2/);
  assert.throws(() => resizePlane(source, 3, 1, 0, 1), /size must be positive integers/);
});

/**
 * The bilinear resizer evaluation used before it shared this module's (src/eval/resize.ts,
 * deleted): each output pixel mixes its four source neighbours in double precision, rounded to
 * float32 once. Kept here as the reference that metric results must not move from.
 */
function referenceBilinear(
  source: Float32Array,
  srcWidth: number,
  srcHeight: number,
  dstWidth: number,
  dstHeight: number,
): Float32Array {
  const positions = (sourceSize: number, targetSize: number) =>
    Array.from({ length: targetSize }, (_, i) => {
      const scale = sourceSize / targetSize;
      const position = Math.min(Math.max((i + 0.5) * scale - 0.5, 0), sourceSize - 1);
      const lower = Math.floor(position);
      return { lower, upper: Math.min(lower + 1, sourceSize - 1), weight: position - lower };
    });
  const xs = positions(srcWidth, dstWidth);
  const ys = positions(srcHeight, dstHeight);
  const output = new Float32Array(dstWidth * dstHeight);
  for (let y = 0; y < dstHeight; y++) {
    const top = ys[y].lower * srcWidth;
    const bottom = ys[y].upper * srcWidth;
    const fy = ys[y].weight;
    for (let x = 0; x < dstWidth; x++) {
      const { lower, upper, weight: fx } = xs[x];
      const above = source[top + lower] * (1 - fx) + source[top + upper] * fx;
      const below = source[bottom + lower] * (1 - fx) + source[bottom + upper] * fx;
      output[y * dstWidth + x] = above * (1 - fy) + below * fy;
    }
  }
  return output;
}

Deno.test("bilinear resizing gives bit for bit what evaluation's own resizer gave", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  // Up, down (also by more than 2x: "bilinear" never switches to area), one axis only, odd
  // ratios, and the sizes of MVTec maps (256 -> 900, 1024 -> 700).
  const cases = [
    [5, 3, 17, 11],
    [17, 11, 5, 3],
    [64, 64, 7, 9],
    [9, 7, 9, 20],
    [1, 6, 4, 3],
    [256, 256, 900, 900],
    [1024, 1024, 700, 700],
  ];
  for (const [width, height, outWidth, outHeight] of cases) {
    const map = Float32Array.from({ length: width * height }, () => 4 * random() - 1);
    const kept = resizePlane(map, width, height, outWidth, outHeight, "bilinear");
    const reference = referenceBilinear(map, width, height, outWidth, outHeight);
    const differing = kept.findIndex((value, i) => value !== reference[i]);
    assert.equal(differing, -1, `${width}x${height} -> ${outWidth}x${outHeight} at ${differing}`);
  }
});

Deno.test("grayscale uses ITU-R 601 luma weights and RGB replicates the plane", () => {
  const rgb = createImage(3, 1, 3);
  // Pixels: pure red, pure green, pure blue.
  rgb.data.set([1, 0, 0, 0, 1, 0, 0, 0, 1]);
  assertClose(toGrayscale(rgb).data, [0.299, 0.587, 0.114]);
  const back = toRgb(gray(2, 1, [0.2, 0.8]));
  assertClose(back.data, [0.2, 0.8, 0.2, 0.8, 0.2, 0.8]);
});

Deno.test("PNG round trip keeps values to 8-bit precision and grayscale stays grayscale", async () => {
  const rgb = createImage(5, 4, 3);
  for (let i = 0; i < rgb.data.length; i++) rgb.data[i] = (i * 37 % 256) / 255;
  const png = encodePng(rgb);
  assert.deepEqual(parseImageHeader(png), { format: "png", width: 5, height: 4, channels: 3 });
  const decoded = await decodeImage(png, "rgb.png");
  assert.equal(decoded.channels, 3);
  assertClose(decoded.data, Array.from(rgb.data), 1e-6);

  const mono = gray(3, 2, [0, 0.5, 1, 0.25, 0.75, 1.5]);
  const monoPng = encodePng(mono);
  assert.equal(parseImageHeader(monoPng).channels, 1);
  const monoBack = await decodeImage(monoPng, "gray.png");
  assert.equal(monoBack.channels, 1);
  // 1.5 is clamped to 1; 0.5 rounds to 128/255.
  assertClose(monoBack.data, [0, 128 / 255, 1, 64 / 255, 191 / 255, 1], 1e-6);
  // Asking for RGB from a grayscale file replicates it.
  const asRgb = await decodeImage(monoPng, "gray.png", 3);
  assert.equal(asRgb.channels, 3);
  assertClose(asRgb.data.subarray(6, 12), Array.from(monoBack.data), 1e-6);
});

Deno.test("pictures are stored as RGBA PNGs and decode back byte for byte", async () => {
  const picture = createRgbaImage(3, 2, 0x336699ff);
  picture.data.set([255, 0, 0, 128], 4 * 4); // pixel (1, 1): half-transparent red
  assert.deepEqual([...picture.data.subarray(0, 4)], [0x33, 0x66, 0x99, 0xff]);
  const png = encodePng(picture);
  assert.equal(png[25], 6, "colour type 6: RGBA");
  assert.deepEqual(parseImageHeader(png), { format: "png", width: 3, height: 2, channels: 3 });
  const back = await decodeRgba(png, "picture.png");
  assert.equal(back.width, 3);
  assert.equal(back.height, 2);
  assert.deepEqual(back.data, picture.data);
  // As a float image, alpha is dropped.
  const asFloat = await decodeImage(png, "picture.png");
  assert.equal(asFloat.channels, 3);
  assertClose([asFloat.data[4], asFloat.data[10], asFloat.data[16]], [1, 0, 0], 1e-6);
  assert.throws(
    () => encodePng({ width: 2, height: 2, data: new Uint8Array(12) }),
    /expected 2x2x4/,
  );
});

Deno.test("encoding and resizing work without the codec: no --allow-ffi for importers", async () => {
  // imagescript's codec is native; importing it statically would make every importer of these
  // modules ask for --allow-ffi. A child process without any permission proves it is not loaded.
  const modules = [
    "src/data/image.ts",
    "src/eval/plot.ts",
    "src/eval/evaluate.ts",
    "src/eval/maps_folder.ts",
    "src/eval/runs.ts",
    "src/eval/outputs.ts",
  ].map((path) => new URL(`../../${path}`, import.meta.url).href);
  const script = [
    ...modules.map((url, i) => `import * as m${i} from "${url}";`),
    "const png = m0.encodePng(m1.renderHeatmap(m0.resizePlane(new Float32Array(4), 2, 2, 3, 3), 3, 3));",
    "console.log(png.length > 0 && m2 && m3 && m4 && m5 ? 'encoded' : 'failed');",
  ].join("\n");
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "consumer.ts");
    await Deno.writeTextFile(path, script);
    const config = new URL("../../deno.json", import.meta.url).pathname;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--no-lock", "--config", config, path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    assert.equal(new TextDecoder().decode(output.stdout).trim(), "encoded");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JPEG files decode and their header is read", async () => {
  const image = new Image(16, 8);
  image.fill(0x808080ff);
  const jpeg = await image.encodeJPEG(95);
  const header = parseImageHeader(jpeg, "x.jpg");
  assert.equal(header.format, "jpeg");
  assert.equal(header.width, 16);
  assert.equal(header.height, 8);
  const decoded = await decodeImage(jpeg, "x.jpg", 1);
  assert.equal(decoded.width, 16);
  assert.ok(decoded.data.every((v) => Math.abs(v - 128 / 255) < 0.02));
});

Deno.test("corrupt, truncated and missing images give typed errors naming the file", async () => {
  const dir = await Deno.makeTempDir();
  /** The error must be the project's input error (ImageFormatError when `format`), matching. */
  const rejects = (action: () => Promise<unknown>, pattern: RegExp, format = true) =>
    assert.rejects(action, (error: Error) => {
      assert.ok(error instanceof (format ? ImageFormatError : InputError), error.name);
      assert.match(error.message, pattern);
      return true;
    });
  try {
    const good = encodePng(gray(32, 32, Array.from({ length: 1024 }, (_, i) => (i % 7) / 7)));
    const truncated = join(dir, "truncated.png");
    await Deno.writeFile(truncated, good.subarray(0, good.length - 30));
    await rejects(() => readImage(truncated), /truncated\.png.*truncated/);
    const garbage = join(dir, "garbage.png");
    await Deno.writeFile(garbage, new TextEncoder().encode("definitely not a png"));
    await rejects(() => readImage(garbage), /garbage\.png.*not a PNG or JPEG/);
    await rejects(() => readImageHeader(garbage), /garbage\.png/);
    // A valid structure whose compressed data is damaged fails its CRC check, still named.
    const damaged = good.slice();
    for (let i = 45; i < 70; i++) damaged[i] ^= 0x5a;
    const damagedPath = join(dir, "damaged.png");
    await Deno.writeFile(damagedPath, damaged);
    await rejects(() => readImage(damagedPath), /damaged\.png.*CRC mismatch in chunk IDAT/);
    // A missing file or a folder is the user's input too, though not a format problem.
    const missing = join(dir, "missing.png");
    await rejects(() => readImage(missing), /Cannot read image ".*missing\.png"/, false);
    await rejects(() => readImageHeader(missing), /Cannot read image ".*missing\.png"/, false);
    await rejects(() => readImage(dir), /Cannot read image/, false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writes are atomic: the target appears complete and no temp file is left", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "out.png");
    await writePng(path, gray(4, 4, new Array(16).fill(0.5)));
    await writeFileAtomic(join(dir, "blob.bin"), new Uint8Array([1, 2, 3]));
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.deepEqual(names.sort(), ["blob.bin", "out.png"]);
    assert.equal((await readImage(path)).width, 4);
    // A folder that is missing is created; one that is a file is an error naming the path.
    await writeFileAtomic(join(dir, "new-dir", "x.bin"), new Uint8Array(1));
    assert.equal((await Deno.stat(join(dir, "new-dir", "x.bin"))).size, 1);
    await assert.rejects(
      () => writeFileAtomic(join(dir, "blob.bin", "x.bin"), new Uint8Array(1)),
      /blob\.bin\/x\.bin/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
