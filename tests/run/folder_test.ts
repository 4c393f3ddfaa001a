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
