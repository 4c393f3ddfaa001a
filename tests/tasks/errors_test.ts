/**
 * Every task under bad input: a non-zero exit (2 for a usage mistake, 1 otherwise) and one line on
 * stderr naming the flag, file or folder, with no stack trace unless `--debug` is given; and the
 * shared part of it (src/util/cli.ts) on its own.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyDataset } from "../data/helpers.ts";
import { asInputError, errorLine, UsageError } from "../../src/util/cli.ts";
import { InputError } from "../../src/util/errors.ts";
import { GpuDeviceLostError } from "../../src/gpu/device.ts";
import {
  assertOneLineError,
  runScriptProcess,
  runTaskProcess,
  type TaskOutput,
} from "./helpers.ts";

/** A tiny dataset (bottle and carpet, 64×64) in a fresh temporary folder. */
async function tinyData(): Promise<{ temp: string; data: string }> {
  const { parent, root } = await tinyDataset({
    categories: ["bottle", "carpet"],
    testDefectiveCount: 3,
  });
  return { temp: parent, data: root };
}

/** Each case: the task's arguments, the exit code, and what its one line must say. */
type ErrorCase = [args: string[], code: number, pattern: RegExp];

async function assertCases(task: string, cases: ErrorCase[]): Promise<void> {
  for (const [args, code, pattern] of cases) {
    const output = await runTaskProcess(task, args);
    assertOneLineError(output, code, pattern);
  }
}

const TINY_AE = ["--method", "ae-l2", "--epochs", "1", "--patches", "4", "--batch", "4"];

Deno.test("train: usage mistakes, missing data, unknown category, nothing to resume", async () => {
  const { temp, data } = await tinyData();
  try {
    const out = join(temp, "runs");
    const checkpoint = join(out, "ae-l2", "bottle", "checkpoint.safetensors");
    await assertCases("train", [
      [["bottle", "--bogus"], 2, /Unknown flag "--bogus"/],
      [["bottle", "--data", data, "--method", "ae-l2", "--epochs", "zero"], 2, /--epochs/],
      [["bottle", "--data", data, "--method", "gmm", "--epochs", "2"], 2, /--epochs.*gmm/],
      [["bottle", "--data", join(temp, "nowhere")], 1, /nowhere/],
      [["velvet", "--data", data], 1, /"velvet".*bottle/],
      [["bottle", "--data", data, "--out", out, ...TINY_AE, "--resume"], 1, /--resume: /],
    ]);
    const missing = await runTaskProcess("train", [
      "bottle",
      "--data",
      data,
      "--out",
      out,
      ...TINY_AE,
      "--resume",
    ]);
    assert.ok(missing.stderr.includes(`${checkpoint} does not exist`), missing.stderr);
    await Deno.mkdir(join(out, "ae-l2", "bottle"), { recursive: true });
    await Deno.writeTextFile(checkpoint, "not a checkpoint");
    await assertCases("train", [
      [
        ["bottle", "--data", data, "--out", out, ...TINY_AE, "--resume"],
        1,
        /Cannot resume: .*checkpoint\.safetensors: .*safetensors/,
      ],
    ]);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("eval: usage mistakes, missing or broken run folders, missing data", async () => {
  const temp = await Deno.makeTempDir({ prefix: "anodet-eval-errors-" });
  try {
    const broken = join(temp, "broken");
    await Deno.mkdir(join(broken, "maps"), { recursive: true });
    await Deno.writeTextFile(join(broken, "config.json"), "{ not json");
    await Deno.writeTextFile(join(broken, "threshold.json"), "{}");
    const emptyRuns = join(temp, "runs");
    await Deno.mkdir(emptyRuns);
    await assertCases("eval", [
      [["--frobnicate"], 2, /Unknown flag "--frobnicate"/],
      [["--min-area", "0"], 2, /--min-area must be an integer >= 1/],
      [["--maps", "m"], 2, /--maps needs --data ROOT/],
      [["--run", join(temp, "nowhere")], 1, /Run folder ".*nowhere" does not exist/],
      [["--run", broken], 1, /broken.*config\.json/],
      [["--runs", emptyRuns], 1, /No trained runs under/],
      [["--maps", broken, "--data", join(temp, "nowhere")], 1, /nowhere/],
    ]);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("predict: usage mistakes, missing or unfinished run, missing or corrupt image", async () => {
  const { temp, data } = await tinyData();
  try {
    const out = join(temp, "runs");
    const trained = await runTaskProcess("train", [
      "carpet",
      "--data",
      data,
      "--out",
      out,
      "--method",
      "gmm",
      "--image-size",
      "32",
      "--levels",
      "2",
      "--components",
      "2",
      "--train-images",
      "4",
    ]);
    assert.equal(trained.code, 0, trained.stderr);
    const run = join(out, "gmm", "carpet");
    const garbage = join(temp, "garbage.png");
    await Deno.writeTextFile(garbage, "not an image at all");
    const unfinished = join(temp, "unfinished");
    await Deno.mkdir(unfinished);
    await Deno.copyFile(join(run, "config.json"), join(unfinished, "config.json"));
    const image = join(data, "carpet", "test", "good", "000.png");
    await assertCases("predict", [
      [["--bogus"], 2, /Unknown flag "--bogus"/],
      [["only-a-run"], 2, /expected a run folder and an image or folder/],
      [[join(temp, "nowhere"), image], 2, /nowhere.*config\.json/],
      [[unfinished, image], 2, /unfinished.*threshold\.json.*--resume/],
      [[run, join(temp, "missing.png")], 2, /missing\.png does not exist/],
      [[run, garbage, "--out", join(temp, "predictions")], 1, /garbage\.png/],
    ]);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("fixtures: usage mistakes and an output folder that cannot be made", async () => {
  const temp = await Deno.makeTempDir({ prefix: "anodet-fixtures-errors-" });
  try {
    const file = join(temp, "a-file");
    await Deno.writeTextFile(file, "");
    await assertCases("fixtures", [
      [["--size", "3"], 2, /Unknown flag "--size"/],
      [["--seed=-1"], 2, /--seed must be a non-negative integer/],
      [["--seed", "1.5"], 2, /--seed must be a non-negative integer, got "1.5"/],
      [["--out", join(file, "data")], 1, /a-file/],
    ]);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("--debug prints the stack trace instead of the one line", async () => {
  const output = await runTaskProcess("eval", ["--run", "/nonexistent/run", "--debug"]);
  assert.equal(output.code, 1);
  assert.match(output.stderr, /InputError: Run folder "\/nonexistent\/run" does not exist/);
  assert.match(output.stderr, /^\s+at .*runs\.ts/m, output.stderr);
  const usage = await runTaskProcess("train", ["--bogus", "--debug"]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /UsageError: Unknown flag "--bogus"/);
  assert.match(usage.stderr, /^\s+at /m);
});

/** Runs tests/tasks/failing_child.ts in `mode`. */
function runFailingChild(...args: string[]): Promise<TaskOutput> {
  return runScriptProcess("tests/tasks/failing_child.ts", args);
}

Deno.test("runTask: errors nobody awaits end the task alike; a bug says --debug", async () => {
  assertOneLineError(await runFailingChild("rejected-later"), 1, /^error: late\.png: not a PNG/);
  assertOneLineError(await runFailingChild("thrown-later"), 1, /^error: timer\.json: not JSON$/);
  const bug = await runFailingChild("bug");
  assert.equal(bug.code, 1);
  assert.equal(
    bug.stderr.trim(),
    "error: TypeError: Cannot read properties of undefined (reading 'width') " +
      "(run with --debug for the stack trace)",
  );
  const debug = await runFailingChild("bug", "--debug");
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, /^TypeError: Cannot read properties/);
  assert.match(debug.stderr, /^\s+at main .*failing_child\.ts/m);
});

Deno.test("errorLine: user errors as they are, bugs with their type and the --debug hint", () => {
  assert.equal(errorLine(new InputError("x.png: not a PNG")), "error: x.png: not a PNG");
  assert.equal(
    errorLine(new UsageError("--seed expects an integer")),
    "error: --seed expects an integer. Run with --help to see the options.",
  );
  assert.equal(
    errorLine(new GpuDeviceLostError({ reason: "unknown", message: "driver reset" })),
    "error: the GPU device was lost: unknown (driver reset)",
  );
  assert.equal(
    errorLine(new InputError("3 maps are missing:\n  a.tiff\n  b.tiff\n")),
    "error: 3 maps are missing: a.tiff; b.tiff",
  );
  assert.equal(
    errorLine(new InputError("--seed is ambiguous.\nUse --seed=-1")),
    "error: --seed is ambiguous. Use --seed=-1",
  );
  assert.equal(
    errorLine(new TypeError("x is undefined")),
    "error: TypeError: x is undefined (run with --debug for the stack trace)",
  );
  assert.equal(
    errorLine(new Error("odd state")),
    "error: odd state (run with --debug for the stack trace)",
  );
  assert.equal(
    errorLine("thrown text"),
    "error: thrown text (run with --debug for the stack trace)",
  );
});

Deno.test("asInputError: plain and file-system errors become input errors, bugs stay", () => {
  const plain = new Error(`Dataset root "/x" does not exist`);
  const converted = asInputError(plain);
  assert.ok(converted instanceof InputError);
  assert.equal(converted.message, plain.message);
  assert.equal(converted.cause, plain);
  assert.ok(asInputError(new Deno.errors.NotFound("no such file: /x")) instanceof InputError);
  const bug = new TypeError("x is undefined");
  assert.equal(asInputError(bug), bug);
  const usage = new UsageError("bad");
  assert.equal(asInputError(usage), usage);
});
