/**
 * The same training with the same seed on the same adapter gives the same maps and metrics: for a
 * network (the L2 autoencoder) and for a classical method (the GMM texture model). A different
 * seed gives other maps, so the comparison is not blind.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyDataset } from "../data/helpers.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { evaluateRuns } from "../../src/eval/runs.ts";
import { readTiffFile } from "../../src/eval/tiff.ts";
import { getMethod } from "../../src/methods/registry.ts";
import { trainRun } from "../../src/methods/runner.ts";
import { readRun } from "../../src/run/folder.ts";

/** Metrics compared between runs. */
const METRICS = ["pixel_auroc", "image_auroc", "au_pro", "pixel_ap", "threshold"] as const;

/** The largest metric difference allowed between two runs of one command. */
const TOLERANCE = 1e-6;

interface TinyCase {
  method: string;
  category: string;
  options: Record<string, unknown>;
}

const CASES: TinyCase[] = [
  {
    method: "ae-l2",
    category: "bottle",
    options: { preset: "quick", epochs: 2, patches: 8, batch: 4, latent: 8, objectSize: 128 },
  },
  {
    method: "gmm",
    category: "carpet",
    options: { imageSize: 32, levels: 2, components: 2, trainImages: 4 },
  },
];

/** Trains `tiny` with `seed` into `runDir` and returns its metrics and its maps, by path. */
async function trainAndScore(dataRoot: string, tiny: TinyCase, seed: number, runDir: string) {
  const category = await openCategory(dataRoot, tiny.category, { onWarning: () => {} });
  const result = await trainRun({
    method: getMethod(tiny.method),
    category,
    runDir,
    trainOptions: { ...tiny.options, seed },
  });
  result.detector?.dispose();
  const [{ categories: [evaluation] }] = await evaluateRuns([await readRun(runDir)], {
    examples: 0,
    onWarning: () => {},
  });
  const maps = new Map<string, Float32Array>();
  const mapsRoot = join(runDir, "maps", tiny.category);
  for (const sample of [...category.test, ...category.validation]) {
    const folder = sample.split === "test" ? join("test", sample.defect) : "validation/good";
    const path = join(folder, `${sample.id}.tiff`);
    maps.set(path, (await readTiffFile(join(mapsRoot, path))).map);
  }
  return { metrics: evaluation.metrics, maps };
}

function largestDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let largest = 0;
  for (let i = 0; i < a.length; i++) largest = Math.max(largest, Math.abs(a[i] - b[i]));
  return largest;
}

Deno.test("one command, one seed, one adapter: the same maps and metrics", async (t) => {
  const { parent: temp, root: dataRoot } = await tinyDataset({
    categories: ["bottle", "carpet"],
    testDefectiveCount: 3,
  });
  try {
    for (const tiny of CASES) {
      await t.step(tiny.method, async () => {
        const first = await trainAndScore(dataRoot, tiny, 5, join(temp, tiny.method, "first"));
        const second = await trainAndScore(dataRoot, tiny, 5, join(temp, tiny.method, "second"));
        for (const key of METRICS) {
          const [a, b] = [first.metrics[key], second.metrics[key]];
          assert.ok(
            typeof a === "number" && typeof b === "number" && Math.abs(a - b) <= TOLERANCE,
            `${tiny.method} ${key}: ${a} then ${b}`,
          );
        }
        assert.deepEqual([...second.maps.keys()], [...first.maps.keys()]);
        for (const [path, map] of first.maps) {
          const difference = largestDifference(map, second.maps.get(path)!);
          assert.ok(difference <= TOLERANCE, `${tiny.method} ${path} differs by ${difference}`);
        }
        if (tiny.method === "ae-l2") {
          const other = await trainAndScore(dataRoot, tiny, 6, join(temp, tiny.method, "seed6"));
          const differences = [...first.maps].map(([path, map]) =>
            largestDifference(map, other.maps.get(path)!)
          );
          assert.ok(Math.max(...differences) > 1e-3, "another seed gives other maps");
        }
      });
    }
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});
