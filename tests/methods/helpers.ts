/** Shared by the method tests: the test images to score, and pixel ROC AUC over them. */

import assert from "node:assert/strict";
import type { MvtecCategory, Sample } from "../../src/data/mvtec.ts";
import { rocAuc } from "../../src/eval/metrics.ts";
import type { AnomalyDetector } from "../../src/methods/method.ts";

/** All good test images and the first two of each defect type: enough to rank, quick to score. */
export function evaluationSubset(category: MvtecCategory): Sample[] {
  const perDefect = new Map<string, number>();
  return category.test.filter((sample) => {
    if (!sample.anomalous) return true;
    const seen = perDefect.get(sample.defect) ?? 0;
    perDefect.set(sample.defect, seen + 1);
    return seen < 2;
  });
}

/** An image's map, as scored by {@link pixelRocAucOn}. */
export interface ScoredSample {
  sample: Sample;
  map: Float32Array;
}

/**
 * Pixel ROC AUC of a detector over samples of a category, checking that every map has the
 * image's size and only finite values.
 */
export async function pixelRocAucOn(
  category: MvtecCategory,
  detector: Pick<AnomalyDetector, "anomalyMap"> & { channels?: 1 | 3 },
  samples: readonly Sample[],
): Promise<{ auc: number; scored: ScoredSample[] }> {
  const scored: ScoredSample[] = [];
  const labels: Uint8Array[] = [];
  for (const sample of samples) {
    const image = await category.loadImage(sample, { channels: detector.channels ?? 1 });
    const map = await detector.anomalyMap(image);
    assert.equal(map.length, image.width * image.height);
    assert.ok(map.every(Number.isFinite), `${sample.imagePath}: non-finite map values`);
    const mask = await category.loadMask(sample);
    scored.push({ sample, map });
    labels.push(Uint8Array.from(mask.data, (v) => (v > 0.5 ? 1 : 0)));
  }
  const scores = new Float32Array(scored.reduce((n, s) => n + s.map.length, 0));
  const allLabels = new Uint8Array(scores.length);
  let offset = 0;
  scored.forEach(({ map }, i) => {
    scores.set(map, offset);
    allLabels.set(labels[i], offset);
    offset += map.length;
  });
  return { auc: rocAuc(scores, allLabels), scored };
}

/**
 * Saves a detector into a temporary folder, loads it back with `load`, and checks that the
 * reloaded detector gives the same map (within 1e-3) for an image scored before.
 */
export async function assertSaveLoadKeepsMap<Detector extends AnomalyDetector>(
  category: MvtecCategory,
  detector: Detector,
  load: (directory: string) => Promise<Detector>,
  before: ScoredSample,
): Promise<Detector> {
  const directory = await Deno.makeTempDir();
  try {
    await detector.save(directory);
    const loaded = await load(directory);
    try {
      const image = await category.loadImage(before.sample, { channels: detector.channels });
      const again = await loaded.anomalyMap(image);
      const worst = again.reduce((m, v, i) => Math.max(m, Math.abs(v - before.map[i])), 0);
      assert.ok(worst < 1e-3, `the reloaded ${detector.method} map differs by ${worst}`);
      return loaded;
    } catch (error) {
      loaded.dispose();
      throw error;
    }
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}
