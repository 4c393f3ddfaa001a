/**
 * WebGPU validation errors become exceptions that name the kernels of the batch they happened in,
 * and caches tied to the device are freed with it.
 */

import assert from "node:assert/strict";
import { createGpu, type Gpu } from "../../src/gpu/device.ts";
import { launch } from "../../src/gpu/kernel.ts";
import { init, tensor } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";

// Uniform blocks of zeros: the kernels below are launched for their errors, not their results.
const zeros = new ArrayBuffer(128);

/** Runs `fn` on a device of its own, so that its errors never reach the shared one's record. */
async function withOwnDevice(fn: (gpu: Gpu) => Promise<void>): Promise<void> {
  const gpu = await createGpu();
  try {
    await fn(gpu);
  } finally {
    gpu.destroy();
  }
}

/** Launches the copy kernel of rank 1 (see stridedCopy in src/tensor/ops/shape.ts) with n = 0. */
function launchCopy(gpu: Gpu, input: GpuBytes, output: GpuBytes) {
  launch(gpu, {
    shader: "copy",
    constants: { RANK: 1 },
    params: zeros,
    buffers: [input, output],
    workgroups: [1],
  });
}

type GpuBytes = ReturnType<typeof bytesOf>;

function bytesOf(gpu: Gpu, bytes: number) {
  return { buffer: gpu.pool.acquire(bytes), bytes };
}

Deno.test("a dispatch missing a binding throws at the next readback, naming its kernel", async () => {
  await withOwnDevice(async (gpu) => {
    const input = bytesOf(gpu, 16);
    const output = bytesOf(gpu, 16);
    launchCopy(gpu, input, output);
    launch(gpu, {
      shader: "unary",
      constants: { OP: 2 },
      params: zeros,
      buffers: [input], // the output binding is missing
      workgroups: [1],
    });
    await assert.rejects(() => gpu.recorder.read(output.buffer, 0, 16), (error: Error) => {
      assert.match(error.message, /WebGPU validation error/);
      assert.match(error.message, /unary:main/);
      assert.match(error.message, /copy:main/, "the batch's other kernels are named too");
      assert.match(error.message, /bindings/i, "WebGPU's own message follows");
      return true;
    });
    assert.equal(gpu.errors.length, 1);

    // The error is reported once; the next batch is checked on its own.
    launch(gpu, {
      shader: "unary",
      constants: { OP: 2 },
      params: zeros,
      buffers: [input, output],
      workgroups: [1],
    });
    await gpu.recorder.read(output.buffer, 0, 16);
    await gpu.checkErrors();
  });
});

Deno.test("a shader that does not compile throws from checkErrors, naming it", async () => {
  await withOwnDevice(async (gpu) => {
    // OP = 1.5 makes `const OP: f32`, which the kernel's `switch` rejects.
    launch(gpu, {
      shader: "unary",
      constants: { OP: 1.5 },
      params: zeros,
      buffers: [bytesOf(gpu, 16), bytesOf(gpu, 16)],
      workgroups: [1],
    });
    await assert.rejects(() => gpu.checkErrors(), /validation error in a batch running unary:main/);
    await gpu.checkErrors();
  });
});

Deno.test("a bad buffer write throws at the next readback, in the batch it joined", async () => {
  await withOwnDevice(async (gpu) => {
    const input = bytesOf(gpu, 16);
    const output = bytesOf(gpu, 16);
    gpu.recorder.write(input.buffer, 4096, new Float32Array(4)); // past the buffer's end
    launchCopy(gpu, input, output);
    await assert.rejects(() => gpu.recorder.read(output.buffer, 0, 16), (error: Error) => {
      assert.match(error.message, /WebGPU validation error in a batch running a buffer write/);
      assert.match(error.message, /copy:main/, "the kernels recorded after it are named");
      assert.match(error.message, /overrun/i, "WebGPU's own message follows");
      return true;
    });
  });
});

Deno.test("an error outside every scope is thrown by the next check, naming the last kernel", async () => {
  await withOwnDevice(async (gpu) => {
    const input = bytesOf(gpu, 16);
    const output = bytesOf(gpu, 16);
    launchCopy(gpu, input, output);
    await gpu.recorder.read(output.buffer, 0, 16);
    // Between batches, so no scope is open: WebGPU reports it through `uncapturederror`.
    gpu.pool.acquire(gpu.device.limits.maxBufferSize * 2);
    // The event comes on a later turn of the event loop.
    for (let waited = 0; gpu.errors.length === 0 && waited < 2000; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await assert.rejects(() => gpu.checkErrors(), (error: Error) => {
      assert.match(error.message, /WebGPU validation error after kernel copy:main/);
      assert.match(error.message, /outside the kernels' error scopes/);
      assert.match(error.message, /maximum buffer size/);
      return true;
    });
  });
});

Deno.test("the shared device reports no errors after ordinary work", async () => {
  const gpu = await init();
  await op.relu(tensor([-1, 2])).toArray();
  await gpu.checkErrors();
  assert.deepEqual(gpu.errors, []);
});

// Last in this file: it destroys the shared device (the next init() makes a new one).
Deno.test("cached filter weights belong to the device: clear() and destroy() free them", async () => {
  const gpu = await init();
  const image = tensor(new Float32Array(2 * 8 * 8).fill(1), [2, 1, 8, 8]);
  const blurred = op.gaussianBlur(image, 1, 3, { normalizeBorder: true });
  // A constant image stays constant up to the border.
  for (const v of await blurred.toArray()) assert.ok(Math.abs(v - 1) < 1e-5);
  blurred.dispose();
  image.dispose();
  assert.ok(gpu.cache.size >= 1, "the border weights are cached");

  const inUse = gpu.pool.stats.inUseBytes;
  gpu.cache.clear();
  assert.equal(gpu.cache.size, 0);
  assert.ok(gpu.pool.stats.inUseBytes < inUse, "clearing returns their buffers to the pool");

  op.gaussianBlur(tensor(new Float32Array(64), [1, 1, 8, 8]), 1, 3, { normalizeBorder: true });
  assert.ok(gpu.cache.size >= 1);
  gpu.destroy();
  assert.equal(gpu.cache.size, 0, "destroy frees the cache");

  const next = await init();
  assert.notEqual(next, gpu, "a new device replaces the destroyed one");
  assert.deepEqual(
    Array.from(
      await op.gaussianBlur(tensor([1, 1, 1, 1], [1, 1, 2, 2]), 1, 3, {
        normalizeBorder: true,
      }).toArray(),
    ).map((v) => Math.round(v * 1e5) / 1e5),
    [1, 1, 1, 1],
  );
});
