/**
 * `deno task eval`: scores anomaly maps with the MVTec AD protocol and writes metrics, a report
 * and pictures. Run with `--help` for the usage; see src/eval/maps_folder.ts for the rules.
 *
 * @module
 */

import { asInputError, parseCommandLine, runTask, UsageError } from "../src/util/cli.ts";
import { InputError } from "../src/util/errors.ts";
import {
  type EvalProgress,
  evaluateMapsFolder,
  methodNameForMaps,
} from "../src/eval/maps_folder.ts";
import {
  assertRunFinished,
  evaluateRuns,
  type MethodEvaluation,
  UnfinishedRunError,
} from "../src/eval/runs.ts";
import { writeEvaluationOutputs } from "../src/eval/outputs.ts";
import { displayPath, isDirectory } from "../src/util/fs.ts";
import { ProgressBar } from "../src/util/progress.ts";
import { findRuns, type FoundRun, readRun } from "../src/run/folder.ts";

export { UsageError };
/** Default folder of trained runs. */
export const DEFAULT_RUNS_DIR = "runs";
/** Default output folder; under `out/`, which git, `deno fmt` and `deno lint` ignore. */
export const DEFAULT_OUT_DIR = "out/eval";

const USAGE = `Usage:
  deno task eval [--runs DIR | --run DIR ...] [--categories a,b] [--out DIR] [--min-area N]
  deno task eval --maps MAPS --data ROOT [--categories a,b] [--out DIR] [--min-area N] [--name NAME]

Scores anomaly maps with the MVTec AD protocol: image and pixel ROC AUC, AU-PRO (FPR <= 0.3),
pixel AP, and the paper's threshold protocol (accuracy on good and defective images, region
overlap). Writes OUT/metrics.json, OUT/report.md (the paper's Tables 2 and 3, methods as
columns) and pictures (ROC, PRO and region-overlap curves, best and worst examples), and prints
the tables.

Without arguments it evaluates every trained run under ./${DEFAULT_RUNS_DIR} (folders with config.json and
maps/) on the data each run was trained for, one report column per method.

Options:
  --runs DIR         folder searched for runs (default: ${DEFAULT_RUNS_DIR})
  --run DIR          evaluate this run folder only (repeatable)
  --maps MAPS        maps in MVTec's layout: MAPS/<category>/test/<defect>/<id>.tiff, plus
                     optionally MAPS/<category>/validation/good/<id>.tiff for the threshold
                     and MAPS/<category>/image_scores.json ({"<defect>/<id>": score}) for
                     image scores other than the map's maximum
  --data ROOT        dataset root in the MVTec AD layout (required with --maps)
  --categories a,b   only these categories (default: all with maps, or all runs)
  --out DIR          output folder (default: ${DEFAULT_OUT_DIR})
  --min-area N       minimum defect area in pixels at ground-truth resolution, for every
                     category (default: the run's threshold.json, else 0.03% of the image area)
  --examples N       best and worst example pictures per category, each (default: 3)
  --name NAME        report column title with --maps (default: the maps folder's name)
  --help             show this help
  --debug            on an error, print its stack trace

A run folder whose training did not finish (no threshold.json, or maps missing) is refused with
--run, naming what is missing; under --runs it is skipped with a warning.`;

/** What the command line asks for. */
export type EvalCommand =
  | {
    /** Evaluate trained runs. */
    mode: "runs";
    /** Folder searched when `runDirs` is empty. */
    runsRoot: string;
    /** Explicit run folders (`--run`), or empty. */
    runDirs: string[];
    /** Category filter, or undefined for all. */
    categories?: string[];
    /** Output folder. */
    out: string;
    /** Minimum area override. */
    minArea?: number;
    /** Examples per category (best and worst each). */
    examples: number;
  }
  | {
    /** Evaluate one maps folder. */
    mode: "maps";
    /** Maps root. */
    maps: string;
    /** Data root. */
    data: string;
    /** Category filter, or undefined for all. */
    categories?: string[];
    /** Output folder. */
    out: string;
    /** Minimum area override. */
    minArea?: number;
    /** Examples per category (best and worst each). */
    examples: number;
    /** Report column title. */
    name: string;
  };

function parseCount(flag: string, text: string | undefined, minimum: number): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < minimum) {
    throw new UsageError(`${flag} must be an integer >= ${minimum}, got "${text}"`);
  }
  return value;
}

/**
 * Parses the command line.
 *
 * @param args command-line arguments
 * @returns the command, or "help"
 * @throws {UsageError} naming an unknown flag, a bad value or a bad combination
 */
export function parseEvalArgs(args: string[]): EvalCommand | "help" {
  const { values } = parseCommandLine({
    args,
    options: {
      runs: { type: "string" },
      run: { type: "string", multiple: true },
      maps: { type: "string" },
      data: { type: "string" },
      categories: { type: "string" },
      out: { type: "string" },
      "min-area": { type: "string" },
      examples: { type: "string" },
      name: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  const categories = values.categories === undefined ? undefined : values.categories.split(",")
    .map((name) => name.trim()).filter((name) => name !== "");
  if (categories !== undefined && categories.length === 0) {
    throw new UsageError("--categories needs at least one category name");
  }
  const common = {
    categories,
    out: values.out ?? DEFAULT_OUT_DIR,
    minArea: parseCount("--min-area", values["min-area"], 1),
    examples: parseCount("--examples", values.examples, 0) ?? 3,
  };
  if (values.maps !== undefined || values.data !== undefined) {
    if (values.maps === undefined) throw new UsageError("--data needs --maps MAPS");
    if (values.data === undefined) throw new UsageError("--maps needs --data ROOT");
    if (values.runs !== undefined || values.run !== undefined) {
      throw new UsageError("--maps cannot be combined with --runs or --run");
    }
    return {
      mode: "maps",
      maps: values.maps,
      data: values.data,
      name: values.name ?? methodNameForMaps(values.maps),
      ...common,
    };
  }
  if (values.name !== undefined) throw new UsageError("--name only applies with --maps");
  if (values.runs !== undefined && values.run !== undefined) {
    throw new UsageError("--runs and --run cannot be combined");
  }
  return {
    mode: "runs",
    runsRoot: values.runs ?? DEFAULT_RUNS_DIR,
    runDirs: values.run ?? [],
    ...common,
  };
}

/** One progress bar per category (or run), replaced when the label changes. */
function progressBars(): { onProgress: (progress: EvalProgress) => void; finish: () => void } {
  let bar: ProgressBar | null = null;
  let label = "";
  const finish = () => {
    bar?.done();
    bar = null;
    label = "";
  };
  const onProgress = (progress: EvalProgress) => {
    if (bar === null || progress.label !== label) {
      finish();
      label = progress.label;
      bar = new ProgressBar({ label, total: progress.total, unit: "steps" });
    }
    bar.update(progress.done, { stage: progress.stage });
    if (progress.done >= progress.total) finish();
  };
  return { onProgress, finish };
}

const HOW_TO_TRAIN = "Train one with `deno task train carpet`, or score maps from another tool " +
  "with `deno task eval --maps MAPS --data ROOT`.";

/** A run folder's config and threshold; a broken file in it is the user's to fix. */
async function readRunFolder(dir: string): Promise<FoundRun> {
  try {
    return await readRun(dir);
  } catch (error) {
    throw asInputError(error);
  }
}

async function selectRuns(command: Extract<EvalCommand, { mode: "runs" }>): Promise<FoundRun[]> {
  let runs: FoundRun[];
  if (command.runDirs.length > 0) {
    runs = [];
    for (const dir of command.runDirs) {
      await assertRunFinished(dir);
      runs.push(await readRunFolder(dir));
    }
  } else {
    if (!(await isDirectory(command.runsRoot))) {
      throw new InputError(`No runs folder "${command.runsRoot}". ${HOW_TO_TRAIN}`);
    }
    runs = await finishedRuns(
      await findRuns(command.runsRoot).catch((error) => {
        throw asInputError(error);
      }),
    );
    if (runs.length === 0) {
      throw new InputError(
        `No trained runs under "${command.runsRoot}" (folders with config.json and maps/). ` +
          HOW_TO_TRAIN,
      );
    }
  }
  if (command.categories !== undefined) {
    const wanted = command.categories;
    runs = runs.filter((run) => wanted.includes(run.config.category));
    if (runs.length === 0) {
      throw new InputError(`No runs of categories ${wanted.join(", ")}. ${HOW_TO_TRAIN}`);
    }
  }
  return runs;
}

/** The finished runs among `runs`; each unfinished one is skipped with a warning. */
async function finishedRuns(runs: readonly FoundRun[]): Promise<FoundRun[]> {
  const finished: FoundRun[] = [];
  for (const run of runs) {
    try {
      await assertRunFinished(run.dir);
      finished.push(run);
    } catch (error) {
      if (!(error instanceof UnfinishedRunError)) throw error;
      console.error(`warning: ${error.message} (skipped)`);
    }
  }
  return finished;
}

/**
 * Runs the command: evaluates, writes the outputs and prints the tables.
 *
 * @param command the parsed command line
 * @returns the output folder's files
 */
export async function runEval(command: EvalCommand): Promise<string[]> {
  const progress = progressBars();
  let methods: MethodEvaluation[];
  try {
    if (command.mode === "maps") {
      const categories = await evaluateMapsFolder({
        mapsRoot: command.maps,
        dataRoot: command.data,
        categories: command.categories,
        minArea: command.minArea,
        examples: command.examples,
        onProgress: progress.onProgress,
      });
      methods = [{ method: command.name, categories }];
    } else {
      const runs = await selectRuns(command);
      console.error(
        `Evaluating ${runs.length} run${runs.length === 1 ? "" : "s"}: ` +
          runs.map((run) => displayPath(run.dir)).join(", "),
      );
      methods = await evaluateRuns(runs, {
        minArea: command.minArea,
        examples: command.examples,
        onProgress: progress.onProgress,
      });
    }
  } finally {
    progress.finish();
  }
  const outputs = await writeEvaluationOutputs(command.out, methods, {
    perMethodMetrics: command.mode === "runs",
  });
  console.log(outputs.text);
  const pictures = outputs.files.filter((file) => file.endsWith(".png")).length;
  console.log(
    `Wrote ${displayPath(outputs.metricsPath)}, ${displayPath(outputs.reportPath)} and ` +
      `${pictures} pictures under ${displayPath(command.out)}`,
  );
  return outputs.files;
}

async function main(args: string[]): Promise<void> {
  const command = parseEvalArgs(args);
  if (command === "help") {
    console.log(USAGE);
    return;
  }
  try {
    await runEval(command);
  } catch (error) {
    // Evaluation only reads the folders the user named: a plain error is about them.
    throw asInputError(error);
  }
}

if (import.meta.main) await runTask(main);
