/** The run folder: what training writes and evaluation and prediction read back. */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  findRuns,
  readFinishedRun,
  readRun,
  RUN_FILES,
  type RunConfig,
  runDirectory,
  validationMapPath,
  writeRunConfig,
  writeRunThreshold,
} from "../../src/run/folder.ts";
import { InputError } from "../../src/util/errors.ts";

const config: RunConfig = {
  method: "ae-l2",
  category: "bottle",
  data_root: "/data/mvtec_ad",
  kind: "object",
  seed: 0,
  engine_version: "0.1.0",
  validation_ids: ["003", "017"],
  options: { epochs: 1 },
  created: "2026-11-28T00:00:00.000Z",
};

Deno.test("a run folder written and read back keeps its config, threshold and held-out ids", async () => {
  const root = await Deno.makeTempDir();
  const dir = runDirectory(root, "ae-l2", "bottle");
  assert.equal(dir, join(root, "ae-l2", "bottle"));
  await writeRunConfig(dir, config);
  await Deno.mkdir(join(dir, RUN_FILES.maps));
  const unfinished = await readRun(dir);
  assert.deepEqual(unfinished.config, config);
  assert.equal(unfinished.threshold, null);
  await assert.rejects(() => readFinishedRun(dir), /has no threshold.json.*--resume/);
  const threshold = { threshold: 0.25, source: "validation" as const, min_area: 20 };
  await writeRunThreshold(dir, threshold);
  assert.deepEqual((await readFinishedRun(dir)).threshold, threshold);
  assert.deepEqual((await findRuns(root)).map((run) => run.dir), [dir]);
  assert.equal(
    validationMapPath(join(dir, "maps"), "bottle", "003"),
    join(dir, "maps", "bottle", "validation", "good", "003.tiff"),
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test("broken run folders are refused with the file and what was expected", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(() => readRun(dir), /is not a run folder: .*config.json" does not exist/);
  await Deno.writeTextFile(join(dir, "config.json"), "{ not json");
  await assert.rejects(() => readRun(dir), /Cannot read ".*config.json"/);
  await writeRunConfig(dir, { ...config, method: "" });
  await assert.rejects(() => readRun(dir), /config.json" has no "method"/);
  await writeRunConfig(dir, { ...config, validation_ids: [3] as unknown as string[] });
  await assert.rejects(() => readRun(dir), /"validation_ids" must be a list of image ids/);
  await writeRunConfig(dir, config);
  await Deno.writeTextFile(join(dir, "threshold.json"), '{"threshold": 1, "source": "guess"}');
  await assert.rejects(() => readRun(dir), /threshold.json" must hold \{threshold: number/);
  await assert.rejects(
    () => findRuns(join(dir, "nowhere")),
    /Runs folder ".*nowhere" does not exist/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a broken config.json or threshold.json is an InputError naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const configPath = join(dir, "config.json");
    const thresholdPath = join(dir, "threshold.json");
    const refused = async (pattern: RegExp, file = dir) => {
      await assert.rejects(() => readFinishedRun(dir), (error: unknown) => {
        assert.ok(error instanceof InputError, String(error));
        assert.match(error.message, pattern);
        assert.ok(error.message.includes(file), error.message);
        return true;
      });
    };
    await refused(/is not a run folder: .*config\.json" does not exist/);
    const configs: [unknown, RegExp][] = [
      [null, /config\.json" does not hold a JSON object; expected \{method, category/],
      [[config], /does not hold a JSON object/],
      [{ ...config, seed: "0" }, /config\.json" has "seed" "0"; expected \{/],
      [{ ...config, seed: undefined }, /has "seed" undefined/],
      [{ ...config, options: [] }, /has "options" that are not an object/],
      [
        { ...config, kind: "fabric" },
        /has "kind" "fabric"; expected .*kind: "texture" \| "object"/,
      ],
      [{ ...config, preset: 1 }, /has "preset" that is not a string/],
      [{ ...config, created: undefined }, /has no "created" string/],
      [{ ...config, engine_version: 1 }, /has no "engine_version" string/],
      [{ ...config, data_root: ["/data"] }, /has no "data_root"/],
    ];
    for (const [value, pattern] of configs) {
      await Deno.writeTextFile(configPath, JSON.stringify(value));
      await refused(pattern, configPath);
    }
    await writeRunConfig(dir, config);
    await refused(/has no threshold\.json: its training did not finish/);
    const thresholds: unknown[] = [
      null,
      { threshold: 1, source: "validation", min_area: 0 },
      { threshold: 1, source: "validation", min_area: 2 ** 60 },
      { threshold: "1", source: "validation", min_area: 1 },
      { threshold: 1, source: "validation" },
      [1, "validation", 1],
    ];
    for (const threshold of thresholds) {
      await Deno.writeTextFile(thresholdPath, JSON.stringify(threshold));
      await refused(
        /threshold\.json" must hold \{threshold: number, source: "validation" \| "method", min_/,
        thresholdPath,
      );
    }
    // 1e999 is valid JSON for Infinity.
    await Deno.writeTextFile(
      thresholdPath,
      '{"threshold": 1e999, "source": "method", "min_area": 1}',
    );
    await refused(/threshold\.json" must hold/);
    await Deno.writeTextFile(thresholdPath, '{"threshold": NaN}');
    await refused(/Cannot read ".*threshold\.json": .*JSON/);
    await assert.rejects(() => findRuns(join(dir, "none")), InputError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
