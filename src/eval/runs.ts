/**
 * Evaluation of trained run folders (found with `findRuns` or read with `readRun` of
 * src/run/folder.ts): each run's maps are scored on the data it was trained for, and runs are
 * grouped into one report column per method ({@link evaluateRuns}).
 *
 * @module
 */

import { join } from "node:path";
import { type FoundRun, RUN_FILES, type RunConfig } from "../run/folder.ts";
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
