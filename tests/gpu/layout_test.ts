/** Uniform structs and constant tables declared in TypeScript: WGSL text, offsets and packing. */

import assert from "node:assert/strict";
import { type StructFields, uniformStruct, wgslConstants } from "../../src/gpu/layout.ts";
import { declareShader, shaderDeclarations } from "../../src/gpu/shaders.ts";
import { init } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";

// Every kind of field, with scalars after arrays so that realignment to 16 bytes shows.
const Probe = uniformStruct("Probe", {
  count: "u32",
  shift: "i32",
  scale: "f32",
  shape: "array<vec4u, 2>",
  after_shape: "f32",
  weights: "array<vec4f, 3>",
  _pad: "u32",
  offsets: "array<vec4i, 1>",
  last: "u32",
});

Deno.test("a struct's WGSL and offsets follow WGSL's layout rules", () => {
  assert.equal(
    Probe.wgsl,
    "struct Probe {\n  count: u32,\n  shift: i32,\n  scale: f32,\n  shape: array<vec4u, 2>,\n" +
      "  after_shape: f32,\n  weights: array<vec4f, 3>,\n  _pad: u32,\n" +
      "  offsets: array<vec4i, 1>,\n  last: u32,\n}\n",
  );
  const offsets = Object.fromEntries(Probe.layout.map((f) => [f.name, f.offset]));
  assert.deepEqual(offsets, {
    count: 0,
    shift: 4,
    scale: 8,
    shape: 16,
    after_shape: 48,
    weights: 64,
    _pad: 112,
    offsets: 128,
    last: 144,
  });
  // The size is rounded up to the largest alignment (16, from the arrays).
  assert.equal(Probe.size, 160);
  const scalars = uniformStruct("Scalars", { a: "u32", b: "f32", c: "u32" });
  assert.equal(scalars.size, 12);
  assert.equal(
    scalars.pack({ a: 1, b: 2, c: 3 }).byteLength,
    16,
    "uniform blocks are 16-byte padded",
  );
});

const probeValues = {
  count: 7,
  shift: -3,
  scale: 1.5,
  shape: [2, 3, 4],
  after_shape: -0.25,
  weights: [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
  offsets: [-1, 5],
  last: 0xfffffffe,
};

Deno.test("packing by name puts each value where WGSL reads it (checked on the GPU)", async () => {
  const gpu = await init();
  // A kernel that copies every scalar of the uniform block, as raw bits, to a storage buffer.
  const reads: string[] = [];
  for (const field of Probe.layout) {
    if (field.padding) continue;
    if (field.count === 1) reads.push(`bitcast<u32>(p.${field.name})`);
    else {
      for (let i = 0; i < field.count; i++) {
        reads.push(`bitcast<u32>(p.${field.name}[${i >> 2}][${i & 3}])`);
      }
    }
  }
  const code = Probe.wgsl +
    "@group(0) @binding(0) var<uniform> p: Probe;\n" +
    "@group(0) @binding(1) var<storage, read_write> out: array<u32>;\n" +
    "@compute @workgroup_size(1)\nfn main() {\n" +
    reads.map((read, i) => `  out[${i}] = ${read};\n`).join("") + "}\n";
  const pipeline = gpu.device.createComputePipeline({
    layout: "auto",
    compute: { module: gpu.device.createShaderModule({ code }), entryPoint: "main" },
  });
  const out = gpu.pool.acquire(reads.length * 4);
  const bindGroup = gpu.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: gpu.recorder.uniform(Probe.pack(probeValues)) } },
      { binding: 1, resource: { buffer: out } },
    ],
  });
  gpu.recorder.dispatch(pipeline, bindGroup, [1]);
  const bits = new Uint32Array(await gpu.recorder.read(out, 0, reads.length * 4));
  gpu.pool.release(out);

  // The values each field should hold, zero-filled arrays included, as the same raw bits.
  const expected: number[] = [];
  const asBits = (scalar: string, value: number) => {
    const word = new DataView(new ArrayBuffer(4));
    if (scalar === "f32") word.setFloat32(0, value, true);
    else if (scalar === "i32") word.setInt32(0, value, true);
    else word.setUint32(0, value, true);
    return word.getUint32(0, true);
  };
  for (const field of Probe.layout) {
    if (field.padding) continue;
    const value = probeValues[field.name as keyof typeof probeValues];
    const list = typeof value === "number" ? [value] : value;
    for (let i = 0; i < field.count; i++) expected.push(asBits(field.scalar, list[i] ?? 0));
  }
  assert.deepEqual([...bits], expected);
  assert.deepEqual(gpu.errors, []);
});

Deno.test("a missing, unknown or wrongly typed field fails loudly, naming struct and field", () => {
  const values = { ...probeValues } as Record<string, unknown>;
  const packAny = (v: Record<string, unknown>) =>
    Probe.pack(v as unknown as Parameters<typeof Probe.pack>[0]);

  const { scale: _, ...withoutScale } = values;
  assert.throws(() => packAny(withoutScale), /Struct Probe: field "scale" is missing/);
  assert.throws(() => packAny({ ...values, scael: 1 }), /Struct Probe has no field "scael"/);
  assert.throws(
    () => packAny({ ...values, _pad: 0 }),
    /has no field "_pad"/,
    "padding is not given",
  );
  assert.throws(() => packAny({ ...values, count: [1] }), /field "count" takes a u32 \(an integer/);
  assert.throws(() => packAny({ ...values, count: -1 }), /field "count" takes a u32 .*, got -1/);
  assert.throws(() => packAny({ ...values, shift: 0.5 }), /field "shift" takes an i32/);
  assert.throws(() => packAny({ ...values, scale: "1" }), /field "scale" takes an f32/);
  assert.throws(
    () => packAny({ ...values, shape: 3 }),
    /field "shape" takes an array of up to 8 values, each a u32/,
  );
  assert.throws(
    () => packAny({ ...values, shape: [1, 2, 3, 4, 5, 6, 7, 8, 9] }),
    /field "shape" holds at most 8 values, got 9/,
  );
  assert.throws(
    () => packAny({ ...values, offsets: [1.5] }),
    /field "offsets" takes an array of up to 4 values, each an i32/,
  );
  // A typo is also a compile-time error.
  // @ts-expect-error: "scael" is not a field of Probe
  assert.throws(() => Probe.pack({ ...probeValues, scael: 1 }));
});

Deno.test("a field of an unsupported type is refused when the struct is declared", () => {
  const fields = { size: "vec3f" } as unknown as StructFields;
  assert.throws(() => uniformStruct("Odd", fields), /Odd\.size has type "vec3f"/);
});

Deno.test("constant tables become WGSL constants, camelCase in SNAKE_CASE", () => {
  assert.equal(
    wgslConstants({ add: 0, leakyReluGrad: 7 }, "OP_").wgsl,
    "const OP_ADD: u32 = 0u;\nconst OP_LEAKY_RELU_GRAD: u32 = 7u;\n",
  );
  // The op codes of the unary kernel reach its WGSL from the TypeScript table.
  assert.match(shaderDeclarations("unary"), /const OP_RELU: u32 = 2u;/);
  assert.match(shaderDeclarations("unary"), /struct UnaryParams \{/);
  assert.match(shaderDeclarations("gemm"), /const MODE_CONV_FORWARD: u32 = 1u;/);
});

Deno.test("a shader is declared once; different declarations for it are an error", () => {
  assert.throws(
    () => declareShader("random", uniformStruct("RandomParams", { n: "u32" })),
    /Shader "random" is declared twice/,
  );
});
