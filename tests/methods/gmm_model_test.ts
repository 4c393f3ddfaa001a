/**
 * The GMM texture model end to end on the synthetic fixtures. The tests use reduced settings so
 * that they run in seconds on lavapipe (the method's defaults, {@link GMM_DEFAULTS}, are the
 * paper's: 400×400 images, 4 levels, 10 training images, BIC over 1–5 components):
 * 96×96 images, 3 levels, 5 training images (+4 for the threshold), 3 components, 4000 EM
 * samples per level, and a
 * subset of the test images (all good ones and two per defect type).
 */

import assert from "node:assert/strict";
import { init } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { currentGpu } from "../../src/gpu/device.ts";
import { ensureFixtures } from "../../fixtures/mod.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { type GmmTrainOptions, loadGmm, trainGmm } from "../../src/methods/gmm/model.ts";
import { applicabilityProblem, assertApplies } from "../../src/methods/method.ts";
import { gmmMethod } from "../../src/methods/gmm/model.ts";
import { evaluationSubset, pixelRocAucOn } from "./helpers.ts";
import { getMethod } from "../../src/methods/registry.ts";

const testSettings: GmmTrainOptions = {
  imageSize: 96,
  levels: 3,
  trainImages: 5,
  components: 3,
  samplesPerLevel: 4000,
  maxIterations: 15,
  thresholdImages: 4,
  seed: 1,
};

for (const name of ["carpet", "leather"]) {
  Deno.test(`GMM on synthetic ${name}: pixel ROC AUC ≥ 0.85 and its threshold passes good images`, async () => {
    await init();
    const category = await openCategory(await ensureFixtures(), name);
    const model = await trainGmm(category, testSettings);
    const { auc, scored } = await pixelRocAucOn(category, model, evaluationSubset(category));
    const good = scored.filter(({ sample }) => !sample.anomalous);
    const goodImages = good.length;
    const goodPassed = good.filter(({ map }) =>
      map.every((v) => v <= model.methodThreshold())
    ).length;
    assert.ok(auc >= 0.85, `${name}: pixel ROC AUC ${auc.toFixed(3)} < 0.85`);
    assert.ok(
      goodPassed > goodImages / 2,
      `${name}: the method's threshold passed only ${goodPassed} of ${goodImages} good images`,
    );
    model.dispose();
    assert.deepEqual(currentGpu().errors, []);
  });
}

Deno.test("a GMM model survives save and load with identical maps", async () => {
  await init();
  const category = await openCategory(await ensureFixtures(), "leather");
  const model = await trainGmm(category, { ...testSettings, levels: 2, trainImages: 2 });
  const directory = await Deno.makeTempDir();
  await model.save(directory);
  const loaded = await getMethod("gmm").load(directory);
  assert.equal(loaded.method, "gmm");
  assert.equal(loaded.methodThreshold?.(), model.methodThreshold());
  const image = await category.loadImage(category.test[0], { channels: 3 });
  const [a, b] = [await model.anomalyMap(image), await loaded.anomalyMap(image)];
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  // Covariances are stored as f32, so the maps agree to rounding, not bit for bit.
  assert.ok(worst < 1e-3, `maps differ by ${worst}`);
  const again = await loadGmm(directory);
  assert.deepEqual(again.settings, model.settings);
  for (const m of [model, loaded, again]) m.dispose();
  await Deno.remove(directory, { recursive: true });
});

Deno.test("GMM refuses bad input with messages that name the problem", async () => {
  await init();
  assert.equal(gmmMethod.appliesTo, "textures");
  assert.equal(applicabilityProblem(gmmMethod, "carpet"), null);
  assert.equal(
    applicabilityProblem(gmmMethod, "bottle"),
    'Method "gmm" is meant for texture categories; "bottle" is an object category. ' +
      "Pass --force to run it anyway (or --kind texture if the category is one).",
  );
  assert.throws(() => assertApplies(gmmMethod, "screw"), /meant for texture categories/);
  assertApplies(gmmMethod, "screw", true);
  const category = await openCategory(await ensureFixtures(), "carpet");
  await assert.rejects(
    trainGmm(category, { ...testSettings, trainImages: 1000 }),
    /has \d+ training images; the model needs 1000/,
  );
  await assert.rejects(
    trainGmm(category, { ...testSettings, patchSize: 4 }),
    /patchSize must be odd/,
  );
  await assert.rejects(
    trainGmm(category, { ...testSettings, imageSize: 32, levels: 4 }),
    /smaller than the 7×7 neighbourhood/,
  );
  await assert.rejects(
    trainGmm(category, { ...testSettings, projectionDim: 100 }),
    /feature dimension must be 1 to 49/,
  );
  await assert.rejects(loadGmm("/nonexistent/run"), /Cannot read GMM settings/);
});

Deno.test("gmm stopped by the signal ends with a stopped result that says so", async () => {
  await init();
  const category = await openCategory(await ensureFixtures(), "carpet");
  const controller = new AbortController();
  controller.abort();
  const lines: string[] = [];
  const result = await getMethod("gmm").train(category, {
    imageSize: 96,
    levels: 3,
    trainImages: 5,
    components: 3,
    signal: controller.signal,
    log: (line) => lines.push(line),
  });
  assert.equal(result.stopped, true);
  assert.equal(result.detector, null);
  assert.ok(lines.some((line) => /gmm: training was stopped/.test(line)), lines.join("\n"));
});
