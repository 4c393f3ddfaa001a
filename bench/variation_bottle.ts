/**
 * The variation model on the real MVTec AD bottle (a script, not a test):
 *
 *   deno run -A bench/variation_bottle.ts [--size 256] [--feature intensity] [--foreground auto]
 *
 * Trains on 30 random training images at the working size (default 256 px: lavapipe aligns a
 * 900-px image far more slowly, and the bottle's structures survive the downscale), computes the
 * maps of all test images at their original size, and reports pixel ROC AUC, image ROC AUC (image
 * score: the map's maximum) and images per second for training and inference.
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { init } from "../src/tensor/tensor.ts";
import "../src/tensor/ops.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { resize } from "../src/data/image.ts";
import { rocAuc } from "../src/eval/metrics.ts";
import { trainVariation } from "../src/methods/variation/model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    root: {
      type: "string",
      default: resolve(import.meta.dirname ?? ".", "../../shared/data/mvtec_ad"),
    },
    size: { type: "string", default: "256" },
    feature: { type: "string", default: "intensity" },
    foreground: { type: "string", default: "none" },
    seed: { type: "string", default: "0" },
  },
});

await init();
const category = await openCategory(values.root!, "bottle");
const workingSize = Number(values.size);
const trainStart = performance.now();
const model = await trainVariation(category, {
  workingSize,
  trainImages: 30,
  seed: Number(values.seed),
  alignFeature: values.feature as "intensity" | "gradient",
  foreground: values.foreground as "none" | "auto",
  log: (line) => console.log(line),
});
const trainSeconds = (performance.now() - trainStart) / 1000;
if (model.alignmentProblem) console.log(`alignment problem: ${model.alignmentProblem}`);

const pixelScores: Float32Array[] = [];
const pixelLabels: Uint8Array[] = [];
const imageScores: number[] = [];
const imageLabels: number[] = [];
const testNcc: number[] = [];
const inferStart = performance.now();
for (const sample of category.test) {
  const image = await category.loadImage(sample, { channels: 1 });
  // The map as anomalyMap computes it, keeping the alignment's NCC for the report.
  const working = await model.workingMap(image);
  const map = resize(
    { width: model.width, height: model.height, channels: 1, data: working.map },
    image.width,
    image.height,
    "bilinear",
  ).data;
  const { ncc } = working.alignment;
  testNcc.push(ncc);
  const mask = await category.loadMask(sample);
  pixelScores.push(map);
  pixelLabels.push(Uint8Array.from(mask.data, (v) => (v > 0.5 ? 1 : 0)));
  imageScores.push(map.reduce((a, b) => Math.max(a, b), 0));
  imageLabels.push(sample.anomalous ? 1 : 0);
}
const inferSeconds = (performance.now() - inferStart) / 1000;
const total = pixelScores.reduce((n, s) => n + s.length, 0);
const allScores = new Float32Array(total);
const allLabels = new Uint8Array(total);
let offset = 0;
pixelScores.forEach((s, i) => {
  allScores.set(s, offset);
  allLabels.set(pixelLabels[i], offset);
  offset += s.length;
});
const sortedNcc = [...testNcc].sort((a, b) => a - b);
console.log(JSON.stringify(
  {
    workingSize,
    feature: values.feature,
    foreground: values.foreground,
    trainImages: 30,
    testImages: category.test.length,
    pixelRocAuc: Number(rocAuc(allScores, allLabels).toFixed(4)),
    imageRocAuc: Number(
      rocAuc(Float32Array.from(imageScores), Uint8Array.from(imageLabels)).toFixed(4),
    ),
    trainImagesPerSecond: Number((30 / trainSeconds).toFixed(2)),
    inferenceImagesPerSecond: Number((category.test.length / inferSeconds).toFixed(2)),
    trainingNccMin: Number(Math.min(...model.alignment.map((r) => r.ncc)).toFixed(4)),
    testNccMin: Number(sortedNcc[0].toFixed(4)),
    testNccMedian: Number(sortedNcc[sortedNcc.length >> 1].toFixed(4)),
  },
  null,
  2,
));
model.dispose();
