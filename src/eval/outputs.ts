/**
 * The files of an evaluation ({@link writeEvaluationOutputs}): `metrics.json`, `report.md`, the
 * curve charts and the example pictures, every file written atomically.
 *
 * @module
 */

import { join } from "node:path";
import { type RgbaImage, writePng } from "../data/image.ts";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs.ts";
import type { CategoryEvaluation } from "./maps_folder.ts";
import { DEFAULT_PRO_FPR_LIMIT } from "./metrics.ts";
import { renderProChart, renderRegionOverlapChart, renderRocChart } from "./plot.ts";
import {
  type MethodRun,
  type MetricsJson,
  renderMarkdownReport,
  renderTextReport,
} from "./report.ts";
import { type MethodEvaluation, methodMetrics } from "./runs.ts";

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

/** One method's results for a category. */
interface MethodResult {
  method: string;
  result: CategoryEvaluation;
}

/**
 * The curve charts of a category, one curve per method: image ROC, pixel ROC, PRO and region
 * overlap. A chart is left out when no method has its curve (e.g. ROC without defective images).
 */
function curveCharts(
  category: string,
  results: readonly MethodResult[],
): { file: string; title: string; image: RgbaImage }[] {
  /** The methods' curves of one kind, named after their method. */
  const named = <Curve>(curveOf: (result: CategoryEvaluation) => Curve | null) =>
    results.flatMap(({ method, result }) => {
      const curve = curveOf(result);
      return curve === null ? [] : [{ name: method, ...curve }];
    });
  const imageRoc = named((result) => result.imageRoc);
  const pixelRoc = named((result) => result.pixelRoc);
  const pro = named((result) => result.pro);
  const charts: { file: string; title: string; image: RgbaImage }[] = [];
  if (imageRoc.length > 0) {
    const image = renderRocChart(imageRoc, `${category}: image ROC`);
    charts.push({ file: "roc_image.png", title: "image ROC", image });
  }
  if (pixelRoc.length > 0) {
    const image = renderRocChart(pixelRoc, `${category}: pixel ROC`);
    charts.push({ file: "roc_pixel.png", title: "pixel ROC", image });
  }
  if (pro.length > 0) {
    const image = renderProChart(pro, DEFAULT_PRO_FPR_LIMIT, `${category}: PRO curve`);
    charts.push({ file: "pro.png", title: "PRO", image });
    const overlap = renderRegionOverlapChart(pro, `${category}: region overlap vs FPR`);
    charts.push({ file: "region_overlap.png", title: "region overlap vs FPR", image: overlap });
  }
  return charts;
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
    const links: string[] = [];
    for (const chart of curveCharts(category, results)) {
      const path = join(outDir, slug(category), chart.file);
      await writePng(path, chart.image);
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
        await writeFileAtomic(path, example.png);
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
