import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CategoryInput,
  type CategoryMetrics,
  evaluateCategory,
  EvaluationInputError,
  MapFileError,
  mapPath,
  meanOverCategories,
  readMapsFromDisk,
  type TestImageInput,
  writeMapsToDisk,
} from "../../src/eval/evaluate.ts";
import { protocolImages, validationV1, validationV2 } from "./fixtures.ts";

/** The threshold-protocol fixture as evaluateCategory input (see fixtures.ts for the hand computation). */
function protocolInput(): CategoryInput {
  const defects = ["good", "good", "crack", "crack"];
  return {
    testImages: protocolImages.map((image, i) => ({
      name: `toy/test/${defects[i]}/00${i}.png`,
      defectType: defects[i],
      map: image.map,
      width: 4,
      height: 4,
      gtMask: image.mask,
    })),
    validationMaps: [
      { name: "toy/val/000.png", map: validationV1, width: 4, height: 4 },
      { name: "toy/val/001.png", map: validationV2, width: 4, height: 4 },
    ],
    minArea: 3,
  };
}

function assertNoNaN(metrics: CategoryMetrics): void {
  for (const [key, value] of Object.entries(metrics)) {
    assert.ok(!(typeof value === "number" && Number.isNaN(value)), `${key} is NaN`);
  }
}

Deno.test("evaluateCategory applies the validation threshold protocol (hand-computed)", () => {
  const metrics = evaluateCategory(protocolInput());
  assert.equal(metrics.threshold, Math.fround(0.6));
  assert.equal(metrics.threshold_source, "validation");
  assert.equal(metrics.min_area, 3);
  assert.equal(metrics.accuracy_good, 0.5);
  assert.equal(metrics.accuracy_defective, 0.5);
  assert.ok(Math.abs(metrics.region_overlap! - 7 / 12) < 1e-12);
  // Image scores = map maxima: good 0.9, 0.7; defective 0.8, 0.9.
  // Pairs: 0.8>0.7 (1), 0.8<0.9 (0), 0.9=0.9 (1/2), 0.9>0.7 (1) -> 2.5/4.
  assert.equal(metrics.image_auroc, 0.625);
  assert.equal(metrics.n_test_images, 4);
  assert.equal(metrics.n_good, 2);
  assert.equal(metrics.n_defective, 2);
  assert.equal(metrics.n_regions, 3);
  for (const key of ["pixel_auroc", "au_pro", "pixel_ap"] as const) {
    assert.ok(metrics[key] !== null && metrics[key]! >= 0 && metrics[key]! <= 1, key);
  }
  // Pixel metrics by hand. The 64 pixels of the four maps (fixtures.ts) are
  //   7 defect pixels:   0.9 (D2 region B), 0.8 x3 + 0.5 (D1 region A), 0.1 x2 (D2 region C)
  //   57 normal pixels:  0.9 x2 (G1), 0.7 x3 (G2), 0.1 x52 (everything else)
  // Pixel AUROC = P(defect pixel > normal pixel), ties counting half, over 7 * 57 = 399 pairs:
  //   0.9: 55 lower + 2 ties / 2 = 56; 0.8: 3 * 55 = 165; 0.5: 52; 0.1: 2 * 52 ties / 2 = 52.
  //   (56 + 165 + 52 + 52) / 399 = 325 / 399.
  assert.ok(Math.abs(metrics.pixel_auroc! - 325 / 399) < 1e-12);
  // Pixel AP = sum over thresholds of (recall gained) * precision, thresholds high to low:
  //   >= 0.9: TP 1, FP 2 -> 1/7 * 1/3;  >= 0.8: TP 4, FP 2 -> 3/7 * 4/6;  >= 0.7: no recall;
  //   >= 0.5: TP 5, FP 5 -> 1/7 * 5/10;  >= 0.1: TP 7, FP 57 -> 2/7 * 7/64.  Sum = 293/672.
  assert.ok(Math.abs(metrics.pixel_ap! - 293 / 672) < 1e-12);
  // AU-PRO: regions A (4 px), B (1 px), C (2 px); FPR over the 57 normal pixels. Curve points
  // (FPR, mean overlap) from high thresholds down: (0, 0); 0.9 -> (2/57, 1/3) with B found;
  // 0.8 -> (2/57, 7/12) with 3/4 of A; 0.7 -> (5/57, 7/12); 0.5 -> (5/57, 2/3) with all of A;
  // 0.1 -> (1, 1). Trapezoids up to FPR 0.3: 2/57 * (1/3) / 2 = 1/171, then 3/57 * 7/12 = 7/228,
  // then from 5/57 to 0.3 on the last segment, whose overlap rises by 1/3 over 52/57 of FPR:
  // (0.3 - 5/57) * (2/3 + (2/3 + (0.3 - 5/57) * 19/52)) / 2. Divided by 0.3: 331321/533520.
  const proEnd = 0.3 - 5 / 57;
  const proArea = 1 / 171 + 7 / 228 + proEnd * (2 / 3 + 2 / 3 + proEnd * 19 / 52) / 2;
  assert.ok(Math.abs(proArea / 0.3 - 331321 / 533520) < 1e-15, "the comment's sum");
  assert.ok(Math.abs(metrics.au_pro! - 331321 / 533520) < 1e-12);
  assert.deepEqual(metrics.notes, []);
});

Deno.test("evaluateCategory uses a method threshold when given", () => {
  // Segmentation map > 0.75: G1 keeps two 0.9 pixels (2 < 3, correct), G2 nothing (correct);
  // D1 keeps its three 0.8 pixels (flagged, correct), D2 one pixel (missed).
  // Region overlap unchanged from the 0.6 case: (3/4 + 1 + 0) / 3.
  const metrics = evaluateCategory({ ...protocolInput(), methodThreshold: 0.75 });
  assert.equal(metrics.threshold, 0.75);
  assert.equal(metrics.threshold_source, "method");
  assert.equal(metrics.accuracy_good, 1);
  assert.equal(metrics.accuracy_defective, 0.5);
  assert.ok(Math.abs(metrics.region_overlap! - 7 / 12) < 1e-12);
});

Deno.test("evaluateCategory resizes maps bilinearly to the ground-truth size", () => {
  // A 2x1 map [1, 0] for a 4x4 image resizes to rows [1, 0.75, 0.25, 0]; the defect is the
  // left half, so every defect pixel outscores every normal pixel.
  const mask = Uint8Array.from({ length: 16 }, (_, i) => (i % 4 < 2 ? 1 : 0));
  const metrics = evaluateCategory({
    testImages: [
      {
        name: "d",
        defectType: "cut",
        map: Float32Array.from([1, 0]),
        width: 2,
        height: 1,
        gtMask: mask,
        gtWidth: 4,
        gtHeight: 4,
      },
      {
        name: "g",
        defectType: "good",
        map: Float32Array.from([0.1, 0.1]),
        width: 2,
        height: 1,
        gtMask: null,
        gtWidth: 4,
        gtHeight: 4,
      },
    ],
    minArea: 1,
    methodThreshold: 0.5,
  });
  assert.equal(metrics.pixel_auroc, 1);
  assert.equal(metrics.au_pro, 1);
  assert.equal(metrics.pixel_ap, 1);
  assert.equal(metrics.image_auroc, 1);
  // Above 0.5: the columns with 1 and 0.75, i.e. the whole defect.
  assert.equal(metrics.region_overlap, 1);
});

Deno.test("evaluateCategory rejects NaN, Infinity, missing and mis-sized maps, naming the image", () => {
  const withMap = (map: Float32Array | undefined, width = 4, height = 4): CategoryInput => {
    const input = protocolInput();
    const images = input.testImages.slice() as TestImageInput[];
    images[2] = { ...images[2], map: map as Float32Array, width, height };
    return { ...input, testImages: images };
  };
  const nanMap = new Float32Array(16);
  nanMap[5] = NaN;
  assert.throws(
    () => evaluateCategory(withMap(nanMap)),
    (error: unknown) =>
      error instanceof EvaluationInputError &&
      error.message.includes("toy/test/crack/002.png") && error.message.includes("NaN") &&
      error.message.includes("(x=1, y=1)"),
  );
  const infiniteMap = new Float32Array(16);
  infiniteMap[0] = -Infinity;
  assert.throws(
    () => evaluateCategory(withMap(infiniteMap)),
    /002\.png: anomaly map has a non-finite value \(-Infinity\)/,
  );
  assert.throws(
    () => evaluateCategory(withMap(undefined)),
    /toy\/test\/crack\/002\.png: anomaly map is missing/,
  );
  assert.throws(
    () => evaluateCategory(withMap(new Float32Array(15))),
    /002\.png: anomaly map has 15 values but its size is 4x4/,
  );
  const badValidation = protocolInput();
  badValidation.validationMaps = [{ name: "toy/val/009.png", map: nanMap, width: 4, height: 4 }];
  assert.throws(
    () => evaluateCategory(badValidation),
    /toy\/val\/009\.png: anomaly map has a non-finite/,
  );
});

Deno.test("a category without defective images reports null metrics with a message, not NaN", () => {
  const goodOnly = evaluateCategory({
    testImages: [
      {
        name: "g0",
        defectType: "good",
        map: new Float32Array(4).fill(0.2),
        width: 2,
        height: 2,
        gtMask: null,
      },
      {
        name: "g1",
        defectType: "good",
        map: Float32Array.from([0.9, 0.9, 0, 0]),
        width: 2,
        height: 2,
        gtMask: new Uint8Array(4),
      },
    ],
    minArea: 2,
    methodThreshold: 0.5,
  });
  assertNoNaN(goodOnly);
  assert.equal(goodOnly.image_auroc, null);
  assert.equal(goodOnly.pixel_auroc, null);
  assert.equal(goodOnly.au_pro, null);
  assert.equal(goodOnly.pixel_ap, null);
  assert.equal(goodOnly.accuracy_defective, null);
  assert.equal(goodOnly.region_overlap, null);
  // g1 has a 2-pixel component above 0.5 (>= minArea 2): wrongly flagged; g0 is fine.
  assert.equal(goodOnly.accuracy_good, 0.5);
  assert.equal(goodOnly.n_defective, 0);
  assert.ok(goodOnly.notes.some((note) => /no defective test images/.test(note)));
  assert.ok(goodOnly.notes.some((note) => /image_auroc: .*no positive samples/.test(note)));
  // Without method threshold or validation maps the protocol values are null, explained.
  const noThreshold = evaluateCategory({ ...protocolInput(), validationMaps: [] });
  assert.equal(noThreshold.threshold, null);
  assert.equal(noThreshold.accuracy_good, null);
  assert.ok(
    noThreshold.notes.some((note) => /no method threshold and no validation maps/.test(note)),
  );
});

Deno.test("validation maps need a target size when test images differ in size", () => {
  const input = protocolInput();
  const images = input.testImages.slice();
  images[0] = { ...images[0], map: new Float32Array(4), width: 2, height: 2, gtMask: null };
  assert.throws(() => evaluateCategory({ ...input, testImages: images }), /validationSize/);
  const metrics = evaluateCategory({
    ...input,
    testImages: images,
    validationSize: { width: 4, height: 4 },
  });
  assert.equal(metrics.threshold, Math.fround(0.6));
});

Deno.test("meanOverCategories averages defined values and explains the rest", () => {
  const a = evaluateCategory(protocolInput());
  const b: CategoryMetrics = {
    ...a,
    image_auroc: null,
    accuracy_good: 0.25,
    n_test_images: 6,
    n_regions: 5,
  };
  const mean = meanOverCategories({ a, b });
  assert.equal(mean.image_auroc, 0.625); // only category a defines it
  assert.equal(mean.accuracy_good, (0.5 + 0.25) / 2);
  assert.equal(mean.n_categories, 2);
  assert.equal(mean.n_test_images, 10);
  assert.equal(mean.n_regions, 8);
  assert.deepEqual(mean.notes, ["image_auroc: mean over 1 of 2 categories (undefined for b)"]);
});

Deno.test("maps round-trip through the official TIFF layout with identical metrics", async () => {
  const root = await Deno.makeTempDir();
  try {
    const input = protocolInput();
    const ids = input.testImages.map((image, i) => ({ defect: image.defectType, id: `00${i}` }));
    const paths = await writeMapsToDisk(
      root,
      "toy",
      input.testImages.map((image, i) => ({ ...ids[i], map: image.map, width: 4, height: 4 })),
    );
    assert.equal(paths[2], join(root, "toy", "test", "crack", "002.tiff"));
    assert.equal(mapPath(root, "toy", ids[0]), join(root, "toy", "test", "good", "000.tiff"));
    const maps = await readMapsFromDisk(root, "toy", ids);
    const fromDisk = evaluateCategory({
      ...input,
      testImages: input.testImages.map((image, i) => ({ ...image, map: maps[i].map })),
    });
    assert.deepEqual(fromDisk, evaluateCategory(input));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("readMapsFromDisk lists every missing or unreadable map", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeMapsToDisk(root, "toy", [{
      defect: "good",
      id: "000",
      map: new Float32Array(4),
      width: 2,
      height: 2,
    }]);
    const corrupt = join(root, "toy", "test", "crack", "001.tiff");
    await Deno.mkdir(join(root, "toy", "test", "crack"), { recursive: true });
    await Deno.writeFile(corrupt, new TextEncoder().encode("not a tiff"));
    const ids = [{ defect: "good", id: "000" }, { defect: "crack", id: "001" }, {
      defect: "crack",
      id: "002",
    }];
    await assert.rejects(readMapsFromDisk(root, "toy", ids), (error: unknown) => {
      assert.ok(error instanceof MapFileError);
      assert.match(error.message, /2 of 3 anomaly maps of category "toy"/);
      assert.equal(error.problems.length, 2);
      assert.match(error.problems[0], /crack\/001\.tiff: not a TIFF file/);
      assert.match(error.problems[1], /crack\/002\.tiff: file not found/);
      return true;
    });
    assert.throws(() => mapPath(root, "toy", { defect: "../x", id: "1" }), /invalid defect type/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
