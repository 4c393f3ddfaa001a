/**
 * Operand textures are read-only storage textures where WGSL has them and sampled textures
 * otherwise (src/gpu/textures.ts): both bindings give the same results to the bit, and a bad
 * ANODET_OPERAND_TEXTURES is refused with a clear error.
 */

import assert from "node:assert/strict";
import { operandBinding, operandTextureDeclaration } from "../../src/gpu/textures.ts";
import { runScriptProcess, type TaskOutput } from "../tasks/helpers.ts";

/** Runs operand_textures_child.ts with ANODET_OPERAND_TEXTURES set to `binding`. */
function runChild(binding: string): Promise<TaskOutput> {
  return runScriptProcess("tests/gpu/operand_textures_child.ts", [], {
    ANODET_OPERAND_TEXTURES: binding,
  });
}

Deno.test("storage and sampled operand textures give the same products to the bit", async () => {
  const [storage, sampled] = await Promise.all([runChild("storage"), runChild("sampled")]);
  assert.equal(storage.code, 0, storage.stderr);
  assert.equal(sampled.code, 0, sampled.stderr);
  const fromStorage = JSON.parse(storage.stdout);
  const fromSampled = JSON.parse(sampled.stdout);
  assert.equal(fromStorage.binding, "storage");
  assert.equal(fromSampled.binding, "sampled");
  for (const name of ["conv", "toOneChannel", "matmul"]) {
    assert.ok(fromStorage[name].length > 0, name);
    assert.deepEqual(fromSampled[name], fromStorage[name], name);
  }
});

Deno.test("a bad ANODET_OPERAND_TEXTURES is refused, naming the variable and its values", async () => {
  const result = await runChild("buffers");
  assert.notEqual(result.code, 0);
  assert.match(
    result.stderr,
    /ANODET_OPERAND_TEXTURES must be "storage" or "sampled", not "buffers"/,
  );
});

Deno.test("the operand declaration binds the type that load_operand reads", () => {
  const storage = operandTextureDeclaration("storage").wgsl;
  const sampled = operandTextureDeclaration("sampled").wgsl;
  assert.match(storage, /alias OperandTexture = texture_storage_2d<rgba32float, read>;/);
  assert.match(storage, /textureLoad\(operand, coords\)/);
  assert.match(sampled, /alias OperandTexture = texture_2d<f32>;/);
  assert.match(sampled, /textureLoad\(operand, coords, 0\)/);
  // This WebGPU has read-only storage textures, so the default is the storage binding.
  const saved = Deno.env.get("ANODET_OPERAND_TEXTURES");
  Deno.env.delete("ANODET_OPERAND_TEXTURES");
  try {
    assert.equal(operandBinding(), "storage");
  } finally {
    if (saved !== undefined) Deno.env.set("ANODET_OPERAND_TEXTURES", saved);
  }
});
