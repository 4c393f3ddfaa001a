import assert from "node:assert/strict";
import {
  areaUnderCurveUpTo,
  auPro,
  averagePrecision,
  buildPixelScoreTable,
  connectedComponents,
  evaluateAtThreshold,
  largestComponentAbove,
  pixelRocAuc,
  proCurve,
  rocAuc,
  rocCurve,
  type ScoredImage,
  smallestCleanThreshold,
  UndefinedMetricError,
  validationThreshold,
} from "../../src/eval/metrics.ts";
import { sortFloat32, sortFloat32WithPayload } from "../../src/eval/sort.ts";
import { protocolImages, protocolValidation } from "./fixtures.ts";

const f32 = (values: number[]) => Float32Array.from(values);
const u8 = (values: number[]) => Uint8Array.from(values);

function assertClose(actual: number, expected: number, tolerance = 1e-12): void {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `expected ${expected}, got ${actual} (difference ${actual - expected})`,
  );
}

function assertCloseArray(actual: ArrayLike<number>, expected: number[], tolerance = 1e-12) {
  assert.equal(actual.length, expected.length, `length ${actual.length} vs ${expected.length}`);
  for (let i = 0; i < expected.length; i++) assertClose(actual[i], expected[i], tolerance);
}

Deno.test("sortFloat32 sorts negatives, zeros and ties like a numeric sort", () => {
  const values = f32([3, -1, 0, -0, 2.5, -7.25, 3, 1e-30, -1e-30, 100]);
  const expected = Array.from(values).sort((a, b) => a - b).map((v) => (v === 0 ? 0 : v));
  assert.deepEqual(Array.from(sortFloat32(values)), expected);
  const random = new Float32Array(10_000).map(() => (Math.random() - 0.5) * 1e6);
  assert.deepEqual(Array.from(sortFloat32(random)), Array.from(random).sort((a, b) => a - b));
});

Deno.test("sortFloat32WithPayload keeps each payload with its value, stably", () => {
  const sorted = sortFloat32WithPayload(
    f32([0.5, 0.1, 0.5, -2]),
    Uint32Array.from([10, 11, 12, 13]),
  );
  assert.deepEqual(Array.from(sorted.values), [-2, Math.fround(0.1), 0.5, 0.5]);
  assert.deepEqual(Array.from(sorted.payload), [13, 11, 10, 12]);
});

// Shared tied example: positives {0.9, 0.8, 0.5}, negatives {0.8, 0.5, 0.1}.
const tiedScores = f32([0.9, 0.8, 0.8, 0.5, 0.5, 0.1]);
const tiedLabels = u8([1, 1, 0, 1, 0, 0]);

Deno.test("rocAuc counts ties as one half (hand-computed 7/9)", () => {
  // Pairs (positive, negative), 9 in all: 0.9 beats all 3 -> 3;
  // 0.8 beats 0.5 and 0.1, ties 0.8 -> 2.5; 0.5 beats 0.1, ties 0.5 -> 1.5. 7/9.
  assertClose(rocAuc(tiedScores, tiedLabels), 7 / 9);
  assertClose(rocAuc(Float64Array.from(tiedScores), tiedLabels), 7 / 9);
});

Deno.test("rocCurve moves diagonally across tied thresholds", () => {
  const curve = rocCurve(tiedScores, tiedLabels);
  // t=inf (0,0); 0.9 -> (0,1/3); 0.8 -> (1/3,2/3); 0.5 -> (2/3,1); 0.1 -> (1,1)
  assertCloseArray(curve.fpr, [0, 0, 1 / 3, 2 / 3, 1]);
  assertCloseArray(curve.tpr, [0, 1 / 3, 2 / 3, 1, 1]);
  assert.equal(curve.thresholds[0], Infinity);
  assertCloseArray(curve.thresholds.slice(1), [0.9, 0.8, 0.5, 0.1], 1e-7);
  // Trapezoids of the curve give the same 7/9.
  assertClose(areaUnderCurveUpTo(curve.fpr, curve.tpr), 7 / 9);
});

Deno.test("averagePrecision matches sklearn's step definition (hand-computed 34/45)", () => {
  // Thresholds from high to low: 0.9: P=1, R=1/3; 0.8: P=2/3, R=2/3; 0.5: P=3/5, R=1.
  // AP = 1/3*1 + 1/3*2/3 + 1/3*3/5 = 34/45.
  assertClose(averagePrecision(tiedScores, tiedLabels), 34 / 45);
  // All scores tied: a single threshold with precision 2/4.
  assertClose(averagePrecision(f32([1, 1, 1, 1]), u8([1, 0, 1, 0])), 0.5);
});

Deno.test("perfect and inverted scores give AUROC 1 and 0, AP 1", () => {
  const labels = u8([0, 1, 0, 1, 1, 0]);
  const perfect = Float32Array.from(labels, (label) => label * 0.8 + 0.1);
  const inverted = Float32Array.from(perfect, (value) => 1 - value);
  assert.equal(rocAuc(perfect, labels), 1);
  assert.equal(rocAuc(inverted, labels), 0);
  assert.equal(averagePrecision(perfect, labels), 1);
});

Deno.test("undefined ROC AUC and AP throw UndefinedMetricError, never NaN", () => {
  assert.throws(() => rocAuc(f32([0.1, 0.2]), u8([0, 0])), UndefinedMetricError);
  assert.throws(() => rocAuc(f32([0.1, 0.2]), u8([1, 1])), /no negative samples/);
  assert.throws(() => averagePrecision(f32([0.1]), u8([0])), UndefinedMetricError);
  assert.throws(() => rocAuc(f32([0.1, NaN]), u8([0, 1])), /NaN/);
  assert.throws(() => rocAuc(f32([0.1]), u8([0, 1])), /1 scores but 2 labels/);
});

Deno.test("connectedComponents uses 8-connectivity and raster-order labels", () => {
  // 1 0 1
  // 0 0 0
  // 1 1 0   -> three regions: {(0,0)}, {(2,0)}, {(0,2),(1,2)}
  const result = connectedComponents(u8([1, 0, 1, 0, 0, 0, 1, 1, 0]), 3, 3);
  assert.equal(result.count, 3);
  assert.deepEqual(Array.from(result.sizes), [1, 1, 2]);
  assert.deepEqual(Array.from(result.labels), [1, 0, 2, 0, 0, 0, 3, 3, 0]);
  // A diagonal chain is one region under 8-connectivity.
  const diagonal = connectedComponents(u8([255, 0, 0, 0, 255, 0, 0, 0, 255]), 3, 3);
  assert.equal(diagonal.count, 1);
  assert.deepEqual(Array.from(diagonal.sizes), [3]);
  assert.throws(() => connectedComponents(u8([1, 0]), 3, 1), /expected/);
});

Deno.test("largestComponentAbove thresholds strictly and can stop early", () => {
  const map = f32([0.5, 0.6, 0.1, 0.1, 0.1, 0.7]); // 3x2: (0,0),(1,0) and (2,1)=0.7 diagonal to (1,0)
  assert.equal(largestComponentAbove(map, 3, 2, 0.4), 3);
  assert.equal(largestComponentAbove(map, 3, 2, 0.5), 2); // 0.5 itself is not > 0.5
  assert.equal(largestComponentAbove(map, 3, 2, 0.7), 0);
  assert.equal(largestComponentAbove(map, 3, 2, 0, 2), 2);
});

// PRO example A. Three images:
//   image 1 (4x1): map [0.9, 0.4, 0.8, 0.1], mask [1, 1, 0, 0] -> region R1 (2 px)
//   image 2 (4x1, good): map [0.2, 0.3, 0.1, 0.05]
//   image 3 (2x1): map [0.6, 0.35], mask [0, 1] -> region R2 (1 px)
// Normal pixels (7): 0.8, 0.1 | 0.2, 0.3, 0.1, 0.05 | 0.6.
// Each R1 pixel adds 1/(2*2) = 1/4 to PRO, the R2 pixel adds 1/(1*2) = 1/2.
// Descending thresholds -> (FPR, PRO):
//   inf (0,0); 0.9 (0,1/4); 0.8 (1/7,1/4); 0.6 (2/7,1/4); 0.4 (2/7,1/2);
//   0.35 (2/7,1); 0.3 (3/7,1); 0.2 (4/7,1); 0.1 (6/7,1); 0.05 (1,1).
const proExampleA: ScoredImage[] = [
  { map: f32([0.9, 0.4, 0.8, 0.1]), mask: u8([1, 1, 0, 0]), width: 4, height: 1 },
  { map: f32([0.2, 0.3, 0.1, 0.05]), mask: null, width: 4, height: 1 },
  { map: f32([0.6, 0.35]), mask: u8([0, 1]), width: 2, height: 1 },
];

Deno.test("proCurve: exact points with regions of different sizes over several images", () => {
  const curve = proCurve(proExampleA);
  assertCloseArray(curve.fpr, [0, 0, 1 / 7, 2 / 7, 2 / 7, 2 / 7, 3 / 7, 4 / 7, 6 / 7, 1]);
  assertCloseArray(curve.pro, [0, 0.25, 0.25, 0.25, 0.5, 1, 1, 1, 1, 1]);
});

Deno.test("auPro integrates to FPR 0.3 and divides by 0.3 (hand-computed 2/7)", () => {
  // Area up to 0.3: [0,2/7] at PRO 1/4 -> (2/7)/4 = 1/14; [2/7,0.3] at PRO 1 -> 1/70.
  // Sum 6/70 = 3/35; divided by 0.3 -> 2/7.
  assertClose(auPro(proExampleA), 2 / 7);
  // Wrong variants give different numbers, so the test tells them apart:
  // dividing by the last FPR reached below 0.3 (2/7): (3/35)/(2/7) = 0.3;
  // integrating the whole curve: 1/14 + (1 - 2/7) = 11/14.
  assert.ok(Math.abs(auPro(proExampleA) - 0.3) > 0.01);
  assertClose(auPro(proExampleA, 1), 11 / 14);
});

Deno.test("auPro interpolates linearly at 0.3 across a tied (diagonal) step", () => {
  // One 6x1 image: region = first two pixels [0.8, 0.6]; normal pixels [0.9, 0.6, 0.5, 0.3].
  // Curve: (0,0); 0.9 (1/4,0); 0.8 (1/4,1/2); 0.6 tie (1/2,1); 0.5 (3/4,1); 0.3 (1,1).
  // PRO at FPR 0.3 on the diagonal from (0.25,0.5) to (0.5,1): 0.5 + 0.05/0.25*0.5 = 0.6.
  // Area: 0 up to 0.25, then 0.05 * (0.5 + 0.6) / 2 = 0.0275. Normalised: 0.0275/0.3 = 11/120.
  const image: ScoredImage = {
    map: f32([0.8, 0.6, 0.9, 0.6, 0.5, 0.3]),
    mask: u8([1, 1, 0, 0, 0, 0]),
    width: 6,
    height: 1,
  };
  assertClose(auPro([image]), 11 / 120);
});

Deno.test("auPro with a vertical step exactly at FPR 0.3 counts only the part before", () => {
  // Region [0.95, 0.45]; 10 normal pixels 0.9, 0.8, 0.7, 0.4, ... -> PRO 0.5 up to FPR 0.3,
  // then jumps to 1 at FPR 0.3 exactly. Area 0.5*0.3, normalised 0.5.
  const image: ScoredImage = {
    map: f32([0.95, 0.45, 0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01]),
    mask: u8([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    width: 12,
    height: 1,
  };
  assertClose(auPro([image]), 0.5);
});

Deno.test("perfect map gives AU-PRO and pixel AUROC 1; inverted map gives pixel AUROC 0", () => {
  const mask = u8([0, 1, 1, 0, 0, 0, 0, 1, 0]);
  const perfect: ScoredImage = { map: Float32Array.from(mask), mask, width: 3, height: 3 };
  const inverted: ScoredImage = { ...perfect, map: Float32Array.from(mask, (v) => 1 - v) };
  const good: ScoredImage = { map: new Float32Array(9), mask: null, width: 3, height: 3 };
  assert.equal(auPro([perfect, good]), 1);
  assert.equal(pixelRocAuc(buildPixelScoreTable([perfect, good])), 1);
  assert.equal(pixelRocAuc(buildPixelScoreTable([inverted])), 0);
});

Deno.test("PRO is undefined without regions or without normal pixels", () => {
  const good: ScoredImage = { map: f32([0.1, 0.2]), mask: null, width: 2, height: 1 };
  assert.throws(() => auPro([good]), UndefinedMetricError);
  const allDefect: ScoredImage = { map: f32([0.1, 0.2]), mask: u8([1, 1]), width: 2, height: 1 };
  assert.throws(() => auPro([allDefect]), /no defect-free pixels/);
});

Deno.test("areaUnderCurveUpTo interpolates at the limit and never extrapolates", () => {
  // y = x from 0 to 1: area up to 0.5 is 0.125.
  assertClose(areaUnderCurveUpTo([0, 1], [0, 1], 0.5), 0.125);
  // Curve ending at x = 0.2 with y = 1: area stops at 0.2.
  assertClose(areaUnderCurveUpTo([0, 0.2], [1, 1], 0.3), 0.2);
});

Deno.test("validationThreshold finds the hand-computed smallest threshold 0.6", () => {
  assert.equal(validationThreshold(protocolValidation, 3), Math.fround(0.6));
  // minArea 4: up to t=0.3, V2's diagonal chain 0.4, 0.65, 0.6, 0.7 has 4 pixels;
  // at t=0.4 V1 keeps {0.5,0.9,0.8} = 3 and V2 {0.65,0.6,0.7} = 3 < 4. Threshold 0.4.
  assert.equal(validationThreshold(protocolValidation, 4), Math.fround(0.4));
  assert.throws(() => validationThreshold([], 3), UndefinedMetricError);
  assert.throws(() => validationThreshold(protocolValidation, 0), /positive integer/);
});

Deno.test("evaluateAtThreshold gives the hand-computed accuracies and region overlap", () => {
  const result = evaluateAtThreshold(protocolImages, Math.fround(0.6), 3);
  assert.equal(result.accuracyGood, 0.5);
  assert.equal(result.accuracyDefective, 0.5);
  assertClose(result.regionOverlap!, 7 / 12);
  assert.equal(result.goodCount, 2);
  assert.equal(result.defectiveCount, 2);
  assert.equal(result.regionCount, 3);
});

Deno.test("rocAuc and proCurve agree with brute force on random tied data", () => {
  // Quantised scores create many ties; brute force evaluates every threshold directly.
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const images: ScoredImage[] = [];
  for (let k = 0; k < 4; k++) {
    const width = 7;
    const height = 5;
    const map = Float32Array.from({ length: width * height }, () => Math.floor(random() * 6) / 5);
    const mask = k === 0
      ? null
      : Uint8Array.from({ length: width * height }, () => (random() < 0.3 ? 1 : 0));
    images.push({ map, mask, width, height });
  }
  // Brute-force pixel AUROC over all (positive, negative) pairs.
  const positives: number[] = [];
  const negatives: number[] = [];
  for (const image of images) {
    image.map.forEach((score, i) => (image.mask?.[i] ? positives : negatives).push(score));
  }
  let wins = 0;
  for (const p of positives) for (const n of negatives) wins += p > n ? 1 : p === n ? 0.5 : 0;
  const table = buildPixelScoreTable(images);
  assertClose(pixelRocAuc(table), wins / (positives.length * negatives.length));

  // Brute-force PRO at every distinct threshold.
  const regions = images.flatMap((image) => {
    if (!image.mask) return [];
    const { labels, count } = connectedComponents(image.mask, image.width, image.height);
    return Array.from(
      { length: count },
      (_, r) => Array.from(image.map).filter((_, i) => labels[i] === r + 1),
    );
  });
  const thresholds = [...new Set([...positives, ...negatives])].sort((a, b) => b - a);
  const curve = proCurve(images);
  assert.equal(curve.fpr.length, thresholds.length + 1);
  thresholds.forEach((t, k) => {
    const fpr = negatives.filter((score) => score >= t).length / negatives.length;
    const pro = regions.reduce(
      (sum, region) => sum + region.filter((score) => score >= t).length / region.length,
      0,
    ) / regions.length;
    assertClose(curve.fpr[k + 1], fpr);
    assertClose(curve.pro[k + 1], pro, 1e-12);
  });
});

Deno.test("validationThreshold equals a direct search over all candidate thresholds", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let trial = 0; trial < 20; trial++) {
    const maps = Array.from({ length: 3 }, () => ({
      map: Float32Array.from({ length: 48 }, () => Math.floor(random() * 8) / 7),
      width: 8,
      height: 6,
    }));
    const minArea = 1 + (trial % 6);
    // Direct definition: smallest candidate t with every component of map > t below minArea.
    const candidates = [...new Set(maps.flatMap((m) => Array.from(m.map)))].sort((a, b) => a - b);
    const expected = candidates.find((t) =>
      maps.every((m) => largestComponentAbove(m.map, m.width, m.height, t) < minArea)
    );
    assert.equal(validationThreshold(maps, minArea), expected, `trial ${trial}`);
  }
  // A map whose whole area is smaller than minArea never becomes unclean.
  assert.equal(smallestCleanThreshold(f32([0.3, 0.1]), 2, 1, 3), null);
  assert.equal(
    validationThreshold([{ map: f32([0.3, 0.1]), width: 2, height: 1 }], 3),
    Math.fround(0.1),
  );
});
