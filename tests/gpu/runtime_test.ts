/** The GPU runtime: adapter errors, caches, oversized tensors and shader loading by URL. */

import assert from "node:assert/strict";
import { createGpu, currentGpu, NoGpuAdapterError } from "../../src/gpu/device.ts";
import { fetchShaderText, shaderNames, shaderUrl } from "../../src/gpu/shaders.ts";
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

Deno.test("the shaders resolve from the package root for file and https URLs", async () => {
  for (const name of shaderNames) {
    const text = await fetchShaderText(shaderUrl(name));
    assert.match(text, /@compute/, `${name}.wgsl has no compute entry point`);
  }
  const remote = shaderUrl("gemm", "https://jsr.io/@anodet/webgpu/0.1.0/src/gpu/shaders.ts");
  assert.equal(remote.href, "https://jsr.io/@anodet/webgpu/0.1.0/shaders/gemm.wgsl");
});

const repoRoot = new URL("../../", import.meta.url);

/** Runs a script in a temporary directory that imports mod.ts from `modUrl`. */
async function runConsumer(modUrl: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  // A consumer's own import map supplies the npm dependencies (JSR resolves them for its users).
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", repoRoot)));
  await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify({ imports: config.imports }));
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import { init, tensor, relu } from "${modUrl}";\n` +
      `await init();\n` +
      `console.log(JSON.stringify(Array.from(await relu(tensor([-1, 2, -3, 4])).toArray())));\n`,
  );
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "--no-lock", `${dir}/main.ts`],
    cwd: dir,
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  });
  const { code, stdout, stderr } = await command.output();
  await Deno.remove(dir, { recursive: true });
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  return out.trim().split("\n").pop()!;
}

Deno.test("mod.ts imported by file URL from another directory loads its shaders", async () => {
  const result = await runConsumer(new URL("mod.ts", repoRoot).href);
  assert.equal(result, "[0,2,0,4]");
});

Deno.test("mod.ts imported over HTTP (the JSR case) fetches its shaders by URL", async () => {
  const root = new URL(".", repoRoot).pathname;
  const controller = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: controller.signal,
    onListen() {},
  }, async (request) => {
    const path = decodeURIComponent(new URL(request.url).pathname);
    try {
      const body = await Deno.readFile(root + path.slice(1));
      const type = path.endsWith(".ts") ? "application/typescript" : "text/plain";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const result = await runConsumer(`http://127.0.0.1:${server.addr.port}/mod.ts`);
    assert.equal(result, "[0,2,0,4]");
  } finally {
    controller.abort();
    await server.finished;
  }
});
