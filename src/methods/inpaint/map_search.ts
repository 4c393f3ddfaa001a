/**
 * Choosing the map's post-processing without defect labels: copies of the validation images
 * (anomaly-free) are corrupted as in training, and every combination of the averaging filter's
 * side k, its passes n and the avgmap exponent t is scored by the pixel ROC AUC of the corrupted
 * pixels against the rest. Only pixels the corruption visibly changed count as defects (an
 * elastic deformation of a flat region changes nothing). The training corruption is subtle, as
 * real defects are: on the real bottle (bench/inpaint_map_settings.ts, quick network), its choice
 * came within 0.001 (24 epochs) and 0.014 (8 epochs) pixel ROC AUC of the best setting on the
 * test images, while noise ellipses, easy to find anywhere, chose little smoothing and a weak
 * avgmap and lost 0.39 (8 epochs). avgmap is the mean map of the clean validation images, as at
 * test time.
 *
 * @module
 */

import type { FloatImage } from "../../data/image.ts";
import { hashSeed } from "../../data/random.ts";
import { rocAuc } from "../../eval/metrics.ts";
import { init, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import * as op from "../../tensor/ops.ts";
import { corrupt, type CorruptionOptions } from "./corruption.ts";

/** A corrupted pixel counts as a defect when its mean change over the channels exceeds this. */
const VISIBLE_CHANGE = 0.02;

/** The search has nothing to score: no validation images, or no visibly corrupted pixel. */
export class MapSearchError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "MapSearchError";
  }
}

/** One combination of map settings. */
export interface MapCandidate {
  /** Side k of the averaging filter (odd). */
  smoothSize: number;
  /** Times n the filter is applied. */
  smoothPasses: number;
  /** The exponent t of (1 − avgmap)^t (0: off). */
  avgmapExponent: number;
}

/** A candidate and how well its maps separate the corrupted pixels from the rest. */
export interface ScoredMapCandidate extends MapCandidate {
  /** Pixel ROC AUC of the corrupted pixels against the others. */
  pixelRocAuc: number;
}

/** What the search tries. */
export interface MapSearchGrid {
  smoothSizes: readonly number[];
  smoothPasses: readonly number[];
  avgmapExponents: readonly number[];
}

/** The default grid: filters from 3 to 11 pixels, one to three passes, t from 0 to 8. */
export const DEFAULT_MAP_GRID: MapSearchGrid = {
  smoothSizes: [3, 5, 7, 9, 11],
  smoothPasses: [1, 2, 3],
  avgmapExponents: [0, 1, 2, 4, 8],
};

/** What the search needs from a detector. */
export interface MapSearchSubject {
  /** Side of the square maps. */
  readonly inputSize: number;
  /**
   * Each network's unsmoothed Diff of an image at the input side, divided by its calibration
   * scale: the map is the pixel-wise maximum of these once each is smoothed.
   */
  unsmoothedDiffs(image: FloatImage): Promise<Float32Array[]>;
}

/** The map's averaging filter: its side k and how many times n it is applied. */
export interface MapSmoothing {
  smoothSize: number;
  smoothPasses: number;
}

/** Applies the k×k averaging filter n times to NCHW maps (borders: the mean of what is inside). */
export function smoothMaps(maps: Tensor, smoothing: MapSmoothing): Tensor {
  let smoothed = maps;
  for (let pass = 0; pass < smoothing.smoothPasses; pass++) {
    smoothed = op.boxFilter(smoothed, smoothing.smoothSize, { normalizeBorder: true });
  }
  return smoothed;
}

/** Options of {@link searchMapSettings}. */
export interface MapSearchOptions {
  /** Corrupted copies of each validation image (default 4). */
  copies?: number;
  /** Seed of the corruptions. */
  seed?: number;
  /** The combinations to try (default {@link DEFAULT_MAP_GRID}). */
  grid?: MapSearchGrid;
  /** Whether avgmap exponents are tried (objects); otherwise t = 0 only. */
  useAvgmap: boolean;
  /** The corruption (as in training); the images are never turned or flipped. */
  corruption: CorruptionOptions;
}

/**
 * Scores every candidate of the grid on corrupted validation images, best first.
 *
 * @param validation anomaly-free images at the input side
 * @throws MapSearchError when there are no validation images or the corruptions changed no pixel
 */
export async function searchMapSettings(
  subject: MapSearchSubject,
  validation: readonly FloatImage[],
  options: MapSearchOptions,
): Promise<ScoredMapCandidate[]> {
  if (validation.length === 0) throw new MapSearchError("the map search needs validation images");
  const side = subject.inputSize;
  const plane = side * side;
  const copies = options.copies ?? 4;
  const grid = options.grid ?? DEFAULT_MAP_GRID;
  const exponents = options.useAvgmap ? grid.avgmapExponents : [0];

  const cleanDiffs: Float32Array[][] = [];
  for (const image of validation) cleanDiffs.push(await subject.unsmoothedDiffs(image));
  const corruptedDiffs: Float32Array[][] = [];
  const labels = new Uint8Array(validation.length * copies * plane);
  for (const [i, image] of validation.entries()) {
    for (let copy = 0; copy < copies; copy++) {
      // Not turned or flipped: avgmap is in the validation images' own orientation.
      const made = corrupt(image, hashSeed(options.seed ?? 0, i, copy, "map search"), {
        ...options.corruption,
        quarterTurns: false,
        flipHorizontal: false,
        flipVertical: false,
      });
      corruptedDiffs.push(await subject.unsmoothedDiffs(made.corrupted));
      const offset = (i * copies + copy) * plane;
      const { corrupted, clean } = made;
      for (let j = 0; j < plane; j++) {
        let change = 0;
        for (let c = 0; c < corrupted.channels; c++) {
          change += Math.abs(corrupted.data[c * plane + j] - clean.data[c * plane + j]);
        }
        labels[offset + j] = made.mask.data[j] > 0.5 && change / corrupted.channels > VISIBLE_CHANGE
          ? 1
          : 0;
      }
    }
  }
  if (!labels.includes(1)) {
    throw new MapSearchError("the map search's corruptions changed no pixel");
  }

  const scored: ScoredMapCandidate[] = [];
  for (const smoothSize of grid.smoothSizes) {
    for (const smoothPasses of grid.smoothPasses) {
      const clean = await smoothedMaps(side, cleanDiffs, smoothSize, smoothPasses);
      const corrupted = await smoothedMaps(side, corruptedDiffs, smoothSize, smoothPasses);
      const avgmap = meanMap(clean, plane);
      for (const avgmapExponent of exponents) {
        const scores = weightedMaps(corrupted, avgmapWeight(avgmap, avgmapExponent));
        scored.push({
          smoothSize,
          smoothPasses,
          avgmapExponent,
          pixelRocAuc: rocAuc(scores, labels),
        });
      }
    }
  }
  return scored.sort((a, b) => b.pixelRocAuc - a.pixelRocAuc);
}

/** (1 − avgmap / max)^t per pixel, clipped at 0 (all ones for t = 0). */
export function avgmapWeight(
  avgmap: Float32Array,
  exponent: number,
  max: number = avgmap.reduce((m, v) => Math.max(m, v), 0),
): Float32Array {
  if (exponent === 0 || max <= 0) return new Float32Array(avgmap.length).fill(1);
  return Float32Array.from(avgmap, (v) => Math.max(0, 1 - v / max) ** exponent);
}

/** Every map times the pixel weights, one after another in one array. */
export function weightedMaps(maps: readonly Float32Array[], weight: Float32Array): Float32Array {
  const plane = weight.length;
  const weighted = new Float32Array(maps.length * plane);
  maps.forEach((map, i) => {
    for (let j = 0; j < plane; j++) weighted[i * plane + j] = map[j] * weight[j];
  });
  return weighted;
}

/** The pixel-wise mean of equally sized maps. */
export function meanMap(maps: readonly Float32Array[], plane: number): Float32Array {
  const mean = new Float64Array(plane);
  for (const map of maps) map.forEach((v, j) => (mean[j] += v / maps.length));
  return Float32Array.from(mean);
}

/**
 * Each image's map: every network's Diff smoothed (one batch per network), then the pixel-wise
 * maximum over the networks, as the detector computes it.
 *
 * @param diffs per image, each network's unsmoothed Diff
 */
export async function smoothedMaps(
  side: number,
  diffs: readonly (readonly Float32Array[])[],
  smoothSize: number,
  smoothPasses: number,
): Promise<Float32Array[]> {
  await init();
  const networks = diffs[0]?.length ?? 0;
  let maps: Float32Array[] = [];
  for (let network = 0; network < networks; network++) {
    const smoothed = await smoothAll(
      side,
      diffs.map((perNetwork) => perNetwork[network]),
      smoothSize,
      smoothPasses,
    );
    maps = network === 0
      ? smoothed
      : maps.map((map, i) => map.map((v, j) => Math.max(v, smoothed[i][j])));
  }
  return maps;
}

/** All maps smoothed in one batch. */
async function smoothAll(
  side: number,
  maps: readonly Float32Array[],
  smoothSize: number,
  smoothPasses: number,
): Promise<Float32Array[]> {
  const plane = side * side;
  const stacked = new Float32Array(maps.length * plane);
  maps.forEach((map, i) => stacked.set(map, i * plane));
  const input = tensor(stacked, [maps.length, 1, side, side]);
  const output = noGrad(() => tidy(() => smoothMaps(input, { smoothSize, smoothPasses })));
  const [data] = await toArrays([output]);
  input.dispose();
  if (output !== input) output.dispose();
  return maps.map((_, i) => data.subarray(i * plane, (i + 1) * plane));
}
