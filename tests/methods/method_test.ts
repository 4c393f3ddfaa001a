/** Method declarations: options checked by name and range, presets, stop handling, registration. */

import assert from "node:assert/strict";
import {
  type AnomalyDetector,
  applicabilityProblem,
  defineMethod,
  flagOf,
  OptionError,
  TrainingStoppedError,
} from "../../src/methods/method.ts";
import {
  BUILTIN_METHODS,
  getMethod,
  listMethods,
  registerMethod,
} from "../../src/methods/registry.ts";
import { openCategory } from "../../src/data/mvtec.ts";
import { ensureFixtures } from "../../fixtures/mod.ts";

/** A detector that maps every pixel to a constant: enough to exercise the declaration. */
function constantDetector(value: number): AnomalyDetector {
  return {
    method: "constant",
    channels: 1,
    anomalyMap: (image) =>
      Promise.resolve(new Float32Array(image.width * image.height).fill(value)),
    save: () => Promise.resolve(),
    dispose: () => {},
  };
}

const seen: Record<string, unknown>[] = [];
const constant = defineMethod({
  name: "constant",
  description: "a constant map, for tests",
  appliesTo: "objects",
  options: {
    level: { type: "number", min: 0, max: 1, default: 0.5, help: "the map's value" },
    repeats: { type: "integer", min: 1, help: "how often" },
    mode: { type: "choice", choices: ["fast", "slow"], help: "how" },
  },
  presets: { small: { repeats: 1 }, large: { repeats: 100, mode: "slow" } },
  defaultPreset: { software: "small", gpu: "large" },
  train: (_category, options) => {
    seen.push({ ...options });
    if (options.signal?.aborted) throw new TrainingStoppedError("constant");
    return Promise.resolve({
      detector: constantDetector(options.level ?? 0),
      stopped: false,
      losses: [],
    });
  },
  load: () => Promise.resolve(constantDetector(0)),
});

Deno.test("a declared method gets checked, converted and preset-filled option values", async () => {
  const category = await openCategory(await ensureFixtures(), "bottle");
  seen.length = 0;
  const result = await constant.train(category, { level: "0.25", preset: "large", seed: 3 });
  assert.equal(result.stopped, false);
  assert.deepEqual(
    { level: seen[0].level, repeats: seen[0].repeats, mode: seen[0].mode, seed: seen[0].seed },
    { level: 0.25, repeats: 100, mode: "slow", seed: 3 },
  );
  assert.equal(seen[0].preset, "large");
  await constant.train(category, {});
  assert.equal(seen[1].preset, "small", "without a preset, the software default");
  assert.equal(seen[1].level, 0.5, "the declared default");
  assert.deepEqual(constant.resolveOptions({ repeats: 4 }, "small"), {
    level: 0.5,
    repeats: 4,
  });
});

Deno.test("undeclared options, bad values, unknown presets and resume are refused by name", async () => {
  const category = await openCategory(await ensureFixtures(), "bottle");
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ epochs: 3 }, /constant does not take --epochs \(its options: --level, --repeats, --mode\)/],
    [{ level: 2 }, /--level expects a number ≥ 0 and ≤ 1, got 2/],
    [{ level: "high" }, /--level expects a number/],
    [{ repeats: 1.5 }, /--repeats expects a positive integer, got 1.5/],
    [{ mode: "medium" }, /--mode expects fast or slow, got "medium"/],
    [{ preset: "huge" }, /--preset expects small or large, got "huge"/],
    [{ resume: true }, /constant writes no checkpoints/],
  ];
  for (const [options, pattern] of cases) {
    await assert.rejects(() => constant.train(category, options), (error: Error) => {
      assert.ok(error instanceof OptionError, String(error));
      assert.match(error.message, pattern);
      return true;
    });
  }
  assert.throws(
    () =>
      defineMethod({
        name: "broken",
        description: "",
        appliesTo: "all",
        options: { size: { type: "integer", min: 1, help: "" } },
        presets: { p: { size: 0 } },
        train: () => Promise.reject(new Error("unused")),
        load: () => Promise.reject(new Error("unused")),
      }),
    /--size expects a positive integer, got 0/,
  );
});

Deno.test("a stop before a method has a model is a stopped result, not an error", async () => {
  const category = await openCategory(await ensureFixtures(), "bottle");
  const controller = new AbortController();
  controller.abort();
  const lines: string[] = [];
  const result = await constant.train(category, {
    signal: controller.signal,
    log: (l) => lines.push(l),
  });
  assert.deepEqual(result, { detector: null, stopped: true, losses: [] });
  assert.match(lines[0], /constant: training was stopped/);
});

Deno.test("the registry finds built-in and registered methods, and refuses a taken name", () => {
  assert.deepEqual(
    BUILTIN_METHODS.map((m) => m.name),
    ["patchcore", "padim", "cnn-dict", "inpaint", "ae-ssim", "ae-l2", "gmm", "variation", "anogan"],
  );
  registerMethod(constant);
  assert.equal(getMethod("constant"), constant);
  assert.ok(listMethods().includes(constant));
  assert.throws(() => registerMethod(constant), /already registered/);
  assert.throws(
    () => getMethod("nope"),
    /Unknown method "nope". Known methods: patchcore, padim, cnn-dict, inpaint, ae-ssim/,
  );
  assert.equal(flagOf("imageSize"), "--image-size");
});

Deno.test("whether a method applies follows the category's own kind", async () => {
  const root = await ensureFixtures();
  const bottle = await openCategory(root, "bottle");
  assert.equal(applicabilityProblem(getMethod("variation"), bottle), null);
  assert.match(applicabilityProblem(getMethod("gmm"), bottle)!, /meant for texture.*--force/);
  const asTexture = await openCategory(root, "bottle", { kind: "texture" });
  assert.equal(applicabilityProblem(getMethod("gmm"), asTexture), null);
  assert.match(applicabilityProblem(getMethod("variation"), asTexture)!, /--kind object/);
});
