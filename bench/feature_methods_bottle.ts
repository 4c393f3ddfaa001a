/**
 * PatchCore or PaDiM on the real MVTec AD bottle (a benchmark, not a test):
 *
 *   deno run -A bench/feature_methods_bottle.ts [--method patchcore|padim] [--coreset-ratio 0.1]
 *     [--backbone resnet50] [--train-images 209] [--json FILE]
 *
 * Trains on every training image (all 209 of `train/good`, as the figure counts them; the
 * run folder of `deno task train` holds 10% of them out for the threshold), times each stage,
 * computes the map and image score of every test image, and prints pixel and image ROC AUC,
 * training time, inference images per second (backbone features plus the method's search) and the
 * process's peak memory (VmHWM, which on a software adapter includes the "GPU" memory).
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { init } from "../src/tensor/tensor.ts";
import "../src/tensor/ops.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { rocAuc } from "../src/eval/metrics.ts";
import type { BackboneName } from "../src/nn/backbones/backbones.ts";
import { trainPatchcore } from "../src/methods/patchcore/patchcore.ts";
import { trainPadim } from "../src/methods/padim/padim.ts";
import type { AnomalyDetector } from "../src/methods/method.ts";
import type { FloatImage } from "../src/data/image.ts";
import { writeJsonAtomic } from "../src/util/fs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    root: {
      type: "string",
      default: resolve(import.meta.dirname ?? ".", "../../shared/data/mvtec_ad"),
    },
    method: { type: "string", default: "patchcore" },
    backbone: { type: "string", default: "resnet50" },
    "coreset-ratio": { type: "string", default: "0.1" },
    "train-images": { type: "string", default: "0" },
    json: { type: "string" },
  },
});

/** The process's peak resident memory in MiB, from /proc (Linux); null elsewhere. */
async function peakMemoryMiB(): Promise<number | null> {
  try {
    const status = await Deno.readTextFile("/proc/self/status");
    const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
    return Number.isFinite(kb) ? Math.round(kb / 1024) : null;
  } catch {
    return null;
  }
}

const gpu = await init();
// Every training image, as the figure is defined: no hold-out.
const category = await openCategory(values.root!, "bottle", { validationFraction: 0 });
const stageSeconds: Record<string, number> = {};
let stage = "";
let stageStart = performance.now();
const common = {
  backbone: values.backbone as BackboneName,
  trainImages: Number(values["train-images"]),
  log: (line: string) => console.log(line),
  onProgress: (p: { stage?: string }) => {
    const name = p.stage ?? "train";
    if (name === stage) return;
    if (stage) stageSeconds[stage] = (performance.now() - stageStart) / 1000;
    stage = name;
    stageStart = performance.now();
  },
};
const trainStart = performance.now();
const model: AnomalyDetector = values.method === "padim"
  ? await trainPadim(category, common)
  : await trainPatchcore(category, { ...common, coresetRatio: Number(values["coreset-ratio"]) });
const trainSeconds = (performance.now() - trainStart) / 1000;
stageSeconds[stage] = (performance.now() - stageStart) / 1000;

const pixelScores: Float32Array[] = [];
const pixelLabels: Uint8Array[] = [];
const imageScores: number[] = [];
const images: FloatImage[] = [];
for (const sample of category.test) images.push(await category.loadImage(sample, { channels: 3 }));
// The first image compiles the shaders; it is not timed.
await model.anomalyMap(images[0]);
const inferStart = performance.now();
for (const image of images) {
  if (model.scoreImage) {
    const { map, imageScore } = await model.scoreImage(image);
    pixelScores.push(map);
    imageScores.push(imageScore);
  } else {
    const map = await model.anomalyMap(image);
    pixelScores.push(map);
    imageScores.push(map.reduce((a, b) => Math.max(a, b), -Infinity));
  }
}
const inferSeconds = (performance.now() - inferStart) / 1000;
for (const sample of category.test) {
  const mask = await category.loadMask(sample);
  pixelLabels.push(Uint8Array.from(mask.data, (v) => (v > 0.5 ? 1 : 0)));
}
const total = pixelScores.reduce((n, s) => n + s.length, 0);
const allScores = new Float32Array(total);
const allLabels = new Uint8Array(total);
let offset = 0;
pixelScores.forEach((s, i) => {
  allScores.set(s, offset);
  allLabels.set(pixelLabels[i], offset);
  offset += s.length;
});
const round = (v: number, digits = 3) => Number(v.toFixed(digits));
const report = {
  method: values.method,
  backbone: values.backbone,
  adapter: gpu.adapter.description,
  trainImages: category.train.length,
  testImages: category.test.length,
  pixelRocAuc: round(rocAuc(allScores, allLabels), 4),
  imageRocAuc: round(
    rocAuc(
      Float64Array.from(imageScores),
      Uint8Array.from(category.test, (s) => (s.anomalous ? 1 : 0)),
    ),
    4,
  ),
  trainingSeconds: round(trainSeconds, 1),
  stageSeconds: Object.fromEntries(Object.entries(stageSeconds).map(([k, v]) => [k, round(v, 1)])),
  inferenceImagesPerSecond: round(category.test.length / inferSeconds, 2),
  peakMemoryMiB: await peakMemoryMiB(),
};
console.log(JSON.stringify(report, null, 2));
if (values.json) await writeJsonAtomic(values.json, report);
model.dispose();
