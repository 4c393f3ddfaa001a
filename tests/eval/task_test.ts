import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { RunConfig, RunThreshold } from "../../src/run/folder.ts";
import { DEFAULT_OUT_DIR, DEFAULT_RUNS_DIR, parseEvalArgs } from "../../tasks/eval.ts";
import { tinyEvalDataset, writeGroundTruthMaps } from "./run_helpers.ts";

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Runs `deno task eval`'s script with the given arguments from `cwd` (default: the repo root). */
async function runEvalTask(
  args: string[],
  cwd: string = REPO_ROOT,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(REPO_ROOT, "tasks", "eval.ts"), ...args],
    cwd,
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test("eval task: argument parsing", () => {
  assert.deepEqual(parseEvalArgs([]), {
    mode: "runs",
    runsRoot: DEFAULT_RUNS_DIR,
    runDirs: [],
    categories: undefined,
    out: DEFAULT_OUT_DIR,
    minArea: undefined,
    examples: 3,
  });
  assert.deepEqual(
    parseEvalArgs(["--maps", "/x/maps", "--data", "/d", "--categories", "a, b", "--min-area", "9"]),
    {
      mode: "maps",
      maps: "/x/maps",
      data: "/d",
      name: "x",
      categories: ["a", "b"],
      out: DEFAULT_OUT_DIR,
      minArea: 9,
      examples: 3,
    },
  );
  assert.deepEqual(
    (parseEvalArgs(["--run", "r1", "--run", "r2"]) as { runDirs: string[] }).runDirs,
    ["r1", "r2"],
  );
  assert.equal(parseEvalArgs(["--help"]), "help");
  assert.throws(() => parseEvalArgs(["--bogus"]), /Unknown flag "--bogus".*--help/);
  assert.throws(() => parseEvalArgs(["--maps", "m"]), /--maps needs --data ROOT/);
  assert.throws(() => parseEvalArgs(["--data", "d"]), /--data needs --maps MAPS/);
  assert.throws(() => parseEvalArgs(["--min-area", "0"]), /--min-area must be an integer >= 1/);
  assert.throws(() => parseEvalArgs(["--min-area", "2.5"]), /--min-area/);
  assert.throws(() => parseEvalArgs(["--runs", "a", "--run", "b"]), /cannot be combined/);
  assert.throws(() => parseEvalArgs(["--categories", ","]), /at least one category/);
  assert.throws(() => parseEvalArgs(["positional"]), /--help/);
});

Deno.test("eval task: command line end to end", async (t) => {
  const { temp, dataRoot, cleanup } = await tinyEvalDataset();
  try {
    await t.step("--help, unknown flag, missing --data folder, no runs", async () => {
      const help = await runEvalTask(["--help"]);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /Usage:/);
      assert.match(help.stdout, /--maps MAPS --data ROOT/);

      const unknown = await runEvalTask(["--frobnicate"]);
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /Unknown flag "--frobnicate"/);

      const maps = join(temp, "mymethod");
      await writeGroundTruthMaps(maps, dataRoot, "carpet", "perfect");
      const missingData = join(temp, "no-such-data");
      const noData = await runEvalTask(["--maps", maps, "--data", missingData]);
      assert.equal(noData.code, 1);
      assert.ok(noData.stderr.includes(`Data folder "${missingData}" does not exist`));

      const empty = join(temp, "empty-runs");
      await Deno.mkdir(empty);
      const noRuns = await runEvalTask(["--runs", empty]);
      assert.equal(noRuns.code, 1);
      assert.match(noRuns.stderr, /No trained runs under .*deno task train carpet/);
      // Without arguments in a folder without ./runs.
      const noFolder = await runEvalTask([], empty);
      assert.equal(noFolder.code, 1);
      assert.match(noFolder.stderr, /No runs folder "runs".*deno task train carpet/);
    });

    await t.step(
      "--maps --data --categories --out writes metrics, report and pictures",
      async () => {
        const maps = join(temp, "mymethod");
        const out = join(temp, "out-maps");
        const result = await runEvalTask([
          "--maps",
          maps,
          "--data",
          dataRoot,
          "--categories",
          "carpet",
          "--out",
          out,
          "--min-area",
          "2",
        ]);
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stdout, /Table 2/);
        assert.match(result.stdout, /carpet +good +1\.000/);
        const metrics = JSON.parse(await Deno.readTextFile(join(out, "metrics.json")));
        assert.deepEqual(Object.keys(metrics.categories), ["carpet"]);
        assert.equal(metrics.categories.carpet.min_area, 2);
        assert.equal(metrics.categories.carpet.pixel_auroc, 1);
        assert.match(
          await Deno.readTextFile(join(out, "report.md")),
          /\| Category \| Metric \| mymethod \|/,
        );
        assert.ok((await Deno.stat(join(out, "carpet", "pro.png"))).isFile);
        // Progress goes to stderr as plain lines (not a terminal here).
        assert.match(result.stderr, /carpet +\[/);
      },
    );

    await t.step("--runs evaluates each run with its threshold.json", async () => {
      const runsRoot = join(temp, "runs");
      const writeRun = async (method: string, threshold: RunThreshold) => {
        const dir = join(runsRoot, method, "carpet");
        const config: RunConfig = {
          method,
          category: "carpet",
          data_root: dataRoot,
          seed: 0,
          engine_version: "test",
          options: {},
          created: new Date(0).toISOString(),
        };
        await Deno.mkdir(dir, { recursive: true });
        await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
        await Deno.writeTextFile(join(dir, "threshold.json"), JSON.stringify(threshold));
        await writeGroundTruthMaps(join(dir, "maps"), dataRoot, "carpet", "perfect");
      };
      await writeRun("gmm", { threshold: 0.5, source: "method", min_area: 3 });
      await writeRun("ae-ssim", { threshold: 0, source: "validation", min_area: 1 });
      const out = join(temp, "out-runs");
      const result = await runEvalTask(["--runs", runsRoot, "--out", out, "--examples", "1"]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /Category +Metric +ae-ssim +gmm/);
      const combined = JSON.parse(await Deno.readTextFile(join(out, "metrics.json")));
      assert.deepEqual(Object.keys(combined.methods).sort(), ["ae-ssim", "gmm"]);
      const gmm = JSON.parse(await Deno.readTextFile(join(out, "gmm", "metrics.json")));
      assert.equal(gmm.categories.carpet.threshold_source, "method");
      assert.equal(gmm.categories.carpet.threshold, 0.5);
      assert.equal(gmm.categories.carpet.min_area, 3);
      assert.equal(combined.methods["ae-ssim"].categories.carpet.threshold_source, "validation");
      const report = await Deno.readTextFile(join(out, "report.md"));
      assert.match(report, /gmm \/ carpet: threshold 0\.5 \(method\)/);

      // --run DIR evaluates a single run.
      const single = join(temp, "out-single-run");
      const one = await runEvalTask(["--run", join(runsRoot, "gmm", "carpet"), "--out", single]);
      assert.equal(one.code, 0, one.stderr);
      const oneMetrics = JSON.parse(await Deno.readTextFile(join(single, "metrics.json")));
      assert.deepEqual(Object.keys(oneMetrics), ["categories", "mean"]);
    });
  } finally {
    await cleanup();
  }
});
