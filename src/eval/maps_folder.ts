/**
 * Evaluation of a folder of anomaly maps in MVTec's layout against a dataset
 * ({@link evaluateMapsFolder}), as `deno task eval --maps` does it and, per run, `deno task eval`.
 *
 * Inputs, per category `<cat>`:
 * - `MAPS/<cat>/test/<defect>/<id>.tiff`: one map per test image of the dataset (required).
 * - `MAPS/<cat>/validation/good/<id>.tiff`: maps of the validation images (optional). The
 *   validation images are the hold-out of `train/good` that a run's `config.json` records
 *   (`validation_ids`); for a maps folder from another tool, the loader's default split
 *   (fraction 0.1, seed 0). Missing maps are an error naming them.
 *   Without this folder the paper's threshold cannot be set: threshold, accuracies and region
 *   overlap are null, with a note saying why.
 *
 * Minimum defect area (the paper's threshold protocol, sec. 4.3): by default
 * `DEFAULT_MIN_AREA_FRACTION` of the ground-truth image area, rounded, at least 1 pixel
 * (`defaultMinArea` of protocol.ts); `minArea` overrides it for every category.
 *
 * - `MAPS/<cat>/image_scores.json` (optional): each test image's score, `{"<defect>/<id>": score}`,
 *   for methods whose image score is not the map's maximum. When the file is there it must
 *   score every test image with a finite number.
 *
 * A map must show the whole image: one whose aspect ratio differs from its ground truth's (more
 * than a pixel of rounding) is an error naming the file, because stretching it would misalign
 * it. Maps of another size with the same aspect ratio are resized bilinearly.
 *
 * @module
 */

import { InputError } from "../util/errors.ts";
import { basename, join, resolve } from "node:path";
import { type FloatImage, IMAGE_EXTENSIONS } from "../data/image.ts";
import { type MvtecCategory, openCategory, type Sample } from "../data/mvtec.ts";
import { validationMapPath } from "../run/folder.ts";
import { isDirectory, isFile, listDirectory, readJsonFile } from "../util/fs.ts";
import {
  type CategoryMetrics,
  evaluateCategoryDetailed,
  EvaluationInputError,
  imageScoreKey,
  imageScoresPath,
  MapFileError,
  mapPath,
  readMapsFromDisk,
  type StoredMap,
  type TestImageInput,
  type ValidationMapInput,
} from "./evaluate.ts";
import { drawExamples, type EvaluationExample } from "./examples.ts";
import type { ProCurve, RocCurve } from "./metrics.ts";
import { defaultMinArea } from "./protocol.ts";
import { readTiffFile, TiffError, type TiffImage } from "./tiff.ts";

/** Progress of an evaluation, for a progress bar. */
export interface EvalProgress {
  /** What is being evaluated, e.g. `"bottle"` or `"ae-ssim bottle"`. */
  label: string;
  /** Category name. */
  category: string;
  /** Current stage. */
  stage: "reading maps" | "scoring" | "pictures";
  /** Steps done in this category (maps read, then one for scoring, then one per picture). */
  done: number;
  /** Steps of this category. */
  total: number;
}

/** Options of {@link evaluateMapsFolder}. */
export interface EvaluateMapsOptions {
  /** Root of the maps: `<mapsRoot>/<category>/test/<defect>/<id>.tiff`. */
  mapsRoot: string;
  /** Dataset root in the MVTec AD layout. */
  dataRoot: string;
  /** Categories to evaluate; default: every folder of `mapsRoot` holding a `test` folder. */
  categories?: readonly string[];
  /** Minimum defect area in pixels for every category; default {@link defaultMinArea}. */
  minArea?: number;
  /** A method's own threshold, for all categories or per category name (then the others use validation). */
  methodThreshold?: number | Readonly<Record<string, number>>;
  /** Label of progress events; default: the category name. */
  label?: string;
  /** Called as maps are read and scored. */
  onProgress?: (progress: EvalProgress) => void;
  /** Best and worst test images drawn per category (each); default 3, 0 for none. */
  examples?: number;
  /** Largest side of the pictures of examples, in pixels; default 512 (larger images are scaled). */
  exampleSize?: number;
  /** Receives warnings of the data loader (e.g. mixed image sizes); default `console.warn`. */
  onWarning?: (message: string) => void;
  /**
   * The `train/good` ids that training held out for validation (a run's `config.json` records
   * them); default: the loader's default split.
   */
  validationIds?: readonly string[];
}

/** Results of one category. */
export interface CategoryEvaluation {
  /** Category name. */
  category: string;
  /** The metrics record of `metrics.json`. */
  metrics: CategoryMetrics;
  /** Image-level ROC curve (null when undefined). */
  imageRoc: RocCurve | null;
  /** Pixel-level ROC curve (null when undefined). */
  pixelRoc: RocCurve | null;
  /** PRO, i.e. region overlap vs FPR, curve (null when undefined). */
  pro: ProCurve | null;
  /** Best and worst test images. */
  examples: EvaluationExample[];
}

async function requireDirectory(path: string, what: string): Promise<void> {
  if (!(await isDirectory(path))) throw new InputError(`${what} "${path}" does not exist`);
}

/** The categories of a maps folder: its sub-folders that hold a `test` folder. */
async function categoriesWithMaps(mapsRoot: string): Promise<string[]> {
  const names: string[] = [];
  for (const name of await listDirectory(mapsRoot, { kind: "directory" })) {
    if (await isDirectory(join(mapsRoot, name, "test"))) names.push(name);
  }
  return names;
}

/** Whether a category's test folder holds any image in any of its sub-folders. */
async function hasTestImages(testFolder: string): Promise<boolean> {
  if (!(await isDirectory(testFolder))) return false;
  for (const folder of await listDirectory(testFolder, { kind: "directory" })) {
    const images = await listDirectory(join(testFolder, folder), {
      kind: "file",
      extensions: [...IMAGE_EXTENSIONS],
    });
    if (images.length > 0) return true;
  }
  return false;
}

/** The size shared by all test images, or the category size when they differ. */
function groundTruthSize(category: MvtecCategory): { width: number; height: number } {
  const sizes = new Set(category.test.map((sample) => `${sample.width}x${sample.height}`));
  if (sizes.size === 1) return { width: category.test[0].width, height: category.test[0].height };
  return { width: category.width, height: category.height };
}

function checkAspectRatio(path: string, map: StoredMap | ValidationMapInput, sample: Sample): void {
  // The height the map would have if scaled to the ground truth's width.
  const impliedHeight = map.height * sample.width / map.width;
  if (Math.abs(impliedHeight - sample.height) > 1) {
    throw new EvaluationInputError(
      `${path}: map is ${map.width}x${map.height} but the ground truth of its image is ` +
        `${sample.width}x${sample.height}, a different aspect ratio (a map must cover the ` +
        "whole image; cropped maps cannot be aligned)",
    );
  }
}

const READ_CHUNK = 8;

/**
 * Reads maps in chunks (so progress can be shown), collecting every missing or unreadable file
 * before failing.
 */
async function readAllMaps<T>(
  items: readonly T[],
  readChunk: (chunk: readonly T[]) => Promise<StoredMap[]>,
  onChunk: (count: number) => void,
): Promise<{ maps: StoredMap[]; problems: string[] }> {
  const maps: StoredMap[] = [];
  const problems: string[] = [];
  for (let start = 0; start < items.length; start += READ_CHUNK) {
    const chunk = items.slice(start, start + READ_CHUNK);
    try {
      maps.push(...await readChunk(chunk));
    } catch (error) {
      if (!(error instanceof MapFileError)) throw error;
      problems.push(...error.problems);
    }
    onChunk(chunk.length);
  }
  return { maps, problems };
}

/** Reads validation maps; a missing one is reported like a missing test map. */
async function readValidationChunk(
  mapsRoot: string,
  category: string,
  samples: readonly Sample[],
): Promise<StoredMap[]> {
  const results = await Promise.allSettled(
    samples.map((sample) => readTiffFile(validationMapPath(mapsRoot, category, sample.id))),
  );
  const problems = results.flatMap((result) =>
    result.status === "rejected"
      ? [result.reason instanceof TiffError ? result.reason.message : String(result.reason)]
      : []
  );
  if (problems.length > 0) throw new MapFileError("unreadable validation maps", problems);
  return results.map((result, i) => ({
    defect: "good",
    id: samples[i].id,
    ...(result as PromiseFulfilledResult<TiffImage>).value,
  }));
}

/**
 * The scores of `image_scores.json`, when the category's maps have one.
 *
 * @throws EvaluationInputError naming the file when it is not an object of finite numbers that
 *   scores every test image
 */
async function readImageScores(
  mapsRoot: string,
  category: string,
  samples: readonly Sample[],
): Promise<Map<Sample, number> | null> {
  const path = imageScoresPath(mapsRoot, category);
  if (!(await isFile(path))) return null;
  const scores = await readJsonFile<Record<string, unknown>>(
    path,
    (reason) => new EvaluationInputError(`Cannot read image scores "${path}": ${reason}`),
  );
  if (typeof scores !== "object" || scores === null || Array.isArray(scores)) {
    throw new EvaluationInputError(
      `${path}: expected an object {"<defect>/<id>": score}, got ${JSON.stringify(scores)}`,
    );
  }
  const result = new Map<Sample, number>();
  const missing: string[] = [];
  for (const sample of samples) {
    const key = imageScoreKey(sample);
    const score = scores[key];
    if (score === undefined) missing.push(key);
    else if (typeof score !== "number" || !Number.isFinite(score)) {
      throw new EvaluationInputError(`${path}: the score of "${key}" is ${score}, not a number`);
    } else result.set(sample, score);
  }
  if (missing.length > 0) {
    throw new EvaluationInputError(
      `${path} lacks the scores of ${missing.length} test image(s): ${
        missing.slice(0, 5).join(", ")
      }` +
        (missing.length > 5 ? ", …" : ""),
    );
  }
  return result;
}

/** Copies a binary mask (values 0/1) into bytes. */
function maskBytes(mask: FloatImage): Uint8Array {
  return Uint8Array.from(mask.data, (value) => (value >= 0.5 ? 1 : 0));
}

/**
 * Evaluates the maps of one folder against a dataset, category by category.
 *
 * @param options maps and data roots, categories, minimum area, threshold and progress
 * @returns the results per category, in the order evaluated
 * @throws Error naming the folder when the maps or data root or a category is missing;
 *   {@link MapFileError} listing every missing or unreadable map; {@link EvaluationInputError}
 *   naming the file of a map with NaN/infinite values or the wrong aspect ratio
 */
export async function evaluateMapsFolder(
  options: EvaluateMapsOptions,
): Promise<CategoryEvaluation[]> {
  const { mapsRoot, dataRoot } = options;
  await requireDirectory(mapsRoot, "Maps folder");
  await requireDirectory(dataRoot, "Data folder");
  if (
    options.minArea !== undefined && (!Number.isInteger(options.minArea) || options.minArea < 1)
  ) {
    throw new InputError(`The minimum area must be a positive integer, got ${options.minArea}`);
  }
  const categories = options.categories ?? await categoriesWithMaps(mapsRoot);
  if (categories.length === 0) {
    throw new InputError(
      `No maps found in "${mapsRoot}": expected folders <category>/test/<defect>/<id>.tiff`,
    );
  }
  // Check every category before the slow work, so a typo fails at once.
  for (const name of categories) {
    const dataFolder = join(dataRoot, name);
    const testFolder = join(dataFolder, "test");
    // A run on a category without test images has no test maps either: that is what to say.
    if (await isDirectory(dataFolder) && !(await hasTestImages(testFolder))) {
      throw new InputError(
        `Category "${name}" has no test images in "${testFolder}" (expected ` +
          "test/good/*.png and test/<defect>/*.png), so there is nothing to evaluate",
      );
    }
    await requireDirectory(join(mapsRoot, name, "test"), `Maps of category "${name}":`);
    await requireDirectory(dataFolder, `Data of category "${name}":`);
  }
  const results: CategoryEvaluation[] = [];
  for (const name of categories) results.push(await evaluateOneCategory(name, options));
  return results;
}

async function evaluateOneCategory(
  name: string,
  options: EvaluateMapsOptions,
): Promise<CategoryEvaluation> {
  const { mapsRoot, dataRoot } = options;
  // The validation split training used: recorded ids, else the loader's default split.
  const category = await openCategory(dataRoot, name, {
    onWarning: options.onWarning,
    validationIds: options.validationIds,
  });
  const size = groundTruthSize(category);
  const validationFolder = join(mapsRoot, name, "validation", "good");
  const validationSamples = await isDirectory(validationFolder) ? category.validation : [];
  const exampleCount = options.examples ?? 3;
  const pictureSteps = Math.min(category.test.length, 2 * exampleCount);
  const total = category.test.length + validationSamples.length + 1 + pictureSteps;
  let done = 0;
  const report = (stage: EvalProgress["stage"], steps: number) => {
    done += steps;
    options.onProgress?.({ label: options.label ?? name, category: name, stage, done, total });
  };
  report("reading maps", 0);

  const testRead = await readAllMaps(
    category.test,
    (chunk) => readMapsFromDisk(mapsRoot, name, chunk),
    (count) => report("reading maps", count),
  );
  const validationRead = await readAllMaps(
    validationSamples,
    (chunk) => readValidationChunk(mapsRoot, name, chunk),
    (count) => report("reading maps", count),
  );
  const problems = [...testRead.problems, ...validationRead.problems];
  if (problems.length > 0) {
    const expected = category.test.length + validationSamples.length;
    const hint = validationRead.problems.length > 0
      ? ` (validation maps must be those of the validation split of openCategory with default options)`
      : "";
    throw new MapFileError(
      `${problems.length} of ${expected} anomaly maps of category "${name}" under ${mapsRoot} ` +
        `are missing or unreadable${hint}:`,
      problems,
    );
  }

  const imageScores = await readImageScores(mapsRoot, name, category.test);
  const testImages: TestImageInput[] = [];
  for (const [i, sample] of category.test.entries()) {
    const stored = testRead.maps[i];
    const path = mapPath(mapsRoot, name, sample);
    checkAspectRatio(path, stored, sample);
    const gtSize = { width: sample.width, height: sample.height };
    const mask = sample.maskPath === null
      ? null
      : maskBytes(await category.loadMask(sample, gtSize));
    testImages.push({
      name: path,
      defectType: sample.defect,
      map: stored.map,
      width: stored.width,
      height: stored.height,
      gtMask: mask,
      gtWidth: sample.width,
      gtHeight: sample.height,
      imageScore: imageScores?.get(sample),
    });
  }
  const validationMaps: ValidationMapInput[] = validationRead.maps.map((stored, i) => {
    const path = validationMapPath(mapsRoot, name, stored.id);
    checkAspectRatio(path, stored, validationSamples[i]);
    const sample = validationSamples[i];
    return {
      name: path,
      map: stored.map,
      width: stored.width,
      height: stored.height,
      gtWidth: sample.width,
      gtHeight: sample.height,
    };
  });

  const threshold = typeof options.methodThreshold === "number"
    ? options.methodThreshold
    : options.methodThreshold?.[name];
  const detail = evaluateCategoryDetailed({
    testImages,
    validationMaps,
    minArea: options.minArea ?? defaultMinArea(size.width, size.height),
    methodThreshold: threshold,
    validationSize: size,
  });
  if (validationSamples.length === 0 && threshold === undefined) {
    detail.metrics.notes.push(
      category.validation.length === 0
        ? "threshold: the category has no validation images (train/good too small)"
        : `threshold: no validation maps in "${validationFolder}", so the paper's threshold ` +
          "protocol could not run",
    );
  }
  report("scoring", 1);

  const examples = await drawExamples(category, detail.images, detail.metrics.threshold, {
    count: exampleCount,
    maxSide: options.exampleSize ?? 512,
    onPicture: () => report("pictures", 1),
  });
  return {
    category: name,
    metrics: detail.metrics,
    imageRoc: detail.imageRoc,
    pixelRoc: detail.pixelRoc,
    pro: detail.pro,
    examples,
  };
}

/**
 * A column title for a maps folder: its folder name (or its parent's when it is called `maps`,
 * as in a run folder).
 *
 * @param mapsRoot the maps folder
 * @returns e.g. `"patchcore"` for `out/patchcore`
 */
export function methodNameForMaps(mapsRoot: string): string {
  const absolute = resolve(mapsRoot);
  const name = basename(absolute);
  return name === "maps" ? basename(resolve(absolute, "..")) : name;
}
