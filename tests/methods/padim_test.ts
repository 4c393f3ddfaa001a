/**
 * PaDiM end to end on the synthetic bottle and carpet with ResNet50 (fetched from the npm registry
 * into the cache on first use), at a reduced size so that it runs in seconds on lavapipe; the
 * Cholesky inverse against a direct check; save/load; and bad input.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { init } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { ensureFixtures } from "../../fixtures/mod.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { invertSpd, loadPadim, trainPadim } from "../../src/methods/padim/padim.ts";
import { getMethod } from "../../src/methods/registry.ts";
import { assertSaveLoadKeepsMap, evaluationSubset, pixelRocAucOn } from "./helpers.ts";
import { seededRandom } from "../tensor/reference.ts";

const SMALL = { imageSize: 128, channels: 60, trainImages: 24, seed: 3 } as const;

Deno.test("invertSpd inverts symmetric positive definite matrices", () => {
  const random = seededRandom(4);
  const d = 7;
  const b = Array.from({ length: d * d }, () => random() - 0.5);
  const a = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      for (let k = 0; k < d; k++) a[i * d + j] += b[i * d + k] * b[j * d + k];
      if (i === j) a[i * d + j] += 0.1;
    }
  }
  const inverse = Float64Array.from(a);
  invertSpd(inverse, d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += a[i * d + k] * inverse[k * d + j];
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-9, `A·A⁻¹ at (${i}, ${j}) is ${s}`);
    }
  }
  assert.throws(() => invertSpd(new Float64Array([1, 2, 2, 1]), 2), /not positive definite/);
});

for (const name of ["bottle", "carpet"]) {
  Deno.test(`padim with ResNet50 (npm registry) learns the synthetic ${name}; save/load`, async () => {
    await init();
    const category = await openCategory(await ensureFixtures(), name);
    const model = await trainPadim(category, SMALL);
    try {
      const subset = evaluationSubset(category);
      const { auc, scored } = await pixelRocAucOn(category, model, subset);
      console.log(
        `padim (ResNet50, ${SMALL.imageSize}²), synthetic ${name}: pixel ROC AUC ${auc.toFixed(4)}`,
      );
      assert.ok(auc >= 0.9, `pixel ROC AUC ${auc} below 0.9`);
      (await assertSaveLoadKeepsMap(category, model, loadPadim, scored[0])).dispose();
    } finally {
      model.dispose();
    }
  });
}

Deno.test("padim refuses bad options and bad model folders, naming what it expected", async () => {
  const padim = getMethod("padim");
  assert.throws(
    () => padim.resolveOptions({ channels: 0 }),
    /--channels expects a positive integer/,
  );
  assert.throws(() => padim.resolveOptions({ backbone: "vgg" }), /--backbone expects resnet50 or/);
  assert.throws(() => padim.resolveOptions({ epochs: 3 }), /padim does not take --epochs/);
  const category = await openCategory(await ensureFixtures(), "bottle");
  await assert.rejects(
    () => trainPadim(category, { ...SMALL, channels: 5000 }),
    /--channels 5000 exceeds the 1792 feature channels/,
  );
  const empty = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadPadim(empty), /Cannot read PaDiM model ".*padim\.json"/);
    await Deno.writeTextFile(join(empty, "padim.json"), JSON.stringify({ format: "other" }));
    await assert.rejects(() => loadPadim(empty), /is not a PaDiM model/);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});
