/**
 * Evaluation of one MVTec AD category from anomaly maps, and reading/writing
 * maps in the official layout `MAPS/<category>/test/<defect>/<id>.tiff`.
 *
 * Rules applied to the inputs:
 * - Each map is brought to its ground-truth resolution by bilinear resizing
 *   (`align_corners=false`, `resizePlane` of src/data/image.ts) whenever its
 *   size differs, whatever the aspect ratio. All metrics are computed at
 *   ground-truth size.
 * - A missing map, a map whose length does not match its declared size, or
 *   any NaN/Infinity value is an error naming the image.
 * - An image is defective when its mask has a non-zero pixel; `gtMask: null`
 *   means defect-free.
 * - The image score is the maximum of the (resized) map unless `imageScore`
 *   is given.
 * - Undefined metrics (e.g. image AUROC of a category without defective
 *   images) are `null`, with an explanation in `notes`; never NaN.
 *
 * @module
 */

import { InputError } from "../util/errors.ts";
import { join } from "node:path";
import { resizePlane } from "../data/image.ts";
import {
  auProFromTable,
  buildPixelScoreTable,
  evaluateAtThreshold,
  pixelAveragePrecision,
  pixelRocAuc,
  type ProCurve,
  proCurveFromTable,
  rocAuc,
  type RocCurve,
  rocCurve,
  rocCurveFromSorted,
  type ScoredImage,
  UndefinedMetricError,
  validationThreshold,
} from "./metrics.ts";
import { readTiffFile, TiffError, type TiffImage, writeTiffFile } from "./tiff.ts";

/** One test image of a category with its anomaly map and ground truth. */
export interface TestImageInput {
  /** Name or path used in messages, e.g. `"bottle/test/broken_large/000.png"`. */
  name: string;
  /** Defect type directory name, `"good"` for defect-free images. */
  defectType: string;
  /** Row-major anomaly map (higher = more anomalous) of `width * height` values. */
  map: Float32Array;
  /** Map width. */
  width: number;
  /** Map height. */
  height: number;
  /** Ground-truth mask at `gtWidth x gtHeight` (non-zero = defect), or null when defect-free. */
  gtMask: Uint8Array | null;
  /** Ground-truth width; default: the map width. */
  gtWidth?: number;
  /** Ground-truth height; default: the map height. */
  gtHeight?: number;
  /** Image-level anomaly score; default: the maximum of the resized map. */
  imageScore?: number;
}

/** An anomaly map of a defect-free validation image. */
export interface ValidationMapInput {
  /** Name or path used in messages. */
  name: string;
  /** Row-major anomaly map. */
  map: Float32Array;
  /** Map width. */
  width: number;
  /** Map height. */
  height: number;
  /**
   * Size of the image the map belongs to: the map is resized to it before thresholding, so that
   * the minimum area means the same as on test images. Default: {@link CategoryInput.validationSize}.
   */
  gtWidth?: number;
  /** Height of the image the map belongs to. */
  gtHeight?: number;
}

/** Everything needed to evaluate one category. */
export interface CategoryInput {
  /** Test images (good and defective). */
  testImages: readonly TestImageInput[];
  /** Maps of defect-free validation images, for the paper's threshold. */
  validationMaps?: readonly ValidationMapInput[];
  /** Minimum defect area in pixels at ground-truth resolution (positive integer). */
  minArea: number;
  /** A threshold chosen by the method; when given, validation maps are not used. */
  methodThreshold?: number;
  /**
   * Resolution the validation maps without their own `gtWidth`/`gtHeight` are resized to before
   * thresholding. Default: the ground-truth size shared by all test images (an error if test
   * images have different sizes and such validation maps are given).
   */
  validationSize?: { width: number; height: number };
}

/** Metrics of one category, keys as in `metrics.json`. */
export interface CategoryMetrics {
  /** ROC AUC of image scores (defective vs good); null if one class is absent. */
  image_auroc: number | null;
  /** ROC AUC over all pixels; null without defect pixels. */
  pixel_auroc: number | null;
  /** Normalised area under the PRO curve up to FPR 0.3; null without defect regions. */
  au_pro: number | null;
  /** Average precision over all pixels; null without defect pixels. */
  pixel_ap: number | null;
  /** Segmentation threshold (`map > threshold`); null when none could be set. */
  threshold: number | null;
  /** Where the threshold came from. */
  threshold_source: "method" | "validation" | null;
  /** Minimum defect area in pixels. */
  min_area: number;
  /** Share of good test images without a component >= min_area. */
  accuracy_good: number | null;
  /** Share of defective test images with a component >= min_area. */
  accuracy_defective: number | null;
  /** Mean share of each ground-truth region's pixels above the threshold. */
  region_overlap: number | null;
  /** Number of test images. */
  n_test_images: number;
  /** Number of good test images. */
  n_good: number;
  /** Number of defective test images. */
  n_defective: number;
  /** Number of ground-truth regions (8-connected components). */
  n_regions: number;
  /** Explanations for every null metric. */
  notes: string[];
}

/** Invalid evaluation input (missing map, wrong size, non-finite values, ...). */
export class EvaluationInputError extends InputError {
  /**
   * Creates the error.
   *
   * @param message explanation naming the offending image or file
   */
  constructor(message: string) {
    super(message);
    this.name = "EvaluationInputError";
  }
}

function describePixel(index: number, width: number): string {
  return `pixel (x=${index % width}, y=${Math.floor(index / width)})`;
}

/** Checks a map's presence, size and finiteness; errors name the image. */
function checkMap(name: string, map: unknown, width: number, height: number): Float32Array {
  if (map === undefined || map === null) {
    throw new EvaluationInputError(`${name}: anomaly map is missing`);
  }
  if (!(map instanceof Float32Array)) {
    throw new EvaluationInputError(`${name}: anomaly map must be a Float32Array`);
  }
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new EvaluationInputError(`${name}: invalid map size ${width}x${height}`);
  }
  if (map.length !== width * height) {
    throw new EvaluationInputError(
      `${name}: anomaly map has ${map.length} values but its size is ${width}x${height} = ${
        width * height
      }`,
    );
  }
  for (let i = 0; i < map.length; i++) {
    if (!Number.isFinite(map[i])) {
      throw new EvaluationInputError(
        `${name}: anomaly map has a non-finite value (${map[i]}) at ${describePixel(i, width)}`,
      );
    }
  }
  return map;
}

/** A validated test image at ground-truth resolution. */
interface PreparedImage extends ScoredImage {
  name: string;
  defectType: string;
  isDefective: boolean;
  imageScore: number;
}

function prepareTestImage(image: TestImageInput): PreparedImage {
  const name = image.name;
  const map = checkMap(name, image.map, image.width, image.height);
  const gtWidth = image.gtWidth ?? image.width;
  const gtHeight = image.gtHeight ?? image.height;
  if (!Number.isInteger(gtWidth) || !Number.isInteger(gtHeight) || gtWidth < 1 || gtHeight < 1) {
    throw new EvaluationInputError(`${name}: invalid ground-truth size ${gtWidth}x${gtHeight}`);
  }
  if (image.gtMask !== null && image.gtMask.length !== gtWidth * gtHeight) {
    throw new EvaluationInputError(
      `${name}: ground-truth mask has ${image.gtMask.length} values, expected ${gtWidth}x${gtHeight}`,
    );
  }
  // Maps are never modified, so a map already at ground-truth size is used as is.
  const resized = image.width === gtWidth && image.height === gtHeight
    ? map
    : resizePlane(map, image.width, image.height, gtWidth, gtHeight, "bilinear");
  let imageScore = image.imageScore;
  if (imageScore === undefined) {
    imageScore = -Infinity;
    for (let i = 0; i < resized.length; i++) if (resized[i] > imageScore) imageScore = resized[i];
  } else if (!Number.isFinite(imageScore)) {
    throw new EvaluationInputError(`${name}: image score ${imageScore} is not finite`);
  }
  const isDefective = image.gtMask !== null && image.gtMask.some((value) => value !== 0);
  return {
    name,
    defectType: image.defectType,
    map: resized,
    mask: image.gtMask,
    width: gtWidth,
    height: gtHeight,
    isDefective,
    imageScore,
  };
}

/** Runs `compute`, turning an {@link UndefinedMetricError} into null plus a note. */
function metricOrNull(notes: string[], key: string, compute: () => number): number | null {
  try {
    return compute();
  } catch (error) {
    if (error instanceof UndefinedMetricError) {
      notes.push(`${key}: ${error.message}`);
      return null;
    }
    throw error;
  }
}

function validationTargetSize(
  input: CategoryInput,
  images: readonly PreparedImage[],
): { width: number; height: number } {
  if (input.validationSize) return input.validationSize;
  const sizes = new Set(images.map((image) => `${image.width}x${image.height}`));
  if (sizes.size !== 1) {
    throw new EvaluationInputError(
      `test images have ${sizes.size} different ground-truth sizes (${[...sizes].join(", ")}); ` +
        "pass validationSize to say at which resolution the validation maps are thresholded",
    );
  }
  return { width: images[0].width, height: images[0].height };
}

/**
 * Evaluates one category: image AUROC, pixel AUROC, AU-PRO (FPR <= 0.3),
 * pixel AP, and the paper's threshold protocol (accuracies on good and
 * defective images, region overlap).
 *
 * @param input test images, validation maps, minimum area and optional method threshold
 * @returns the category's metrics record
 * @throws {EvaluationInputError} for a missing, mis-sized or non-finite map
 */
export function evaluateCategory(input: CategoryInput): CategoryMetrics {
  return evaluateCategoryDetailed(input, { curves: false }).metrics;
}

/** Options of {@link evaluateCategoryDetailed}. */
export interface DetailOptions {
  /** Compute the ROC and PRO curves (for plots). Default true. */
  curves?: boolean;
  /** Point thinning of the curves (see `CurveOptions.resolution`). Default 1e-3. */
  curveResolution?: number;
}

/** A test image after validation, at ground-truth resolution. */
export interface EvaluatedImage {
  /** Name as given in the input. */
  name: string;
  /** Defect type as given in the input. */
  defectType: string;
  /** The map at ground-truth resolution (the input array itself when no resize was needed). */
  map: Float32Array;
  /** Ground-truth mask or null. */
  mask: Uint8Array | null;
  /** Ground-truth width. */
  width: number;
  /** Ground-truth height. */
  height: number;
  /** True when the mask has a defect pixel. */
  isDefective: boolean;
  /** The image score used for the image ROC AUC. */
  imageScore: number;
}

/** Metrics plus what plots and qualitative pictures need. */
export interface CategoryEvaluationDetail {
  /** The metrics record, as returned by {@link evaluateCategory}. */
  metrics: CategoryMetrics;
  /** Test images in input order, maps at ground-truth resolution. */
  images: EvaluatedImage[];
  /** Image-level ROC curve; null when undefined (one class absent) or not requested. */
  imageRoc: RocCurve | null;
  /** Pixel-level ROC curve; null when undefined or not requested. */
  pixelRoc: RocCurve | null;
  /** PRO (region overlap vs FPR) curve; null when undefined or not requested. */
  pro: ProCurve | null;
}

/** Runs `compute`, turning an {@link UndefinedMetricError} into null (the metrics carry the note). */
function curveOrNull<T>(compute: () => T): T | null {
  try {
    return compute();
  } catch (error) {
    if (error instanceof UndefinedMetricError) return null;
    throw error;
  }
}

/**
 * {@link evaluateCategory} that also returns the curves and the prepared test
 * images, sorting the pixels only once for both.
 *
 * @param input test images, validation maps, minimum area and optional method threshold
 * @param options which curves, and their point thinning
 * @returns metrics, images at ground-truth resolution and curves
 * @throws {EvaluationInputError} for a missing, mis-sized or non-finite map
 */
export function evaluateCategoryDetailed(
  input: CategoryInput,
  options: DetailOptions = {},
): CategoryEvaluationDetail {
  const notes: string[] = [];
  if (!Number.isInteger(input.minArea) || input.minArea < 1) {
    throw new EvaluationInputError(`minArea must be a positive integer, got ${input.minArea}`);
  }
  if (input.testImages.length === 0) throw new EvaluationInputError("there are no test images");
  const images = input.testImages.map(prepareTestImage);
  const defectiveCount = images.filter((image) => image.isDefective).length;
  if (defectiveCount === 0) {
    notes.push("category has no defective test images: AUROC, AP and AU-PRO are undefined");
  }

  const imageScores = Float64Array.from(images, (image) => image.imageScore);
  const imageLabels = Uint8Array.from(images, (image) => (image.isDefective ? 1 : 0));
  const image_auroc = metricOrNull(notes, "image_auroc", () => rocAuc(imageScores, imageLabels));

  const table = buildPixelScoreTable(images);
  const pixel_auroc = metricOrNull(notes, "pixel_auroc", () => pixelRocAuc(table));
  const pixel_ap = metricOrNull(notes, "pixel_ap", () => pixelAveragePrecision(table));
  const au_pro = metricOrNull(notes, "au_pro", () => auProFromTable(table));

  let threshold: number | null = null;
  let threshold_source: CategoryMetrics["threshold_source"] = null;
  if (input.methodThreshold !== undefined) {
    if (!Number.isFinite(input.methodThreshold)) {
      throw new EvaluationInputError(`method threshold ${input.methodThreshold} is not finite`);
    }
    threshold = input.methodThreshold;
    threshold_source = "method";
  } else if (input.validationMaps && input.validationMaps.length > 0) {
    const validation = input.validationMaps.map((item) => {
      const target = item.gtWidth !== undefined && item.gtHeight !== undefined
        ? { width: item.gtWidth, height: item.gtHeight }
        : validationTargetSize(input, images);
      return {
        map: resizePlane(
          checkMap(item.name, item.map, item.width, item.height),
          item.width,
          item.height,
          target.width,
          target.height,
          "bilinear",
        ),
        width: target.width,
        height: target.height,
      };
    });
    threshold = validationThreshold(validation, input.minArea);
    threshold_source = "validation";
  } else {
    notes.push(
      "threshold: no method threshold and no validation maps; accuracies and region overlap are undefined",
    );
  }

  let accuracy_good: number | null = null;
  let accuracy_defective: number | null = null;
  let region_overlap: number | null = null;
  if (threshold !== null) {
    const atThreshold = evaluateAtThreshold(images, threshold, input.minArea);
    accuracy_good = atThreshold.accuracyGood;
    accuracy_defective = atThreshold.accuracyDefective;
    region_overlap = atThreshold.regionOverlap;
    if (accuracy_good === null) notes.push("accuracy_good: there are no good test images");
    if (accuracy_defective === null) {
      notes.push("accuracy_defective: there are no defective test images");
    }
    if (region_overlap === null) notes.push("region_overlap: there are no ground-truth regions");
  }

  const metrics: CategoryMetrics = {
    image_auroc,
    pixel_auroc,
    au_pro,
    pixel_ap,
    threshold,
    threshold_source,
    min_area: input.minArea,
    accuracy_good,
    accuracy_defective,
    region_overlap,
    n_test_images: images.length,
    n_good: images.length - defectiveCount,
    n_defective: defectiveCount,
    n_regions: table.regionCount,
    notes,
  };

  const wantCurves = options.curves ?? true;
  const resolution = options.curveResolution ?? 1e-3;
  return {
    metrics,
    images: images.map((image) => ({
      name: image.name,
      defectType: image.defectType,
      map: image.map,
      mask: image.mask,
      width: image.width,
      height: image.height,
      isDefective: image.isDefective,
      imageScore: image.imageScore,
    })),
    imageRoc: wantCurves
      ? curveOrNull(() => rocCurve(imageScores, imageLabels, { resolution }))
      : null,
    pixelRoc: wantCurves ? curveOrNull(() => rocCurveFromSorted(table, { resolution })) : null,
    pro: wantCurves ? curveOrNull(() => proCurveFromTable(table, { resolution })) : null,
  };
}

/** The metrics averaged by {@link meanOverCategories}. */
export const AVERAGED_METRICS = [
  "image_auroc",
  "pixel_auroc",
  "au_pro",
  "pixel_ap",
  "accuracy_good",
  "accuracy_defective",
  "region_overlap",
] as const;

/** Name of a metric averaged over categories. */
export type AveragedMetric = typeof AVERAGED_METRICS[number];

/** Means over categories (unweighted, as in the MVTec AD paper). */
export type MeanMetrics = { [K in AveragedMetric]: number | null } & {
  /** Number of categories. */
  n_categories: number;
  /** Total number of test images. */
  n_test_images: number;
  /** Total number of ground-truth regions. */
  n_regions: number;
  /** Which metrics were averaged over fewer than all categories, and why. */
  notes: string[];
};

/**
 * Unweighted mean of each metric over the categories where it is defined
 * (non-null). A metric null in every category stays null; partial means are
 * explained in `notes`.
 *
 * @param categories metrics per category name
 * @returns the means and totals
 */
export function meanOverCategories(categories: Record<string, CategoryMetrics>): MeanMetrics {
  const names = Object.keys(categories);
  const notes: string[] = [];
  const means = {} as { [K in AveragedMetric]: number | null };
  for (const metric of AVERAGED_METRICS) {
    const defined = names.filter((name) => categories[name][metric] !== null);
    const missing = names.filter((name) => categories[name][metric] === null);
    means[metric] = defined.length === 0
      ? null
      : defined.reduce((sum, name) => sum + (categories[name][metric] as number), 0) /
        defined.length;
    if (missing.length > 0 && names.length > 0) {
      notes.push(
        `${metric}: mean over ${defined.length} of ${names.length} categories (undefined for ${
          missing.join(", ")
        })`,
      );
    }
  }
  return {
    ...means,
    n_categories: names.length,
    n_test_images: names.reduce((sum, name) => sum + categories[name].n_test_images, 0),
    n_regions: names.reduce((sum, name) => sum + categories[name].n_regions, 0),
    notes,
  };
}

/** Identifies a test image in the MVTec layout: `test/<defect>/<id>.png`. */
export interface TestImageId {
  /** Defect type directory, e.g. `"good"` or `"broken_large"`. */
  defect: string;
  /** Image id without extension, e.g. `"000"`. */
  id: string;
}

/** A map read from or written to disk. */
export interface StoredMap extends TestImageId, TiffImage {}

/** One or more anomaly maps that could not be read; lists every problem. */
export class MapFileError extends InputError {
  /** One line per missing or unreadable file. */
  readonly problems: string[];

  /**
   * Creates the error from a summary and one line per file.
   *
   * @param summary first line of the message
   * @param problems one entry per file
   */
  constructor(summary: string, problems: string[]) {
    super(`${summary}\n  ${problems.join("\n  ")}`);
    this.name = "MapFileError";
    this.problems = problems;
  }
}

function checkPathPart(kind: string, value: string): void {
  if (value === "" || value === "." || value === ".." || /[\\/]/.test(value)) {
    throw new EvaluationInputError(`invalid ${kind} ${JSON.stringify(value)} for a map path`);
  }
}

/** Path of a category's {@link IMAGE_SCORES_FILE} under a maps root. */
export function imageScoresPath(mapsRoot: string, category: string): string {
  checkPathPart("category", category);
  return join(mapsRoot, category, IMAGE_SCORES_FILE);
}

/**
 * The key of a test image in `image_scores.json`: `<defect>/<id>`, as its map's path under
 * `test/`.
 */
export function imageScoreKey(image: TestImageId): string {
  return `${image.defect}/${image.id}`;
}

/**
 * The optional file of a category's maps that gives each test image's score, for methods whose
 * image score is not the map's maximum: `{"<defect>/<id>": score, …}`.
 */
export const IMAGE_SCORES_FILE = "image_scores.json";

/**
 * Path of a map in the official layout: `<mapsRoot>/<category>/test/<defect>/<id>.tiff`.
 *
 * @param mapsRoot root directory of all maps
 * @param category category name, e.g. `"bottle"`
 * @param image defect type and id
 * @returns the file path
 */
export function mapPath(mapsRoot: string, category: string, image: TestImageId): string {
  checkPathPart("category", category);
  checkPathPart("defect type", image.defect);
  checkPathPart("image id", image.id);
  return join(mapsRoot, category, "test", image.defect, `${image.id}.tiff`);
}

/**
 * Reads the maps of the given test images from
 * `<mapsRoot>/<category>/test/<defect>/<id>.tiff`.
 *
 * @param mapsRoot root directory of all maps
 * @param category category name
 * @param testImages the images whose maps are needed
 * @returns the maps, in the order of `testImages`
 * @throws {MapFileError} listing every missing or unreadable map
 */
export async function readMapsFromDisk(
  mapsRoot: string,
  category: string,
  testImages: readonly TestImageId[],
): Promise<StoredMap[]> {
  const results = await Promise.allSettled(
    testImages.map((image) => readTiffFile(mapPath(mapsRoot, category, image))),
  );
  const problems: string[] = [];
  const maps: StoredMap[] = [];
  results.forEach((result, i) => {
    if (result.status === "fulfilled") {
      maps.push({ defect: testImages[i].defect, id: testImages[i].id, ...result.value });
    } else {
      const error = result.reason;
      problems.push(error instanceof TiffError ? error.message : String(error));
    }
  });
  if (problems.length > 0) {
    throw new MapFileError(
      `${problems.length} of ${testImages.length} anomaly maps of category "${category}" ` +
        `under ${mapsRoot} are missing or unreadable:`,
      problems,
    );
  }
  return maps;
}

/**
 * Writes maps as 32-bit float TIFFs in the official layout, atomically.
 *
 * @param mapsRoot root directory of all maps
 * @param category category name
 * @param maps the maps with their defect type and id
 * @returns the written paths, in input order
 */
export async function writeMapsToDisk(
  mapsRoot: string,
  category: string,
  maps: readonly StoredMap[],
): Promise<string[]> {
  const paths: string[] = [];
  for (const item of maps) {
    const path = mapPath(mapsRoot, category, item);
    checkMap(path, item.map, item.width, item.height);
    await writeTiffFile(path, item.map, item.width, item.height);
    paths.push(path);
  }
  return paths;
}
