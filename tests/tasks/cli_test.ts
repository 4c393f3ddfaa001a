/** The train and predict commands: usage, and clear errors for bad input. */

import assert from "node:assert/strict";
import { ensureFixtures } from "../../fixtures/mod.ts";

const root = new URL("../../", import.meta.url).pathname;

async function run(
  task: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `tasks/${task}.ts`, ...args],
    cwd: root,
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1", ...env },
  }).output();
  return { code, out: new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr) };
}

Deno.test("train --help lists the options and the methods", async () => {
  const { code, out } = await run("train", ["--help"]);
  assert.equal(code, 0);
  for (const word of ["--method", "--preset", "--resume", "ae-ssim", "ae-l2", "gmm"]) {
    assert.ok(out.includes(word), word);
  }
});

Deno.test("train refuses bad input with messages that name it", async () => {
  const data = await ensureFixtures();
  const cases: [string[], RegExp][] = [
    [["carpet", "--bogus"], /--bogus/],
    [[], /expected exactly one category/],
    [
      ["carpet", "--data", data, "--method", "ae-ssim", "--epochs", "zero"],
      /--epochs expects a positive integer/,
    ],
    [
      ["carpet", "--data", data, "--method", "ae-ssim", "--preset", "slow"],
      /--preset expects quick or paper/,
    ],
    [["carpet", "--data", data, "--preset", "quick"], /patchcore has no presets/],
    [["carpet", "--data", data, "--method", "nope"], /Unknown method "nope".*ae-ssim/],
    [["velvet", "--data", data], /velvet.*carpet/s],
    [["bottle", "--data", data, "--method", "gmm"], /meant for texture categories.*--force/],
    [["carpet", "--data", "/nonexistent/mvtec"], /\/nonexistent\/mvtec/],
    [["bottle", "--data", data, "--method", "gmm", "--epochs", "3"], /--epochs.*gmm/],
  ];
  for (const [args, pattern] of cases) {
    const { code, out } = await run("train", args);
    assert.notEqual(code, 0, args.join(" "));
    assert.match(out, pattern, `${args.join(" ")}: ${out}`);
  }
});

Deno.test("train ends with the run's test metrics in one line", async () => {
  const data = await ensureFixtures();
  const out = await Deno.makeTempDir();
  try {
    const args = ["carpet", "--data", data, "--out", out, "--method", "padim"];
    const small = ["--image-size", "64", "--train-images", "10", "--channels", "20"];
    const result = await run("train", [...args, ...small]);
    assert.equal(result.code, 0, result.out);
    assert.match(
      result.out,
      /Test \(\d+ images\): pixel ROC AUC \d\.\d{3} · image ROC AUC \d\.\d{3} · AU-PRO \d\.\d{3}/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train --help --method NAME shows that method's options only", async () => {
  const { code, out } = await run("train", ["--help", "--method", "gmm"]);
  assert.equal(code, 0);
  assert.match(out, /--levels N/);
  assert.ok(!out.includes("--epochs"), out);
  assert.ok(!out.includes("ae-ssim:"), out);
});

Deno.test("predict: usage and errors", async () => {
  const help = await run("predict", ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /good or\s+defective/);
  const missingRun = await run("predict", ["/nonexistent/run", "image.png"]);
  assert.equal(missingRun.code, 2);
  assert.match(missingRun.out, /\/nonexistent\/run\/config.json/);
  const wrongArity = await run("predict", ["only-one"]);
  assert.match(wrongArity.out, /expected a run folder and an image or folder/);
});
