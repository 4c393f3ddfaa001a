/** Checkpoints: round trips, atomic writes and clear errors for broken files. */

import assert from "node:assert/strict";
import { init, tensor } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";
import {
  CheckpointError,
  decodeSafetensors,
  encodeSafetensors,
  loadModule,
  loadSafetensors,
  saveModule,
} from "../../src/nn/checkpoint.ts";
import { BatchNorm2d, Conv2d, Linear, Sequential } from "../../src/nn/layers.ts";

function model(): Sequential {
  return new Sequential(new Conv2d(2, 3, 3, { padding: 1 }), new BatchNorm2d(3));
}

Deno.test("a module round-trips through a safetensors file", async () => {
  await init();
  op.manualSeed(3);
  const a = model();
  const b = model();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/model.safetensors`;
  await saveModule(a, path, { method: "test" });
  const entries = [...Deno.readDirSync(dir)].map((e) => e.name);
  assert.deepEqual(entries, ["model.safetensors"], "a temporary file was left behind");
  const metadata = await loadModule(b, path);
  assert.equal(metadata.method, "test");
  for (const [name, t] of a.stateDict()) {
    assert.deepEqual(await b.stateDict().get(name)!.toArray(), await t.toArray(), name);
  }
  const x = op.randn([1, 2, 5, 5], 0, 1, { seed: 1 });
  a.eval();
  b.eval();
  assert.deepEqual(await b.forward(x).toArray(), await a.forward(x).toArray());
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the file layout is the safetensors format", () => {
  const bytes = encodeSafetensors(new Map([["w", { shape: [2], data: Float32Array.of(1.5, -2) }]]));
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + headerLength) % 8, 0);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  assert.deepEqual(header.w, { dtype: "F32", shape: [2], data_offsets: [0, 8] });
  assert.deepEqual([...new Float32Array(bytes.slice(8 + headerLength).buffer)], [1.5, -2]);
});

Deno.test("truncated, foreign and mismatched checkpoints give clear errors", async () => {
  await init();
  const dir = await Deno.makeTempDir();
  const good = encodeSafetensors(new Map([["w", { shape: [4], data: new Float32Array(4) }]]));
  await Deno.writeFile(`${dir}/truncated.safetensors`, good.subarray(0, good.length - 3));
  await assert.rejects(
    () => loadSafetensors(`${dir}/truncated.safetensors`),
    (e: Error) =>
      e instanceof CheckpointError && /truncated\.safetensors/.test(e.message) &&
      /truncated/.test(e.message),
  );
  await Deno.writeFile(
    `${dir}/foreign.safetensors`,
    new TextEncoder().encode("\x89PNG this is not a checkpoint"),
  );
  await assert.rejects(
    () => loadSafetensors(`${dir}/foreign.safetensors`),
    (e: Error) => e instanceof CheckpointError && /not a safetensors file/.test(e.message),
  );
  assert.throws(() => decodeSafetensors(new Uint8Array(3), "tiny"), /too short/);
  await assert.rejects(
    () => loadSafetensors(`${dir}/missing.safetensors`),
    /cannot read checkpoint/,
  );
  // A checkpoint of another architecture.
  const other = new Linear(4, 2);
  await saveModule(other, `${dir}/linear.safetensors`);
  // The error lists at most 5 problems, in the model's parameter order. So that the check does not
  // hang on that order: every tensor it names missing is one of the model's, and "0.weight"
  // (missing from a Linear checkpoint) is among them unless the list was cut at 5.
  const modelNames = new Set(model().stateDict().keys());
  await assert.rejects(
    () => loadModule(model(), `${dir}/linear.safetensors`),
    (e: Error) => {
      assert.match(e.message, /does not fit this model/);
      const missing = [...e.message.matchAll(/missing "([^"]+)"/g)].map((match) => match[1]);
      assert.ok(missing.length > 0, e.message);
      for (const name of missing) assert.ok(modelNames.has(name), `${name} is not in the model`);
      assert.ok(missing.includes("0.weight") || missing.length === 5, e.message);
      return true;
    },
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("F16 and F64 tensors from other tools are read as f32", async () => {
  // Its own init: run alone (--filter) this test must not rely on an earlier test's GPU.
  await init();
  const header = JSON.stringify({
    a: { dtype: "F64", shape: [1], data_offsets: [0, 8] },
    b: { dtype: "F16", shape: [1], data_offsets: [8, 10] },
  });
  const h = new TextEncoder().encode(header);
  const bytes = new Uint8Array(8 + h.length + 10);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(h.length), true);
  bytes.set(h, 8);
  view.setFloat64(8 + h.length, 0.25, true);
  view.setUint16(8 + h.length + 8, 0x3c00, true); // 1.0 in half precision
  const { tensors } = decodeSafetensors(bytes);
  assert.equal(tensors.get("a")!.data[0], 0.25);
  assert.equal(tensors.get("b")!.data[0], 1);
  assert.ok(tensor([1]).size === 1);
});
