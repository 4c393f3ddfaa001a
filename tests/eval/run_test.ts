import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeRgba, type RgbaImage } from "../../src/data/image.ts";
import { EvaluationInputError, MapFileError, mapPath } from "../../src/eval/evaluate.ts";
import {
  type CategoryEvaluation,
  type EvalProgress,
  evaluateMapsFolder,
} from "../../src/eval/maps_folder.ts";
import { writeEvaluationOutputs } from "../../src/eval/outputs.ts";
import { defaultMinArea } from "../../src/eval/protocol.ts";
import { evaluateRuns, methodMetrics } from "../../src/eval/runs.ts";
import { writeTiffFile } from "../../src/eval/tiff.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { findRuns, type RunConfig, type RunThreshold } from "../../src/run/folder.ts";
import { testSamples, TINY_SIZE, tinyEvalDataset, writeGroundTruthMaps } from "./run_helpers.ts";

/** The keys the issue specifies for each category of metrics.json (plus counts and notes). */
const CATEGORY_KEYS = [
  "image_auroc",
  "pixel_auroc",
  "au_pro",
  "pixel_ap",
  "threshold",
  "threshold_source",
  "min_area",
  "accuracy_good",
  "accuracy_defective",
  "region_overlap",
  "n_test_images",
  "n_regions",
];

function assertNoNaNInJson(text: string): void {
  assert.ok(!/NaN|Infinity/.test(text), "JSON holds NaN or Infinity");
  // JSON.stringify writes NaN as null, so also check the values parse as finite where numbers.
  JSON.parse(text, (_key, value) => {
    if (typeof value === "number") assert.ok(Number.isFinite(value));
    return value;
  });
}

async function assertPngDecodes(path: string): Promise<RgbaImage> {
  const image = await decodeRgba(await Deno.readFile(path), path);
  assert.ok(image.width > 0 && image.height > 0, path);
  return image;
}

async function copyDirectory(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) await copyDirectory(join(from, entry.name), join(to, entry.name));
    else await Deno.copyFile(join(from, entry.name), join(to, entry.name));
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("evaluateMapsFolder and outputs on a tiny synthetic dataset", async (t) => {
  const { temp, dataRoot, cleanup } = await tinyEvalDataset();
  try {
    const perfectMaps = join(temp, "perfect");
    const invertedMaps = join(temp, "inverted");
    for (const category of ["carpet", "bottle"]) {
      await writeGroundTruthMaps(perfectMaps, dataRoot, category, "perfect");
      await writeGroundTruthMaps(invertedMaps, dataRoot, category, "inverted");
    }
    let perfect: CategoryEvaluation[] = [];

    await t.step("perfect maps score 1 everywhere, with the validation threshold", async () => {
      const events: EvalProgress[] = [];
      perfect = await evaluateMapsFolder({
        mapsRoot: perfectMaps,
        dataRoot,
        onProgress: (event) => events.push(event),
      });
      assert.deepEqual(perfect.map((result) => result.category), ["bottle", "carpet"]);
      for (const { metrics } of perfect) {
        for (
          const key of [
            "image_auroc",
            "pixel_auroc",
            "au_pro",
            "pixel_ap",
            "accuracy_good",
            "accuracy_defective",
            "region_overlap",
          ] as const
        ) {
          assert.equal(metrics[key], 1, key);
        }
        assert.equal(metrics.threshold_source, "validation");
        assert.equal(metrics.threshold, 0);
        assert.equal(metrics.min_area, defaultMinArea(TINY_SIZE, TINY_SIZE));
        assert.deepEqual(metrics.notes, []);
      }
      // Progress: per category, monotonic up to its total, through all three stages.
      for (const category of ["bottle", "carpet"]) {
        const mine = events.filter((event) => event.category === category);
        assert.ok(mine.every((event, i) => i === 0 || event.done >= mine[i - 1].done));
        assert.equal(mine.at(-1)!.done, mine.at(-1)!.total);
        assert.deepEqual(
          [...new Set(mine.map((event) => event.stage))],
          ["reading maps", "scoring", "pictures"],
        );
      }
      // 3 best and 3 worst pictures per category, distinct images.
      for (const result of perfect) {
        assert.equal(result.examples.length, 6);
        assert.equal(new Set(result.examples.map((e) => `${e.defect}/${e.id}`)).size, 6);
      }
    });

    await t.step("inverted maps score 0 for image and pixel ROC AUC and AU-PRO", async () => {
      const results = await evaluateMapsFolder({
        mapsRoot: invertedMaps,
        dataRoot,
        categories: ["carpet"],
        examples: 0,
      });
      const { metrics } = results[0];
      assert.equal(metrics.image_auroc, 0);
      assert.equal(metrics.pixel_auroc, 0);
      assert.equal(metrics.au_pro, 0);
      assert.equal(results[0].examples.length, 0);
    });

    await t.step("outputs: metrics.json, report.md with method columns, PNGs", async () => {
      const inverted = await evaluateMapsFolder({
        mapsRoot: invertedMaps,
        dataRoot,
        examples: 1,
      });
      const single = join(temp, "out-single");
      const singleOutputs = await writeEvaluationOutputs(single, [
        { method: "perfect", categories: perfect },
      ]);
      const singleText = await Deno.readTextFile(join(single, "metrics.json"));
      assertNoNaNInJson(singleText);
      const singleJson = JSON.parse(singleText);
      assert.deepEqual(Object.keys(singleJson), ["categories", "mean"]);
      assert.deepEqual(Object.keys(singleJson.categories), ["bottle", "carpet"]);
      for (const key of CATEGORY_KEYS) assert.ok(key in singleJson.categories.carpet, key);
      assert.equal(singleJson.mean.au_pro, 1);
      assert.match(singleOutputs.text, /Table 2/);
      assert.match(singleOutputs.text, /perfect/);

      const combined = join(temp, "out-combined");
      const outputs = await writeEvaluationOutputs(combined, [
        { method: "perfect", categories: perfect },
        { method: "inverted", categories: inverted },
      ], { title: "Two methods" });
      const json = JSON.parse(await Deno.readTextFile(outputs.metricsPath));
      assert.deepEqual(Object.keys(json.methods), ["perfect", "inverted"]);
      assert.equal(json.methods.inverted.categories.carpet.pixel_auroc, 0);
      for (const method of ["perfect", "inverted"]) {
        const own = JSON.parse(await Deno.readTextFile(join(combined, method, "metrics.json")));
        assert.deepEqual(own, json.methods[method]);
      }
      const report = await Deno.readTextFile(outputs.reportPath);
      assert.match(report, /^# Two methods/);
      assert.match(report, /\| Category \| Metric \| perfect \| inverted \|/);
      assert.match(report, /Table 2/);
      assert.match(report, /Table 3/);
      assert.match(report, /threshold 0 \(validation\)/);
      for (const category of ["bottle", "carpet"]) {
        for (const chart of ["roc_image", "roc_pixel", "pro", "region_overlap"]) {
          const image = await assertPngDecodes(join(combined, category, `${chart}.png`));
          assert.equal(image.width, 640);
        }
      }
      const examples = outputs.files.filter((file) => file.includes("/examples/"));
      // perfect: 6 per category, inverted: 2 per category.
      assert.equal(examples.length, 2 * 6 + 2 * 2);
      const picture = await assertPngDecodes(examples[0]);
      assert.equal(picture.width, 2 * TINY_SIZE + 4);
      assert.equal(picture.height, TINY_SIZE);
      for (const file of outputs.files) {
        if (file.endsWith(".png")) assert.ok(report.includes(file.slice(combined.length + 1)));
      }
    });

    await t.step("min-area override, method threshold, resized maps", async () => {
      const [result] = await evaluateMapsFolder({
        mapsRoot: perfectMaps,
        dataRoot,
        categories: ["carpet"],
        minArea: 5,
        methodThreshold: { carpet: 0.5 },
        examples: 0,
      });
      assert.equal(result.metrics.min_area, 5);
      assert.equal(result.metrics.threshold, 0.5);
      assert.equal(result.metrics.threshold_source, "method");

      // Maps at half resolution (same aspect ratio) are brought to the ground-truth size.
      const halfMaps = join(temp, "half");
      for (const sample of await testSamples(dataRoot, "carpet")) {
        const half = TINY_SIZE / 2;
        const map = new Float32Array(half * half).fill(sample.anomalous ? 0.2 : 0.1);
        await writeTiffFile(mapPath(halfMaps, "carpet", sample), map, half, half);
      }
      const [halfResult] = await evaluateMapsFolder({
        mapsRoot: halfMaps,
        dataRoot,
        examples: 0,
      });
      assert.equal(halfResult.metrics.image_auroc, 1);
      assert.equal(halfResult.metrics.threshold, null);
    });

    await t.step(
      "without validation maps the threshold protocol is null, with a note",
      async () => {
        const noValidation = join(temp, "no-validation");
        await writeGroundTruthMaps(noValidation, dataRoot, "carpet", "perfect", false);
        const [result] = await evaluateMapsFolder({
          mapsRoot: noValidation,
          dataRoot,
          examples: 0,
        });
        assert.equal(result.metrics.threshold, null);
        assert.equal(result.metrics.threshold_source, null);
        assert.equal(result.metrics.accuracy_good, null);
        assert.equal(result.metrics.accuracy_defective, null);
        assert.equal(result.metrics.region_overlap, null);
        assert.equal(result.metrics.image_auroc, 1);
        assert.ok(result.metrics.notes.some((note) => note.includes("no validation maps")));
        const out = join(temp, "out-no-validation");
        const outputs = await writeEvaluationOutputs(out, [{ method: "m", categories: [result] }]);
        const text = await Deno.readTextFile(outputs.metricsPath);
        assertNoNaNInJson(text);
        assert.equal(JSON.parse(text).categories.carpet.threshold, null);
        assert.match(await Deno.readTextFile(outputs.reportPath), /n\/a/);
      },
    );

    await t.step("bad maps: missing, NaN, wrong aspect ratio, unreadable", async () => {
      const samples = await testSamples(dataRoot, "carpet");
      const victim = samples.find((sample) => sample.anomalous)!;
      const copyMaps = async (name: string) => {
        const root = join(temp, name);
        await writeGroundTruthMaps(root, dataRoot, "carpet", "perfect", false);
        return { root, path: mapPath(root, "carpet", victim) };
      };
      const evaluate = (root: string) =>
        evaluateMapsFolder({ mapsRoot: root, dataRoot, examples: 0 });

      const missing = await copyMaps("missing");
      await Deno.remove(missing.path);
      await assert.rejects(
        () => evaluate(missing.root),
        (error: Error) =>
          error instanceof MapFileError && error.message.includes(missing.path) &&
          error.message.includes("file not found"),
      );

      const nan = await copyMaps("nan");
      const nanMap = new Float32Array(TINY_SIZE * TINY_SIZE);
      nanMap[7] = NaN;
      await writeTiffFile(nan.path, nanMap, TINY_SIZE, TINY_SIZE);
      await assert.rejects(
        () => evaluate(nan.root),
        (error: Error) =>
          error instanceof EvaluationInputError && error.message.includes(nan.path) &&
          /non-finite/.test(error.message),
      );

      const infinite = await copyMaps("infinite");
      const infiniteMap = new Float32Array(TINY_SIZE * TINY_SIZE);
      infiniteMap[0] = Infinity;
      await writeTiffFile(infinite.path, infiniteMap, TINY_SIZE, TINY_SIZE);
      await assert.rejects(() => evaluate(infinite.root), new RegExp(`${infinite.path}.*Infinity`));

      const wrongSize = await copyMaps("wrong-size");
      await writeTiffFile(
        wrongSize.path,
        new Float32Array(TINY_SIZE * 10),
        TINY_SIZE,
        10,
      );
      await assert.rejects(
        () => evaluate(wrongSize.root),
        (error: Error) =>
          error instanceof EvaluationInputError && error.message.includes(wrongSize.path) &&
          error.message.includes("aspect ratio"),
      );

      const garbage = await copyMaps("garbage");
      await Deno.writeFile(garbage.path, new TextEncoder().encode("this is not a TIFF file"));
      await assert.rejects(
        () => evaluate(garbage.root),
        (error: Error) => error instanceof MapFileError && error.message.includes(garbage.path),
      );
    });

    await t.step("a category without defective images: AUROC undefined, said, no NaN", async () => {
      // A copy of carpet whose test set holds only good images.
      const goodOnlyData = join(temp, "good-only-data");
      await Deno.mkdir(join(goodOnlyData, "carpet", "test"), { recursive: true });
      await copyDirectory(join(dataRoot, "carpet", "train"), join(goodOnlyData, "carpet", "train"));
      await copyDirectory(
        join(dataRoot, "carpet", "test", "good"),
        join(goodOnlyData, "carpet", "test", "good"),
      );
      const maps = join(temp, "good-only-maps");
      await writeGroundTruthMaps(maps, goodOnlyData, "carpet", "perfect");
      const [result] = await evaluateMapsFolder({ mapsRoot: maps, dataRoot: goodOnlyData });
      const { metrics } = result;
      for (const key of ["image_auroc", "pixel_auroc", "au_pro", "pixel_ap"] as const) {
        assert.equal(metrics[key], null, key);
        assert.ok(metrics.notes.some((note) => note.startsWith(`${key}:`)), key);
      }
      assert.ok(metrics.notes.some((note) => note.includes("no defective test images")));
      assert.equal(metrics.accuracy_good, 1);
      assert.equal(metrics.accuracy_defective, null);
      assert.equal(result.imageRoc, null);
      const out = join(temp, "out-good-only");
      const outputs = await writeEvaluationOutputs(out, [{ method: "m", categories: [result] }]);
      assertNoNaNInJson(await Deno.readTextFile(outputs.metricsPath));
      const report = await Deno.readTextFile(outputs.reportPath);
      assert.ok(!report.includes("NaN"));
      assert.match(report, /image_auroc: .*undefined/);
      // No curve can be drawn; the examples still can.
      assert.ok(!(await exists(join(out, "carpet", "roc_image.png"))));
      assert.ok(outputs.files.some((file) => file.includes("/examples/")));
    });

    await t.step("clear errors for missing folders and categories", async () => {
      await assert.rejects(
        () => evaluateMapsFolder({ mapsRoot: join(temp, "nope"), dataRoot }),
        new RegExp(`Maps folder "${join(temp, "nope")}" does not exist`),
      );
      await assert.rejects(
        () => evaluateMapsFolder({ mapsRoot: perfectMaps, dataRoot: join(temp, "no-data") }),
        new RegExp(`Data folder "${join(temp, "no-data")}" does not exist`),
      );
      await assert.rejects(
        () => evaluateMapsFolder({ mapsRoot: perfectMaps, dataRoot, categories: ["tile"] }),
        new RegExp(`${join(perfectMaps, "tile", "test")}" does not exist`),
      );
    });

    await t.step("findRuns and evaluateRuns on fake run folders", async () => {
      const runsRoot = join(temp, "runs");
      const makeRun = async (
        method: string,
        category: string,
        threshold: RunThreshold | null,
        root = runsRoot,
      ) => {
        const dir = join(root, method, category);
        const config: RunConfig = {
          method,
          category,
          data_root: dataRoot,
          seed: 0,
          engine_version: "test",
          options: {},
          created: new Date(0).toISOString(),
        };
        await Deno.mkdir(dir, { recursive: true });
        await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
        if (threshold) {
          await Deno.writeTextFile(join(dir, "threshold.json"), JSON.stringify(threshold));
        }
        await writeGroundTruthMaps(join(dir, "maps"), dataRoot, category, "perfect");
        return dir;
      };
      await makeRun("alpha", "carpet", { threshold: 0.25, source: "method", min_area: 4 });
      await makeRun("alpha", "bottle", null);
      await makeRun("beta", "carpet", { threshold: 0, source: "validation", min_area: 2 });
      // Not runs: no maps folder, and a stray file.
      await Deno.mkdir(join(runsRoot, "gamma", "carpet"), { recursive: true });
      await Deno.writeTextFile(join(runsRoot, "gamma", "carpet", "config.json"), "{}");

      const runs = await findRuns(runsRoot);
      assert.deepEqual(
        runs.map((run) => `${run.config.method}/${run.config.category}`),
        ["alpha/bottle", "alpha/carpet", "beta/carpet"],
      );
      const methods = await evaluateRuns(runs, { examples: 0 });
      assert.deepEqual(methods.map((m) => m.method), ["alpha", "beta"]);
      const alpha = methodMetrics(methods[0]);
      assert.equal(alpha.categories.carpet.threshold_source, "method");
      assert.equal(alpha.categories.carpet.threshold, 0.25);
      assert.equal(alpha.categories.carpet.min_area, 4);
      assert.equal(alpha.categories.bottle.threshold_source, "validation");
      assert.equal(alpha.categories.bottle.min_area, defaultMinArea(TINY_SIZE, TINY_SIZE));
      const beta = methodMetrics(methods[1]);
      assert.equal(beta.categories.carpet.threshold_source, "validation");
      assert.equal(beta.categories.carpet.min_area, 2);

      // The same method and category twice is refused, naming both folders.
      const duplicate = join(temp, "runs-dup");
      await makeRun("alpha", "bottle", null, join(duplicate, "first"));
      await makeRun("alpha", "bottle", null, join(duplicate, "second"));
      await assert.rejects(
        async () => await evaluateRuns(await findRuns(duplicate)),
        /Two runs of alpha on "bottle": ".*first.*" and ".*second.*"/,
      );

      // Evaluation reopens the category with the validation images the run recorded.
      const recorded = join(temp, "runs-recorded", "delta", "bottle");
      await writeGroundTruthMaps(join(recorded, "maps"), dataRoot, "bottle", "perfect", false);
      const opened = await openCategory(dataRoot, "bottle", { onWarning: () => {} });
      const defaultIds = new Set(opened.validation.map((sample) => sample.id));
      const heldOut = opened.train.map((sample) => sample.id).filter((id) => !defaultIds.has(id))
        .slice(0, 2);
      for (const id of heldOut) {
        const sample = opened.train.find((s) => s.id === id)!;
        await writeTiffFile(
          join(recorded, "maps", "bottle", "validation", "good", `${id}.tiff`),
          new Float32Array(sample.width * sample.height),
          sample.width,
          sample.height,
        );
      }
      const recordedConfig: RunConfig = {
        method: "delta",
        category: "bottle",
        data_root: dataRoot,
        seed: 0,
        engine_version: "test",
        options: {},
        created: new Date(0).toISOString(),
      };
      await Deno.writeTextFile(join(recorded, "config.json"), JSON.stringify(recordedConfig));
      await assert.rejects(
        () => evaluateRuns([{ dir: recorded, config: recordedConfig, threshold: null }]),
        /validation/,
        "without the recorded ids, the default split's maps are missing",
      );
      const [delta] = await evaluateRuns([{
        dir: recorded,
        config: { ...recordedConfig, validation_ids: heldOut },
        threshold: null,
      }], { examples: 0 });
      const deltaMetrics = methodMetrics(delta).categories.bottle;
      assert.equal(deltaMetrics.threshold_source, "validation");
      assert.equal(deltaMetrics.threshold, 0, "all-zero validation maps of the recorded images");
    });
  } finally {
    await cleanup();
  }
});
