/**
 * A lost GPU device stops the work with a clear error within seconds: waits that would never end
 * are raced against the loss, nothing new is recorded on a lost device, and a command exits
 * non-zero with one line saying so.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyDataset } from "../data/helpers.ts";
import { createGpu, type Gpu, GpuDeviceLostError } from "../../src/gpu/device.ts";
import { launch } from "../../src/gpu/kernel.ts";
import { isFile } from "../../src/util/fs.ts";
import { REPO_ROOT, runTaskProcess, taskEnvironment } from "../tasks/helpers.ts";

/** Rejects when `promise` takes longer than `ms`: a hang fails the test instead of stalling it. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} still waits after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Replaces a method of a WebGPU prototype for the length of `fn`. */
async function patched<T extends object, K extends keyof T>(
  prototype: T,
  key: K,
  replacement: T[K],
  fn: () => Promise<void>,
): Promise<void> {
  const original = prototype[key];
  prototype[key] = replacement;
  try {
    await fn();
  } finally {
    prototype[key] = original;
  }
}

function isLostError(error: unknown): boolean {
  assert.ok(error instanceof GpuDeviceLostError, `not a GpuDeviceLostError: ${error}`);
  assert.match(error.message, /^the GPU device was lost: destroyed/);
  return true;
}

/** A device of its own, lost (destroyed behind the context's back) after `ms`. */
async function deviceLostAfter(ms: number): Promise<Gpu> {
  const gpu = await createGpu();
  setTimeout(() => gpu.device.destroy(), ms);
  return gpu;
}

Deno.test("a readback whose mapAsync never settles ends when the device is lost", async () => {
  const never = () => new Promise<undefined>(() => {});
  await patched(GPUBuffer.prototype, "mapAsync", never, async () => {
    const gpu = await deviceLostAfter(50);
    const buffer = gpu.pool.acquire(16);
    const started = performance.now();
    await assert.rejects(within(gpu.recorder.read(buffer, 0, 16), 5000, "read"), isLostError);
    await assert.rejects(
      within(gpu.recorder.readMany([{ buffer, bytes: 16 }]), 5000, "readMany"),
      isLostError,
    );
    assert.ok(performance.now() - started < 2000, "the loss ends the wait at once");
    gpu.destroy();
  });
});

Deno.test("a sync whose onSubmittedWorkDone never settles ends when the device is lost", async () => {
  const never = () => new Promise<undefined>(() => {});
  await patched(GPUQueue.prototype, "onSubmittedWorkDone", never, async () => {
    const gpu = await deviceLostAfter(50);
    await assert.rejects(within(gpu.recorder.sync(), 5000, "sync"), isLostError);
    gpu.destroy();
  });
});

Deno.test("nothing is recorded on a lost device, and destroying it afterwards is safe", async () => {
  const gpu = await createGpu();
  const input = { buffer: gpu.pool.acquire(16), bytes: 16 };
  const output = { buffer: gpu.pool.acquire(16), bytes: 16 };
  assert.equal(gpu.lostError, null);
  gpu.device.destroy();
  await gpu.device.lost;
  assert.ok(isLostError(gpu.lostError));
  const copy = () =>
    launch(gpu, {
      shader: "copy",
      params: new ArrayBuffer(16),
      buffers: [input, output],
      workgroups: [1],
    });
  assert.throws(copy, isLostError);
  assert.throws(() => gpu.recorder.write(input.buffer, 0, new Float32Array(4)), isLostError);
  await assert.rejects(gpu.recorder.read(output.buffer, 0, 16), isLostError);
  gpu.destroy();
  gpu.destroy();
});

/**
 * Runs tests/gpu/device_lost_child.ts, which destroys its device during `mode`; `seconds` is the
 * time from the loss to the process's end (start-up and work before it vary with the load).
 */
async function runLosingCommand(mode: string, ...args: string[]): Promise<
  { code: number; stderr: string; seconds: number }
> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tests/gpu/device_lost_child.ts", mode, ...args],
    cwd: REPO_ROOT,
    env: taskEnvironment(),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ended = Date.now();
  const lost = /device destroyed at (\d+)/.exec(new TextDecoder().decode(stdout));
  assert.ok(lost, "the child lost its device");
  return {
    code,
    stderr: new TextDecoder().decode(stderr),
    seconds: (ended - Number(lost[1])) / 1000,
  };
}

for (const mode of ["readback", "train"]) {
  Deno.test(`a command losing its device during ${mode} exits 1 with one line, in seconds`, async () => {
    const { code, stderr, seconds } = await runLosingCommand(mode);
    assert.equal(code, 1, stderr);
    assert.deepEqual(stderr.trim().split("\n"), [
      "error: the GPU device was lost: destroyed (device was lost)",
    ]);
    assert.ok(seconds < 10, `it took ${seconds.toFixed(1)} s`);
  });
}

Deno.test("train losing its device after a checkpoint says so, and --resume continues", async () => {
  const { parent: temp, root: data } = await tinyDataset({
    categories: ["bottle"],
    testDefectiveCount: 3,
  });
  try {
    const out = join(temp, "runs");
    const tiny = ["--patches", "8", "--batch", "4", "--latent", "8", "--object-size", "128"];
    const args = ["bottle", "--data", data, "--out", out, "--method", "ae-l2", ...tiny];
    const { code, stderr, seconds } = await runLosingCommand(
      "train-task",
      ...args,
      "--epochs",
      "1000",
    );
    assert.equal(code, 1, stderr);
    const runDir = join(out, "ae-l2", "bottle");
    assert.equal(
      stderr.trim().split("\n").at(-1),
      "error: the GPU device was lost: destroyed (device was lost). The last complete " +
        `checkpoint is in ${runDir}; continue with --resume`,
    );
    assert.doesNotMatch(stderr, /^\s+at /m);
    assert.ok(seconds < 10, `it took ${seconds.toFixed(1)} s`);
    const resumed = await runTaskProcess("train", [...args, "--epochs", "2", "--resume"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /resumed after epoch 1/);
    assert.ok(await isFile(join(runDir, "threshold.json")));
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});
