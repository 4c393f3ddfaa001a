/**
 * Image scores that are not the map's maximum: a detector with `scoreImage` has them written to
 * `image_scores.json` beside its maps, and the evaluation ranks images by them; a broken file is
 * an error naming it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { FloatImage } from "../../src/data/image.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { EvaluationInputError, imageScoresPath } from "../../src/eval/evaluate.ts";
import { evaluateMapsFolder } from "../../src/eval/maps_folder.ts";
import type { AnomalyDetector } from "../../src/methods/method.ts";
import { writeRunOutputs } from "../../src/methods/runner.ts";
import { tinyEvalDataset, writeGroundTruthMaps } from "./run_helpers.ts";

/**
 * Maps that rank every image backwards (defective images low), with image scores that rank them
 * right: the image ROC AUC is 1 only if the scores are used.
 */
function backwardsMapsRightScores(anomalous: (image: FloatImage) => boolean): AnomalyDetector {
  return {
    method: "scores-test",
    channels: 3,
    anomalyMap: () => Promise.reject(new Error("scoreImage is used instead")),
    scoreImage: (image) => {
      const bad = anomalous(image);
      const map = new Float32Array(image.width * image.height).fill(bad ? 0 : 1);
      return Promise.resolve({ map, imageScore: bad ? 1 : 0 });
    },
    save: () => Promise.resolve(),
    dispose: () => {},
  };
}

Deno.test("a detector's own image scores reach the evaluation through image_scores.json", async () => {
  const { temp, dataRoot, cleanup } = await tinyEvalDataset();
  try {
    const category = await openCategory(dataRoot, "bottle", { onWarning: () => {} });
    // The detector is told which image it sees by the image's data identity.
    const defective = new Set<Float32Array>();
    const images = new Map<string, FloatImage>();
    const original = category.loadImage.bind(category);
    category.loadImage = async (sample, request) => {
      const image = await original(sample, request);
      if (sample.anomalous) defective.add(image.data);
      images.set(sample.id, image);
      return image;
    };
    const runDir = join(temp, "run");
    await writeRunOutputs({
      detector: backwardsMapsRightScores((image) => defective.has(image.data)),
      category,
      runDir,
    });
    const mapsRoot = join(runDir, "maps");
    const scores = JSON.parse(await Deno.readTextFile(imageScoresPath(mapsRoot, "bottle")));
    assert.equal(Object.keys(scores).length, category.test.length);
    const [withScores] = await evaluateMapsFolder({
      mapsRoot,
      dataRoot,
      categories: ["bottle"],
      examples: 0,
    });
    assert.equal(withScores.metrics.image_auroc, 1);

    await Deno.remove(imageScoresPath(mapsRoot, "bottle"));
    const [fromMaps] = await evaluateMapsFolder({
      mapsRoot,
      dataRoot,
      categories: ["bottle"],
      examples: 0,
    });
    assert.equal(fromMaps.metrics.image_auroc, 0, "without the file, the map maxima rank");
  } finally {
    await cleanup();
  }
});

Deno.test("a broken image_scores.json is an error naming the file and what was expected", async () => {
  const { temp, dataRoot, cleanup } = await tinyEvalDataset();
  try {
    const mapsRoot = join(temp, "maps");
    await writeGroundTruthMaps(mapsRoot, dataRoot, "carpet", "perfect");
    const path = imageScoresPath(mapsRoot, "carpet");
    const evaluate = () =>
      evaluateMapsFolder({ mapsRoot, dataRoot, categories: ["carpet"], examples: 0 });
    const category = await openCategory(dataRoot, "carpet", { onWarning: () => {} });
    const all = Object.fromEntries(category.test.map((s) => [`${s.defect}/${s.id}`, 0.5]));

    await Deno.writeTextFile(path, "{not json");
    await assert.rejects(
      evaluate,
      (e: Error) =>
        e instanceof EvaluationInputError &&
        e.message.includes(`Cannot read image scores "${path}"`),
    );
    await Deno.writeTextFile(path, "[1, 2]");
    await assert.rejects(evaluate, /expected an object \{"<defect>\/<id>": score\}/);
    const [first, ...rest] = Object.keys(all);
    await Deno.writeTextFile(path, JSON.stringify(Object.fromEntries(rest.map((k) => [k, 1]))));
    await assert.rejects(evaluate, new RegExp(`lacks the scores of 1 test image\\(s\\): ${first}`));
    await Deno.writeTextFile(path, JSON.stringify({ ...all, [first]: "high" }));
    await assert.rejects(evaluate, new RegExp(`the score of "${first}" is high, not a number`));
    await Deno.writeTextFile(path, JSON.stringify(all));
    const [ok] = await evaluate();
    assert.equal(ok.metrics.image_auroc, 0.5, "equal scores rank nothing");
  } finally {
    await cleanup();
  }
});
