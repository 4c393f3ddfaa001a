/**
 * The `inpaint` method end to end: the quick preset learns to find the synthetic carpet's
 * defects, save/load keeps the map, a stopped run resumes to the weights of an uninterrupted one,
 * the ensemble and the objects' avgmap are calibrated and saved, a run folder gets image scores,
 * and bad options and model files are refused by name.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ensureFixtures } from "../../fixtures/mod.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { resize } from "../../src/data/image.ts";
import { toArrays } from "../../src/tensor/tensor.ts";
import { imageScoresPath } from "../../src/eval/evaluate.ts";
import { trainRun } from "../../src/methods/runner.ts";
import {
  inpaint,
  type InpaintDetector,
  loadInpaint,
  progressiveShare,
  resolveInpaintSettings,
  trainInpaint,
} from "../../src/methods/inpaint/inpaint.ts";
import { OptionError } from "../../src/methods/method.ts";
import { DEFAULT_MAP_GRID } from "../../src/methods/inpaint/map_search.ts";
import { InputError } from "../../src/util/errors.ts";
import { assertSaveLoadKeepsMap, evaluationSubset, pixelRocAucOn } from "./helpers.ts";

/** A network small enough that a few steps take about a second on a software adapter. */
const TINY = {
  width: 1 / 16,
  textureSize: 32,
  objectSize: 32,
  batch: 4,
  images: 8,
} as const;

Deno.test("inpaint quick finds the synthetic carpet's defects, and save/load keeps the map", async () => {
  const category = await openCategory(await ensureFixtures(), "carpet");
  const started = performance.now();
  const { detector, losses } = await trainInpaint(category, { preset: "quick", seed: 1 });
  const seconds = (performance.now() - started) / 1000;
  const { auc, scored } = await pixelRocAucOn(category, detector!, evaluationSubset(category));
  console.log(
    `inpaint quick on synthetic carpet: pixel ROC AUC ${auc.toFixed(4)}, trained in ` +
      `${seconds.toFixed(0)} s (${losses.length} steps)`,
  );
  assert.ok(auc >= 0.95, `pixel ROC AUC ${auc.toFixed(4)} < 0.95`);
  assert.ok(losses.at(-1)![1] < losses[0][1] / 2, "the objective fell by half or more");
  const loaded = await assertSaveLoadKeepsMap(category, detector!, loadInpaint, scored[0]);
  loaded.dispose();
  detector!.dispose();
});

/** Every weight of a detector's networks, in one list. */
async function weightsOf(detector: InpaintDetector): Promise<Float32Array[]> {
  const tensors = [...detector.networks.values()].flatMap((n) => [...n.stateDict().values()]);
  return await toArrays(tensors);
}

Deno.test("a stopped and resumed inpaint run ends with the weights of an uninterrupted one", async () => {
  const category = await openCategory(await ensureFixtures(), "carpet");
  const dir = await Deno.makeTempDir();
  try {
    const settings = { ...TINY, epochs: 2, seed: 4 };
    const whole = await trainInpaint(category, settings);
    const expected = await weightsOf(whole.detector!);
    whole.detector!.dispose();

    const controller = new AbortController();
    const stopped = await trainInpaint(category, {
      ...settings,
      checkpointDir: dir,
      signal: controller.signal,
      log: (line) => {
        if (line.startsWith("epoch 1/")) controller.abort();
      },
    });
    assert.equal(stopped.stopped, true);
    assert.equal(stopped.detector, null, "a stopped run gives no half-trained detector");
    const lines: string[] = [];
    const resumed = await trainInpaint(category, {
      ...settings,
      checkpointDir: dir,
      resume: true,
      log: (line) => lines.push(line),
    });
    assert.match(lines[0], /resumed after epoch 1 \(step 2\)/);
    assert.deepEqual(resumed.losses.map(([step]) => step), whole.losses.map(([step]) => step));
    const actual = await weightsOf(resumed.detector!);
    let worst = 0;
    actual.forEach((values, i) =>
      values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[i][j]))))
    );
    assert.ok(worst <= 1e-5, `resumed weights differ from the uninterrupted run's by ${worst}`);
    resumed.detector!.dispose();

    await assert.rejects(
      () => trainInpaint(category, { ...settings, width: 1 / 8, checkpointDir: dir, resume: true }),
      /Cannot resume.*other settings/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an inpaint run folder: ensemble, avgmap, progressive crops and image scores", async () => {
  const category = await openCategory(await ensureFixtures(), "bottle");
  const dir = await Deno.makeTempDir();
  try {
    const result = await trainRun({
      method: inpaint,
      category,
      runDir: dir,
      trainOptions: {
        ...TINY,
        epochs: 1,
        objective: "ensemble",
        avgmapExponent: 2,
        mapSearch: false,
        progressive: true,
        corruption: "swap",
        seed: 5,
      },
    });
    const detector = result.detector as InpaintDetector;
    assert.deepEqual([...detector.networks.keys()], ["filtering", "amplifying"]);
    const { scales, avgmapMax } = detector.config.calibration;
    for (const objective of ["filtering", "amplifying"] as const) {
      assert.ok(scales[objective]! > 0, `${objective}: a positive validation scale`);
    }
    assert.ok(avgmapMax! > 0, "avgmap was computed from the validation images");

    // The image score is the sum of the map at the input side (here the image's side, 32).
    const image = resize(await category.loadImage(category.test[0], { channels: 3 }), 32, 32);
    const { map, imageScore } = await detector.scoreImage(image);
    const total = map.reduce((sum, v) => sum + v, 0);
    assert.ok(Math.abs(imageScore - total) <= 1e-4 * total, `${imageScore} ≠ ${total}`);
    // The avgmap weight only damps: each calibrated value is at most the ensemble's maximum.
    const raw = await detector.rawMaps(image);
    const ensemble = map.map((_, i) =>
      Math.max(
        raw.get("filtering")![i] / scales.filtering!,
        raw.get("amplifying")![i] / scales.amplifying!,
      )
    );
    assert.ok(map.every((v, i) => v <= ensemble[i] * (1 + 1e-5) && v >= 0));
    assert.ok(map.some((v, i) => v < ensemble[i] * 0.999), "the avgmap weight changed the map");

    const scores = JSON.parse(
      await Deno.readTextFile(imageScoresPath(join(dir, "maps"), category.name)),
    );
    assert.equal(Object.keys(scores).length, category.test.length);
    const sample = category.test[0];
    assert.ok(Number.isFinite(scores[`${sample.defect}/${sample.id}`]));

    const loaded = await loadInpaint(dir);
    const again = await loaded.scoreImage(image);
    const worst = again.map.reduce((m, v, i) => Math.max(m, Math.abs(v - map[i])), 0);
    assert.ok(worst < 1e-6, `the reloaded ensemble's map differs by ${worst}`);
    loaded.dispose();
    detector.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the map search's choice is used, recorded and saved; textures keep t = 0", async () => {
  const root = await ensureFixtures();
  const dir = await Deno.makeTempDir();
  try {
    const bottle = await openCategory(root, "bottle");
    const lines: string[] = [];
    const { detector } = await trainInpaint(bottle, {
      ...TINY,
      epochs: 1,
      seed: 7,
      log: (line) => lines.push(line),
    });
    const { settings, calibration } = detector!.config;
    const chosen = calibration.mapSearch!;
    assert.deepEqual(
      [settings.smoothSize, settings.smoothPasses, settings.avgmapExponent],
      [chosen.smoothSize, chosen.smoothPasses, chosen.avgmapExponent],
    );
    assert.ok(DEFAULT_MAP_GRID.smoothSizes.includes(chosen.smoothSize));
    assert.ok(chosen.pixelRocAuc > 0.5, `search pixel ROC AUC ${chosen.pixelRocAuc}`);
    assert.equal(chosen.corruptedImages, 8 * bottle.validation.length);
    assert.ok(lines.some((line) => line.includes("the map search chose --smooth-size")));
    if (settings.avgmapExponent > 0) assert.ok(calibration.avgmapMax! > 0, "avgmap calibrated");

    await detector!.save(dir);
    const loaded = await loadInpaint(dir);
    assert.deepEqual(loaded.config.settings, settings);
    const image = await bottle.loadImage(bottle.test[0], { channels: 3 });
    const [before, after] = [await detector!.anomalyMap(image), await loaded.anomalyMap(image)];
    assert.ok(before.every((v, i) => Math.abs(v - after[i]) <= 1e-6 * Math.max(1, v)));
    loaded.dispose();
    detector!.dispose();

    const carpet = await openCategory(root, "carpet");
    const texture = await trainInpaint(carpet, { ...TINY, epochs: 1, seed: 7 });
    assert.equal(texture.detector!.config.settings.avgmapExponent, 0, "no avgmap for textures");
    assert.ok(texture.detector!.config.calibration.mapSearch);
    texture.detector!.dispose();

    // Without validation images there is nothing to search on: the settings stay, with a note.
    const unsplit = await openCategory(root, "bottle", { validationFraction: 0 });
    lines.length = 0;
    const given = await trainInpaint(unsplit, {
      ...TINY,
      epochs: 1,
      smoothSize: 5,
      log: (line) => lines.push(line),
    });
    assert.equal(given.detector!.config.settings.smoothSize, 5);
    assert.equal(given.detector!.config.calibration.mapSearch, undefined);
    assert.ok(lines.some((line) => /needs validation images, so the map settings stay/.test(line)));
    given.detector!.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("maps come back at each image's own size, SSIM-based Diff included", async () => {
  const category = await openCategory(await ensureFixtures(), "carpet");
  const { detector } = await trainInpaint(category, { ...TINY, epochs: 1, ssim: true, seed: 6 });
  const image = await category.loadImage(category.test[0], { channels: 3 });
  for (const [width, height] of [[50, 120], [256, 256]]) {
    const map = await detector!.anomalyMap(resize(image, width, height));
    assert.equal(map.length, width * height);
    // 1 − SSIM lies in [0, 2]; averaging keeps it there.
    assert.ok(map.every((v) => v >= -1e-5 && v <= 2 + 1e-5), `${width}×${height}`);
  }
  detector!.dispose();
});

Deno.test("the progressive scheme's crop grows from half the image to all of it", () => {
  assert.equal(progressiveShare(1, 10), 0.5);
  assert.equal(progressiveShare(3.5, 10), 0.75);
  assert.equal(progressiveShare(6, 10), 1);
  assert.equal(progressiveShare(10, 10), 1);
  assert.equal(progressiveShare(1, 1), 0.5);
});

Deno.test("presets resolve, and bad inpaint options are refused naming the flag", async () => {
  assert.equal(resolveInpaintSettings({ preset: "paper" }).lr, 1e-4);
  assert.equal(resolveInpaintSettings({ preset: "paper" }).textureSize, 512);
  assert.equal(resolveInpaintSettings({ preset: "quick", epochs: 3 }).epochs, 3);
  assert.deepEqual(inpaint.resolveOptions({}, "quick"), { ...resolveInpaintSettings({}) });
  const category = await openCategory(await ensureFixtures(), "carpet");
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ width: 0 }, /--width/],
    [{ width: 5 }, /--width/],
    [{ textureSize: 36 }, /--texture-size expects a multiple of 8/],
    [{ objectSize: 16 }, /--object-size/],
    [{ smoothSize: 4 }, /--smooth-size expects an odd integer/],
    [{ smoothPasses: -1 }, /--smooth-passes/],
    [{ objective: "denoising" }, /--objective expects filtering or amplifying or ensemble/],
    [{ corruption: "image-occlusion" }, /--corruption/],
    [{ lr: 0 }, /--lr/],
    [{ lambda: -0.5 }, /--lambda/],
    [{ brightness: 1 }, /--brightness/],
    [{ avgmapExponent: -1 }, /--avgmap-exponent/],
    [{ channels: 2 }, /--channels/],
    [{ progressive: "yes" }, /--progressive/],
    [{ mapSearch: "sometimes" }, /--map-search/],
    [{ patchSize: 3 }, /does not take --patch-size/],
    [{ preset: "slow" }, /--preset expects quick or paper/],
  ];
  for (const [options, message] of bad) {
    await assert.rejects(() => inpaint.train(category, options), (error: Error) => {
      assert.ok(error instanceof OptionError, `${JSON.stringify(options)}: ${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
  // The library entry point checks the same way.
  assert.throws(() => resolveInpaintSettings({ smoothSize: 2 }), OptionError);
  await assert.rejects(
    () => inpaint.train(category, { ...TINY, resume: true, checkpointDir: "/nonexistent/run" }),
    (error: Error) => error instanceof InputError && /Cannot resume/.test(error.message),
  );
});

Deno.test("loading refuses a folder that is not an inpaint run, naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadInpaint(dir), (error: Error) => {
      assert.ok(error instanceof InputError);
      assert.match(error.message, /inpaint\.json/);
      return true;
    });
    await Deno.writeTextFile(
      join(dir, "inpaint.json"),
      JSON.stringify({ kind: "texture", settings: { width: -1 }, calibration: {} }),
    );
    await assert.rejects(() => loadInpaint(dir), /inpaint\.json: not an inpaint run.*--width/);
    await Deno.writeTextFile(
      join(dir, "inpaint.json"),
      JSON.stringify({ kind: "cloud", settings: {}, calibration: {} }),
    );
    await assert.rejects(() => loadInpaint(dir), /inpaint\.json: not an inpaint run.*kind/);
    await Deno.writeTextFile(
      join(dir, "inpaint.json"),
      JSON.stringify({ kind: "texture", settings: { ...TINY }, calibration: {} }),
    );
    await assert.rejects(() => loadInpaint(dir), (error: Error) => {
      assert.ok(error instanceof InputError);
      assert.match(error.message, /model\.safetensors/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
