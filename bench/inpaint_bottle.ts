/**
 * The inpainting autoencoder on the real MVTec AD bottle (a benchmark, not a test):
 *
 *   deno run -A bench/inpaint_bottle.ts [--preset quick] [--epochs N] [--images N]
 *     [--object-size N] [--width F] [--corruption elastic] [--avgmap-exponent T]
 *     [--smooth-size K] [--smooth-passes N] [--map-search false] [--progressive true]
 *     [--seed 0] [--run-dir DIR]
 *     [--json FILE]
 *
 * Trains a preset (with the given overrides) through the runner into a run folder (a temporary
 * one unless --run-dir names one; a temporary one is removed at the end), so that the maps,
 * image scores and the validation threshold are those `deno task train` writes, then evaluates
 * the run as `deno task eval` does and prints pixel ROC AUC, image ROC AUC, AU-PRO, the
 * good/defective accuracies at the validation threshold and the training throughput.
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { init } from "../src/tensor/tensor.ts";
import "../src/tensor/ops.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { trainRun } from "../src/methods/runner.ts";
import { evaluateRuns } from "../src/eval/runs.ts";
import { readRun } from "../src/run/folder.ts";
import { inpaint, type InpaintDetector } from "../src/methods/inpaint/inpaint.ts";
import type { TrainProgress } from "../src/methods/method.ts";
import { writeJsonAtomic } from "../src/util/fs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    root: {
      type: "string",
      default: resolve(import.meta.dirname ?? ".", "../../shared/data/mvtec_ad"),
    },
    preset: { type: "string", default: "quick" },
    epochs: { type: "string" },
    images: { type: "string" },
    batch: { type: "string" },
    lr: { type: "string" },
    "object-size": { type: "string" },
    width: { type: "string" },
    objective: { type: "string" },
    corruption: { type: "string" },
    "smooth-size": { type: "string" },
    "smooth-passes": { type: "string" },
    "avgmap-exponent": { type: "string" },
    "map-search": { type: "string" },
    progressive: { type: "string" },
    seed: { type: "string", default: "0" },
    "run-dir": { type: "string" },
    json: { type: "string" },
  },
});

const gpu = await init();
const category = await openCategory(values.root!, "bottle");
const runDir = values["run-dir"] ?? await Deno.makeTempDir({ prefix: "inpaint_bottle_" });
// Given as text, checked and converted by the method as command-line flags are.
const overrides = {
  epochs: values.epochs,
  images: values.images,
  batch: values.batch,
  lr: values.lr,
  objectSize: values["object-size"],
  width: values.width,
  objective: values.objective,
  corruption: values.corruption,
  smoothSize: values["smooth-size"],
  smoothPasses: values["smooth-passes"],
  avgmapExponent: values["avgmap-exponent"],
  mapSearch: values["map-search"],
  progressive: values.progressive,
};
let lastProgress: TrainProgress | undefined;
let trainingEnd = 0;
const started = performance.now();
try {
  const run = await trainRun({
    method: inpaint,
    category,
    runDir,
    trainOptions: {
      ...overrides,
      preset: values.preset,
      seed: Number(values.seed),
      onProgress: (progress) => {
        lastProgress = progress;
        trainingEnd = performance.now();
        const loss = progress.loss === undefined ? "" : `, loss ${progress.loss.toFixed(5)}`;
        console.log(`epoch ${progress.epoch}/${progress.epochs}, step ${progress.step}${loss}`);
      },
    },
    log: (line) => console.log(line),
  });
  const mapSettings = run.detector
    ? (({ smoothSize, smoothPasses, avgmapExponent }) => ({
      smoothSize,
      smoothPasses,
      avgmapExponent,
    }))((run.detector as InpaintDetector).config.settings)
    : null;
  run.detector?.dispose();
  const mapsSeconds = (performance.now() - trainingEnd) / 1000;
  const [evaluation] = await evaluateRuns([await readRun(runDir)]);
  const metrics = evaluation.categories[0].metrics;
  const round = (v: number | null, digits = 4) => v === null ? null : Number(v.toFixed(digits));
  const report = {
    method: "inpaint",
    preset: values.preset,
    options: inpaint.resolveOptions(overrides, values.preset),
    mapSettingsUsed: mapSettings,
    adapter: gpu.adapter.description,
    trainImages: category.train.length,
    validationImages: category.validation.length,
    testImages: category.test.length,
    pixelRocAuc: round(metrics.pixel_auroc),
    imageRocAuc: round(metrics.image_auroc),
    auPro: round(metrics.au_pro),
    accuracyGood: round(metrics.accuracy_good, 3),
    accuracyDefective: round(metrics.accuracy_defective, 3),
    threshold: metrics.threshold,
    trainingImagesPerSecond: round(lastProgress?.samplesPerSecond ?? null, 2),
    trainingSeconds: round((trainingEnd - started) / 1000, 1),
    calibrationAndMapsSeconds: round(mapsSeconds, 1),
    runDir: values["run-dir"] ?? null,
  };
  console.log(JSON.stringify(report, null, 2));
  if (values.json) await writeJsonAtomic(values.json, report);
} finally {
  if (!values["run-dir"]) await Deno.remove(runDir, { recursive: true });
}
