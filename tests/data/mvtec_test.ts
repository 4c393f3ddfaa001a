import assert from "node:assert/strict";
import { join } from "node:path";
import { createImage, encodePng, readImage } from "../../src/data/image.ts";
import {
  CATEGORY_INFO,
  categoryInfo,
  listCategories,
  LruCache,
  MVTEC_CATEGORIES,
  openCategory,
  splitValidation,
} from "../../src/data/mvtec.ts";
import { tinyDataset } from "./helpers.ts";

const quiet = { onWarning: () => {} };

Deno.test("loader reads the generated fixtures in MVTec layout", async () => {
  const { root, cleanup } = await tinyDataset();
  try {
    assert.deepEqual(await listCategories(root), ["carpet", "screw"]);
    const carpet = await openCategory(root, "carpet", { validationFraction: 0.2, seed: 3 });
    assert.equal(carpet.train.length + carpet.validation.length, 10);
    assert.equal(carpet.validation.length, 2);
    assert.deepEqual(carpet.defectTypes, ["color", "cut", "hole", "metal_contamination", "thread"]);
    assert.equal(carpet.test.filter((s) => !s.anomalous).length, 2);
    assert.equal(carpet.test.filter((s) => s.anomalous).length, 5);
    assert.equal(carpet.width, 64);
    assert.equal(carpet.storedChannels, 3);
    assert.equal(carpet.info.kind, "texture");
    assert.ok(carpet.validation.every((s) => s.split === "validation" && s.defect === "good"));

    for (const sample of carpet.test) {
      const mask = await carpet.loadMask(sample);
      assert.equal(mask.channels, 1);
      assert.ok(mask.data.every((v) => v === 0 || v === 1), "masks are binary");
      const defectPixels = mask.data.reduce((sum, v) => sum + v, 0);
      if (sample.anomalous) {
        assert.ok(defectPixels > 0, `${sample.imagePath} has an empty mask`);
        assert.match(sample.maskPath!, /ground_truth\/\w+\/\d{3}_mask\.png$/);
      } else {
        assert.equal(defectPixels, 0);
        assert.equal(sample.maskPath, null);
      }
    }

    // Grayscale on disk (screw), delivered as stored, as RGB, or resized.
    const screw = await openCategory(root, "screw");
    assert.equal(screw.storedChannels, 1);
    assert.equal(screw.info.grayscale, true);
    const stored = await screw.loadImage(screw.train[0]);
    assert.equal(stored.channels, 1);
    const rgb = await screw.loadImage(screw.train[0], { channels: 3, width: 32, height: 48 });
    assert.equal(rgb.channels, 3);
    assert.equal(rgb.width, 32);
    assert.equal(rgb.height, 48);
    assert.deepEqual(rgb.data.subarray(0, 32 * 48), rgb.data.subarray(32 * 48, 2 * 32 * 48));
    const smallMask = await screw.loadMask(screw.test.find((s) => s.anomalous)!, {
      width: 16,
      height: 16,
    });
    assert.equal(smallMask.data.length, 256);
    assert.ok(smallMask.data.every((v) => v === 0 || v === 1));
  } finally {
    await cleanup();
  }
});

Deno.test("decoding is lazy and cached in a bounded LRU", async () => {
  const { root, cleanup } = await tinyDataset();
  try {
    // One 64x64 RGB float image is 48 KiB; allow three.
    const carpet = await openCategory(root, "carpet", { cacheBytes: 3 * 64 * 64 * 3 * 4 });
    assert.equal(carpet.cacheStats().entries, 0, "opening decodes nothing");
    const first = await carpet.loadImage(carpet.train[0]);
    assert.equal(await carpet.loadImage(carpet.train[0]), first, "second load is a cache hit");
    assert.equal(carpet.cacheStats().hits, 1);
    // Concurrent requests share one decode.
    const [a, b] = await Promise.all([
      carpet.loadImage(carpet.train[1]),
      carpet.loadImage(carpet.train[1]),
    ]);
    assert.equal(a, b);
    for (const sample of carpet.train) await carpet.loadImage(sample);
    const stats = carpet.cacheStats();
    assert.equal(stats.entries, 3);
    assert.ok(stats.bytes <= 3 * 64 * 64 * 3 * 4);
    assert.equal(stats.misses, carpet.train.length);
  } finally {
    await cleanup();
  }
});

Deno.test("LruCache evicts the least recently used entries by bytes", () => {
  const cache = new LruCache<string>(10);
  cache.set("a", "A", 4);
  cache.set("b", "B", 4);
  assert.equal(cache.get("a"), "A"); // a is now most recent
  cache.set("c", "C", 4); // over budget: evicts b
  assert.equal(cache.get("b"), undefined);
  assert.equal(cache.get("a"), "A");
  assert.equal(cache.get("c"), "C");
  assert.equal(cache.bytes, 8);
  cache.set("huge", "H", 11);
  assert.equal(cache.get("huge"), undefined, "values larger than the budget are not cached");
});

Deno.test("validation split is seeded: same seed same split, and a partition", async () => {
  const items = Array.from({ length: 209 }, (_, i) => i);
  const a = splitValidation(items, 0.1, 42);
  const b = splitValidation(items, 0.1, 42);
  const c = splitValidation(items, 0.1, 43);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.validation, c.validation);
  assert.equal(a.validation.length, 21);
  assert.deepEqual([...a.train, ...a.validation].sort((x, y) => x - y), items);
  assert.deepEqual(a.train, [...a.train].sort((x, y) => x - y), "original order kept");
  assert.equal(splitValidation(items, 0, 1).validation.length, 0);
  assert.throws(() => splitValidation(items, 1, 0), /\[0, 1\)/);

  const { root, cleanup } = await tinyDataset();
  try {
    const ids = async (seed: number) =>
      (await openCategory(root, "carpet", { validationFraction: 0.3, seed })).validation.map((s) =>
        s.id
      );
    assert.deepEqual(await ids(5), await ids(5));
  } finally {
    await cleanup();
  }
});

Deno.test("category facts: 15 MVTec categories, grayscale and mirroring rules", () => {
  assert.equal(MVTEC_CATEGORIES.length, 15);
  assert.deepEqual(
    MVTEC_CATEGORIES.filter((name) => CATEGORY_INFO[name].grayscale),
    ["grid", "screw", "zipper"],
  );
  assert.equal(CATEGORY_INFO.carpet.kind, "texture");
  assert.equal(CATEGORY_INFO.bottle.kind, "object");
  for (const name of ["screw", "transistor", "metal_nut", "cable"]) {
    assert.equal(CATEGORY_INFO[name].mirrorHorizontal, false, name);
    assert.equal(CATEGORY_INFO[name].mirrorVertical, false, name);
  }
  assert.equal(CATEGORY_INFO.transistor.maxRotationDegrees, 0);
  const custom = categoryInfo("my_product");
  assert.equal(custom.kind, "object");
  assert.equal(custom.mirrorHorizontal, false);
});

// ---- Bad input: each gives a clear error naming the offending path.

async function withBrokenDataset(
  breakIt: (category: string) => Promise<void>,
  check: (root: string) => Promise<void>,
): Promise<void> {
  const { root, cleanup } = await tinyDataset({ categories: ["carpet"] });
  try {
    await breakIt(join(root, "carpet"));
    await check(root);
  } finally {
    await cleanup();
  }
}

Deno.test("error: missing root and unknown category list what exists", async () => {
  await assert.rejects(() => openCategory("/nonexistent/mvtec", "carpet"), /\/nonexistent\/mvtec/);
  await withBrokenDataset(async () => {}, async (root) => {
    await assert.rejects(
      () => openCategory(root, "wood"),
      (error: Error) => {
        assert.match(error.message, /Unknown category "wood"/);
        assert.match(error.message, /it holds: carpet/);
        return true;
      },
    );
  });
});

Deno.test("error: missing train/good, missing test and empty train folders", async () => {
  await withBrokenDataset(
    (category) => Deno.remove(join(category, "train"), { recursive: true }),
    (root) => assert.rejects(() => openCategory(root, "carpet"), /carpet\/train\/good/),
  );
  await withBrokenDataset(
    (category) => Deno.remove(join(category, "test"), { recursive: true }),
    (root) => assert.rejects(() => openCategory(root, "carpet"), /Missing folder ".*carpet\/test"/),
  );
  await withBrokenDataset(
    async (category) => {
      const folder = join(category, "train", "good");
      for await (const entry of Deno.readDir(folder)) await Deno.remove(join(folder, entry.name));
    },
    (root) => assert.rejects(() => openCategory(root, "carpet"), /Empty training folder ".*good"/),
  );
  await withBrokenDataset(
    (category) => Deno.remove(join(category, "ground_truth"), { recursive: true }),
    (root) => assert.rejects(() => openCategory(root, "carpet"), /Missing mask folder/),
  );
});

Deno.test("error: corrupt PNG header at open, truncated PNG at load, both name the file", async () => {
  await withBrokenDataset(
    (category) => Deno.writeTextFile(join(category, "train", "good", "003.png"), "garbage"),
    (root) => assert.rejects(() => openCategory(root, "carpet"), /train\/good\/003\.png/),
  );
  await withBrokenDataset(
    async (category) => {
      const path = join(category, "test", "hole", "000.png");
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
    },
    async (root) => {
      const carpet = await openCategory(root, "carpet"); // header still intact
      const sample = carpet.test.find((s) => s.imagePath.endsWith("hole/000.png"))!;
      await assert.rejects(() => carpet.loadImage(sample), /test\/hole\/000\.png.*truncated/);
    },
  );
});

Deno.test("error: mask size differs from its image", async () => {
  await withBrokenDataset(
    (category) =>
      Deno.writeFile(
        join(category, "ground_truth", "cut", "000_mask.png"),
        encodePng(createImage(32, 64, 1)),
      ),
    (root) =>
      assert.rejects(() => openCategory(root, "carpet"), (error: Error) => {
        assert.match(error.message, /cut\/000_mask\.png" is 32x64/);
        assert.match(error.message, /test\/cut\/000\.png" is 64x64/);
        return true;
      }),
  );
});

Deno.test("error: defective test image without a mask", async () => {
  await withBrokenDataset(
    (category) => Deno.remove(join(category, "ground_truth", "color", "000_mask.png")),
    (root) =>
      assert.rejects(
        () => openCategory(root, "carpet"),
        /Defective test image ".*test\/color\/000\.png" has no mask \(expected ".*000_mask\.png"\)/,
      ),
  );
});

Deno.test("mixed image sizes: each image loads at its own size, with a note naming the odd ones", async () => {
  await withBrokenDataset(
    async (category) => {
      const path = join(category, "train", "good", "004.png");
      const image = await readImage(path);
      const { resize } = await import("../../src/data/image.ts");
      await Deno.writeFile(path, encodePng(resize(image, 80, 72)));
    },
    async (root) => {
      const warnings: string[] = [];
      const carpet = await openCategory(root, "carpet", {
        validationFraction: 0,
        onWarning: (message) => warnings.push(message),
      });
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /train\/good\/004\.png \(80x72\)/);
      assert.match(warnings[0], /64x64/);
      assert.equal(carpet.mixedSizes, true);
      assert.equal(carpet.width, 64, "the reference size is the first training image's");
      const odd = carpet.train.find((s) => s.id === "004")!;
      assert.equal(odd.width, 80);
      const loaded = await carpet.loadImage(odd);
      assert.deepEqual([loaded.width, loaded.height], [80, 72]);
      const asked = await carpet.loadImage(odd, { width: 64, height: 64 });
      assert.deepEqual([asked.width, asked.height], [64, 64]);
      const defective = carpet.test.find((s) => s.anomalous)!;
      const mask = await carpet.loadMask(defective);
      assert.deepEqual([mask.width, mask.height], [defective.width, defective.height]);
    },
  );
  // The quiet option object type-checks as OpenOptions.
  assert.equal(typeof quiet.onWarning, "function");
});
