/**
 * PatchCore end to end on the synthetic bottle and carpet with ResNet50 (fetched from the npm
 * registry into the cache on first use), at a reduced size so that it runs in seconds on
 * lavapipe; the channel projection against its definition; save/load; and bad input.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { init } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { ensureFixtures } from "../../fixtures/mod.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { rocAuc } from "../../src/eval/metrics.ts";
import {
  loadPatchcore,
  projectionMatrix,
  trainPatchcore,
} from "../../src/methods/patchcore/patchcore.ts";
import { getMethod } from "../../src/methods/registry.ts";
import { evaluationSubset, pixelRocAucOn } from "./helpers.ts";

const SMALL = { imageSize: 128, trainImages: 24, coresetRatio: 0.1, seed: 5 } as const;

Deno.test("the channel projection is adaptive average pooling per layer, averaged over layers", () => {
  // Layer A: 2 channels → 4 (each repeated twice); layer B: 8 → 4 (pairs averaged).
  const m = projectionMatrix([2, 8], 4);
  const a = [1, 3];
  const b = [2, 4, 6, 8, 10, 12, 14, 16];
  const input = [...a, ...b];
  const out = [0, 1, 2, 3].map((j) => input.reduce((s, v, c) => s + v * m[c * 4 + j], 0));
  const expected = [0, 1, 2, 3].map((j) =>
    (a[Math.floor(j / 2)] + (b[2 * j] + b[2 * j + 1]) / 2) / 2
  );
  assert.deepEqual(out, expected);
  // Uneven bins overlap as PyTorch's adaptive_avg_pool1d's do: 3 → 2 averages [0, 1] and [1, 2].
  const uneven = projectionMatrix([3], 2);
  assert.deepEqual(Array.from(uneven), [0.5, 0, 0.5, 0.5, 0, 0.5]);
});

for (const name of ["bottle", "carpet"]) {
  Deno.test(`patchcore with ResNet50 (npm registry) learns the synthetic ${name}; save/load`, async () => {
    await init();
    const category = await openCategory(await ensureFixtures(), name);
    const model = await trainPatchcore(category, SMALL);
    const directory = await Deno.makeTempDir();
    try {
      const subset = evaluationSubset(category);
      const { auc, scored } = await pixelRocAucOn(category, model, subset);
      const scores: number[] = [];
      for (const { sample } of scored) {
        const image = await category.loadImage(sample, { channels: 3 });
        scores.push((await model.scoreImage(image)).imageScore);
      }
      const imageAuc = rocAuc(
        Float64Array.from(scores),
        Uint8Array.from(scored, ({ sample }) => (sample.anomalous ? 1 : 0)),
      );
      console.log(
        `patchcore (ResNet50, ${SMALL.imageSize}², bank ${model.bankSize}), synthetic ${name}: ` +
          `pixel ROC AUC ${auc.toFixed(4)}, image ROC AUC ${imageAuc.toFixed(4)}`,
      );
      assert.ok(auc >= 0.9, `pixel ROC AUC ${auc} below 0.9`);
      assert.ok(imageAuc >= 0.9, `image ROC AUC ${imageAuc} below 0.9`);
      assert.ok(scores.every((s) => Number.isFinite(s) && s >= 0));

      await model.save(directory);
      const loaded = await loadPatchcore(directory);
      try {
        assert.equal(loaded.bankSize, model.bankSize);
        const image = await category.loadImage(scored[0].sample, { channels: 3 });
        const again = await loaded.scoreImage(image);
        const worst = again.map.reduce((m, v, i) => Math.max(m, Math.abs(v - scored[0].map[i])), 0);
        assert.ok(worst < 1e-3, `the loaded model's map differs by ${worst}`);
        assert.ok(Math.abs(again.imageScore - scores[0]) < 1e-3);
      } finally {
        loaded.dispose();
      }
    } finally {
      model.dispose();
      await Deno.remove(directory, { recursive: true });
    }
  });
}

Deno.test("patchcore refuses bad options and bad model folders, naming what it expected", async () => {
  const patchcore = getMethod("patchcore");
  assert.throws(
    () => patchcore.resolveOptions({ coresetRatio: 0 }),
    /--coreset-ratio expects a number > 0 and ≤ 1, got 0/,
  );
  assert.throws(() => patchcore.resolveOptions({ neighbours: 0 }), /--neighbours expects/);
  const empty = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => loadPatchcore(empty),
      /Cannot read PatchCore model ".*patchcore\.json"/,
    );
    await Deno.writeTextFile(join(empty, "patchcore.json"), JSON.stringify({ format: "other" }));
    await assert.rejects(() => loadPatchcore(empty), /is not a PatchCore model/);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});
