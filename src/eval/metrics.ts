/**
 * Exact evaluation metrics of the MVTec AD protocol: ROC AUC, average
 * precision, the per-region-overlap (PRO) curve with its normalised area
 * AU-PRO, and the paper's validation-threshold protocol (CVPR 2019, sec. 4.3).
 *
 * Conventions, used everywhere in this module:
 * - Curves (ROC, PR, PRO) classify a pixel/image as anomalous at threshold `t`
 *   when `score >= t`. Thresholds are the distinct observed scores, visited
 *   from the highest down; curves start at the point for `t = +Infinity`
 *   (nothing detected) and end at the lowest score (everything detected).
 *   Ties therefore move both rates at once, which is what makes the areas
 *   exact with tied scores.
 * - The binary segmentation of the threshold protocol is `map > threshold`,
 *   as written in the paper.
 * - Mask pixels with any non-zero value are anomalous.
 * - A metric that is undefined for the given data (e.g. ROC AUC without any
 *   positive) throws {@link UndefinedMetricError}; no function returns NaN.
 *
 * Everything sorts once (radix sort, see `sort.ts`) and then sweeps the sorted
 * scores, so a full MVTec category (about 67 million pixels) takes seconds.
 *
 * @module
 */

import {
  connectedComponents,
  largestComponentAbove,
  smallestCleanThreshold,
} from "./components.ts";
import { sortFloat32, sortFloat32WithPayload } from "./sort.ts";

export {
  connectedComponents,
  largestComponentAbove,
  smallestCleanThreshold,
} from "./components.ts";
export type { ConnectedComponents } from "./components.ts";

/** The FPR integration limit of MVTec AD's AU-PRO. */
export const DEFAULT_PRO_FPR_LIMIT = 0.3;

/**
 * Thrown when a metric is mathematically undefined for the given data, e.g.
 * ROC AUC with no positive or no negative sample. `metric` names the metric.
 */
export class UndefinedMetricError extends Error {
  /** Name of the undefined metric, e.g. `"roc_auc"`. */
  readonly metric: string;

  /**
   * Creates the error.
   *
   * @param metric name of the metric that is undefined
   * @param reason human-readable explanation
   */
  constructor(metric: string, reason: string) {
    super(`${metric} is undefined: ${reason}`);
    this.name = "UndefinedMetricError";
    this.metric = metric;
  }
}

/** Scores accepted by the sample-level metrics. */
export type Scores = Float32Array | Float64Array;

/** Scores of positive and negative samples, each sorted ascending. */
export interface SortedBinaryScores {
  /** Scores of positive (anomalous) samples, ascending. */
  positives: Scores;
  /** Scores of negative (normal) samples, ascending. */
  negatives: Scores;
}

function sortAscending(values: Scores): Scores {
  return values instanceof Float32Array ? sortFloat32(values) : values.slice().sort();
}

function assertNoNaN(values: ArrayLike<number>, what: string): void {
  for (let i = 0; i < values.length; i++) {
    if (Number.isNaN(values[i])) throw new RangeError(`${what}: value at index ${i} is NaN`);
  }
}

/**
 * Splits scores by label (non-zero = positive) and sorts both groups ascending.
 *
 * @param scores one score per sample; NaN is rejected
 * @param labels one label per sample, non-zero meaning positive
 * @returns the sorted positive and negative scores
 */
export function splitAndSortScores(scores: Scores, labels: Uint8Array): SortedBinaryScores {
  if (scores.length !== labels.length) {
    throw new RangeError(`${scores.length} scores but ${labels.length} labels`);
  }
  assertNoNaN(scores, "scores");
  let positiveCount = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] !== 0) positiveCount++;
  const makeArray = (length: number): Scores =>
    scores instanceof Float32Array ? new Float32Array(length) : new Float64Array(length);
  const positives = makeArray(positiveCount);
  const negatives = makeArray(scores.length - positiveCount);
  let p = 0;
  let n = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 0) positives[p++] = scores[i];
    else negatives[n++] = scores[i];
  }
  return { positives: sortAscending(positives), negatives: sortAscending(negatives) };
}

/**
 * Visits the distinct thresholds of two ascending arrays from the highest to
 * the lowest. For each threshold `t` it reports the index range
 * `[positiveFrom, positiveTo)` of positives equal to `t` and how many
 * negatives equal `t`.
 */
function forEachThresholdDescending(
  positives: ArrayLike<number>,
  negatives: ArrayLike<number>,
  visit: (threshold: number, positiveFrom: number, positiveTo: number, negatives: number) => void,
): void {
  let p = positives.length - 1;
  let n = negatives.length - 1;
  while (p >= 0 || n >= 0) {
    const threshold = p < 0
      ? negatives[n]
      : n < 0
      ? positives[p]
      : Math.max(positives[p], negatives[n]);
    const positiveTo = p + 1;
    while (p >= 0 && positives[p] === threshold) p--;
    let negativeCount = 0;
    while (n >= 0 && negatives[n] === threshold) {
      n--;
      negativeCount++;
    }
    visit(threshold, p + 1, positiveTo, negativeCount);
  }
}

function requireBothClasses(metric: string, positives: number, negatives: number): void {
  if (positives === 0) throw new UndefinedMetricError(metric, "there are no positive samples");
  if (negatives === 0) throw new UndefinedMetricError(metric, "there are no negative samples");
}

/**
 * Keeps curve points, dropping points closer than `resolution` (in both
 * coordinates) to the last kept one. The final point is always kept.
 */
class CurveBuilder {
  private readonly x: number[] = [];
  private readonly y: number[] = [];
  private readonly thresholds: number[] = [];
  private pending: [number, number, number] | null = null;

  constructor(private readonly resolution: number) {}

  add(x: number, y: number, threshold: number): void {
    const last = this.x.length - 1;
    if (
      last < 0 || Math.abs(x - this.x[last]) >= this.resolution ||
      Math.abs(y - this.y[last]) >= this.resolution
    ) {
      this.x.push(x);
      this.y.push(y);
      this.thresholds.push(threshold);
      this.pending = null;
    } else {
      this.pending = [x, y, threshold];
    }
  }

  finish(): { x: Float64Array; y: Float64Array; thresholds: Float64Array } {
    if (this.pending) {
      this.x.push(this.pending[0]);
      this.y.push(this.pending[1]);
      this.thresholds.push(this.pending[2]);
      this.pending = null;
    }
    return {
      x: Float64Array.from(this.x),
      y: Float64Array.from(this.y),
      thresholds: Float64Array.from(this.thresholds),
    };
  }
}

/** Options for curve functions. */
export interface CurveOptions {
  /**
   * Drop points that move less than this in both coordinates from the last
   * kept point (the final point is always kept). Default 0 keeps every
   * distinct threshold; use e.g. 1e-3 for plotting millions of pixels.
   */
  resolution?: number;
}

/** A ROC curve: `fpr[i]`, `tpr[i]` when detecting `score >= thresholds[i]`. */
export interface RocCurve {
  /** False positive rates, non-decreasing, from 0 to 1. */
  fpr: Float64Array;
  /** True positive rates, non-decreasing, from 0 to 1. */
  tpr: Float64Array;
  /** Thresholds, decreasing; the first is `+Infinity`. */
  thresholds: Float64Array;
}

/**
 * ROC curve of already split and sorted scores.
 *
 * @param sorted ascending positive and negative scores
 * @param options point-thinning options
 * @returns the curve, starting at (0, 0) and ending at (1, 1)
 * @throws {UndefinedMetricError} when either class is empty
 */
export function rocCurveFromSorted(
  sorted: SortedBinaryScores,
  options: CurveOptions = {},
): RocCurve {
  const positiveTotal = sorted.positives.length;
  const negativeTotal = sorted.negatives.length;
  requireBothClasses("roc_curve", positiveTotal, negativeTotal);
  const curve = new CurveBuilder(options.resolution ?? 0);
  curve.add(0, 0, Infinity);
  let truePositives = 0;
  let falsePositives = 0;
  forEachThresholdDescending(sorted.positives, sorted.negatives, (t, from, to, negatives) => {
    truePositives += to - from;
    falsePositives += negatives;
    curve.add(falsePositives / negativeTotal, truePositives / positiveTotal, t);
  });
  const { x, y, thresholds } = curve.finish();
  return { fpr: x, tpr: y, thresholds };
}

/**
 * Exact ROC AUC of already split and sorted scores (trapezoids between
 * distinct thresholds, so ties count one half).
 *
 * @param sorted ascending positive and negative scores
 * @returns the area under the ROC curve in [0, 1]
 * @throws {UndefinedMetricError} when either class is empty
 */
export function rocAucFromSorted(sorted: SortedBinaryScores): number {
  const positiveTotal = sorted.positives.length;
  const negativeTotal = sorted.negatives.length;
  requireBothClasses("roc_auc", positiveTotal, negativeTotal);
  // Sum of trapezoids in count units: width = new negatives, heights = TP before/after.
  let doubledArea = 0;
  let truePositives = 0;
  forEachThresholdDescending(sorted.positives, sorted.negatives, (_t, from, to, negatives) => {
    const newPositives = to - from;
    doubledArea += negatives * (2 * truePositives + newPositives);
    truePositives += newPositives;
  });
  return doubledArea / (2 * positiveTotal * negativeTotal);
}

/**
 * Average precision of already split and sorted scores, defined as sklearn's
 * `average_precision_score`: `sum_k (R_k - R_{k-1}) * P_k` over distinct
 * thresholds from high to low (step interpolation, no trapezoids).
 *
 * @param sorted ascending positive and negative scores
 * @returns average precision in [0, 1]
 * @throws {UndefinedMetricError} when there is no positive sample
 */
export function averagePrecisionFromSorted(sorted: SortedBinaryScores): number {
  const positiveTotal = sorted.positives.length;
  if (positiveTotal === 0) {
    throw new UndefinedMetricError("average_precision", "there are no positive samples");
  }
  let sum = 0;
  let truePositives = 0;
  let falsePositives = 0;
  forEachThresholdDescending(sorted.positives, sorted.negatives, (_t, from, to, negatives) => {
    const newPositives = to - from;
    truePositives += newPositives;
    falsePositives += negatives;
    if (newPositives > 0) {
      sum += newPositives * (truePositives / (truePositives + falsePositives));
    }
  });
  return sum / positiveTotal;
}

/**
 * ROC curve of scores with binary labels.
 *
 * @param scores one score per sample; higher = more anomalous; NaN is rejected
 * @param labels non-zero = positive (anomalous)
 * @param options point-thinning options
 * @returns the ROC curve
 * @throws {UndefinedMetricError} when there is no positive or no negative sample
 */
export function rocCurve(scores: Scores, labels: Uint8Array, options: CurveOptions = {}): RocCurve {
  return rocCurveFromSorted(splitAndSortScores(scores, labels), options);
}

/**
 * Exact ROC AUC (equal to the Mann-Whitney U statistic with ties counted 1/2).
 *
 * @param scores one score per sample; higher = more anomalous; NaN is rejected
 * @param labels non-zero = positive (anomalous)
 * @returns the area under the ROC curve in [0, 1]
 * @throws {UndefinedMetricError} when there is no positive or no negative sample
 */
export function rocAuc(scores: Scores, labels: Uint8Array): number {
  return rocAucFromSorted(splitAndSortScores(scores, labels));
}

/**
 * Average precision (area under the precision-recall curve with step
 * interpolation), as sklearn's `average_precision_score`.
 *
 * @param scores one score per sample; higher = more anomalous; NaN is rejected
 * @param labels non-zero = positive (anomalous)
 * @returns average precision in [0, 1]
 * @throws {UndefinedMetricError} when there is no positive sample
 */
export function averagePrecision(scores: Scores, labels: Uint8Array): number {
  return averagePrecisionFromSorted(splitAndSortScores(scores, labels));
}

/**
 * Accumulates the trapezoid area under a piecewise-linear curve given point by
 * point with non-decreasing x, up to `xLimit` (interpolating linearly at the
 * limit; nothing beyond it counts).
 */
class TrapezoidUpTo {
  area = 0;
  done = false;
  private previousX = NaN;
  private previousY = NaN;

  constructor(private readonly xLimit: number) {}

  add(x: number, y: number): void {
    if (this.done) return;
    if (Number.isNaN(this.previousX)) {
      this.previousX = x;
      this.previousY = y;
      if (x >= this.xLimit) this.done = true;
      return;
    }
    if (x < this.previousX) throw new RangeError("curve x values must be non-decreasing");
    if (x > this.xLimit) {
      const fraction = (this.xLimit - this.previousX) / (x - this.previousX);
      const yAtLimit = this.previousY + fraction * (y - this.previousY);
      this.area += (this.xLimit - this.previousX) * (this.previousY + yAtLimit) / 2;
      this.done = true;
      return;
    }
    this.area += (x - this.previousX) * (this.previousY + y) / 2;
    this.previousX = x;
    this.previousY = y;
  }
}

/**
 * Trapezoid area under a piecewise-linear curve from its first point up to
 * `xLimit`, interpolating linearly at `xLimit`. Points beyond the limit are
 * ignored; if the curve ends before the limit, the area stops at its end
 * (no extrapolation).
 *
 * @param x non-decreasing x coordinates
 * @param y y coordinates
 * @param xLimit upper integration bound
 * @returns the (unnormalised) area
 */
export function areaUnderCurveUpTo(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  xLimit: number = Infinity,
): number {
  if (x.length !== y.length) throw new RangeError(`${x.length} x values but ${y.length} y values`);
  const integrator = new TrapezoidUpTo(xLimit);
  for (let i = 0; i < x.length && !integrator.done; i++) integrator.add(x[i], y[i]);
  return integrator.area;
}

/** One image with its anomaly map and ground truth, at the same resolution. */
export interface ScoredImage {
  /** Row-major anomaly map, `width * height` values, higher = more anomalous. */
  map: Float32Array;
  /** Row-major ground-truth mask (non-zero = defect), or null for a defect-free image. */
  mask: Uint8Array | null;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

/**
 * All pixels of a set of images, sorted once, ready for the pixel-level
 * metrics. Anomalous pixels carry the global index of their ground-truth
 * region (8-connected component of their image's mask).
 */
export interface PixelScoreTable {
  /** Scores of anomalous pixels, ascending. */
  positives: Float32Array;
  /** Scores of normal pixels (mask == 0, defect-free images included), ascending. */
  negatives: Float32Array;
  /** `positiveRegions[i]` is the region index (0..regionCount-1) of `positives[i]`. */
  positiveRegions: Uint32Array;
  /** Pixel count of each ground-truth region. */
  regionSizes: Uint32Array;
  /** Number of ground-truth regions over all images. */
  regionCount: number;
}

function checkScoredImage(image: ScoredImage, index: number): void {
  const expected = image.width * image.height;
  if (image.map.length !== expected) {
    throw new RangeError(
      `image ${index}: map has ${image.map.length} values, expected ${image.width}x${image.height}`,
    );
  }
  if (image.mask !== null && image.mask.length !== expected) {
    throw new RangeError(
      `image ${index}: mask has ${image.mask.length} values, expected ${image.width}x${image.height}`,
    );
  }
  for (let i = 0; i < image.map.length; i++) {
    if (Number.isNaN(image.map[i])) throw new RangeError(`image ${index}: map value ${i} is NaN`);
  }
}

/**
 * Collects and sorts all pixels of the images once, labelling ground-truth
 * regions (8-connectivity) on the way.
 *
 * @param images maps with masks, each map at its mask's resolution
 * @returns the sorted pixel table
 */
export function buildPixelScoreTable(images: readonly ScoredImage[]): PixelScoreTable {
  images.forEach(checkScoredImage);
  const componentsPerImage = images.map((image) =>
    image.mask === null ? null : connectedComponents(image.mask, image.width, image.height)
  );
  let positiveCount = 0;
  let negativeCount = 0;
  const regionSizes: number[] = [];
  for (const [i, image] of images.entries()) {
    const components = componentsPerImage[i];
    const anomalous = components ? components.sizes.reduce((sum, size) => sum + size, 0) : 0;
    positiveCount += anomalous;
    negativeCount += image.map.length - anomalous;
    if (components) { for (const size of components.sizes) regionSizes.push(size); }
  }
  const positives = new Float32Array(positiveCount);
  const positiveRegions = new Uint32Array(positiveCount);
  const negatives = new Float32Array(negativeCount);
  let p = 0;
  let n = 0;
  let firstRegionOfImage = 0;
  for (const [i, image] of images.entries()) {
    const components = componentsPerImage[i];
    if (components === null) {
      negatives.set(image.map, n);
      n += image.map.length;
      continue;
    }
    const { labels } = components;
    for (let pixel = 0; pixel < labels.length; pixel++) {
      if (labels[pixel] === 0) {
        negatives[n++] = image.map[pixel];
      } else {
        positives[p] = image.map[pixel];
        positiveRegions[p++] = firstRegionOfImage + labels[pixel] - 1;
      }
    }
    firstRegionOfImage += components.count;
  }
  const sortedPositives = sortFloat32WithPayload(positives, positiveRegions);
  return {
    positives: sortedPositives.values,
    negatives: sortFloat32(negatives),
    positiveRegions: sortedPositives.payload,
    regionSizes: Uint32Array.from(regionSizes),
    regionCount: regionSizes.length,
  };
}

/**
 * Pixel-level ROC AUC of a pixel table.
 *
 * @param table sorted pixels from {@link buildPixelScoreTable}
 * @returns the area under the pixel ROC curve
 * @throws {UndefinedMetricError} when there is no anomalous or no normal pixel
 */
export function pixelRocAuc(table: PixelScoreTable): number {
  return rocAucFromSorted(table);
}

/**
 * Pixel-level average precision of a pixel table.
 *
 * @param table sorted pixels from {@link buildPixelScoreTable}
 * @returns average precision over all pixels
 * @throws {UndefinedMetricError} when there is no anomalous pixel
 */
export function pixelAveragePrecision(table: PixelScoreTable): number {
  return averagePrecisionFromSorted(table);
}

/**
 * Sweeps the PRO curve: for each distinct threshold `t` (descending) reports
 * FPR = share of normal pixels with score >= t and PRO = mean over regions of
 * the share of the region's pixels with score >= t. Each anomalous pixel
 * adds `1 / regionSize` to a running sum that is divided by the region count.
 * The first reported point is (0, 0) at `t = +Infinity`.
 */
function sweepProCurve(
  table: PixelScoreTable,
  visit: (fpr: number, pro: number, threshold: number) => boolean | void,
): void {
  const { positives, negatives, positiveRegions, regionSizes, regionCount } = table;
  if (regionCount === 0) {
    throw new UndefinedMetricError("pro", "there are no ground-truth defect regions");
  }
  if (negatives.length === 0) {
    throw new UndefinedMetricError("pro", "there are no defect-free pixels to measure the FPR");
  }
  const inverseRegionSizes = Float64Array.from(regionSizes, (size) => 1 / size);
  // Fully detected regions count exactly 1 each: summing 1/size `size` times is not exactly 1 in
  // floating point, and a perfect map must score exactly 1. Only partly detected regions go
  // through the floating-point sum, which restarts at exactly 0 whenever none is left.
  const undetected = Uint32Array.from(regionSizes);
  let completeRegions = 0;
  let partialRegions = 0;
  let partialSum = 0;
  let falsePositives = 0;
  let stopped = visit(0, 0, Infinity) === false;
  forEachThresholdDescending(positives, negatives, (threshold, from, to, newNegatives) => {
    if (stopped) return;
    for (let i = from; i < to; i++) {
      const region = positiveRegions[i];
      const size = regionSizes[region];
      const left = --undetected[region];
      if (left === 0) {
        completeRegions++;
        if (size > 1) {
          partialRegions--;
          partialSum -= (size - 1) * inverseRegionSizes[region];
        }
      } else {
        if (left === size - 1) partialRegions++;
        partialSum += inverseRegionSizes[region];
      }
    }
    if (partialRegions === 0) partialSum = 0;
    falsePositives += newNegatives;
    const fpr = falsePositives / negatives.length;
    stopped = visit(fpr, (completeRegions + partialSum) / regionCount, threshold) === false;
  });
}

/** A per-region-overlap curve: `pro[i]` and `fpr[i]` when detecting `score >= thresholds[i]`. */
export interface ProCurve {
  /** False positive rate over normal pixels, non-decreasing from 0 to 1. */
  fpr: Float64Array;
  /** Mean per-region overlap, non-decreasing from 0 to 1. */
  pro: Float64Array;
  /** Thresholds, decreasing; the first is `+Infinity`. */
  thresholds: Float64Array;
}

/**
 * Full PRO curve (mean per-region overlap against pixel FPR) of a pixel table,
 * over all distinct thresholds. This is also the "region overlap vs FPR"
 * curve of the MVTec AD paper's supplementary figures.
 *
 * @param table sorted pixels from {@link buildPixelScoreTable}
 * @param options point-thinning options
 * @returns the curve from (0, 0) to (1, 1)
 * @throws {UndefinedMetricError} without regions or without normal pixels
 */
export function proCurveFromTable(table: PixelScoreTable, options: CurveOptions = {}): ProCurve {
  const curve = new CurveBuilder(options.resolution ?? 0);
  sweepProCurve(table, (fpr, pro, threshold) => curve.add(fpr, pro, threshold));
  const { x, y, thresholds } = curve.finish();
  return { fpr: x, pro: y, thresholds };
}

/**
 * Normalised area under the PRO curve up to `fprLimit` (MVTec AD: 0.3):
 * trapezoids over the exact curve, linear interpolation at the limit, area
 * divided by `fprLimit` (never by the last FPR reached), so a perfect map
 * scores 1.
 *
 * @param table sorted pixels from {@link buildPixelScoreTable}
 * @param fprLimit integration limit in (0, 1]
 * @returns AU-PRO in [0, 1]
 * @throws {UndefinedMetricError} without regions or without normal pixels
 */
export function auProFromTable(
  table: PixelScoreTable,
  fprLimit: number = DEFAULT_PRO_FPR_LIMIT,
): number {
  if (!(fprLimit > 0 && fprLimit <= 1)) throw new RangeError(`fprLimit ${fprLimit} not in (0, 1]`);
  const integrator = new TrapezoidUpTo(fprLimit);
  sweepProCurve(table, (fpr, pro) => {
    integrator.add(fpr, pro);
    return !integrator.done;
  });
  // Rounding in the trapezoid sums can overshoot 1 by a few ulps; AU-PRO is a share.
  return Math.min(1, Math.max(0, integrator.area / fprLimit));
}

/**
 * PRO curve of a set of images (see {@link proCurveFromTable}).
 *
 * @param images maps with masks at the same resolution
 * @param options point-thinning options
 * @returns the curve
 * @throws {UndefinedMetricError} without regions or without normal pixels
 */
export function proCurve(images: readonly ScoredImage[], options: CurveOptions = {}): ProCurve {
  return proCurveFromTable(buildPixelScoreTable(images), options);
}

/**
 * The MVTec AD "region overlap vs FPR" curve; identical to {@link proCurve}
 * (mean per-region overlap at each FPR, over all thresholds, not cut at 0.3).
 *
 * @param images maps with masks at the same resolution
 * @param options point-thinning options
 * @returns the curve
 * @throws {UndefinedMetricError} without regions or without normal pixels
 */
export function regionOverlapCurve(
  images: readonly ScoredImage[],
  options: CurveOptions = {},
): ProCurve {
  return proCurve(images, options);
}

/**
 * AU-PRO of a set of images (see {@link auProFromTable}).
 *
 * @param images maps with masks at the same resolution
 * @param fprLimit integration limit, default 0.3
 * @returns AU-PRO in [0, 1]
 * @throws {UndefinedMetricError} without regions or without normal pixels
 */
export function auPro(
  images: readonly ScoredImage[],
  fprLimit: number = DEFAULT_PRO_FPR_LIMIT,
): number {
  return auProFromTable(buildPixelScoreTable(images), fprLimit);
}

/** An anomaly map with its size. */
export interface MapWithSize {
  /** Row-major anomaly map of `width * height` values. */
  map: Float32Array;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

function checkMinArea(minArea: number): void {
  if (!Number.isInteger(minArea) || minArea < 1) {
    throw new RangeError(`minArea must be a positive integer, got ${minArea}`);
  }
}

/**
 * The MVTec AD paper's threshold (sec. 4.3): the smallest threshold such that
 * on every anomaly-free validation map, the largest 8-connected component of
 * `map > threshold` has fewer than `minArea` pixels.
 *
 * The segmentation only changes at observed values, so the answer is one of
 * the validation values. Per map, {@link smallestCleanThreshold} finds the
 * smallest clean value `v_m` exactly (thresholds below `v_m` segment a
 * component of `minArea` pixels, thresholds from `v_m` up do not); the
 * answer is the maximum over maps. If every map stays clean even with all
 * pixels segmented, the smallest validation value is returned.
 *
 * @param validationMaps anomaly maps of defect-free validation images
 * @param minArea minimum defect area in pixels (positive integer)
 * @returns the threshold
 * @throws {UndefinedMetricError} when there are no validation pixels
 */
export function validationThreshold(
  validationMaps: readonly MapWithSize[],
  minArea: number,
): number {
  checkMinArea(minArea);
  let threshold = -Infinity;
  let smallestValue = Infinity;
  let pixelCount = 0;
  for (const [i, item] of validationMaps.entries()) {
    if (item.map.length !== item.width * item.height) {
      throw new RangeError(
        `validation map ${i} has ${item.map.length} values, expected ${item.width}x${item.height}`,
      );
    }
    assertNoNaN(item.map, `validation map ${i}`);
    pixelCount += item.map.length;
    for (let p = 0; p < item.map.length; p++) {
      if (item.map[p] < smallestValue) smallestValue = item.map[p];
    }
    const clean = smallestCleanThreshold(item.map, item.width, item.height, minArea);
    if (clean !== null && clean > threshold) threshold = clean;
  }
  if (pixelCount === 0) throw new UndefinedMetricError("threshold", "there are no validation maps");
  return threshold === -Infinity ? smallestValue : threshold;
}

/** Results of the paper's protocol at a fixed threshold. */
export interface ThresholdEvaluation {
  /** Share of defect-free images without any component >= minArea; null without such images. */
  accuracyGood: number | null;
  /** Share of defective images with at least one component >= minArea; null without such images. */
  accuracyDefective: number | null;
  /** Mean over ground-truth regions of the share of their pixels with `map > threshold`; null without regions. */
  regionOverlap: number | null;
  /** Number of defect-free images (mask null or all zero). */
  goodCount: number;
  /** Number of images with at least one defect pixel. */
  defectiveCount: number;
  /** Number of ground-truth regions (8-connected). */
  regionCount: number;
}

/**
 * Applies the paper's protocol at a fixed threshold: an image is classified
 * anomalous when `map > threshold` has an 8-connected component of at least
 * `minArea` pixels. Region overlap uses the raw segmentation `map > threshold`
 * (components smaller than `minArea` are not removed).
 *
 * @param images maps with masks at the same resolution
 * @param threshold segmentation threshold (strict `>`)
 * @param minArea minimum defect area in pixels
 * @returns accuracies and region overlap
 */
export function evaluateAtThreshold(
  images: readonly ScoredImage[],
  threshold: number,
  minArea: number,
): ThresholdEvaluation {
  checkMinArea(minArea);
  let goodCount = 0;
  let goodCorrect = 0;
  let defectiveCount = 0;
  let defectiveCorrect = 0;
  let regionCount = 0;
  let overlapSum = 0;
  for (const [i, image] of images.entries()) {
    checkScoredImage(image, i);
    const flagged =
      largestComponentAbove(image.map, image.width, image.height, threshold, minArea) >= minArea;
    const components = image.mask === null
      ? null
      : connectedComponents(image.mask, image.width, image.height);
    if (components === null || components.count === 0) {
      goodCount++;
      if (!flagged) goodCorrect++;
      continue;
    }
    defectiveCount++;
    if (flagged) defectiveCorrect++;
    const segmentedPerRegion = new Uint32Array(components.count);
    const { labels } = components;
    for (let pixel = 0; pixel < labels.length; pixel++) {
      if (labels[pixel] !== 0 && image.map[pixel] > threshold) {
        segmentedPerRegion[labels[pixel] - 1]++;
      }
    }
    for (let region = 0; region < components.count; region++) {
      overlapSum += segmentedPerRegion[region] / components.sizes[region];
    }
    regionCount += components.count;
  }
  return {
    accuracyGood: goodCount > 0 ? goodCorrect / goodCount : null,
    accuracyDefective: defectiveCount > 0 ? defectiveCorrect / defectiveCount : null,
    regionOverlap: regionCount > 0 ? overlapSum / regionCount : null,
    goodCount,
    defectiveCount,
    regionCount,
  };
}
