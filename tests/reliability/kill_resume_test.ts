/**
 * Crash safety with real processes: `deno task train` is killed with SIGKILL during an epoch,
 * inside a checkpoint write (temporary file written, not renamed) and while the maps are written
 * (at the fault-injection points of src/util/test_hold.ts), and after each kill every file of the
 * run folder is whole, `deno task eval` names what is missing, and `--resume` finishes the run: to the same
 * metrics as a run never killed, and without training again when training had finished.
 */

import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { tinyDataset } from "../data/helpers.ts";
import { decodeRgba } from "../../src/data/image.ts";
import { decodeTiff } from "../../src/eval/tiff.ts";
import { evaluateRuns } from "../../src/eval/runs.ts";
import { decodeSafetensors } from "../../src/nn/checkpoint.ts";
import { readRun } from "../../src/run/folder.ts";
import { TEST_HOLD_VARIABLE } from "../../src/util/test_hold.ts";
import {
  assertOneLineError,
  REPO_ROOT,
  runTaskProcess,
  taskEnvironment,
} from "../tasks/helpers.ts";

/** Train an autoencoder in seconds: 2 epochs of 2 steps on 128×128 objects. */
const TINY_AE = [
  "--method",
  "ae-l2",
  "--epochs",
  "2",
  "--patches",
  "8",
  "--batch",
  "4",
  "--latent",
  "8",
  "--object-size",
  "128",
];

/** The training command line for data root `data` and runs folder `out`. */
function trainArgs(data: string, out: string, ...more: string[]): string[] {
  return ["bottle", "--data", data, "--out", out, ...TINY_AE, ...more];
}

/**
 * Runs the train task until it reaches the fault-injection point `hold`, then kills it with
 * SIGKILL; fails if the process ends before reaching it.
 */
async function trainUntilKilled(args: string[], hold: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tasks/train.ts", ...args],
    cwd: REPO_ROOT,
    env: taskEnvironment({ [TEST_HOLD_VARIABLE]: hold }),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  let killed = false;
  for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
    stderr += chunk;
    if (!killed && stderr.includes(`${TEST_HOLD_VARIABLE} ${hold}`)) {
      child.kill("SIGKILL");
      killed = true;
    }
  }
  const status = await child.status;
  assert.ok(killed, `the run ended (code ${status.code}) before reaching ${hold}:\n${stderr}`);
  assert.equal(status.signal, "SIGKILL");
}

/** Every file under `dir`, relative to it. */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(join(dir, prefix))) {
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) files.push(...await listFiles(dir, path));
    else files.push(path);
  }
  return files.sort();
}

/** A temporary file of an interrupted atomic write (src/util/fs.ts writeFileAtomic). */
function isTemporary(path: string): boolean {
  return basename(path).startsWith(".") && path.endsWith(".tmp");
}

/**
 * Decodes every file of a run folder by its type, so that a half-written one fails; temporary
 * files of interrupted writes are skipped (they are never results). Returns the files found.
 */
async function assertEveryFileWhole(runDir: string): Promise<string[]> {
  const files = (await listFiles(runDir)).filter((path) => !isTemporary(path));
  for (const path of files) {
    const bytes = await Deno.readFile(join(runDir, path));
    const what = `${path} is not whole`;
    if (path.endsWith(".safetensors")) decodeSafetensors(bytes, path);
    else if (path.endsWith(".json")) JSON.parse(new TextDecoder().decode(bytes));
    else if (path.endsWith(".tiff")) decodeTiff(bytes, path);
    else if (path.endsWith(".png")) await decodeRgba(bytes, path);
    else if (path.endsWith(".log")) {
      assert.ok(new TextDecoder().decode(bytes).endsWith("\n"), what);
    } else assert.fail(`unexpected file ${path} in the run folder`);
  }
  return files;
}

/** The progress a checkpoint records: epochs done. */
async function checkpointEpoch(runDir: string): Promise<number> {
  const bytes = await Deno.readFile(join(runDir, "checkpoint.safetensors"));
  return JSON.parse(decodeSafetensors(bytes).metadata.progress).epoch;
}

/** `deno task eval --run runDir` of an unfinished run: one line naming what is missing. */
async function assertEvalRefuses(runDir: string, out: string, missing: RegExp): Promise<void> {
  const result = await runTaskProcess("eval", ["--run", runDir, "--out", out, "--examples", "0"]);
  const line = assertOneLineError(result, 1, missing);
  assert.match(line, /is not finished/);
  assert.match(line, /--resume/);
}

async function metricsOf(runDir: string) {
  const [{ categories: [result] }] = await evaluateRuns([await readRun(runDir)], {
    examples: 0,
    onWarning: () => {},
  });
  return result.metrics;
}

Deno.test("train killed at any moment leaves whole files, and --resume finishes it", async (t) => {
  const { parent: temp, root: data } = await tinyDataset({
    categories: ["bottle"],
    testDefectiveCount: 3,
  });
  const out = join(temp, "runs");
  const runDir = join(out, "ae-l2", "bottle");
  const evalOut = join(temp, "eval");
  try {
    await t.step("killed during epoch 2: epoch 1's checkpoint, nothing else", async () => {
      await trainUntilKilled(trainArgs(data, out), "fit-step:3");
      assert.deepEqual(await assertEveryFileWhole(runDir), ["checkpoint.safetensors"]);
      assert.equal(await checkpointEpoch(runDir), 1);
      await assertEvalRefuses(runDir, evalOut, /config\.json, threshold\.json and maps\/ are/);
    });

    await t.step(
      "resumed and killed inside epoch 2's checkpoint write: epoch 1's is intact",
      async () => {
        // Epoch 2's checkpoint is written to its temporary file; the kill comes before the rename.
        await trainUntilKilled(
          trainArgs(data, out, "--resume"),
          "atomic-write/checkpoint.safetensors:1",
        );
        assert.equal(await checkpointEpoch(runDir), 1);
        const leftovers = [...Deno.readDirSync(runDir)].filter((entry) =>
          isTemporary(join(runDir, entry.name))
        );
        assert.equal(leftovers.length, 1, "the kill left epoch 2's temporary checkpoint");
        await assertEveryFileWhole(runDir);
      },
    );

    let model = new Uint8Array();
    await t.step("resumed and killed while writing maps: no threshold.json yet", async () => {
      await trainUntilKilled(trainArgs(data, out, "--resume"), "map:3");
      const files = await assertEveryFileWhole(runDir);
      assert.equal(await checkpointEpoch(runDir), 2);
      assert.ok(!files.includes("threshold.json"), "threshold.json marks a finished run");
      for (const file of ["config.json", "model.safetensors", "autoencoder.json", "train.log"]) {
        assert.ok(files.includes(file), file);
      }
      assert.equal(files.filter((path) => path.endsWith(".tiff")).length, 3);
      // A half-written map left by a kill (the next one: test/contamination/000) is not taken
      // for the map.
      const next = join(runDir, "maps", "bottle", "test", "contamination");
      await Deno.mkdir(next, { recursive: true });
      await Deno.writeFile(join(next, ".000.tiff.0badf00d.tmp"), new Uint8Array(10));
      await assertEvalRefuses(
        runDir,
        evalOut,
        /threshold\.json and 3 of 6 anomaly maps \(maps\/bottle\/test\/contamination\/000\.tiff/,
      );
      model = await Deno.readFile(join(runDir, "model.safetensors"));
    });

    await t.step("resumed after training ended: maps finished without training again", async () => {
      const result = await runTaskProcess("train", trainArgs(data, out, "--resume"));
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /resumed after epoch 2 \(step 4\)/);
      assert.doesNotMatch(result.stdout, /epoch \d\/2: step/, "no epoch is trained again");
      // Not deepEqual: its diff of two large byte arrays would take minutes to print.
      const after = await Deno.readFile(join(runDir, "model.safetensors"));
      assert.ok(
        after.length === model.length && after.every((byte, i) => byte === model[i]),
        "model.safetensors holds other weights: training ran again",
      );
      const files = await assertEveryFileWhole(runDir);
      assert.equal(files.filter((path) => path.endsWith(".tiff")).length, 6);
      assert.ok(files.includes("threshold.json"));
      const evaluated = await runTaskProcess("eval", [
        "--run",
        runDir,
        "--out",
        evalOut,
        "--examples",
        "0",
      ]);
      assert.equal(evaluated.code, 0, evaluated.stderr);
    });

    await t.step("the killed and resumed run scores as a run never killed", async () => {
      const reference = join(temp, "reference");
      const result = await runTaskProcess("train", trainArgs(data, reference));
      assert.equal(result.code, 0, result.stderr);
      const [resumed, uninterrupted] = [
        await metricsOf(runDir),
        await metricsOf(join(reference, "ae-l2", "bottle")),
      ];
      const keys = ["pixel_auroc", "image_auroc", "au_pro", "pixel_ap", "threshold"] as const;
      for (const key of keys) {
        const [a, b] = [resumed[key], uninterrupted[key]];
        assert.ok(
          typeof a === "number" && typeof b === "number" && Math.abs(a - b) <= 1e-6,
          `${key}: ${a} resumed, ${b} uninterrupted`,
        );
      }
    });

    await t.step("a finished run trained again is unfinished until its maps are", async () => {
      await trainUntilKilled(trainArgs(data, out, "--resume"), "map:2");
      const files = await assertEveryFileWhole(runDir);
      assert.ok(!files.includes("threshold.json"), "the old threshold.json is gone");
      await assertEvalRefuses(runDir, evalOut, /threshold\.json is missing/);
      // Among other runs, an unfinished one is skipped with a warning that names it.
      const all = await runTaskProcess("eval", [
        "--runs",
        temp,
        "--out",
        evalOut,
        "--examples",
        "0",
      ]);
      assert.equal(all.code, 0, all.stderr);
      assert.match(all.stderr, /warning: Run ".*runs\/ae-l2\/bottle" is not finished.*\(skipped\)/);
      assert.match(all.stderr, /Evaluating 1 run: .*reference\/ae-l2\/bottle/);
    });
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});
