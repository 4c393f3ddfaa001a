/**
 * PatchCore end to end on the synthetic bottle and carpet with ResNet50 (fetched from the npm
 * registry into the cache on first use), at a reduced size so that it runs in seconds on
 * lavapipe; the channel projection against its definition; save/load; and bad input.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { init, type Tensor, tensor } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { ensureFixtures } from "../../fixtures/mod.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { rocAuc } from "../../src/eval/metrics.ts";
import {
  loadPatchcore,
  poolChannels,
  projectionMatrix,
  trainPatchcore,
} from "../../src/methods/patchcore/patchcore.ts";
import { randomRef, relativeError, seededRandom } from "../tensor/reference.ts";
import { getMethod } from "../../src/methods/registry.ts";
import { assertSaveLoadKeepsMap, evaluationSubset, pixelRocAucOn } from "./helpers.ts";

const SMALL = { imageSize: 128, trainImages: 24, coresetRatio: 0.1, seed: 5 } as const;

Deno.test("channel pooling is adaptive average pooling, by repeat, group mean or product", async () => {
  // Uneven bins overlap as PyTorch's adaptive_avg_pool1d's do: 3 → 2 averages [0, 1] and [1, 2].
  assert.deepEqual(Array.from(projectionMatrix(3, 2)), [0.5, 0, 0.5, 0.5, 0, 0.5]);
  await init();
  const random = seededRandom(9);
  const matrices = new Map<number, Tensor>();
  // 2 → 6 repeats, 8 → 4 averages pairs, 6 → 4 takes the product: all equal the matrix's result.
  for (const [channels, dim] of [[2, 6], [8, 4], [6, 4], [4, 4]]) {
    const [n, h, w] = [2, 3, 2];
    const x = randomRef([n, channels, h, w], random);
    const matrix = projectionMatrix(channels, dim);
    const expected = new Float64Array(n * dim * h * w);
    for (let b = 0; b < n; b++) {
      for (let j = 0; j < dim; j++) {
        for (let p = 0; p < h * w; p++) {
          let sum = 0;
          for (let c = 0; c < channels; c++) {
            sum += matrix[c * dim + j] * x.data[(b * channels + c) * h * w + p];
          }
          expected[(b * dim + j) * h * w + p] = sum;
        }
      }
    }
    const input = tensor(Float32Array.from(x.data), x.shape);
    const pooled = poolChannels(input, dim, matrices);
    assert.deepEqual(pooled.shape, [n, dim, h, w]);
    const error = relativeError(await pooled.toArray(), expected);
    assert.ok(error < 1e-6, `${channels} → ${dim}: relative error ${error}`);
    for (const t of new Set([input, pooled])) t.dispose();
  }
  assert.deepEqual([...matrices.keys()], [6], "only the uneven case uploads a matrix");
  matrices.forEach((m) => m.dispose());
});

for (const name of ["bottle", "carpet"]) {
  Deno.test(`patchcore with ResNet50 (npm registry) learns the synthetic ${name}; save/load`, async () => {
    await init();
    const category = await openCategory(await ensureFixtures(), name);
    const model = await trainPatchcore(category, SMALL);
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

      const loaded = await assertSaveLoadKeepsMap(category, model, loadPatchcore, scored[0]);
      try {
        assert.equal(loaded.bankSize, model.bankSize);
        const image = await category.loadImage(scored[0].sample, { channels: 3 });
        const again = await loaded.scoreImage(image);
        assert.ok(Math.abs(again.imageScore - scores[0]) < 1e-3, "the reloaded image score");
      } finally {
        loaded.dispose();
      }
    } finally {
      model.dispose();
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
