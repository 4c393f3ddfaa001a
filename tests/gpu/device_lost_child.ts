/**
 * A command that loses its GPU device, for tests/gpu/device_lost_test.ts: it runs through the
 * tasks' {@link runTask}, works on the GPU without end, and destroys the device from a timer as a
 * driver reset would.
 *
 * `deno run -A tests/gpu/device_lost_child.ts MODE [ARGS] [--debug]`, MODE one of:
 * - `readback`: reads results back in a loop;
 * - `train`: runs the training loop of src/nn/fit.ts for a million epochs;
 * - `train-task ARGS`: runs `deno task train ARGS` and loses the device once the run folder
 *   `<--out>/<--method>/<category>` holds a checkpoint, so that training is under way.
 *
 * @module
 */

import { join } from "node:path";
import { runTask, UsageError } from "../../src/util/cli.ts";
import { isFile } from "../../src/util/fs.ts";
import { init, tensor, tidy } from "../../src/tensor/tensor.ts";
import { main as trainTask, parseTrainArgs } from "../../tasks/train.ts";
import * as op from "../../src/tensor/ops.ts";
import { Linear, Sequential } from "../../src/nn/layers.ts";
import { Adam } from "../../src/nn/optim.ts";
import { fit } from "../../src/nn/fit.ts";

/** Milliseconds of work before the device is destroyed. */
const lossAfterMs = 300;

/**
 * Destroys the device as a driver reset would (the device itself, not Gpu.destroy(): the context
 * does not know), and tells the test when on stdout, so that it times the stop from the loss.
 */
function loseDevice(device: GPUDevice): void {
  console.log(`device destroyed at ${Date.now()}`);
  device.destroy();
}

async function readbackLoop(): Promise<void> {
  const x = tensor([-1, 2, -3, 4]);
  for (;;) await op.relu(x).toArray();
}

async function* batches(): AsyncGenerator<Float32Array> {
  for (let i = 0; i < 4; i++) yield Float32Array.from({ length: 4 }, (_, j) => Math.sin(i + j));
}

async function trainingLoop(): Promise<void> {
  const model = new Sequential(new Linear(1, 1));
  const adam = new Adam(model.parameters(), { lr: 0.01 });
  await fit({
    modules: { model },
    optimizers: { adam },
    epochs: 1_000_000,
    stepsPerEpoch: 4,
    batches,
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
  });
}

/** Runs the train task, losing the device when its first checkpoint is written. */
async function trainTaskUntilLoss(args: string[]): Promise<void> {
  const command = parseTrainArgs(args);
  if ("help" in command) throw new UsageError("train-task needs a training command line");
  const checkpoint = join(
    command.out,
    command.method.name,
    command.category,
    "checkpoint.safetensors",
  );
  const gpu = await init();
  const watch = setInterval(async () => {
    if (await isFile(checkpoint)) {
      clearInterval(watch);
      loseDevice(gpu.device);
    }
  }, 20);
  await trainTask(args);
}

async function main(args: string[]): Promise<void> {
  const [mode, ...rest] = args;
  if (mode === "train-task") return await trainTaskUntilLoss(rest);
  const work = { readback: readbackLoop, train: trainingLoop }[mode];
  if (work === undefined) {
    throw new UsageError(`expected readback, train or train-task, got "${mode}"`);
  }
  const gpu = await init();
  setTimeout(() => loseDevice(gpu.device), lossAfterMs);
  await work();
}

if (import.meta.main) await runTask(main);
