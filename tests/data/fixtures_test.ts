import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { CATEGORY_SPECS } from "../../fixtures/categories.ts";
import {
  defaultFixturesDir,
  ensureFixtures,
  FIXTURE_CATEGORIES,
  fixtureDefectTypes,
  generateFixtures,
  readManifest,
  renderSample,
} from "../../fixtures/mod.ts";
import { readImage, readImageHeader } from "../../src/data/image.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { hashSeed, Random } from "../../src/data/random.ts";
import { listFilesRecursive, tinyDataset } from "./helpers.ts";

Deno.test("every defect painter's mask is exact: all changed pixels, only changed pixels", () => {
  for (const spec of CATEGORY_SPECS) {
    for (const [defect, painter] of Object.entries(spec.defects)) {
      const random = new Random(hashSeed(9, spec.name, defect));
      const scene = spec.good(random, 128);
      const before = scene.image.data.slice();
      const mask = painter(scene, random);
      const plane = 128 * 128;
      let inside = 0;
      for (let p = 0; p < plane; p++) {
        let change = 0;
        for (let c = 0; c < spec.channels; c++) {
          change = Math.max(
            change,
            Math.abs(scene.image.data[c * plane + p] - before[c * plane + p]),
          );
        }
        if (mask[p]) {
          inside++;
          assert.ok(change >= 2 / 255, `${spec.name}/${defect}: masked pixel ${p} unchanged`);
        } else {
          assert.equal(change, 0, `${spec.name}/${defect}: pixel ${p} changed outside the mask`);
        }
      }
      assert.ok(inside > 0, `${spec.name}/${defect}: empty mask`);
    }
  }
});

Deno.test("fixture categories and defect names follow MVTec AD", () => {
  assert.deepEqual(FIXTURE_CATEGORIES, [
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "bottle",
    "screw",
  ]);
  assert.deepEqual(fixtureDefectTypes("carpet"), [
    "color",
    "cut",
    "hole",
    "metal_contamination",
    "thread",
  ]);
  assert.deepEqual(fixtureDefectTypes("bottle"), ["broken_large", "broken_small", "contamination"]);
  assert.throws(() => fixtureDefectTypes("cable"), /available: carpet/);
});

Deno.test("a defective sample carries its intact scene, which differs only at the defect", () => {
  for (const defect of fixtureDefectTypes("carpet")) {
    const { image, mask, intact } = renderSample("carpet", 0, "test", defect, 1, 128);
    let insideDiff = 0, inside = 0, outsideDiff = 0, outside = 0;
    const plane = image.width * image.height;
    for (let i = 0; i < image.data.length; i++) {
      const diff = Math.abs(image.data[i] - intact.data[i]);
      if (mask!.data[i % plane] > 0.5) (insideDiff += diff), inside++;
      else (outsideDiff += diff), outside++;
    }
    assert.ok(insideDiff / inside > 0.02, `${defect}: the defect changes the scene`);
    assert.ok(outsideDiff / outside < 0.002, `${defect}: the rest of the scene is untouched`);
  }
  const good = renderSample("carpet", 0, "test", "good", 0, 64);
  assert.deepEqual(good.intact.data, good.image.data);
});

Deno.test("samples are deterministic per seed and good images vary naturally", () => {
  const a = renderSample("tile", 1, "test", "oil", 2, 64);
  const b = renderSample("tile", 1, "test", "oil", 2, 64);
  assert.deepEqual(a.image.data, b.image.data);
  assert.deepEqual(a.mask!.data, b.mask!.data);
  const other = renderSample("tile", 2, "test", "oil", 2, 64);
  assert.notDeepEqual(a.image.data, other.image.data);
  // Two good screws differ in pose: their dark (object) pixels are in different places.
  const dark = (index: number) => {
    const image = renderSample("screw", 0, "train", "good", index, 128).image;
    return image.data.map((v) => (v < 0.5 ? 1 : 0));
  };
  const first = dark(0);
  const second = dark(1);
  let overlap = 0;
  let total = 0;
  for (let i = 0; i < first.length; i++) {
    overlap += first[i] & second[i];
    total += first[i];
  }
  assert.ok(overlap < 0.8 * total, "screw pose varies");
});

Deno.test("generated layout: MVTec folders, 0/255 masks, grayscale categories stored gray", async () => {
  const { root, cleanup } = await tinyDataset({ categories: ["grid", "bottle"] });
  try {
    const files = await listFilesRecursive(root);
    assert.ok(files.includes("grid/train/good/009.png"));
    assert.ok(files.includes("grid/test/good/001.png"));
    assert.ok(files.includes("grid/test/bent/000.png"));
    assert.ok(files.includes("grid/ground_truth/bent/000_mask.png"));
    assert.ok(files.includes("bottle/ground_truth/broken_large/001_mask.png"));
    assert.ok(files.includes("fixtures.json"));
    assert.ok(!files.some((file) => file.startsWith("grid/ground_truth/good")));
    assert.equal((await readImageHeader(join(root, "grid/train/good/000.png"))).channels, 1);
    assert.equal((await readImageHeader(join(root, "bottle/train/good/000.png"))).channels, 3);
    const mask = await readImage(join(root, "bottle/ground_truth/contamination/000_mask.png"));
    assert.equal(mask.channels, 1);
    assert.ok(mask.data.every((v) => v === 0 || v === 1), "mask PNG holds only 0 and 255");
    assert.ok(mask.data.some((v) => v === 1));
    const manifest = await readManifest(root);
    assert.equal(manifest?.seed, 7);
    assert.deepEqual(manifest?.categories.bottle.defects, {
      broken_large: 2,
      broken_small: 2,
      contamination: 2,
    });
    // No temporary folders are left beside the result.
    const siblings = [];
    for await (const entry of Deno.readDir(dirname(root))) siblings.push(entry.name);
    assert.deepEqual(siblings, ["mvtec"]);
  } finally {
    await cleanup();
  }
});

Deno.test("generation is reproducible, replaces a different set, and survives a race", async () => {
  const parent = await Deno.makeTempDir({ prefix: "anodet-fixtures-race-" });
  try {
    const options = {
      categories: ["wood"],
      trainCount: 3,
      testGoodCount: 1,
      testDefectiveCount: 5,
      size: 48,
    };
    const target = join(parent, "set");
    await generateFixtures(target, 1, options);
    const firstBytes = await Deno.readFile(join(target, "wood/test/hole/000.png"));
    // A different seed replaces the folder's content.
    await generateFixtures(target, 2, options);
    assert.equal((await readManifest(target))?.seed, 2);
    // Concurrent generators of the same set into the same place both succeed.
    await Promise.all([generateFixtures(target, 1, options), generateFixtures(target, 1, options)]);
    assert.equal((await readManifest(target))?.seed, 1);
    assert.deepEqual(await Deno.readFile(join(target, "wood/test/hole/000.png")), firstBytes);
    const names = [];
    for await (const entry of Deno.readDir(parent)) names.push(entry.name);
    assert.deepEqual(names, ["set"], "no temporary or stale folders remain");
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("parallel workers write exactly the same bytes as a single thread", async () => {
  const parent = await Deno.makeTempDir({ prefix: "anodet-fixtures-workers-" });
  try {
    const options = {
      categories: ["leather", "screw"],
      trainCount: 3,
      testGoodCount: 1,
      testDefectiveCount: 5,
      size: 48,
    };
    await generateFixtures(join(parent, "one"), 4, { ...options, workers: 1 });
    const progress: number[] = [];
    await generateFixtures(join(parent, "two"), 4, {
      ...options,
      workers: 2,
      onProgress: ({ done }) => progress.push(done),
    });
    const files = await listFilesRecursive(join(parent, "one"));
    assert.deepEqual(await listFilesRecursive(join(parent, "two")), files);
    for (const file of files) {
      assert.deepEqual(
        await Deno.readFile(join(parent, "two", file)),
        await Deno.readFile(join(parent, "one", file)),
        file,
      );
    }
    assert.deepEqual(progress, Array.from({ length: 18 }, (_, i) => i + 1));
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("ensureFixtures provides the full default set; the loader opens every category", async () => {
  // Generates into .fixtures-cache on first use (about 20 s), instant afterwards.
  const [root, again] = await Promise.all([ensureFixtures(), ensureFixtures()]);
  assert.equal(root, again);
  assert.equal(root, defaultFixturesDir());
  for (const name of FIXTURE_CATEGORIES) {
    const category = await openCategory(root, name, { validationFraction: 0.1, seed: 0 });
    assert.equal(category.train.length + category.validation.length, 60, name);
    assert.equal(category.validation.length, 6, name);
    assert.equal(category.width, 256);
    assert.equal(category.test.filter((s) => !s.anomalous).length, 8, name);
    const defective = category.test.filter((s) => s.anomalous).length;
    assert.ok(defective >= 20 && defective <= 25, `${name}: ${defective} defective`);
    assert.deepEqual([...category.defectTypes], fixtureDefectTypes(name));
    assert.equal(category.storedChannels, name === "grid" || name === "screw" ? 1 : 3);
  }
});
