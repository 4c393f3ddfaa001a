/**
 * Real-world image shapes and formats end to end (fixtures/real_world.ts): every method trains on
 * non-square images and on a category whose images differ in size, writes each map at its own
 * image's size, and the evaluation scores them; the broken cases are refused, naming the file.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { generateRealWorldCases, REAL_WORLD_CASES } from "../../fixtures/real_world.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { mapPath } from "../../src/eval/evaluate.ts";
import type { CategoryMetrics } from "../../src/eval/evaluate.ts";
import { evaluateRuns } from "../../src/eval/runs.ts";
import { readTiffFile } from "../../src/eval/tiff.ts";
import { getMethod, listMethods } from "../../src/methods/registry.ts";
import { trainRun } from "../../src/methods/runner.ts";
import { readFinishedRun, validationMapPath } from "../../src/run/folder.ts";
import { init } from "../../src/tensor/tensor.ts";
import { InputError } from "../../src/util/errors.ts";

const quiet = { onWarning: () => {} };

/** Small settings of every method: enough to produce real maps in a few seconds each. */
const SMALL: Readonly<Record<string, Record<string, unknown>>> = {
  patchcore: { imageSize: 64, trainImages: 14 },
  padim: { imageSize: 64, channels: 40, trainImages: 14 },
  // Layer 2 (512-d) keeps the PCA's eigensolver to a few seconds on a software adapter.
  "cnn-dict": {
    imageSize: 64,
    stride: 16,
    layer: "layer2",
    clusters: 4,
    dictionaryPatches: 200,
    trainImages: 4,
  },
  "ae-ssim": { epochs: 1, patches: 8, batch: 8, objectSize: 128, textureZoom: 128 },
  inpaint: { epochs: 1, batch: 4, images: 8, textureSize: 64, objectSize: 64 },
  "ae-l2": { epochs: 1, patches: 8, batch: 8, objectSize: 128, textureZoom: 128 },
  gmm: { imageSize: 48, trainImages: 4, components: 4, levels: 2 },
  variation: { trainImages: 6, imageSize: 48 },
  anogan: {
    epochs: 1,
    batch: 8,
    samples: 16,
    textureZoom: 64,
    patchStride: 32,
    searchSteps: 5,
  },
};

let generated: Promise<string> | null = null;

/** The cases, generated once per test process into a temporary folder. */
function casesRoot(): Promise<string> {
  generated ??= (async () => {
    const root = await Deno.makeTempDir({ prefix: "anodet-real-world-" });
    await generateRealWorldCases(root);
    return root;
  })();
  return generated;
}

/**
 * Trains `methodName` on a case, checks that every map file has its image's own size, and
 * returns the evaluation's metrics.
 */
async function trainAndEvaluate(methodName: string, caseName: string): Promise<CategoryMetrics> {
  const root = await casesRoot();
  const category = await openCategory(root, caseName, quiet);
  const method = getMethod(methodName);
  const runDir = await Deno.makeTempDir({ prefix: `anodet-${methodName}-${caseName}-` });
  try {
    const result = await trainRun({
      method,
      category,
      runDir,
      trainOptions: { ...SMALL[methodName], seed: 1 },
    });
    result.detector?.dispose();
    assert.equal(result.stopped, false);
    const mapsRoot = join(runDir, "maps");
    for (const sample of category.test) {
      const map = await readTiffFile(mapPath(mapsRoot, caseName, sample));
      assert.deepEqual(
        [map.width, map.height],
        [sample.width, sample.height],
        `${methodName}: the map of ${sample.imagePath} has its image's size`,
      );
    }
    for (const sample of category.validation) {
      const map = await readTiffFile(validationMapPath(mapsRoot, caseName, sample.id));
      assert.deepEqual([map.width, map.height], [sample.width, sample.height]);
    }
    const [{ categories: [evaluated] }] = await evaluateRuns([await readFinishedRun(runDir)], {
      examples: 1,
      onWarning: () => {},
    });
    return evaluated.metrics;
  } finally {
    await Deno.remove(runDir, { recursive: true });
  }
}

Deno.test("real-world cases: sizes and formats open at each image's own size", async () => {
  const root = await casesRoot();
  const expectedSizes: Record<string, (sizes: Set<string>) => void> = {
    linescan: (sizes) => assert.deepEqual([...sizes], ["64x160"]),
    jitter: (sizes) => {
      assert.ok(sizes.size >= 5, `a few pixels apart: ${[...sizes]}`);
      for (const size of sizes) {
        const [width, height] = size.split("x").map(Number);
        assert.ok(width >= 92 && width <= 96 && height >= 92 && height <= 96, size);
      }
    },
    doubled: (sizes) => assert.deepEqual([...sizes].sort(), ["192x192", "96x96"]),
  };
  for (const realCase of REAL_WORLD_CASES) {
    if (realCase.refusal?.at === "open") {
      await assert.rejects(() => openCategory(root, realCase.name, quiet), realCase.refusal.error);
      continue;
    }
    const category = await openCategory(root, realCase.name, quiet);
    assert.equal(category.info.kind, realCase.kind);
    const samples = [...category.train, ...category.validation, ...category.test];
    const sizes = new Set(samples.map((sample) => `${sample.width}x${sample.height}`));
    expectedSizes[realCase.name]?.(sizes);
    assert.equal(category.mixedSizes, sizes.size > 1);
    for (const sample of samples) {
      const image = await category.loadImage(sample);
      assert.deepEqual([image.width, image.height], [sample.width, sample.height]);
      assert.ok(image.data.every((v) => v >= 0 && v <= 1), `${sample.imagePath}: values in [0, 1]`);
      const mask = await category.loadMask(sample);
      assert.deepEqual([mask.width, mask.height], [sample.width, sample.height]);
      const defectPixels = mask.data.reduce((sum, v) => sum + v, 0);
      assert.ok(mask.data.every((v) => v === 0 || v === 1), `${sample.maskPath}: binary`);
      assert.equal(defectPixels > 0, sample.anomalous, `${sample.imagePath}: mask matches label`);
    }
  }
  // The files really are in those formats: PNG colour type and bit depth from each IHDR.
  const pngKinds: Record<string, string[]> = {
    formats_gray: ["0/16", "4/8", "3/8", "0/8"],
    formats_rgb: ["2/16", "6/8", "3/8", "2/8"],
  };
  for (const [name, kinds] of Object.entries(pngKinds)) {
    const category = await openCategory(root, name, quiet);
    const seen = new Set<string>();
    for (const sample of [...category.train, ...category.validation]) {
      const bytes = await Deno.readFile(sample.imagePath);
      seen.add(`${bytes[25]}/${bytes[24]}`);
    }
    assert.deepEqual([...seen].sort(), [...kinds].sort(), `${name}: colour type/bit depth`);
    const masks = category.test.flatMap((sample) => sample.maskPath ?? []);
    assert.ok(masks.some((path) => path.endsWith(".jpg")), "JPEG masks");
    assert.ok(masks.some((path) => path.endsWith(".png")), "beside PNG masks");
  }
});

for (const methodName of listMethods().map((method) => method.name)) {
  Deno.test(`${methodName}: maps at each image's own size on non-square and mixed-size images`, async () => {
    await init();
    for (const caseName of ["linescan", "jitter"]) {
      const metrics = await trainAndEvaluate(methodName, caseName);
      assert.ok(metrics.pixel_auroc !== null && Number.isFinite(metrics.pixel_auroc));
      assert.ok(metrics.threshold !== null && Number.isFinite(metrics.threshold));
      if (methodName === "patchcore") {
        assert.ok(metrics.pixel_auroc >= 0.9, `${caseName}: pixel ROC AUC ${metrics.pixel_auroc}`);
      }
    }
  });
}

Deno.test("patchcore learns every working real-world case (2× sizes, formats, no good test images)", async () => {
  await init();
  const floors: Record<string, number> = {
    doubled: 0.9,
    formats_gray: 0.9,
    formats_rgb: 0.9,
    no_good_test: 0.9,
  };
  for (const [caseName, floor] of Object.entries(floors)) {
    const metrics = await trainAndEvaluate("patchcore", caseName);
    assert.ok(metrics.pixel_auroc! >= floor, `${caseName}: pixel ROC AUC ${metrics.pixel_auroc}`);
    if (caseName === "no_good_test") {
      assert.equal(metrics.image_auroc, null);
      assert.ok(metrics.notes.some((note) => note.startsWith("image_auroc")), "a note says why");
    } else {
      assert.ok(metrics.image_auroc! >= 0.9, `${caseName}: image ROC AUC ${metrics.image_auroc}`);
    }
  }
});

Deno.test("an empty test folder trains, and its evaluation says there is nothing to score", async () => {
  await init();
  const realCase = REAL_WORLD_CASES.find((c) => c.name === "empty_test")!;
  await assert.rejects(
    () => trainAndEvaluate("padim", "empty_test"),
    (error: Error) => error instanceof InputError && realCase.refusal!.error.test(error.message),
  );
});
