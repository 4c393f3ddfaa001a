/**
 * Training throughput of the inpainting autoencoder's presets (a benchmark, not a test):
 *
 *   deno run -A bench/inpaint_speed.ts [--presets quick,paper] [--steps 4] [--batch N]
 *     [--category bottle] [--root DIR] [--json FILE]
 *
 * For each preset it trains through `trainInpaint` itself (corruption on the CPU, upload, forward,
 * objective, backward and Adam, as a real run does), first one step to compile the pipelines,
 * then `--steps` steps timed, and prints images per second and seconds per step at the preset's
 * input side for the category's kind. `--batch` overrides the presets' batch (the paper's 16
 * images of 256² take minutes a step on a software adapter). The default category is the
 * synthetic bottle of the fixtures; no validation images are held out, so nothing is calibrated.
 */

import { parseArgs } from "node:util";
import { ensureFixtures } from "../fixtures/mod.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { init } from "../src/tensor/tensor.ts";
import "../src/tensor/ops.ts";
import {
  INPAINT_PRESETS,
  type InpaintPreset,
  resolveInpaintSettings,
  trainInpaint,
} from "../src/methods/inpaint/inpaint.ts";
import { writeJsonAtomic } from "../src/util/fs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    presets: { type: "string", default: "quick,paper" },
    steps: { type: "string", default: "4" },
    batch: { type: "string" },
    category: { type: "string", default: "bottle" },
    root: { type: "string" },
    json: { type: "string" },
  },
});

const presets = values.presets!.split(",");
for (const preset of presets) {
  if (!(preset in INPAINT_PRESETS)) {
    throw new Error(
      `--presets expects names from ${Object.keys(INPAINT_PRESETS)}, got "${preset}"`,
    );
  }
}
const steps = Number(values.steps);
if (!Number.isInteger(steps) || steps < 1) {
  throw new Error(`--steps expects a positive integer, got "${values.steps}"`);
}

const gpu = await init();
const root = values.root ?? await ensureFixtures();
const category = await openCategory(root, values.category!, { validationFraction: 0 });
console.log(
  `adapter: ${gpu.adapter.description}; ${root}/${values.category} (${category.info.kind})`,
);

const rows = [];
for (const preset of presets as InpaintPreset[]) {
  const base = resolveInpaintSettings({ preset });
  const batch = values.batch === undefined ? base.batch : Number(values.batch);
  const side = category.info.kind === "texture" ? base.textureSize : base.objectSize;
  const run = async (images: number) => {
    const started = performance.now();
    const { detector } = await trainInpaint(category, {
      preset,
      batch,
      images,
      epochs: 1,
      mapSearch: false,
    });
    detector!.dispose();
    return (performance.now() - started) / 1000;
  };
  await run(batch);
  const seconds = await run(batch * steps);
  const row = {
    preset,
    inputSide: side,
    width: base.width,
    batch,
    steps,
    secondsPerStep: Number((seconds / steps).toFixed(3)),
    imagesPerSecond: Number(((batch * steps) / seconds).toFixed(3)),
  };
  rows.push(row);
  console.log(
    `${preset}: ${side}², width ${base.width}, batch ${batch}: ${row.secondsPerStep} s a step, ` +
      `${row.imagesPerSecond} images/s`,
  );
}
if (values.json) {
  await writeJsonAtomic(values.json, { adapter: gpu.adapter.description, root, rows });
}
