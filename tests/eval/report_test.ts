import assert from "node:assert/strict";
import { join } from "node:path";
import type { CategoryMetrics } from "../../src/eval/evaluate.ts";
import {
  buildMetricsJson,
  buildReportTables,
  type MethodRun,
  renderMarkdownReport,
  renderTextReport,
  writeMetricsJson,
  writeReport,
} from "../../src/eval/report.ts";

function metrics(overrides: Partial<CategoryMetrics>): CategoryMetrics {
  return {
    image_auroc: 0.9,
    pixel_auroc: 0.95,
    au_pro: 0.8,
    pixel_ap: 0.5,
    threshold: 0.6,
    threshold_source: "validation",
    min_area: 3,
    accuracy_good: 0.5,
    accuracy_defective: 1,
    region_overlap: 0.25,
    n_test_images: 10,
    n_good: 4,
    n_defective: 6,
    n_regions: 7,
    notes: [],
    ...overrides,
  };
}

const runs: MethodRun[] = [
  {
    method: "AE",
    metrics: buildMetricsJson({
      bottle: metrics({ accuracy_good: 0.5 }),
      cable: metrics({ accuracy_good: 1, image_auroc: null, notes: ["image_auroc: undefined"] }),
    }),
  },
  { method: "PatchCore", metrics: buildMetricsJson({ bottle: metrics({ accuracy_good: 0.75 }) }) },
];

Deno.test("buildMetricsJson holds categories and their unweighted mean", () => {
  const json = runs[0].metrics;
  assert.deepEqual(Object.keys(json.categories), ["bottle", "cable"]);
  assert.equal(json.mean.accuracy_good, 0.75); // (0.5 + 1) / 2
  assert.equal(json.mean.image_auroc, 0.9); // cable undefined
  assert.equal(json.mean.n_test_images, 20);
});

Deno.test("report tables follow the paper: sub-rows per category, methods as columns", () => {
  const [table2, table3, extra] = buildReportTables(runs);
  assert.deepEqual(table2.header, ["Category", "Metric", "AE", "PatchCore"]);
  assert.deepEqual(table2.rows, [
    ["bottle", "good", "0.500", "0.750"],
    ["", "defective", "1.000", "1.000"],
    ["cable", "good", "1.000", "n/a"],
    ["", "defective", "1.000", "n/a"],
    ["mean", "good", "0.750", "0.750"],
    ["", "defective", "1.000", "1.000"],
  ]);
  assert.deepEqual(table2.best[0], [3]); // PatchCore's 0.750 beats 0.500
  assert.deepEqual(table2.best[1], [2, 3]); // tie
  assert.deepEqual(table3.rows[0], ["bottle", "region overlap", "0.250", "0.250"]);
  assert.deepEqual(table3.rows[1], ["", "pixel ROC AUC", "0.950", "0.950"]);
  assert.deepEqual(extra.rows.map((row) => row[1]).slice(0, 3), [
    "AU-PRO",
    "image ROC AUC",
    "pixel AP",
  ]);
  assert.equal(extra.rows[4][2], "n/a"); // cable image AUROC
});

Deno.test("Markdown and text reports render the same tables", () => {
  const markdown = renderMarkdownReport(runs, { title: "Toy" });
  assert.ok(markdown.startsWith("# Toy\n"));
  assert.ok(markdown.includes("| Category | Metric | AE | PatchCore |\n| :-- | :-- | --: | --: |"));
  assert.ok(markdown.includes("| bottle | good | 0.500 | **0.750** |"));
  assert.ok(markdown.includes("- AE / cable: image_auroc: undefined"));
  const text = renderTextReport(runs);
  const lines = text.split("\n");
  const header = lines.find((line) => line.startsWith("Category"))!;
  const bottle = lines.find((line) => line.startsWith("bottle"))!;
  // Values are right-aligned under their column titles; the best value is starred.
  assert.equal(
    bottle.indexOf("0.750*") + "0.750*".length,
    header.indexOf("PatchCore") + "PatchCore".length,
  );
  assert.ok(!text.includes("**"));
});

Deno.test("report files are written atomically and parse back", async () => {
  const directory = await Deno.makeTempDir();
  try {
    await writeMetricsJson(join(directory, "out", "metrics.json"), runs[0].metrics);
    const parsed = JSON.parse(await Deno.readTextFile(join(directory, "out", "metrics.json")));
    assert.deepEqual(parsed, runs[0].metrics);
    await writeReport(join(directory, "out", "report.md"), "# hi\n");
    assert.equal(await Deno.readTextFile(join(directory, "out", "report.md")), "# hi\n");
    const names = [...Deno.readDirSync(join(directory, "out"))].map((entry) => entry.name).sort();
    assert.deepEqual(names, ["metrics.json", "report.md"]);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});
