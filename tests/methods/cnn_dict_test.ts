/**
 * The CNN feature dictionary end to end on the synthetic bottle and carpet with ResNet50 (from the
 * npm registry, through the cache), at a reduced size so that it runs in seconds on lavapipe; the
 * patch grid and its interpolation; save/load; bad input.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { init } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { ensureFixtures } from "../../fixtures/mod.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import {
  interpolateGrid,
  loadCnnDict,
  patchOrigins,
  trainCnnDict,
} from "../../src/methods/cnn_dict/cnn_dict.ts";
import { getMethod } from "../../src/methods/registry.ts";
import { assertSaveLoadKeepsMap, evaluationSubset, pixelRocAucOn } from "./helpers.ts";

const SMALL = {
  imageSize: 64,
  stride: 8,
  dictionaryPatches: 600,
  trainImages: 20,
  seed: 7,
} as const;

/** One category per way a patch reaches the network. */
const CASES = [
  { name: "carpet", patchMode: "pooled", layer: "layer3", patchInput: 32 },
  { name: "bottle", patchMode: "crop", layer: "layer3", patchInput: 16 },
] as const;

Deno.test("patches tile the image at the stride, and scores interpolate between their centres", () => {
  assert.deepEqual(patchOrigins(64, 16, 8), [0, 8, 16, 24, 32, 40, 48]);
  assert.deepEqual(patchOrigins(16, 16, 4), [0]);
  assert.throws(() => patchOrigins(8, 16, 4), /a 16-pixel patch does not fit a 8-pixel image/);
  // A 2×2 grid of patches 4 wide at stride 2 on a 6-pixel image: centres at pixels 2 and 4.
  const map = interpolateGrid(Float32Array.from([0, 1, 2, 3]), 2, 6, 4, 2);
  const row = (y: number) => Array.from(map.subarray(y * 6, y * 6 + 6));
  // Pixel centre p + 0.5 sits at grid coordinate (p + 0.5 − 2) / 2, held at the borders.
  assert.deepEqual(row(0), [0, 0, 0.25, 0.75, 1, 1]);
  assert.deepEqual(row(5), [2, 2, 2.25, 2.75, 3, 3]);
  assert.deepEqual(
    Array.from(interpolateGrid(Float32Array.from([5]), 1, 3, 3, 1)),
    Array(9).fill(5),
  );
});

for (const { name, ...how } of CASES) {
  const label = `${how.patchMode}, ${how.layer} at ${how.patchInput}²`;
  Deno.test(`cnn-dict with ResNet50 (npm registry, ${label}) learns the synthetic ${name}; save/load`, async () => {
    await init();
    const category = await openCategory(await ensureFixtures(), name);
    const model = await trainCnnDict(category, { ...SMALL, ...how });
    try {
      assert.equal(model.settings.imageSize, 64);
      assert.ok(model.dictionary.explainedVariance >= 0.95);
      const subset = evaluationSubset(category);
      const { auc, scored } = await pixelRocAucOn(category, model, subset);
      console.log(
        `cnn-dict (ResNet50, ${label}, 64², PCA ${model.dictionary.eigenvalues.length}-d), ` +
          `synthetic ${name}: pixel ROC AUC ${auc.toFixed(4)}`,
      );
      assert.ok(auc >= 0.8, `pixel ROC AUC ${auc} below 0.8`);
      (await assertSaveLoadKeepsMap(category, model, loadCnnDict, scored[0])).dispose();
    } finally {
      model.dispose();
    }
  });
}

Deno.test("cnn-dict refuses bad options and bad model folders, naming what it expected", async () => {
  const method = getMethod("cnn-dict");
  assert.throws(() => method.resolveOptions({ varianceKept: 1.5 }), /--variance-kept expects/);
  assert.throws(
    () => method.resolveOptions({ layer: "layer9" }),
    /--layer expects layer2 or layer3 or layer4/,
  );
  assert.throws(() => method.resolveOptions({ patchInput: 8 }), /--patch-input expects/);
  // At 8/3 × 64 = 171 pixels, layer 3's cells are 171/11 pixels: no split fits a patch.
  const category = await openCategory(await ensureFixtures(), "bottle");
  await assert.rejects(
    () => trainCnnDict(category, { ...SMALL, patchSize: 12, patchInput: 32, trainImages: 2 }),
    /layer3's 15\.55-pixel cells cannot be split to fit a patch \(--patch-input 32\)/,
  );
  const empty = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadCnnDict(empty), /Cannot read CNN feature dictionary/);
    await Deno.writeTextFile(join(empty, "cnn_dict.json"), JSON.stringify({ format: "x" }));
    await assert.rejects(() => loadCnnDict(empty), /is not a CNN feature dictionary/);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});
