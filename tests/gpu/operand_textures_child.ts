/**
 * Child process of operand_textures_test.ts: computes a few texture-fed products on seeded inputs
 * under the operand binding its environment picks (ANODET_OPERAND_TEXTURES), and prints them as
 * JSON.
 */

import * as op from "../../src/tensor/ops.ts";
import { init, noGrad } from "../../src/tensor/tensor.ts";
import { operandBinding } from "../../src/gpu/textures.ts";

await init();
const x = op.rand([2, 8, 12, 12], -1, 1, { seed: 1 });
const w = op.rand([8, 8, 3, 3], -0.2, 0.2, { seed: 2 });
const wT = op.rand([8, 1, 4, 4], -0.2, 0.2, { seed: 3 });
const a = op.rand([20, 36], -1, 1, { seed: 4 });
const b = op.rand([36, 28], -1, 1, { seed: 5 });
const outputs = noGrad(() => ({
  conv: op.conv2d(x, w, undefined, { padding: 1, activation: { kind: "leakyRelu", slope: 0.2 } }),
  toOneChannel: op.convTranspose2d(x, wT, undefined, { stride: 2, padding: 1 }),
  matmul: op.matmul(a, b),
}));
const result: Record<string, number[] | string> = { binding: operandBinding() };
for (const [name, t] of Object.entries(outputs)) result[name] = Array.from(await t.toArray());
console.log(JSON.stringify(result));
