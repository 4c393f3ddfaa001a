import assert from "node:assert/strict";
import { join } from "node:path";
import { Image } from "imagescript";
import {
  createImage,
  decodeImage,
  encodePng,
  type FloatImage,
  parseImageHeader,
  readImage,
  readImageHeader,
  resize,
  toGrayscale,
  toRgb,
  writePng,
} from "../../src/data/image.ts";
import { writeFileAtomic } from "../../src/util/fs.ts";

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

Deno.test("corrupt and truncated images give errors naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const good = encodePng(gray(32, 32, Array.from({ length: 1024 }, (_, i) => (i % 7) / 7)));
    const truncated = join(dir, "truncated.png");
    await Deno.writeFile(truncated, good.subarray(0, good.length - 30));
    await assert.rejects(() => readImage(truncated), (error: Error) => {
      assert.match(error.message, /truncated\.png/);
      assert.match(error.message, /truncated/i);
      return true;
    });
    const garbage = join(dir, "garbage.png");
    await Deno.writeFile(garbage, new TextEncoder().encode("definitely not a png"));
    await assert.rejects(() => readImage(garbage), /garbage\.png.*not a PNG or JPEG/);
    await assert.rejects(() => readImageHeader(garbage), /garbage\.png/);
    // A valid structure whose compressed data is damaged fails in the decoder, still named.
    const damaged = good.slice();
    for (let i = 45; i < 70; i++) damaged[i] ^= 0x5a;
    const damagedPath = join(dir, "damaged.png");
    await Deno.writeFile(damagedPath, damaged);
    await assert.rejects(() => readImage(damagedPath), /damaged\.png/);
    await assert.rejects(() => readImage(join(dir, "missing.png")), /missing\.png/);
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
