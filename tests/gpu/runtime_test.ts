/** The GPU runtime: adapter errors, caches, oversized tensors and the shader bundle. */

import assert from "node:assert/strict";
import { createGpu, currentGpu, NoGpuAdapterError } from "../../src/gpu/device.ts";
import { shaderNames, shaderSource } from "../../src/gpu/shaders.ts";
import type { ShaderName } from "../../src/gpu/shader_bundle.ts";
import { bucketSize } from "../../src/gpu/pool.ts";
import { empty, init, tensor, TensorTooLargeError } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";

Deno.test("no adapter: the error names the fix", async () => {
  const noAdapters = { requestAdapter: () => Promise.resolve(null) };
  await assert.rejects(() => createGpu(noAdapters), (error: Error) => {
    assert.ok(error instanceof NoGpuAdapterError);
    assert.match(error.message, /No WebGPU adapter/);
    assert.match(error.message, /mesa-vulkan-drivers/);
    assert.match(error.message, /GPU driver/);
    return true;
  });
});

Deno.test("the device has the adapter's limits and says whether it is software", async () => {
  const gpu = await init();
  const adapter = await navigator.gpu.requestAdapter();
  assert.equal(
    gpu.device.limits.maxStorageBufferBindingSize,
    adapter!.limits.maxStorageBufferBindingSize,
  );
  assert.equal(
    gpu.device.limits.maxComputeWorkgroupStorageSize,
    adapter!.limits.maxComputeWorkgroupStorageSize,
  );
  assert.equal(typeof gpu.adapter.isSoftware, "boolean");
  if (/llvmpipe/.test(gpu.adapter.description)) assert.equal(gpu.adapter.isSoftware, true);
});

Deno.test("pipelines are cached by source and constants", async () => {
  const gpu = await init();
  const x = tensor([1, -2, 3]);
  op.relu(x);
  const size = gpu.pipelines.size;
  op.relu(x);
  op.relu(x);
  assert.equal(gpu.pipelines.size, size, "the same kernel compiled twice");
  op.tanh(x); // another constant: another pipeline
  assert.equal(gpu.pipelines.size, size + 1);
});

Deno.test("the pool reuses buffers by size bucket", async () => {
  const gpu = await init();
  assert.equal(bucketSize(1000), 1024);
  assert.equal(bucketSize(1), 256);
  const a = empty([1000]);
  const buffer = a.buffer;
  a.dispose();
  const created = gpu.pool.stats.created;
  const b = empty([900]); // 3600 bytes: the same 4096-byte bucket
  assert.equal(b.buffer, buffer);
  assert.equal(gpu.pool.stats.created, created);
  b.dispose();
});

Deno.test("the pool hands out its oldest free buffer, whatever order buffers were freed in", async () => {
  await init();
  // A bucket no other test uses, so that only these three buffers are in it.
  const [a, b, c] = [empty([40000]), empty([40000]), empty([40000])];
  const buffers = [a.buffer, b.buffer, c.buffer];
  for (const t of [b, c, a]) t.dispose();
  const again = [empty([40000]), empty([40000]), empty([40000])];
  assert.deepEqual(again.map((t) => t.buffer), buffers);
  again.forEach((t) => t.dispose());
});

Deno.test("a repeated dispatch reuses its pipeline, uniform block and bind group", async () => {
  const gpu = await init();
  const x = tensor([1, -2, 3, 4, 5]);
  op.relu(x).dispose();
  const { misses, hits } = gpu.bindGroups.stats;
  for (let i = 0; i < 5; i++) op.relu(x).dispose();
  assert.equal(gpu.bindGroups.stats.misses, misses);
  assert.equal(gpu.bindGroups.stats.hits, hits + 5);
  // Another input buffer is another bind group.
  const y = tensor([1, 2, 3, 4, 5]);
  op.relu(y).dispose();
  assert.equal(gpu.bindGroups.stats.misses, misses + 1);
  assert.deepEqual(await op.relu(x).toArray(), new Float32Array([1, 0, 3, 4, 5]));
  x.dispose();
  y.dispose();
});

Deno.test("a tensor larger than one storage binding is refused with a clear error", async () => {
  const gpu = await init();
  const elements = Math.floor(gpu.maxBindingBytes / 4) + 1;
  assert.throws(() => empty([elements]), (error: Error) => {
    assert.ok(error instanceof TensorTooLargeError);
    assert.match(error.message, /maxStorageBufferBindingSize/);
    assert.match(error.message, new RegExp(`\\[${elements}\\]`));
    return true;
  });
  assert.deepEqual(currentGpu().errors, []);
});

Deno.test("every shaders/*.wgsl file is in the bundle, identical, and nothing else is", async () => {
  const onDisk: string[] = [];
  for await (const entry of Deno.readDir(new URL("../../shaders/", import.meta.url))) {
    if (!entry.name.endsWith(".wgsl")) continue;
    const name = entry.name.slice(0, -".wgsl".length);
    onDisk.push(name);
    const text = await Deno.readTextFile(new URL(`../../shaders/${entry.name}`, import.meta.url));
    assert.equal(
      shaderSource(name as ShaderName),
      text,
      `${entry.name} differs from the bundle: run \`deno task shaders\``,
    );
  }
  assert.deepEqual([...shaderNames], onDisk.sort());
});

Deno.test("an unknown shader name is refused with the list of known ones", () => {
  assert.throws(() => shaderSource("nosuch" as ShaderName), (error: Error) => {
    assert.match(error.message, /Unknown shader "nosuch"/);
    assert.match(error.message, /gemm/);
    assert.match(error.message, /deno task shaders/);
    return true;
  });
});
