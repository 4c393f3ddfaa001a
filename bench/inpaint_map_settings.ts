/**
 * Which map settings suit the inpainting autoencoder on a category (a benchmark, not a test):
 *
 *   deno run -A bench/inpaint_map_settings.ts [--category bottle] [--root DIR] [--preset quick]
 *     [--epochs N] [--images N] [--seed 0] [--sizes 3,5,7,9,11] [--passes 1,2,3]
 *     [--exponents 0,1,2,4,8] [--json FILE]
 *
 * Trains the preset once (with the given overrides), computes every validation and test image's
 * unsmoothed Diff once, then scores each combination of the averaging filter's side k, its passes
 * n and the avgmap exponent t: pixel ROC AUC and image ROC AUC (score = the sum of the map), both
 * at the network's input side with the masks resized to it. The default root is the synthetic
 * fixtures, which is where the presets' map settings are chosen; run it on the real data only to
 * see how far a choice is from the best one there, never to choose.
 */

import { parseArgs } from "node:util";
import { ensureFixtures } from "../fixtures/mod.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { init } from "../src/tensor/tensor.ts";
import "../src/tensor/ops.ts";
import { rocAuc } from "../src/eval/metrics.ts";
import {
  corruptionFor,
  inpaint,
  type InpaintPreset,
  trainInpaint,
} from "../src/methods/inpaint/inpaint.ts";
import type { CorruptionKind } from "../src/methods/inpaint/corruption.ts";
import {
  avgmapWeight,
  meanMap,
  type ScoredMapCandidate,
  searchMapSettings,
  smoothedMaps,
  weightedMaps,
} from "../src/methods/inpaint/map_search.ts";
import { writeJsonAtomic } from "../src/util/fs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    category: { type: "string", default: "bottle" },
    root: { type: "string" },
    preset: { type: "string", default: "quick" },
    epochs: { type: "string" },
    images: { type: "string" },
    seed: { type: "string", default: "0" },
    sizes: { type: "string", default: "3,5,7,9,11" },
    passes: { type: "string", default: "1,2,3" },
    exponents: { type: "string", default: "0,1,2,4,8,16" },
    "search-corruption": { type: "string", default: "elastic" },
    copies: { type: "string", default: "4" },
    json: { type: "string" },
  },
});

const numbers = (flag: string, text: string) =>
  text.split(",").map((part) => {
    const value = Number(part);
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(`--${flag} expects non-negative numbers separated by commas, got "${text}"`);
    }
    return value;
  });

const gpu = await init();
const root = values.root ?? await ensureFixtures();
const category = await openCategory(root, values.category!);
const overrides = { epochs: values.epochs, images: values.images };
const settings = inpaint.resolveOptions(overrides, values.preset);
console.log(
  `training inpaint ${values.preset} on ${root}/${values.category} (${gpu.adapter.description})`,
);
const started = performance.now();
const { detector } = await trainInpaint(category, {
  ...settings,
  preset: values.preset as InpaintPreset,
  seed: Number(values.seed),
  log: (line) => console.log(line),
});
const trainingSeconds = (performance.now() - started) / 1000;
const side = detector!.inputSize;
const plane = side * side;
const grid = {
  smoothSizes: numbers("sizes", values.sizes!),
  smoothPasses: numbers("passes", values.passes!),
  avgmapExponents: numbers("exponents", values.exponents!),
};

const validation = [];
for (const sample of category.validation) {
  validation.push(
    await category.loadImage(sample, { channels: detector!.channels, width: side, height: side }),
  );
}
const searched = await searchMapSettings(detector!, validation, {
  useAvgmap: true,
  grid,
  seed: Number(values.seed),
  copies: Number(values.copies),
  corruption: {
    ...corruptionFor(detector!.config.settings, null, side),
    kind: values["search-corruption"] as CorruptionKind,
  },
});

const cleanDiffs = [];
for (const image of validation) cleanDiffs.push(await detector!.unsmoothedDiffs(image));
const testDiffs = [];
const labels = new Uint8Array(category.test.length * plane);
for (const [i, sample] of category.test.entries()) {
  const image = await category.loadImage(sample, { channels: detector!.channels });
  testDiffs.push(await detector!.unsmoothedDiffs(image));
  const mask = await category.loadMask(sample, { width: side, height: side });
  mask.data.forEach((v, j) => (labels[i * plane + j] = v > 0.5 ? 1 : 0));
}
const imageLabels = Uint8Array.from(category.test, (sample) => (sample.anomalous ? 1 : 0));

interface Row extends ScoredMapCandidate {
  testPixelRocAuc: number;
  testImageRocAuc: number;
}
const rows: Row[] = [];
for (const candidate of searched) {
  const { smoothSize, smoothPasses, avgmapExponent } = candidate;
  const clean = await smoothedMaps(side, cleanDiffs, smoothSize, smoothPasses);
  const test = await smoothedMaps(side, testDiffs, smoothSize, smoothPasses);
  const scores = weightedMaps(test, avgmapWeight(meanMap(clean, plane), avgmapExponent));
  // The image score is the sum of its map, as the detector's.
  const imageScores = Float64Array.from(
    test,
    (_, i) => scores.subarray(i * plane, (i + 1) * plane).reduce((total, v) => total + v, 0),
  );
  rows.push({
    ...candidate,
    testPixelRocAuc: rocAuc(scores, labels),
    testImageRocAuc: rocAuc(imageScores, imageLabels),
  });
}
detector!.dispose();

const bestOnTest = rows.reduce((best, row) =>
  row.testPixelRocAuc > best.testPixelRocAuc ? row : best
);
console.log(
  `\n${values.category}: ${category.validation.length} validation, ${category.test.length} test ` +
    `images, maps at ${side}², trained in ${trainingSeconds.toFixed(0)} s\n`,
);
console.log("   k   n     t   search pixel AUROC   test pixel AUROC   test image AUROC");
for (const row of rows) {
  console.log(
    `${String(row.smoothSize).padStart(4)}${String(row.smoothPasses).padStart(4)}` +
      `${String(row.avgmapExponent).padStart(6)}${row.pixelRocAuc.toFixed(4).padStart(21)}` +
      `${row.testPixelRocAuc.toFixed(4).padStart(19)}${
        row.testImageRocAuc.toFixed(4).padStart(19)
      }`,
  );
}
const chosen = rows[0];
console.log(
  `\nthe search chooses k ${chosen.smoothSize}, n ${chosen.smoothPasses}, t ${chosen.avgmapExponent}: ` +
    `test pixel ROC AUC ${
      chosen.testPixelRocAuc.toFixed(4)
    }; the best on the test images would be ` +
    `${
      bestOnTest.testPixelRocAuc.toFixed(4)
    } (k ${bestOnTest.smoothSize}, n ${bestOnTest.smoothPasses}, ` +
    `t ${bestOnTest.avgmapExponent})`,
);
if (values.json) {
  await writeJsonAtomic(values.json, {
    root,
    category: values.category,
    preset: values.preset,
    settings,
    adapter: gpu.adapter.description,
    inputSide: side,
    trainingSeconds,
    rows,
  });
}
