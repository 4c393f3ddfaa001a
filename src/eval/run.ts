/**
 * Evaluation of anomaly maps stored on disk, as `deno task eval` does it: maps of one folder in
 * MVTec's layout against a dataset ({@link evaluateMapsFolder}), or every trained run folder
 * ({@link findRuns}, {@link evaluateRuns}), and the outputs ({@link writeEvaluationOutputs}).
 *
 * Inputs, per category `<cat>`:
 * - `MAPS/<cat>/test/<defect>/<id>.tiff`: one map per test image of the dataset (required).
 * - `MAPS/<cat>/validation/good/<id>.tiff`: maps of the validation images (optional). The
 *   validation images are the hold-out of `train/good` chosen by `openCategory` with its default
 *   options (fraction 0.1, seed 0). Training must hold out the same images (open the category with
 *   default options), or the ids will not match and evaluation stops naming the missing maps.
 *   Without this folder the paper's threshold cannot be set: threshold, accuracies and region
 *   overlap are null, with a note saying why.
 *
 * Minimum defect area (the paper's threshold protocol, sec. 4.3): by default
 * {@link DEFAULT_MIN_AREA_FRACTION} of the ground-truth image area, rounded, at least 1 pixel
 * (see {@link defaultMinArea}); `minArea` overrides it for every category.
 *
 * A map must show the whole image: one whose aspect ratio differs from its ground truth's (more
 * than a pixel of rounding) is an error naming the file, because stretching it would misalign
 * it. Maps of another size with the same aspect ratio are resized bilinearly.
 *
 * @module
 */

import { basename, join, relative, resolve } from "node:path";
import { type FloatImage, resize } from "../data/image.ts";
import { type MvtecCategory, openCategory, type Sample } from "../data/mvtec.ts";
import type { RunConfig, RunThreshold } from "../methods/method.ts";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs.ts";
import {
  type CategoryMetrics,
  evaluateCategoryDetailed,
  type EvaluatedImage,
  EvaluationInputError,
  MapFileError,
  mapPath,
  readMapsFromDisk,
  type StoredMap,
  type TestImageInput,
  type ValidationMapInput,
} from "./evaluate.ts";
import type { ProCurve, RocCurve } from "./metrics.ts";
import {
  renderProChart,
  renderQualitative,
  renderRegionOverlapChart,
  renderRocChart,
  savePng,
} from "./plot.ts";
import {
  buildMetricsJson,
  type MethodRun,
  type MetricsJson,
  renderMarkdownReport,
  renderTextReport,
} from "./report.ts";
import { readTiffFile, TiffError, type TiffImage } from "./tiff.ts";

/**
 * Default minimum defect area as a fraction of the ground-truth image area: 0.03 %, i.e. 243 px
 * at 900x900, 315 px at 1024x1024, 20 px at 256x256. It is the smallest defect area the
 * synthetic fixtures generate, so a perfect map classifies every fixture image correctly, and on
 * MVTec AD it is about a 17x17 px blob at full resolution: smaller than the small defects
 * (scratches, holes), larger than the speckles anomaly maps show on good images.
 */
export const DEFAULT_MIN_AREA_FRACTION = 0.0003;

/**
 * The default minimum defect area of a category: {@link DEFAULT_MIN_AREA_FRACTION} of its
 * ground-truth area, rounded, at least 1.
 *
 * @param width ground-truth width in pixels
 * @param height ground-truth height in pixels
 * @returns the minimum area in pixels
 */
export function defaultMinArea(width: number, height: number): number {
  return Math.max(1, Math.round(DEFAULT_MIN_AREA_FRACTION * width * height));
}

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
}

/** A qualitative picture of one test image (image with outlines, heat map beside it). */
export interface EvaluationExample {
  /** Among the best or the worst test images of the category. */
  kind: "best" | "worst";
  /** 1 = the best (or worst) of all. */
  rank: number;
  /** Defect type folder. */
  defect: string;
  /** Image id. */
  id: string;
  /** The image score (map maximum unless given). */
  imageScore: number;
  /**
   * How well the image score separates this image from the other class, in [0, 1]: for a
   * defective image the share of good images scoring lower, for a good image the share of
   * defective images scoring higher (ties count half). 1 = perfectly separated.
   */
  quality: number;
  /** The picture, PNG-encoded. */
  png: Uint8Array;
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

/** One method's results: a column of the report. */
export interface MethodEvaluation {
  /** Column title, e.g. `"ae-ssim"`. */
  method: string;
  /** Results per category, in evaluation order. */
  categories: CategoryEvaluation[];
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function requireDirectory(path: string, what: string): Promise<void> {
  if (!(await isDirectory(path))) throw new Error(`${what} "${path}" does not exist`);
}

async function listSubfolders(folder: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name);
  }
  return names.sort();
}

/** The categories of a maps folder: its sub-folders that hold a `test` folder. */
async function categoriesWithMaps(mapsRoot: string): Promise<string[]> {
  const names: string[] = [];
  for (const name of await listSubfolders(mapsRoot)) {
    if (await isDirectory(join(mapsRoot, name, "test"))) names.push(name);
  }
  return names;
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

function validationMapPath(mapsRoot: string, category: string, id: string): string {
  return join(mapsRoot, category, "validation", "good", `${id}.tiff`);
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

/** Copies a binary mask (values 0/1) into bytes; null for a good image. */
function maskBytes(mask: FloatImage): Uint8Array {
  return Uint8Array.from(mask.data, (value) => (value >= 0.5 ? 1 : 0));
}

/** Scores how well each image is separated from the other class (see {@link EvaluationExample.quality}). */
function separationQuality(images: readonly EvaluatedImage[]): number[] {
  const good = images.filter((image) => !image.isDefective).map((image) => image.imageScore);
  const defective = images.filter((image) => image.isDefective).map((image) => image.imageScore);
  /** Share of `others` on the right side of `score` (ties half); 1 without others to compare. */
  const separated = (others: number[], score: number, othersShouldBeLower: boolean) => {
    if (others.length === 0) return 1;
    let sum = 0;
    for (const other of others) {
      if (other === score) sum += 0.5;
      else if ((other < score) === othersShouldBeLower) sum += 1;
    }
    return sum / others.length;
  };
  return images.map((image) =>
    image.isDefective
      ? separated(good, image.imageScore, true)
      : separated(defective, image.imageScore, false)
  );
}

/** Picks `count` best and `count` worst distinct images by quality (ties: file order). */
function pickExamples(
  images: readonly EvaluatedImage[],
  count: number,
): { index: number; kind: "best" | "worst"; rank: number; quality: number }[] {
  if (count <= 0 || images.length === 0) return [];
  const quality = separationQuality(images);
  // Within equal quality, a defective image scoring higher (a good one lower) is better.
  const margin = (i: number) =>
    images[i].isDefective ? images[i].imageScore : -images[i].imageScore;
  const order = images.map((_, i) => i).sort((a, b) =>
    quality[b] - quality[a] || margin(b) - margin(a) || a - b
  );
  const bestCount = Math.min(count, Math.ceil(order.length / 2));
  const worstCount = Math.min(count, order.length - bestCount);
  const best = order.slice(0, bestCount);
  const worst = order.slice(order.length - worstCount).reverse();
  return [
    ...best.map((index, i) => ({
      index,
      kind: "best" as const,
      rank: i + 1,
      quality: quality[index],
    })),
    ...worst.map((index, i) => ({
      index,
      kind: "worst" as const,
      rank: i + 1,
      quality: quality[index],
    })),
  ];
}

/** Converts a channel-planar image to the interleaved layout of the picture renderer. */
function interleave(image: FloatImage): Float32Array {
  const { width, height, channels, data } = image;
  if (channels === 1) return data;
  const plane = width * height;
  const out = new Float32Array(plane * channels);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < channels; c++) out[i * channels + c] = data[c * plane + i];
  }
  return out;
}

async function renderExample(
  category: MvtecCategory,
  sample: Sample,
  image: EvaluatedImage,
  threshold: number | null,
  heatRange: { min: number; max: number },
  maxSide: number,
): Promise<Uint8Array> {
  const scale = Math.min(1, maxSide / Math.max(image.width, image.height));
  const width = Math.max(1, Math.round(image.width * scale));
  const height = Math.max(1, Math.round(image.height * scale));
  const picture = await category.loadImage(sample, { width, height });
  const map = resize(
    { width: image.width, height: image.height, channels: 1, data: image.map },
    width,
    height,
  ).data;
  let mask: Uint8Array | null = null;
  if (image.mask !== null) {
    const asFloat = Float32Array.from(image.mask, (value) => (value !== 0 ? 1 : 0));
    mask = maskBytes(
      resize(
        { width: image.width, height: image.height, channels: 1, data: asFloat },
        width,
        height,
      ),
    );
  }
  const rendered = renderQualitative({
    image: interleave(picture),
    channels: picture.channels,
    width,
    height,
    gtMask: mask,
    map,
    // Without a threshold nothing is "detected": the picture shows no green outline.
    threshold: threshold ?? Infinity,
    heatmap: heatRange,
  });
  return await rendered.encode();
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
    throw new Error(`The minimum area must be a positive integer, got ${options.minArea}`);
  }
  const categories = options.categories ?? await categoriesWithMaps(mapsRoot);
  if (categories.length === 0) {
    throw new Error(
      `No maps found in "${mapsRoot}": expected folders <category>/test/<defect>/<id>.tiff`,
    );
  }
  // Check every category before the slow work, so a typo fails at once.
  for (const name of categories) {
    await requireDirectory(join(mapsRoot, name, "test"), `Maps of category "${name}":`);
    await requireDirectory(join(dataRoot, name), `Data of category "${name}":`);
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
  // Default open options: the same validation split as training (see the module docs).
  const category = await openCategory(dataRoot, name, { onWarning: options.onWarning });
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
    });
  }
  const validationMaps: ValidationMapInput[] = validationRead.maps.map((stored, i) => {
    const path = validationMapPath(mapsRoot, name, stored.id);
    checkAspectRatio(path, stored, validationSamples[i]);
    return { name: path, map: stored.map, width: stored.width, height: stored.height };
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

  // One colour scale per category, so heat maps of different images compare.
  let min = Infinity;
  let max = -Infinity;
  for (const image of detail.images) {
    for (let i = 0; i < image.map.length; i++) {
      if (image.map[i] < min) min = image.map[i];
      if (image.map[i] > max) max = image.map[i];
    }
  }
  const examples: EvaluationExample[] = [];
  for (const pick of pickExamples(detail.images, exampleCount)) {
    const image = detail.images[pick.index];
    const sample = category.test[pick.index];
    examples.push({
      kind: pick.kind,
      rank: pick.rank,
      defect: sample.defect,
      id: sample.id,
      imageScore: image.imageScore,
      quality: pick.quality,
      png: await renderExample(
        category,
        sample,
        image,
        detail.metrics.threshold,
        { min, max },
        options.exampleSize ?? 512,
      ),
    });
    report("pictures", 1);
  }
  return {
    category: name,
    metrics: detail.metrics,
    imageRoc: detail.imageRoc,
    pixelRoc: detail.pixelRoc,
    pro: detail.pro,
    examples,
  };
}

/** A trained run folder found by {@link findRuns}. */
export interface FoundRun {
  /** The run folder (holding `config.json` and `maps/`). */
  dir: string;
  /** Its `config.json`. */
  config: RunConfig;
  /** Its `threshold.json`, or null when absent. */
  threshold: RunThreshold | null;
}

async function readJsonFile<T>(path: string): Promise<T> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read "${path}": ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new Error(`"${path}" is not valid JSON: ${(error as Error).message}`);
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * Reads one run folder: its `config.json` and, when present, `threshold.json`.
 *
 * @param dir a folder holding `config.json` and `maps/`
 * @returns the run
 * @throws Error naming the file when `config.json` is missing or lacks method, category or data_root
 */
export async function readRun(dir: string): Promise<FoundRun> {
  const configPath = join(dir, "config.json");
  if (!(await isFile(configPath))) {
    throw new Error(`"${dir}" is not a run folder: "${configPath}" does not exist`);
  }
  const config = await readJsonFile<RunConfig>(configPath);
  for (const key of ["method", "category", "data_root"] as const) {
    if (typeof config[key] !== "string" || config[key] === "") {
      throw new Error(`"${configPath}" has no "${key}"`);
    }
  }
  const thresholdPath = join(dir, "threshold.json");
  let threshold: RunThreshold | null = null;
  if (await isFile(thresholdPath)) {
    threshold = await readJsonFile<RunThreshold>(thresholdPath);
    if (
      (threshold.source !== "method" && threshold.source !== "validation") ||
      !Number.isFinite(threshold.threshold) ||
      !(Number.isInteger(threshold.min_area) && threshold.min_area >= 1)
    ) {
      throw new Error(
        `"${thresholdPath}" must hold {threshold: number, source: "validation" | "method", ` +
          "min_area: positive integer}",
      );
    }
  }
  return { dir, config, threshold };
}

/**
 * Finds every run folder under `runsRoot`: folders with a `config.json` and a `maps/` folder
 * (at any depth; `maps/` folders themselves are not searched).
 *
 * @param runsRoot e.g. `runs`
 * @returns the runs, sorted by folder
 * @throws Error naming `runsRoot` when it does not exist, or a broken `config.json`
 */
export async function findRuns(runsRoot: string): Promise<FoundRun[]> {
  await requireDirectory(runsRoot, "Runs folder");
  const runs: FoundRun[] = [];
  const visit = async (dir: string): Promise<void> => {
    if (await isFile(join(dir, "config.json")) && await isDirectory(join(dir, "maps"))) {
      runs.push(await readRun(dir));
      return;
    }
    for (const name of await listSubfolders(dir)) {
      if (name !== "maps") await visit(join(dir, name));
    }
  };
  await visit(runsRoot);
  return runs.sort((a, b) => a.dir.localeCompare(b.dir));
}

/** Options of {@link evaluateRuns}. */
export interface EvaluateRunsOptions {
  /** Overrides every run's minimum area (else `threshold.json`'s, else {@link defaultMinArea}). */
  minArea?: number;
  /** Called as maps are read and scored; labels are `"<method> <category>"`. */
  onProgress?: (progress: EvalProgress) => void;
  /** Best and worst test images drawn per category (each); default 3. */
  examples?: number;
  /** Receives warnings of the data loader; default `console.warn`. */
  onWarning?: (message: string) => void;
}

/**
 * The report column of a run: its method, with the preset when there is one.
 *
 * @param config the run's `config.json`
 * @returns e.g. `"ae-ssim"` or `"ae-ssim:small"`
 */
export function runColumnName(config: RunConfig): string {
  return config.preset ? `${config.method}:${config.preset}` : config.method;
}

/**
 * Evaluates runs on the data each was trained for (`config.json`'s `data_root`), grouping them
 * into one column per method (and preset). A run whose `threshold.json` says `source: "method"`
 * is scored at that threshold; otherwise the threshold comes from its validation maps. The
 * minimum area is `options.minArea`, else `threshold.json`'s `min_area`, else the default rule.
 *
 * @param runs runs from {@link findRuns} or {@link readRun}
 * @param options minimum area override and progress
 * @returns one entry per method, in order of first appearance
 * @throws Error when two runs would fill the same cell (same method and category), naming both
 */
export async function evaluateRuns(
  runs: readonly FoundRun[],
  options: EvaluateRunsOptions = {},
): Promise<MethodEvaluation[]> {
  const cells = new Map<string, string>();
  for (const run of runs) {
    const cell = `${runColumnName(run.config)}\u0000${run.config.category}`;
    const previous = cells.get(cell);
    if (previous !== undefined) {
      throw new Error(
        `Two runs of ${runColumnName(run.config)} on "${run.config.category}": "${previous}" and ` +
          `"${run.dir}". Evaluate one of them with --run DIR.`,
      );
    }
    cells.set(cell, run.dir);
  }
  const methods = new Map<string, CategoryEvaluation[]>();
  for (const run of runs) {
    const column = runColumnName(run.config);
    const [result] = await evaluateMapsFolder({
      mapsRoot: join(run.dir, "maps"),
      dataRoot: run.config.data_root,
      categories: [run.config.category],
      minArea: options.minArea ?? run.threshold?.min_area,
      methodThreshold: run.threshold?.source === "method" ? run.threshold.threshold : undefined,
      label: `${column} ${run.config.category}`,
      onProgress: options.onProgress,
      examples: options.examples,
      onWarning: options.onWarning,
    }).catch((error: Error) => {
      throw new Error(`Run "${run.dir}": ${error.message}`, { cause: error });
    });
    const list = methods.get(column) ?? [];
    list.push(result);
    methods.set(column, list);
  }
  return [...methods].map(([method, categories]) => ({ method, categories }));
}

/**
 * The `metrics.json` object of one method.
 *
 * @param evaluation one method's results
 * @returns per-category metrics and their means
 */
export function methodMetrics(evaluation: MethodEvaluation): MetricsJson {
  return buildMetricsJson(
    Object.fromEntries(evaluation.categories.map((result) => [result.category, result.metrics])),
  );
}

/** `metrics.json` when several methods are evaluated together: one entry per method. */
export interface CombinedMetricsJson {
  /** Metrics per method (column) name. */
  methods: Record<string, MetricsJson>;
}

/** What {@link writeEvaluationOutputs} wrote. */
export interface EvaluationOutputs {
  /** `<outDir>/metrics.json`. */
  metricsPath: string;
  /** `<outDir>/report.md`. */
  reportPath: string;
  /** The report tables as plain text, for the terminal. */
  text: string;
  /** Every file written, in order. */
  files: string[];
}

/** Options of {@link writeEvaluationOutputs}. */
export interface WriteOutputsOptions {
  /** Title of `report.md`. */
  title?: string;
  /** Write `<method>/metrics.json` per method even for a single method (runs mode). Default false. */
  perMethodMetrics?: boolean;
  /** Called after each file is written. */
  onFile?: (path: string) => void;
}

/** A file-system-safe folder name for a method column. */
function slug(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]+/g, "_") || "_";
}

/**
 * Writes the evaluation outputs into `outDir`, every file atomically:
 *
 * - `metrics.json`: `{categories, mean}` as in the issue when there is one method; with several,
 *   `{methods: {<method>: {categories, mean}}}` so that nothing collides ({@link CombinedMetricsJson}).
 * - `<method>/metrics.json`: each method's `{categories, mean}`, when there are several methods or
 *   `perMethodMetrics` is set.
 * - `report.md`: the paper's Tables 2 and 3 and the threshold-free metrics, methods as columns,
 *   notes (thresholds used, undefined metrics) and links to the pictures.
 * - `<category>/roc_image.png`, `roc_pixel.png`, `pro.png`, `region_overlap.png`: curves, one
 *   per method; a chart is skipped when the curve is undefined for every method.
 * - `<category>/examples/<method>/{best,worst}<rank>_<defect>_<id>.png`: qualitative pictures.
 *
 * @param outDir output folder (created when missing)
 * @param methods one entry per method (column)
 * @param options title and per-method files
 * @returns the written paths and the terminal table
 */
export async function writeEvaluationOutputs(
  outDir: string,
  methods: readonly MethodEvaluation[],
  options: WriteOutputsOptions = {},
): Promise<EvaluationOutputs> {
  const files: string[] = [];
  const written = (path: string) => {
    files.push(path);
    options.onFile?.(path);
  };
  const metricsPerMethod = methods.map((evaluation) => methodMetrics(evaluation));
  const metricsPath = join(outDir, "metrics.json");
  if (methods.length === 1) {
    await writeJsonAtomic(metricsPath, metricsPerMethod[0]);
  } else {
    const combined: CombinedMetricsJson = {
      methods: Object.fromEntries(methods.map((m, i) => [m.method, metricsPerMethod[i]])),
    };
    await writeJsonAtomic(metricsPath, combined);
  }
  written(metricsPath);
  if (methods.length > 1 || options.perMethodMetrics) {
    for (const [i, evaluation] of methods.entries()) {
      const path = join(outDir, slug(evaluation.method), "metrics.json");
      await writeJsonAtomic(path, metricsPerMethod[i]);
      written(path);
    }
  }

  const categoryNames: string[] = [];
  for (const evaluation of methods) {
    for (const result of evaluation.categories) {
      if (!categoryNames.includes(result.category)) categoryNames.push(result.category);
    }
  }
  const pictureLinks: string[] = [];
  for (const category of categoryNames) {
    const results = methods.flatMap((evaluation) =>
      evaluation.categories.filter((result) => result.category === category).map((result) => ({
        method: evaluation.method,
        result,
      }))
    );
    const charts: {
      file: string;
      title: string;
      render: () => ReturnType<typeof renderRocChart> | null;
    }[] = [
      {
        file: "roc_image.png",
        title: "image ROC",
        render: () => {
          const curves = results.flatMap(({ method, result }) =>
            result.imageRoc
              ? [{ name: method, fpr: result.imageRoc.fpr, tpr: result.imageRoc.tpr }]
              : []
          );
          return curves.length ? renderRocChart(curves, `${category}: image ROC`) : null;
        },
      },
      {
        file: "roc_pixel.png",
        title: "pixel ROC",
        render: () => {
          const curves = results.flatMap(({ method, result }) =>
            result.pixelRoc
              ? [{ name: method, fpr: result.pixelRoc.fpr, tpr: result.pixelRoc.tpr }]
              : []
          );
          return curves.length ? renderRocChart(curves, `${category}: pixel ROC`) : null;
        },
      },
      {
        file: "pro.png",
        title: "PRO",
        render: () => {
          const curves = results.flatMap(({ method, result }) =>
            result.pro ? [{ name: method, fpr: result.pro.fpr, pro: result.pro.pro }] : []
          );
          return curves.length ? renderProChart(curves, 0.3, `${category}: PRO curve`) : null;
        },
      },
      {
        file: "region_overlap.png",
        title: "region overlap vs FPR",
        render: () => {
          const curves = results.flatMap(({ method, result }) =>
            result.pro ? [{ name: method, fpr: result.pro.fpr, pro: result.pro.pro }] : []
          );
          return curves.length
            ? renderRegionOverlapChart(curves, `${category}: region overlap vs FPR`)
            : null;
        },
      },
    ];
    const links: string[] = [];
    for (const chart of charts) {
      const image = chart.render();
      if (image === null) continue;
      const path = join(outDir, slug(category), chart.file);
      await savePng(path, image);
      written(path);
      links.push(`[${chart.title}](${slug(category)}/${chart.file})`);
    }
    for (const { method, result } of results) {
      for (const example of result.examples) {
        const file = `${example.kind}${example.rank}_${slug(example.defect)}_${
          slug(example.id)
        }.png`;
        const relativePath = `${slug(category)}/examples/${slug(method)}/${file}`;
        const path = join(outDir, relativePath);
        await savePng(path, example.png);
        written(path);
        const who = methods.length > 1 ? `${method} ` : "";
        links.push(
          `[${who}${example.kind} ${example.rank}: ${example.defect}/${example.id}](${relativePath})`,
        );
      }
    }
    pictureLinks.push(`- ${category}: ${links.length > 0 ? links.join(", ") : "none"}`);
  }

  const columns: MethodRun[] = methods.map((evaluation, i) => ({
    method: evaluation.method,
    metrics: metricsPerMethod[i],
  }));
  const markdown = renderMarkdownReport(columns, { title: options.title }) +
    [
      "",
      "## Pictures",
      "",
      "Examples: the test image with the ground truth outlined in red and the detection at the " +
      "threshold in green (yellow where both), the anomaly map beside it. Best and worst are " +
      "ranked by how well the image score separates the image from the other class.",
      "",
      ...pictureLinks,
      "",
    ].join("\n");
  const reportPath = join(outDir, "report.md");
  await writeFileAtomic(reportPath, markdown);
  written(reportPath);
  return { metricsPath, reportPath, text: renderTextReport(columns), files };
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

/**
 * A path relative to the working folder when it lies below it, for shorter messages.
 *
 * @param path any path
 * @returns the shorter form
 */
export function displayPath(path: string): string {
  const fromHere = relative(Deno.cwd(), path);
  return fromHere !== "" && !fromHere.startsWith("..") ? fromHere : path;
}
