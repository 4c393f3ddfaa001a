/** The one training loop: epochs, rare readbacks, atomic checkpoints, exact resume, stopping. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { init, tensor, tidy, toArrays } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";
import { Adam } from "../../src/nn/optim.ts";
import { Linear, Sequential } from "../../src/nn/layers.ts";
import { CHECKPOINT_FILE, fit, type FitOptions, hasCheckpoint } from "../../src/nn/fit.ts";
import { decodeSafetensors, encodeSafetensors } from "../../src/nn/checkpoint.ts";
import { InputError } from "../../src/util/errors.ts";

/** A linear regression y = 2x − 1 in batches of 4, the same batches for the same epoch. */
async function* regressionBatches(epoch: number): AsyncGenerator<Float32Array> {
  for (let b = 0; b < 3; b++) {
    yield Float32Array.from({ length: 4 }, (_, i) => Math.sin(epoch * 7 + b * 4 + i));
  }
}

function setUp(dir?: string) {
  const model = op.withSeed(5, () => new Sequential(new Linear(1, 1)));
  const adam = new Adam(model.parameters(), { lr: 0.1 });
  const options: FitOptions<Float32Array> = {
    modules: { model },
    optimizers: { adam },
    epochs: 4,
    stepsPerEpoch: 3,
    batches: regressionBatches,
    step: (xs) =>
      tidy(() => {
        adam.zeroGrad();
        const x = tensor(xs, [4, 1]);
        const loss = op.mse(model.forward(x), op.affine(x, 2, -1));
        loss.backward();
        adam.step();
        return loss;
      }),
    samplesIn: (xs) => xs.length,
    checkpointDir: dir,
    config: { layer: "linear" },
  };
  return { model, adam, options };
}

async function weights(model: Sequential): Promise<number[]> {
  return (await toArrays(model.parameters())).flatMap((a) => [...a]);
}

Deno.test("fit trains every epoch, reads the loss back rarely, and reports progress", async () => {
  await init();
  const { model, adam, options } = setUp();
  const progress: number[] = [];
  const result = await fit({ ...options, onProgress: (p) => progress.push(p.step) });
  assert.equal(result.stopped, false);
  assert.equal(result.step, 12);
  assert.deepEqual(result.losses.map(([step]) => step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const meanLoss = (from: number) =>
    result.losses.slice(from, from + 3).reduce((sum, [, loss]) => sum + loss, 0) / 3;
  assert.ok(meanLoss(9) < meanLoss(0) / 2, `the loss falls: ${meanLoss(0)} → ${meanLoss(9)}`);
  assert.deepEqual(progress, [3, 6, 9, 12], "one report per epoch at this speed");
  model.dispose();
  adam.dispose();
});

Deno.test("a run stopped after an epoch and resumed ends with the same weights", async () => {
  await init();
  const dir = await Deno.makeTempDir();
  const whole = setUp();
  await fit(whole.options);
  const expected = await weights(whole.model);

  const first = setUp(dir);
  const controller = new AbortController();
  const stopped = await fit({
    ...first.options,
    signal: controller.signal,
    log: (line) => {
      if (line.startsWith("epoch 2/")) controller.abort();
    },
  });
  assert.equal(stopped.stopped, true);
  assert.equal(stopped.epoch, 2);
  assert.ok(await hasCheckpoint(dir));

  const second = setUp(dir);
  const lines: string[] = [];
  const resumed = await fit({ ...second.options, resume: true, log: (l) => lines.push(l) });
  assert.equal(lines[0], "resumed after epoch 2 (step 6)");
  assert.equal(resumed.losses.length, 12);
  const actual = await weights(second.model);
  actual.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-5, `${v} vs ${expected[i]}`));
  assert.equal(second.adam.stepCount, 12);
  for (const run of [whole, first, second]) {
    run.model.dispose();
    run.adam.dispose();
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume refuses a missing, corrupt or foreign checkpoint by name", async () => {
  await init();
  const dir = await Deno.makeTempDir();
  const run = setUp(dir);
  await assert.rejects(() => fit({ ...run.options, resume: true }), /Cannot resume: .*checkpoint/);
  await fit({ ...run.options, epochs: 1 });
  await assert.rejects(
    () => fit({ ...run.options, resume: true, config: { layer: "other" } }),
    /checkpoint.safetensors.*other settings/,
  );
  const other = setUp(dir);
  const bigger = new Sequential(new Linear(2, 1));
  const biggerAdam = new Adam(bigger.parameters());
  await assert.rejects(
    () =>
      fit({
        ...other.options,
        modules: { model: bigger },
        optimizers: { adam: biggerAdam },
        resume: true,
      }),
    /does not fit this model/,
  );
  const bytes = await Deno.readFile(join(dir, CHECKPOINT_FILE));
  const { tensors, metadata } = decodeSafetensors(bytes);
  for (const progress of [undefined, '{"epoch": -1}', "not json"]) {
    const { progress: _, ...rest } = metadata;
    const changed = progress === undefined ? rest : { ...rest, progress };
    await Deno.writeFile(join(dir, CHECKPOINT_FILE), encodeSafetensors(tensors, changed));
    await assert.rejects(
      () => fit({ ...run.options, resume: true }),
      /Cannot resume: .*checkpoint.safetensors: its progress metadata is missing or malformed/,
    );
  }
  await Deno.writeFile(join(dir, CHECKPOINT_FILE), bytes.subarray(0, bytes.length - 3));
  await assert.rejects(() => fit({ ...run.options, resume: true }), /Cannot resume/);
  // Every refusal is the user's to fix: a one-line InputError, not a crash.
  await assert.rejects(() => fit({ ...run.options, resume: true }), InputError);
  await Deno.remove(join(dir, CHECKPOINT_FILE));
  await assert.rejects(() => fit({ ...run.options, resume: true }), InputError);
  for (const t of [run, other]) {
    t.model.dispose();
    t.adam.dispose();
  }
  bigger.dispose();
  biggerAdam.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the checkpoint is one file, replaced whole at each epoch", async () => {
  await init();
  const dir = await Deno.makeTempDir();
  const run = setUp(dir);
  await fit({ ...run.options, epochs: 2 });
  const names = [...Deno.readDirSync(dir)].map((entry) => entry.name);
  assert.deepEqual(names, [CHECKPOINT_FILE], "no temporary files are left behind");
  run.model.dispose();
  run.adam.dispose();
  await Deno.remove(dir, { recursive: true });
});
