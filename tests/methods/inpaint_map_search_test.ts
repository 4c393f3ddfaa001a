/**
 * The inpainting autoencoder's map search: on a stand-in network whose Diff has a bright ring
 * on every image (as a hard-to-reconstruct edge has), the search finds the occlusions, prefers
 * damping the ring by avgmap, ranks best first over the whole grid, and refuses what it cannot
 * score. The smoothing it scores is the detector's: each network's map filtered, then the maximum.
 */

import assert from "node:assert/strict";
import { createImage, type FloatImage } from "../../src/data/image.ts";
import {
  avgmapWeight,
  type MapSearchSubject,
  searchMapSettings,
  smoothedMaps,
} from "../../src/methods/inpaint/map_search.ts";

const SIDE = 32;

/** 1 on a ring of radius 10–12 around the centre: where every image's Diff is high. */
const RING = Float32Array.from({ length: SIDE * SIDE }, (_, i) => {
  const radius = Math.hypot((i % SIDE) - SIDE / 2, Math.floor(i / SIDE) - SIDE / 2);
  return radius >= 10 && radius <= 12 ? 1 : 0;
});

/**
 * A stand-in for a trained network that reconstructs a flat gray image: its Diff is the squared
 * difference from 0.5 plus the ring, so an occlusion shows where it changed the image, but no
 * more than the ring does on every image.
 */
function standIn(networks = 1): MapSearchSubject {
  return {
    inputSize: SIDE,
    unsmoothedDiffs: (image: FloatImage) => {
      const diff = Float32Array.from(RING, (ring, i) => ring + (image.data[i] - 0.5) ** 2 * 8);
      return Promise.resolve(
        Array.from({ length: networks }, (_, n) => diff.map((v) => v * (n + 1))),
      );
    },
  };
}

function grayImages(count: number): FloatImage[] {
  return Array.from({ length: count }, () => {
    const image = createImage(SIDE, SIDE, 1);
    image.data.fill(0.5);
    return image;
  });
}

const GRID = { smoothSizes: [1, 3, 5], smoothPasses: [1, 2], avgmapExponents: [0, 2, 8] };
const OCCLUSION = {
  kind: "noise-occlusion",
  maskSmoothness: 0.5,
  patchSize: [0.2, 0.35],
} as const;

Deno.test("the map search finds occlusions and damps the ring every image has", async () => {
  const options = { grid: GRID, copies: 4, seed: 3, corruption: OCCLUSION };
  const withAvgmap = await searchMapSettings(standIn(), grayImages(4), {
    ...options,
    useAvgmap: true,
  });
  assert.equal(withAvgmap.length, 3 * 2 * 3, "every combination of the grid is scored");
  for (let i = 1; i < withAvgmap.length; i++) {
    assert.ok(withAvgmap[i - 1].pixelRocAuc >= withAvgmap[i].pixelRocAuc, "best first");
  }
  const best = withAvgmap[0];
  assert.ok(best.avgmapExponent > 0, "damping the ring pays");
  assert.ok(best.pixelRocAuc > 0.9, `best pixel ROC AUC ${best.pixelRocAuc}`);

  const without = await searchMapSettings(standIn(), grayImages(4), {
    ...options,
    useAvgmap: false,
  });
  assert.equal(without.length, 3 * 2, "textures: t = 0 only");
  assert.ok(without.every((candidate) => candidate.avgmapExponent === 0));
  assert.ok(
    without[0].pixelRocAuc < best.pixelRocAuc - 0.02,
    `the ring costs without avgmap: ${without[0].pixelRocAuc} vs ${best.pixelRocAuc}`,
  );
});

Deno.test("the map search refuses no validation images and a corruption that changes nothing", async () => {
  const options = { grid: GRID, useAvgmap: true, corruption: OCCLUSION };
  await assert.rejects(
    () => searchMapSettings(standIn(), [], options),
    /needs validation images/,
  );
  // An elastic deformation of a flat image moves nothing visible, so no pixel is a defect.
  await assert.rejects(
    () =>
      searchMapSettings(standIn(), grayImages(2), {
        ...options,
        corruption: { ...OCCLUSION, kind: "elastic" },
      }),
    /changed no pixel/,
  );
});

Deno.test("the searched maps are each network's map smoothed, then their maximum", async () => {
  const subject = standIn(2);
  const image = grayImages(1)[0];
  image.data[5 * SIDE + 7] = 1;
  const diffs = [await subject.unsmoothedDiffs(image)];
  const [map] = await smoothedMaps(SIDE, diffs, 3, 1);
  // Reference: a 3×3 mean over the pixels inside the image, of each network, then the maximum.
  for (const [x, y] of [[7, 5], [0, 0], [16, 4], [31, 31]]) {
    const perNetwork = diffs[0].map((diff) => {
      let total = 0;
      let count = 0;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const [nx, ny] = [x + dx, y + dy];
          if (nx < 0 || ny < 0 || nx >= SIDE || ny >= SIDE) continue;
          total += diff[ny * SIDE + nx];
          count++;
        }
      }
      return total / count;
    });
    const expected = Math.max(...perNetwork);
    assert.ok(Math.abs(map[y * SIDE + x] - expected) < 1e-5, `(${x}, ${y})`);
  }
});

Deno.test("avgmap weights: 1 where avgmap is 0, 0 at its maximum, all 1 for t = 0", () => {
  const avgmap = Float32Array.from([0, 0.5, 1, 2]);
  assert.deepEqual([...avgmapWeight(avgmap, 2)], [1, 0.5625, 0.25, 0]);
  assert.deepEqual([...avgmapWeight(avgmap, 1, 4)], [1, 0.875, 0.75, 0.5]);
  assert.deepEqual([...avgmapWeight(avgmap, 0)], [1, 1, 1, 1]);
  assert.deepEqual([...avgmapWeight(new Float32Array(3), 4)], [1, 1, 1], "an all-zero avgmap");
});
