/**
 * The run folder: what training leaves behind and what evaluation and prediction read. Both the
 * methods (which write it) and the evaluation (which reads it) import this module, so neither
 * depends on the other for the format.
 *
 * A run folder `runs/<method>/<category>/` holds:
 * - `config.json`: {@link RunConfig}, including the training images held out for validation
 * - the method's model files (for example `model.safetensors`)
 * - `train.log` and, for trained networks, `loss.png`
 * - `threshold.json`: {@link RunThreshold}
 * - `maps/<category>/test/<defect>/<id>.tiff`: one 32-bit float anomaly map per test image at
 *   ground-truth resolution, in MVTec's official layout, so that MVTec's script and other tools can
 *   judge them; and `maps/<category>/validation/good/<id>.tiff` ({@link validationMapPath}) for
 *   the anomaly-free validation images that the threshold protocol needs.
 * - `checkpoint/` while training networks: the last end-of-epoch state, for `--resume`.
 *
 * `deno task eval` scores a run from its maps and the data root in its config, so evaluation needs
 * no GPU and treats our maps and other tools' maps alike.
 *
 * @module
 */

import { join } from "node:path";
import { InputError } from "../util/errors.ts";
import {
  isDirectory,
  isFile,
  jsonForMessage,
  listDirectory,
  readJsonFile,
  writeJsonAtomic,
} from "../util/fs.ts";

/** `config.json` of a run folder. */
export interface RunConfig {
  /** Method name. */
  method: string;
  /** Category trained on. */
  category: string;
  /** Data root the category was read from (absolute path). */
  data_root: string;
  /** "texture" or "object", as the category was treated in training. */
  kind?: "texture" | "object";
  /** Preset name, when the method has presets. */
  preset?: string;
  /** Seed. */
  seed: number;
  /** Version of this package that trained the run. */
  engine_version: string;
  /**
   * Ids of the `train/good` images held out for validation (the threshold's images). Evaluation
   * reopens the category with exactly these. Runs written before this field existed lack it; they
   * used the default split.
   */
  validation_ids?: string[];
  /** Method-specific settings (epochs, batch, image size, …). */
  options: Record<string, unknown>;
  /** ISO time of the end of training. */
  created: string;
}

/** `threshold.json` of a run folder. */
export interface RunThreshold {
  /** The threshold on the anomaly maps. */
  threshold: number;
  /** "validation" (the paper's protocol) or "method" (a method's own threshold). */
  source: "validation" | "method";
  /** Minimum defect area in pixels at ground-truth resolution used by the protocol. */
  min_area: number;
}

/** A run folder as read by {@link readRun}. */
export interface FoundRun {
  /** The run folder (holding `config.json` and `maps/`). */
  dir: string;
  /** Its `config.json`. */
  config: RunConfig;
  /** Its `threshold.json`, or null when absent. */
  threshold: RunThreshold | null;
}

/** File names inside a run folder. */
export const RUN_FILES = {
  config: "config.json",
  threshold: "threshold.json",
  log: "train.log",
  lossCurve: "loss.png",
  maps: "maps",
  checkpoint: "checkpoint",
} as const;

/**
 * The run folder of a method and category under a runs root.
 *
 * @param runsRoot e.g. `runs`
 * @param method method name
 * @param category category name
 * @returns `<runsRoot>/<method>/<category>`
 */
export function runDirectory(runsRoot: string, method: string, category: string): string {
  return join(runsRoot, method, category);
}

/**
 * Path of a validation image's map: `<mapsRoot>/<category>/validation/good/<id>.tiff`.
 *
 * @param mapsRoot the maps root (`<run>/maps`)
 * @param category category name
 * @param id image id without extension
 * @returns the file path
 */
export function validationMapPath(mapsRoot: string, category: string, id: string): string {
  return join(mapsRoot, category, "validation", "good", `${id}.tiff`);
}

/**
 * Writes `config.json` atomically.
 *
 * @param dir the run folder
 * @param config the configuration
 */
export function writeRunConfig(dir: string, config: RunConfig): Promise<void> {
  return writeJsonAtomic(join(dir, RUN_FILES.config), config);
}

/**
 * Writes `threshold.json` atomically.
 *
 * @param dir the run folder
 * @param threshold the threshold
 */
export function writeRunThreshold(dir: string, threshold: RunThreshold): Promise<void> {
  return writeJsonAtomic(join(dir, RUN_FILES.threshold), threshold);
}

function readRunJson(path: string): Promise<unknown> {
  return readJsonFile<unknown>(
    path,
    (reason) => new InputError(`Cannot read "${path}": ${reason}`),
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** What config.json must hold, for messages. */
const CONFIG_EXPECTED = "expected {method, category, data_root: non-empty strings, seed: number, " +
  'engine_version, created: strings, options: object, and optionally kind: "texture" | ' +
  '"object", preset: string, validation_ids: list of strings}';

function checkConfig(path: string, config: unknown): RunConfig {
  const fail = (problem: string): never => {
    throw new InputError(`"${path}" ${problem}; ${CONFIG_EXPECTED}`);
  };
  if (!isObject(config)) return fail("does not hold a JSON object");
  for (const key of ["method", "category", "data_root"] as const) {
    if (typeof config[key] !== "string" || config[key] === "") fail(`has no "${key}"`);
  }
  for (const key of ["engine_version", "created"] as const) {
    if (typeof config[key] !== "string") fail(`has no "${key}" string`);
  }
  if (!Number.isFinite(config.seed)) fail(`has "seed" ${jsonForMessage(config.seed)}`);
  if (!isObject(config.options)) fail(`has "options" that are not an object`);
  if (config.kind !== undefined && config.kind !== "texture" && config.kind !== "object") {
    fail(`has "kind" ${jsonForMessage(config.kind)}`);
  }
  if (config.preset !== undefined && typeof config.preset !== "string") {
    fail(`has "preset" that is not a string`);
  }
  const ids = config.validation_ids;
  if (ids !== undefined && (!Array.isArray(ids) || ids.some((id) => typeof id !== "string"))) {
    throw new InputError(`"${path}": "validation_ids" must be a list of image ids (strings)`);
  }
  return config as unknown as RunConfig;
}

function checkThreshold(path: string, threshold: unknown): RunThreshold {
  if (
    !isObject(threshold) ||
    (threshold.source !== "method" && threshold.source !== "validation") ||
    !Number.isFinite(threshold.threshold) ||
    !(Number.isSafeInteger(threshold.min_area) && (threshold.min_area as number) >= 1)
  ) {
    throw new InputError(
      `"${path}" must hold {threshold: number, source: "validation" | "method", ` +
        "min_area: positive integer}",
    );
  }
  return threshold as unknown as RunThreshold;
}

/**
 * Reads one run folder: its `config.json` and, when present, `threshold.json`.
 *
 * @param dir a folder holding `config.json` and `maps/`
 * @returns the run
 * @throws InputError naming the file when `config.json` is missing or not a run's config, or
 *   `threshold.json` is not a threshold
 */
export async function readRun(dir: string): Promise<FoundRun> {
  const configPath = join(dir, RUN_FILES.config);
  if (!(await isFile(configPath))) {
    throw new InputError(`"${dir}" is not a run folder: "${configPath}" does not exist`);
  }
  const config = checkConfig(configPath, await readRunJson(configPath));
  const thresholdPath = join(dir, RUN_FILES.threshold);
  let threshold: RunThreshold | null = null;
  if (await isFile(thresholdPath)) {
    threshold = checkThreshold(thresholdPath, await readRunJson(thresholdPath));
  }
  return { dir, config, threshold };
}

/**
 * Reads a run folder that must be complete, for prediction: `config.json` and `threshold.json`.
 *
 * @param dir the run folder
 * @returns the run, with its threshold
 * @throws InputError naming the missing or broken file
 */
export async function readFinishedRun(
  dir: string,
): Promise<FoundRun & { threshold: RunThreshold }> {
  const run = await readRun(dir);
  if (!run.threshold) {
    throw new InputError(
      `"${dir}" has no ${RUN_FILES.threshold}: its training did not finish ` +
        "(continue it with deno task train … --resume)",
    );
  }
  return run as FoundRun & { threshold: RunThreshold };
}

/**
 * Finds every run folder under `runsRoot`: folders with a `config.json` and a `maps/` folder
 * (at any depth; `maps/` folders themselves are not searched).
 *
 * @param runsRoot e.g. `runs`
 * @returns the runs, sorted by folder
 * @throws InputError naming `runsRoot` when it does not exist, or a broken `config.json`
 */
export async function findRuns(runsRoot: string): Promise<FoundRun[]> {
  if (!(await isDirectory(runsRoot))) {
    throw new InputError(`Runs folder "${runsRoot}" does not exist`);
  }
  const runs: FoundRun[] = [];
  const visit = async (dir: string): Promise<void> => {
    if (
      await isFile(join(dir, RUN_FILES.config)) && await isDirectory(join(dir, RUN_FILES.maps))
    ) {
      runs.push(await readRun(dir));
      return;
    }
    for (const name of await listDirectory(dir, { kind: "directory" })) {
      if (name !== RUN_FILES.maps) await visit(join(dir, name));
    }
  };
  await visit(runsRoot);
  return runs.sort((a, b) => a.dir.localeCompare(b.dir));
}
