/** The tape: accumulation across shared subexpressions, no-grad scopes, zeroGrad and tidy. */

import assert from "node:assert/strict";
import { currentGpu } from "../../src/gpu/device.ts";
import { init, keep, noGrad, tensor, tidy, zeroGrad } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";
import { glorotUniform, heNormal } from "../../src/nn/init.ts";

function close(actual: ArrayLike<number>, expected: number[], tolerance = 1e-5): void {
  assert.equal(actual.length, expected.length);
  expected.forEach((e, i) =>
    assert.ok(
      Math.abs(actual[i] - e) <= tolerance * Math.max(1, Math.abs(e)),
      `[${i}] ${actual[i]} vs ${e}`,
    )
  );
}

Deno.test("gradients accumulate across shared subexpressions", async () => {
  await init();
  const x = tensor([1, -2, 3]);
  x.requiresGrad = true;
  tidy(() => {
    // y = Σ (x·x + x) + Σ x·x: x is used four times, x·x twice.
    const square = op.mul(x, x);
    const y = op.add(op.sum(op.add(square, x)), op.sum(square));
    y.backward();
  });
  // dy/dx = 2x + 1 + 2x = 4x + 1
  close(await x.grad!.toArray(), [5, -7, 13]);
  // A second backward adds to the gradient until zeroGrad clears it.
  tidy(() => op.sum(op.mulScalar(x, 3)).backward());
  close(await x.grad!.toArray(), [8, -4, 16]);
  zeroGrad([x]);
  assert.equal(x.grad, null);
  x.dispose();
});

Deno.test("a pass-through gradient is shared safely by two inputs", async () => {
  await init();
  const a = tensor([1, 2]);
  const b = tensor([3, 4]);
  a.requiresGrad = b.requiresGrad = true;
  for (let step = 0; step < 2; step++) tidy(() => op.sum(op.add(a, b)).backward());
  close(await a.grad!.toArray(), [2, 2]);
  close(await b.grad!.toArray(), [2, 2]);
  zeroGrad([a]);
  close(await b.grad!.toArray(), [2, 2]); // clearing a's gradient left b's intact
});

Deno.test("noGrad records no graph and backward through it is refused", async () => {
  await init();
  const x = tensor([1, 2]);
  x.requiresGrad = true;
  const y = noGrad(() => op.square(x));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.parents.length, 0);
  assert.throws(() => y.backward(), /does not require gradients/);
  const z = op.square(x);
  assert.throws(() => z.backward(), /needs a scalar/);
});

Deno.test("tidy frees what it does not return, and keep() survives it", async () => {
  await init();
  const gpu = currentGpu();
  const before = gpu.pool.stats.inUseBytes;
  const kept = tidy(() => {
    const a = op.ones([100]);
    const b = op.add(a, a);
    keep(op.mul(b, b)).dispose();
    return op.sum(b);
  });
  close(await kept.toArray(), [200]);
  kept.dispose();
  assert.equal(gpu.pool.stats.inUseBytes, before);
  assert.throws(() => kept.buffer, /disposed tensor/);
});

Deno.test("initialisers have the requested spread", async () => {
  await init();
  const he = await heNormal([64, 32, 3, 3], 0.2, { seed: 1 }).toArray();
  const std = Math.sqrt(he.reduce((s, v) => s + v * v, 0) / he.length);
  const expected = Math.sqrt(2 / (1 + 0.04)) / Math.sqrt(32 * 9);
  assert.ok(Math.abs(std / expected - 1) < 0.05, `He std ${std} vs ${expected}`);
  const glorot = await glorotUniform([50, 70], { seed: 2 }).toArray();
  const bound = Math.sqrt(6 / 120);
  assert.ok(glorot.every((v) => Math.abs(v) <= bound));
  assert.ok(Math.max(...glorot.map(Math.abs)) > 0.9 * bound);
});
