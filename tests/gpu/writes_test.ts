/** The write log (writes.ts): which buffers the recorder's work wrote. */

import assert from "node:assert/strict";
import { writableBindings } from "../../src/gpu/writes.ts";
import { shaderNames, shaderSource } from "../../src/gpu/shaders.ts";
import { init, tensor } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";

Deno.test("writableBindings finds every read_write storage buffer of every shader", () => {
  const parsed = writableBindings(
    "@group(0) @binding(1) var<storage, read> x: array<f32>;\n" +
      "@group(0) @binding(2) var<storage, read_write> y: array<f32>;\n" +
      "@group(0)\n@binding(7)\nvar<storage,read_write> z: array<f32>;\n" +
      "@group(0) @binding(3) var t: texture_storage_2d<rgba32float, write>;",
  );
  assert.deepEqual(parsed, [2, 7]);
  for (const name of shaderNames) {
    const declared = shaderSource(name).match(/var<storage,\s*read_write>/g)?.length ?? 0;
    assert.equal(writableBindings(shaderSource(name)).length, declared, name);
  }
});

Deno.test("dispatches, queue writes and copies change the version of what they write", async () => {
  const gpu = await init();
  const log = gpu.recorder.writes;
  const x = tensor([1, 2, 3, 4]);
  const written = log.version(x.buffer);
  assert.ok(written > 0, "tensor() writes its data");
  const y = op.relu(x);
  assert.equal(log.version(x.buffer), written, "an input is not written");
  const made = log.version(y.buffer);
  assert.ok(made > written, "the output is");
  gpu.recorder.copy(x.buffer, 0, y.buffer, 0, 16);
  assert.ok(log.version(y.buffer) > made, "a copy writes its target");
  assert.equal(log.version(x.buffer), written, "and not its source");
  gpu.recorder.write(x.buffer, 0, new Float32Array([5, 6, 7, 8]));
  assert.ok(log.version(x.buffer) > log.version(y.buffer), "a queue write is the latest");
  x.dispose();
  y.dispose();
});
