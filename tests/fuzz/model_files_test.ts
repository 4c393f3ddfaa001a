/**
 * A saved model's files (src/methods/model_files.ts), the reader behind the fuzz target
 * `model-json`: every broken settings file or tensor is an InputError naming the file.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { readModelFiles, saveModelFiles } from "../../src/methods/model_files.ts";
import { CheckpointError } from "../../src/nn/checkpoint.ts";
import { InputError } from "../../src/util/errors.ts";

const FORMAT = "anodet-test/1";

async function withModel(body: (directory: string) => Promise<void>): Promise<void> {
  const directory = await Deno.makeTempDir();
  try {
    await saveModelFiles(
      directory,
      "test.json",
      { format: FORMAT, size: 3 },
      new Map([["values", { shape: [3], data: Float32Array.of(1, 2, 3) }]]),
    );
    await body(directory);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}

/** Asserts that `action` rejects with an InputError naming `file` and matching `pattern`. */
async function assertRefused(action: () => unknown, file: string, pattern: RegExp) {
  await assert.rejects(async () => await action(), (error: unknown) => {
    assert.ok(error instanceof InputError, String(error));
    assert.ok(error.message.includes(file), error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("a saved model reads back: its settings and tensors by name and size", async () => {
  await withModel(async (directory) => {
    const saved = await readModelFiles<{ format: string; size: number }>(
      directory,
      "test.json",
      FORMAT,
      "test model",
    );
    assert.deepEqual(saved.settings, { format: FORMAT, size: 3 });
    assert.deepEqual(saved.tensor("values", 3).data, Float32Array.of(1, 2, 3));
    const tensors = join(directory, "model.safetensors");
    assert.throws(
      () => saved.tensor("other"),
      (error: unknown) =>
        error instanceof InputError && error.message === `"${tensors}" lacks tensor "other"`,
    );
    assert.throws(
      () => saved.tensor("values", 4),
      (error: unknown) =>
        error instanceof InputError &&
        error.message === `"${tensors}": "values" has 3 values, expected 4`,
    );
  });
});

Deno.test("settings that are not an object of the model's format are refused", async () => {
  await withModel(async (directory) => {
    const settings = join(directory, "test.json");
    const read = () => readModelFiles(directory, "test.json", FORMAT, "test model");
    const cases: [string, RegExp][] = [
      ["null", /is not a test model: it holds null; expected a JSON object with "format"/],
      ["[1, 2]", /it holds \[1,2\]; expected a JSON object/],
      ['"anodet-test/1"', /it holds "anodet-test\/1"; expected a JSON object/],
      [
        '{"format": "anodet-padim/1"}',
        /is not a test model \(format "anodet-padim\/1", expected "anodet-test\/1"\)/,
      ],
      ["{}", /\(format undefined, expected/],
      [`{"format": ${"[".repeat(1e6)}${"]".repeat(1e6)}}`, /\(format \[{117}\.\.\., expected/],
      ["{ not json", /Cannot read test model ".*test\.json": .*JSON/],
    ];
    for (const [text, pattern] of cases) {
      await Deno.writeTextFile(settings, text);
      await assertRefused(read, settings, pattern);
    }
    await Deno.remove(settings);
    await assertRefused(read, settings, /Cannot read test model .*No such file/);
  });
});

Deno.test("a missing or broken model.safetensors is a CheckpointError naming it", async () => {
  await withModel(async (directory) => {
    const tensors = join(directory, "model.safetensors");
    const read = () => readModelFiles(directory, "test.json", FORMAT, "test model");
    await Deno.writeFile(tensors, (await Deno.readFile(tensors)).slice(0, 20));
    await assertRefused(read, tensors, /not a safetensors file/);
    await Deno.remove(tensors);
    await assert.rejects(read, CheckpointError);
  });
});
