/**
 * AnoGAN on the real MVTec AD bottle (a benchmark, not a test):
 *
 *   deno run -A bench/anogan_bottle.ts [--preset quick|paper] [--epochs N] [--search-steps N]
 *     [--seed 0] [--run-dir DIR] [--json FILE]
 *
 * Trains a complete run folder as `deno task train` does (trainRun: 10% of `train/good` held out
 * for the threshold, every validation and test map written), then evaluates it with the MVTec AD
 * protocol (evaluateRuns) and prints pixel ROC AUC, image ROC AUC, AU-PRO, the accuracies on good
 * and defective test images at the validation threshold, training images per second and latent
 * search images per second. The run folder (with its sample grids, `samples/epoch_NNN.png`, and
 * `loss.png`) is kept when `--run-dir` names it, else written to a temporary folder and removed.
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { init } from "../src/tensor/tensor.ts";
import "../src/tensor/ops.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { evaluateRuns } from "../src/eval/runs.ts";
import { readFinishedRun } from "../src/run/folder.ts";
import { trainRun } from "../src/methods/runner.ts";
import { anogan } from "../src/methods/anogan/anogan.ts";
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
    "search-steps": { type: "string" },
    seed: { type: "string", default: "0" },
    "run-dir": { type: "string" },
    json: { type: "string" },
  },
});

const gpu = await init();
const category = await openCategory(values.root!, "bottle");
const runDir = values["run-dir"] ?? await Deno.makeTempDir({ prefix: "anogan_bottle_" });
const settings = anogan.resolveOptions({
  epochs: values.epochs,
  searchSteps: values["search-steps"],
}, values.preset);
let trainingImagesPerSecond = 0;
let mapsStart = 0;
const trainStart = performance.now();
const result = await trainRun({
  method: anogan,
  category,
  runDir,
  trainOptions: {
    preset: values.preset,
    seed: Number(values.seed),
    epochs: values.epochs,
    searchSteps: values["search-steps"],
    onProgress: (progress) => {
      trainingImagesPerSecond = progress.samplesPerSecond ?? trainingImagesPerSecond;
    },
  },
  log: (line) => console.log(line),
  onMapProgress: (done, total) => {
    if (done === 1) mapsStart = performance.now();
    if (done % 10 === 0 || done === total) console.log(`maps ${done}/${total}`);
  },
});
const totalSeconds = (performance.now() - trainStart) / 1000;
const mapCount = category.validation.length + category.test.length;
// The first map compiles the search's shaders; it is left out of the rate.
const searchSeconds = (performance.now() - mapsStart) / 1000;
result.detector?.dispose();

const [{ categories: [evaluated] }] = await evaluateRuns([await readFinishedRun(runDir)], {
  examples: 1,
});
const metrics = evaluated.metrics;
const round = (value: number | null, digits = 3) =>
  value === null ? null : Number(value.toFixed(digits));
const report = {
  method: "anogan",
  preset: values.preset,
  settings,
  adapter: gpu.adapter.description,
  runDir,
  trainImages: category.train.length,
  mapsWritten: mapCount,
  pixelRocAuc: round(metrics.pixel_auroc, 4),
  imageRocAuc: round(metrics.image_auroc, 4),
  auPro: round(metrics.au_pro, 4),
  accuracyGood: round(metrics.accuracy_good),
  accuracyDefective: round(metrics.accuracy_defective),
  threshold: round(metrics.threshold, 6),
  trainingImagesPerSecond: round(trainingImagesPerSecond, 2),
  latentSearchImagesPerSecond: round((mapCount - 1) / searchSeconds, 3),
  totalSeconds: round(totalSeconds, 1),
};
console.log(JSON.stringify(report, null, 2));
if (values.json) await writeJsonAtomic(values.json, report);
if (!values["run-dir"]) await Deno.remove(runDir, { recursive: true });
