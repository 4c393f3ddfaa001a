/**
 * Evaluation of trained run folders (found with `findRuns` or read with `readRun` of
 * src/run/folder.ts): each run's maps are scored on the data it was trained for, and runs are
 * grouped into one report column per method ({@link evaluateRuns}).
 *
 * @module
 */

import { join, relative } from "node:path";
import { openCategory } from "../data/mvtec.ts";
import {
  type FoundRun,
  readRun,
  RUN_FILES,
  type RunConfig,
  validationMapPath,
} from "../run/folder.ts";
import { InputError } from "../util/errors.ts";
import { displayPath, isDirectory, isFile } from "../util/fs.ts";
import { mapPath } from "./evaluate.ts";
import { type CategoryEvaluation, type EvalProgress, evaluateMapsFolder } from "./maps_folder.ts";
import { buildMetricsJson, type MetricsJson } from "./report.ts";

/** One method's results: a column of the report. */
export interface MethodEvaluation {
  /** Column title, e.g. `"ae-ssim"`. */
  method: string;
  /** Results per category, in evaluation order. */
  categories: CategoryEvaluation[];
}

/** Options of {@link evaluateRuns}. */
export interface EvaluateRunsOptions {
  /** Overrides every run's minimum area (else `threshold.json`'s, else `defaultMinArea`). */
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
 * @param runs runs from `findRuns` or `readRun` (src/run/folder.ts)
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
      throw new InputError(
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
      mapsRoot: join(run.dir, RUN_FILES.maps),
      dataRoot: run.config.data_root,
      categories: [run.config.category],
      minArea: options.minArea ?? run.threshold?.min_area,
      methodThreshold: run.threshold?.source === "method" ? run.threshold.threshold : undefined,
      label: `${column} ${run.config.category}`,
      onProgress: options.onProgress,
      examples: options.examples,
      onWarning: options.onWarning,
      validationIds: run.config.validation_ids,
    }).catch((error: Error) => {
      // A bad run folder or dataset stays the user's error (one line), a bug stays a bug.
      const Kind = error instanceof InputError ? InputError : Error;
      throw new Kind(`Run "${run.dir}": ${error.message}`, { cause: error });
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

/** What an unfinished run folder lacks, as found by {@link findMissingRunFiles}. */
export interface MissingRunFiles {
  /** `config.json`, `threshold.json` and `maps/`, those of them that are missing. */
  files: string[];
  /** The anomaly maps that are missing, relative to the run folder. */
  maps: string[];
  /** Maps the run should hold (0 when `config.json` is missing, so they cannot be listed). */
  expectedMaps: number;
}

/**
 * The files a run folder lacks to be a finished run: `config.json`, `threshold.json` (written last
 * by training, so its absence means the run never finished), and the anomaly maps of the test and
 * validation images of the data the run names. Temporary files of interrupted writes are never
 * counted as maps: only the exact file names are.
 *
 * @param dir the run folder
 * @returns what is missing; empty lists for a finished run
 * @throws InputError when `dir` is not a folder, or its config.json or data cannot be read
 */
export async function findMissingRunFiles(dir: string): Promise<MissingRunFiles> {
  if (!(await isDirectory(dir))) throw new InputError(`Run folder "${dir}" does not exist`);
  const files: string[] = [];
  for (const name of [RUN_FILES.config, RUN_FILES.threshold]) {
    if (!(await isFile(join(dir, name)))) files.push(name);
  }
  const mapsRoot = join(dir, RUN_FILES.maps);
  if (!(await isDirectory(mapsRoot))) files.push(`${RUN_FILES.maps}/`);
  if (files.includes(RUN_FILES.config)) return { files, maps: [], expectedMaps: 0 };
  let expected: string[];
  try {
    const { config } = await readRun(dir);
    const category = await openCategory(config.data_root, config.category, {
      validationIds: config.validation_ids,
      onWarning: () => {},
    });
    expected = category.test.map((sample) => mapPath(mapsRoot, category.name, sample));
    // Runs written before validation_ids existed may hold no validation maps; they are optional.
    if (config.validation_ids !== undefined) {
      for (const sample of category.validation) {
        expected.push(validationMapPath(mapsRoot, category.name, sample.id));
      }
    }
  } catch (error) {
    throw new InputError(`Run "${dir}": ${(error as Error).message}`, { cause: error });
  }
  const maps: string[] = [];
  for (const path of expected) {
    if (!(await isFile(path))) maps.push(relative(dir, path));
  }
  return { files, maps, expectedMaps: expected.length };
}

/** A run folder that training has not finished; the message lists what is missing. */
export class UnfinishedRunError extends InputError {
  /** The error for run folder `dir`, which lacks `missing`. */
  constructor(readonly dir: string, readonly missing: MissingRunFiles) {
    super(describeMissing(dir, missing));
    this.name = "UnfinishedRunError";
  }
}

/** Paths listed in a message at most. */
const maxListedMaps = 3;

function describeMissing(dir: string, missing: MissingRunFiles): string {
  const parts = [...missing.files];
  if (missing.maps.length > 0) {
    const listed = missing.maps.slice(0, maxListedMaps).join(", ") +
      (missing.maps.length > maxListedMaps ? ", …" : "");
    parts.push(`${missing.maps.length} of ${missing.expectedMaps} anomaly maps (${listed})`);
  }
  const list = parts.length === 1
    ? parts[0]
    : `${parts.slice(0, -1).join(", ")} and ${parts.at(-1)}`;
  return `Run "${displayPath(dir)}" is not finished: ${list} ${
    parts.length === 1 && missing.maps.length === 0 ? "is" : "are"
  } missing. Continue its training with deno task train … --resume, or train it again`;
}

/**
 * Checks that a run folder is finished before it is evaluated.
 *
 * @param dir the run folder
 * @throws UnfinishedRunError listing the missing files in one line
 */
export async function assertRunFinished(dir: string): Promise<void> {
  const missing = await findMissingRunFiles(dir);
  if (missing.files.length > 0 || missing.maps.length > 0) {
    throw new UnfinishedRunError(dir, missing);
  }
}
