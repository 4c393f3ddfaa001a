/**
 * Evaluation reports: the `metrics.json` object, and Markdown / plain-text
 * tables laid out like the MVTec AD paper (Table 2: classification accuracy
 * of good and defective images; Table 3: region overlap and pixel ROC AUC),
 * plus a table of AU-PRO, image AUROC and pixel AP. Methods are columns.
 *
 * @module
 */

import { writeFileAtomic } from "../util/fs.ts";
import { type CategoryMetrics, type MeanMetrics, meanOverCategories } from "./evaluate.ts";

/** Contents of `metrics.json`. */
export interface MetricsJson {
  /** Metrics per category name. */
  categories: Record<string, CategoryMetrics>;
  /** Means over categories. */
  mean: MeanMetrics;
}

/** One method's results, a column of the report tables. */
export interface MethodRun {
  /** Column title, e.g. `"PatchCore"`. */
  method: string;
  /** The method's metrics. */
  metrics: MetricsJson;
}

/** A table as text cells; rendered as Markdown or plain text. */
export interface ReportTable {
  /** Caption. */
  title: string;
  /** Column titles. */
  header: string[];
  /** Body rows, same length as `header`. */
  rows: string[][];
  /** Per body row, the column indices holding the row's best value (highlighted). */
  best: number[][];
}

/** Options of the report renderers. */
export interface ReportOptions {
  /** Document title (Markdown only). Default `"MVTec AD evaluation"`. */
  title?: string;
  /** Decimals of metric values. Default 3. */
  digits?: number;
}

/**
 * Builds the `metrics.json` object from per-category metrics.
 *
 * @param categories metrics per category name
 * @returns categories plus their means
 */
export function buildMetricsJson(categories: Record<string, CategoryMetrics>): MetricsJson {
  return { categories, mean: meanOverCategories(categories) };
}

/** Metric rows shown for each category in one table. */
interface SubRow {
  label: string;
  value: (metrics: CategoryMetrics | MeanMetrics) => number | null;
}

const MEAN_ROW = "mean";

function categoryNames(runs: readonly MethodRun[]): string[] {
  const names: string[] = [];
  for (const run of runs) {
    for (const name of Object.keys(run.metrics.categories)) {
      if (!names.includes(name)) names.push(name);
    }
  }
  return names;
}

function formatValue(value: number | null | undefined, digits: number): string {
  return value === null || value === undefined ? "n/a" : value.toFixed(digits);
}

/** Builds one paper-style table: per category, one row per sub-metric, methods as columns. */
function buildTable(
  title: string,
  subRows: readonly SubRow[],
  runs: readonly MethodRun[],
  digits: number,
): ReportTable {
  const header = ["Category", "Metric", ...runs.map((run) => run.method)];
  const rows: string[][] = [];
  const best: number[][] = [];
  for (const category of [...categoryNames(runs), MEAN_ROW]) {
    subRows.forEach((subRow, subIndex) => {
      const values = runs.map((run) => {
        const metrics = category === MEAN_ROW ? run.metrics.mean : run.metrics.categories[category];
        return metrics === undefined ? null : subRow.value(metrics);
      });
      rows.push([
        subIndex === 0 ? category : "",
        subRow.label,
        ...values.map((value) => formatValue(value, digits)),
      ]);
      best.push(bestColumns(values, digits, 2));
    });
  }
  return { title, header, rows, best };
}

/** Columns (offset by `firstValueColumn`) whose rounded value is the row maximum; none for one method. */
function bestColumns(
  values: (number | null)[],
  digits: number,
  firstValueColumn: number,
): number[] {
  const defined = values.filter((value): value is number => value !== null);
  if (values.length < 2 || defined.length === 0) return [];
  const top = Math.max(...defined).toFixed(digits);
  return values.flatMap((value, i) =>
    value !== null && value.toFixed(digits) === top ? [firstValueColumn + i] : []
  );
}

/**
 * Builds the three report tables: the paper's Table 2 (accuracy on good and
 * defective images), Table 3 (region overlap and pixel ROC AUC), and the
 * threshold-free metrics (AU-PRO, image AUROC, pixel AP). Each ends with the
 * mean over categories.
 *
 * @param runs one entry per method (column)
 * @param options number formatting
 * @returns the tables
 */
export function buildReportTables(
  runs: readonly MethodRun[],
  options: ReportOptions = {},
): ReportTable[] {
  const digits = options.digits ?? 3;
  return [
    buildTable(
      "Table 2: ratio of correctly classified good and defective test images (validation threshold, minimum defect area)",
      [
        { label: "good", value: (m) => m.accuracy_good },
        { label: "defective", value: (m) => m.accuracy_defective },
      ],
      runs,
      digits,
    ),
    buildTable(
      "Table 3: per-region overlap at the threshold and pixel-level ROC AUC",
      [
        { label: "region overlap", value: (m) => m.region_overlap },
        { label: "pixel ROC AUC", value: (m) => m.pixel_auroc },
      ],
      runs,
      digits,
    ),
    buildTable(
      "Threshold-free metrics: AU-PRO (FPR <= 0.3), image ROC AUC, pixel average precision",
      [
        { label: "AU-PRO", value: (m) => m.au_pro },
        { label: "image ROC AUC", value: (m) => m.image_auroc },
        { label: "pixel AP", value: (m) => m.pixel_ap },
      ],
      runs,
      digits,
    ),
  ];
}

function notesSection(runs: readonly MethodRun[]): string[] {
  const lines: string[] = [];
  for (const run of runs) {
    const { categories, mean } = run.metrics;
    for (const [category, metrics] of Object.entries(categories)) {
      for (const note of metrics.notes) lines.push(`${run.method} / ${category}: ${note}`);
      if (metrics.threshold !== null) {
        lines.push(
          `${run.method} / ${category}: threshold ${metrics.threshold} (${metrics.threshold_source}), minimum area ${metrics.min_area} px`,
        );
      }
    }
    for (const note of mean.notes) lines.push(`${run.method} / mean: ${note}`);
  }
  return lines;
}

/**
 * Renders the report tables as Markdown (best value per row in bold when
 * several methods are compared), followed by notes on thresholds and
 * undefined metrics.
 *
 * @param runs one entry per method (column)
 * @param options title and number formatting
 * @returns Markdown text
 */
export function renderMarkdownReport(
  runs: readonly MethodRun[],
  options: ReportOptions = {},
): string {
  const lines = [`# ${options.title ?? "MVTec AD evaluation"}`, ""];
  for (const table of buildReportTables(runs, options)) {
    lines.push(`## ${table.title}`, "");
    lines.push(`| ${table.header.join(" | ")} |`);
    lines.push(`| ${table.header.map((_, i) => (i < 2 ? ":--" : "--:")).join(" | ")} |`);
    table.rows.forEach((row, r) => {
      const cells = row.map((cell, c) => (table.best[r].includes(c) ? `**${cell}**` : cell));
      lines.push(`| ${cells.join(" | ")} |`);
    });
    lines.push("");
  }
  const notes = notesSection(runs);
  if (notes.length > 0) {
    lines.push("## Notes", "", ...notes.map((note) => `- ${note}`), "");
  }
  return lines.join("\n");
}

/**
 * Renders the same tables as aligned plain text for a terminal (best value
 * per row marked with `*` when several methods are compared).
 *
 * @param runs one entry per method (column)
 * @param options number formatting
 * @returns plain text
 */
export function renderTextReport(runs: readonly MethodRun[], options: ReportOptions = {}): string {
  const lines: string[] = [];
  for (const table of buildReportTables(runs, options)) {
    const marked = table.rows.map((row, r) =>
      row.map((cell, c) => (table.best[r].includes(c) ? `${cell}*` : cell))
    );
    const widths = table.header.map((title, c) =>
      Math.max(title.length, ...marked.map((row) => row[c].length))
    );
    const formatRow = (row: string[]) =>
      row.map((cell, c) => (c < 2 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  ")
        .trimEnd();
    const rule = widths.map((width) => "-".repeat(width)).join("  ");
    lines.push(table.title, rule, formatRow(table.header), rule);
    marked.forEach((row, r) => {
      // A rule before each category's first row (and before the mean) groups sub-rows.
      if (r > 0 && row[0] !== "") lines.push(rule);
      lines.push(formatRow(row));
    });
    lines.push(rule, "");
  }
  return lines.join("\n");
}

/**
 * Writes `metrics.json` atomically (pretty-printed).
 *
 * @param path destination file
 * @param metrics the metrics object
 * @returns a promise resolved once the file is in place
 */
export async function writeMetricsJson(path: string, metrics: MetricsJson): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(metrics, null, 2) + "\n");
}

/**
 * Writes a report (Markdown or text) atomically.
 *
 * @param path destination file
 * @param text report contents
 * @returns a promise resolved once the file is in place
 */
export async function writeReport(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, text);
}
