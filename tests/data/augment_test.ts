import assert from "node:assert/strict";
import {
  assembleBatch,
  augment,
  augmentOptionsFor,
  batches,
  categorySource,
} from "../../src/data/augment.ts";
import { createImage, type FloatImage, resize } from "../../src/data/image.ts";
import { CATEGORY_INFO, openCategory } from "../../src/data/mvtec.ts";
import { tinyDataset } from "./helpers.ts";

/** A 3-channel image whose value encodes position, so geometry errors show. */
function ramp(width: number, height: number): FloatImage {
  const image = createImage(width, height, 3);
  const plane = width * height;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      image.data[y * width + x] = x / width;
      image.data[plane + y * width + x] = y / height;
      image.data[2 * plane + y * width + x] = ((x * 7 + y * 13) % 17) / 17;
    }
  }
  return image;
}

async function collect(stream: AsyncIterable<FloatImage>): Promise<FloatImage[]> {
  const out: FloatImage[] = [];
  for await (const image of stream) out.push(image);
  return out;
}

Deno.test("augment is deterministic: same seed, same patches; other seed, other patches", async () => {
  const sources = [ramp(96, 80), ramp(80, 96)];
  const options = { count: 6, seed: 11, kind: "texture" as const, patchSize: 32 };
  const a = await collect(augment(sources, options));
  const b = await collect(augment(sources, options));
  const c = await collect(augment(sources, { ...options, seed: 12 }));
  assert.equal(a.length, 6);
  a.forEach((patch, i) => assert.deepEqual(patch.data, b[i].data));
  assert.ok(a.some((patch, i) => patch.data.some((v, k) => v !== c[i].data[k])));
  // Patch i depends only on (seed, i): a longer stream starts with the same patches.
  const longer = await collect(augment(sources, { ...options, count: 8 }));
  a.forEach((patch, i) => assert.deepEqual(patch.data, longer[i].data));
});

Deno.test("texture patches: fixed size, channels kept, crops of the source geometry", async () => {
  const source = ramp(100, 100);
  const patches = await collect(
    augment([source], { count: 5, seed: 1, kind: "texture", patchSize: 24, maxRotationDegrees: 0 }),
  );
  for (const patch of patches) {
    assert.equal(patch.width, 24);
    assert.equal(patch.height, 24);
    assert.equal(patch.channels, 3);
    // Unrotated crop of a horizontal ramp: every row equal, columns step by 1/100.
    for (let x = 0; x + 1 < 24; x++) {
      assert.ok(Math.abs(patch.data[x + 1] - patch.data[x] - 0.01) < 1e-5);
      assert.ok(Math.abs(patch.data[23 * 24 + x] - patch.data[x]) < 1e-6);
    }
  }
  // With rotation the patch still stays within the source's value range.
  const rotated = await collect(
    augment([source], { count: 5, seed: 2, kind: "texture", patchSize: 24 }),
  );
  for (const patch of rotated) {
    assert.ok(patch.data.every((v) => v >= 0 && v <= 1));
  }
});

Deno.test("textures can be zoomed before cropping, as the MVTec AD paper did", async () => {
  // Zooming a 100 px ramp to 200 px halves the per-pixel step of an unrotated crop.
  const [patch] = await collect(
    augment([ramp(100, 100)], {
      count: 1,
      seed: 4,
      kind: "texture",
      patchSize: 16,
      zoomSize: 200,
      maxRotationDegrees: 0,
    }),
  );
  for (let x = 0; x + 1 < 16; x++) {
    assert.ok(Math.abs(patch.data[x + 1] - patch.data[x] - 0.005) < 1e-5);
  }
});

Deno.test("object transform: identity without randomness, exact mirrors when allowed", async () => {
  const source = ramp(40, 30);
  const [identity] = await collect(augment([source], { count: 1, seed: 5, kind: "object" }));
  assert.equal(identity.width, 40);
  assert.equal(identity.height, 30);
  for (let i = 0; i < source.data.length; i++) {
    assert.ok(Math.abs(identity.data[i] - source.data[i]) < 1e-6);
  }
  const mirrored = await collect(
    augment([source], { count: 12, seed: 5, kind: "object", mirrorHorizontal: true }),
  );
  let flips = 0;
  for (const image of mirrored) {
    const isFlip = image.data[0] === source.data[39] && image.data[39] === source.data[0];
    const isSame = image.data[0] === source.data[0];
    assert.ok(isFlip || isSame);
    if (isFlip) flips++;
  }
  assert.ok(flips > 0 && flips < 12, "mirroring happens about half of the time");
  // Output size can differ from the source size.
  const [small] = await collect(
    augment([source], { count: 1, seed: 5, kind: "object", outputWidth: 20, outputHeight: 15 }),
  );
  assert.equal(small.width, 20);
  assert.equal(small.data.length, 3 * 20 * 15);
});

Deno.test("objects are shrunk like inference shrinks them, without aliasing", async () => {
  // A one-pixel checkerboard, shrunk 4×: an area average is flat grey, while bilinear sampling
  // straight from the source would hit the squares' pattern and keep strong contrast.
  const source = createImage(128, 128, 1);
  source.data.forEach((_, i) => (source.data[i] = ((i % 128) + Math.floor(i / 128)) % 2));
  const [small] = await collect(
    augment([source], {
      count: 1,
      seed: 3,
      kind: "object",
      outputWidth: 32,
      outputHeight: 32,
      maxRotationDegrees: 10,
      maxTranslation: 0.05,
    }),
  );
  const expected = resize(source, 32, 32);
  for (let y = 4; y < 28; y++) {
    for (let x = 4; x < 28; x++) {
      const value = small.data[y * 32 + x];
      assert.ok(Math.abs(value - 0.5) < 0.05, `pixel (${x}, ${y}) is ${value}, not grey`);
      assert.ok(Math.abs(expected.data[y * 32 + x] - 0.5) < 0.05);
    }
  }
});

Deno.test("per-category defaults never mirror a screw and never move a transistor", () => {
  const screw = augmentOptionsFor(CATEGORY_INFO.screw, 10, 0);
  assert.equal(screw.kind, "object");
  assert.equal(screw.mirrorHorizontal, false);
  assert.equal(screw.mirrorVertical, false);
  assert.equal(screw.maxRotationDegrees, 180);
  const transistor = augmentOptionsFor(CATEGORY_INFO.transistor, 10, 0);
  assert.equal(transistor.maxRotationDegrees, 0);
  assert.equal(transistor.maxTranslation, 0);
  const carpet = augmentOptionsFor(CATEGORY_INFO.carpet, 10, 0, { patchSize: 64 });
  assert.equal(carpet.kind, "texture");
  assert.equal(carpet.patchSize, 64);
  assert.equal(carpet.mirrorHorizontal, true);
});

Deno.test("batches are contiguous NCHW buffers", async () => {
  const images = [0, 1, 2].map((n) => {
    const image = createImage(4, 2, 3);
    image.data.fill(n);
    return image;
  });
  const batch = assembleBatch(images);
  assert.deepEqual(batch.shape, [3, 3, 2, 4]);
  assert.equal(batch.data.length, 3 * 3 * 2 * 4);
  // Image n occupies [n * 24, (n + 1) * 24).
  for (let n = 0; n < 3; n++) {
    assert.ok(batch.data.subarray(n * 24, (n + 1) * 24).every((v) => v === n));
  }
  const reusable = new Float32Array(100);
  const into = assembleBatch(images.slice(0, 2), reusable);
  assert.equal(into.data.buffer, reusable.buffer);
  assert.equal(into.data.length, 48);
  assert.throws(() => assembleBatch(images, new Float32Array(10)), /need 72/);
  assert.throws(() => assembleBatch([images[0], createImage(4, 2, 1)]), /image 1/);

  const sizes = [];
  for await (const b of batches(images, 2)) sizes.push(b.shape[0]);
  assert.deepEqual(sizes, [2, 1]);
  const dropped = [];
  for await (const b of batches(images, 2, true)) dropped.push(b.shape[0]);
  assert.deepEqual(dropped, [2]);
});

Deno.test("augmentation streams lazily from a category into batches", async () => {
  const { root, cleanup } = await tinyDataset({ categories: ["carpet"] });
  try {
    const carpet = await openCategory(root, "carpet", { cacheBytes: 2 * 64 * 64 * 4 });
    const source = categorySource(carpet, carpet.train, { channels: 1 });
    const options = augmentOptionsFor(carpet.info, 10, 3, { patchSize: 32 });
    const shapes = [];
    for await (const batch of batches(augment(source, options), 4)) shapes.push(batch.shape);
    assert.deepEqual(shapes, [[4, 1, 32, 32], [4, 1, 32, 32], [2, 1, 32, 32]]);
    const stats = carpet.cacheStats();
    assert.ok(stats.entries <= 2, `cache stays bounded while streaming: ${JSON.stringify(stats)}`);
  } finally {
    await cleanup();
  }
});
