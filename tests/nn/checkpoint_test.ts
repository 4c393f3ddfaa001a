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
import { InputError } from "../../src/util/errors.ts";
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

/** A safetensors file with `header` as its JSON header and `dataBytes` bytes of data. */
function withHeader(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + dataBytes);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  return bytes;
}

/** Asserts that decoding `bytes` throws a CheckpointError (an InputError) naming the file. */
function assertRefused(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(
    () => decodeSafetensors(bytes, "models/bad.safetensors"),
    (error: unknown) => {
      assert.ok(error instanceof CheckpointError && error instanceof InputError, String(error));
      assert.ok(error.message.startsWith("models/bad.safetensors: "), error.message);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

Deno.test("a safetensors header claiming 100000x100000 is refused before allocating", () => {
  // Allocating first would have thrown a RangeError (a 40 GB Float32Array).
  assertRefused(
    withHeader({ w: { dtype: "F32", shape: [100000, 100000], data_offsets: [0, 4e10] } }, 16),
    /tensor "w" has shape \[100000,100000\] of F32: 40000000000 bytes, more than the file's data/,
  );
  // Sizes whose product is no longer exact are refused the same way.
  assertRefused(
    withHeader(
      { w: { dtype: "F16", shape: [2 ** 31, 2 ** 31, 2 ** 31], data_offsets: [0, 8] } },
      8,
    ),
    /tensor "w" has shape \[2147483648,2147483648,2147483648\] of F16: .* bytes, more than/,
  );
});

Deno.test("tensors that share their bytes cannot make a small file decode to gigabytes", () => {
  // 1000 tensors, each claiming all 4 KiB of data: 16 MiB of f32 from a 60 KiB file.
  const header: Record<string, unknown> = {};
  for (let i = 0; i < 1000; i++) {
    header[`t${i}`] = { dtype: "F32", shape: [1024], data_offsets: [0, 4096] };
  }
  assertRefused(
    withHeader(header, 4096),
    /its tensors claim more than the data section's 4096 bytes in all \(tensor "t1" overlaps/,
  );
});

Deno.test("malformed safetensors headers are refused with the file and what was expected", () => {
  const tooLong = new Uint8Array(16);
  new DataView(tooLong.buffer).setBigUint64(0, 2n ** 62n, true);
  assertRefused(
    tooLong,
    /header length 4611686018427387904 is over the format's limit of 100000000 bytes/,
  );
  const entry = (fields: Record<string, unknown>) =>
    withHeader({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8], ...fields } }, 8);
  assertRefused(
    entry({ shape: [-1, -2] }),
    /tensor "w" has shape \[-1,-2\]; expected a list of sizes/,
  );
  assertRefused(entry({ shape: [0.5, 4] }), /has shape \[0\.5,4\]; expected a list of sizes/);
  assertRefused(entry({ shape: "2" }), /has shape "2"; expected a list of sizes/);
  assertRefused(
    entry({ dtype: "constructor" }),
    /unsupported dtype "constructor" \(F32, F64, F16, BF16/,
  );
  assertRefused(
    entry({ data_offsets: [8, 0] }),
    /data_offsets \[8,0\]; expected \[begin, end\] with 0 ≤ begin ≤ end/,
  );
  assertRefused(entry({ data_offsets: [0, 1e999] }), /data_offsets \[0,null\]/);
  assertRefused(
    withHeader({ w: null }, 0),
    /tensor "w" has a malformed header entry; expected \{dtype, shape, data_offsets\}/,
  );
  assertRefused(
    withHeader({ __metadata__: null }, 0),
    /"__metadata__" is null; expected an object of strings/,
  );
  assertRefused(
    withHeader({ __metadata__: { format: 3 } }, 0),
    /"__metadata__" is \{"format":3\}; expected an object of strings/,
  );
  // A value nested 100,000 deep is described in a short message (its text coerced to a string
  // would overflow the stack).
  const deep = new TextEncoder().encode(
    `{"w": {"dtype": ${"[".repeat(100000)}${"]".repeat(100000)}}}`,
  );
  const bytes = new Uint8Array(8 + deep.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(deep.length), true);
  bytes.set(deep, 8);
  assertRefused(bytes, /unsupported dtype \[{117}\.\.\. \(F32, F64, F16, BF16 are read\)$/);
});
