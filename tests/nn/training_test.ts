/** Whole-network behaviour: learning, flat memory, one readback per step, optimizer maths. */

import assert from "node:assert/strict";
import { currentGpu } from "../../src/gpu/device.ts";
import { init, type Tensor, tensor, tidy } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";
import { Adam, SGD } from "../../src/nn/optim.ts";
import {
  BatchNorm2d,
  Conv2d,
  ConvTranspose2d,
  LeakyReLU,
  Linear,
  Sequential,
} from "../../src/nn/layers.ts";

/** A tiny convolutional autoencoder of the same kind as the methods use. */
function tinyAutoencoder(): Sequential {
  return new Sequential(
    new Conv2d(1, 8, 4, { stride: 2, padding: 1, slope: 0.2 }),
    LeakyReLU(0.2),
    new Conv2d(8, 8, 3, { padding: 1, slope: 0.2 }),
    new BatchNorm2d(8),
    LeakyReLU(0.2),
    new ConvTranspose2d(8, 1, 4, { stride: 2, padding: 1 }),
  );
}

/** Smooth stripes: a learnable target for an autoencoder. */
function stripes(batch: number, size: number, phase: number): Tensor {
  const data = new Float32Array(batch * size * size);
  for (let b = 0; b < batch; b++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        data[(b * size + y) * size + x] = 0.5 + 0.4 * Math.sin((x + 2 * y) * 0.6 + phase + b);
      }
    }
  }
  return tensor(data, [batch, 1, size, size]);
}

function trainingStep(model: Sequential, optimizer: Adam, batch: Tensor): Tensor {
  return tidy(() => {
    optimizer.zeroGrad();
    const loss = op.mse(model.forward(batch), batch);
    loss.backward();
    optimizer.step();
    return loss;
  });
}

Deno.test("a small conv net's loss falls over 50 steps", async () => {
  await init();
  op.manualSeed(1);
  const model = tinyAutoencoder();
  const optimizer = new Adam(model.parameters(), { lr: 5e-3 });
  const batch = stripes(4, 16, 0);
  const first = trainingStep(model, optimizer, batch);
  const firstLoss = await first.item();
  first.dispose();
  let last: Tensor | null = null;
  for (let i = 0; i < 49; i++) {
    last?.dispose();
    last = trainingStep(model, optimizer, batch);
  }
  const lastLoss = await last!.item();
  assert.ok(lastLoss < firstLoss * 0.3, `loss went from ${firstLoss} to ${lastLoss}`);
  last!.dispose();
  batch.dispose();
  model.dispose();
  optimizer.dispose();
});

Deno.test("one training step records into one submit and reads back once", async () => {
  await init();
  const gpu = currentGpu();
  const model = tinyAutoencoder();
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  const batch = stripes(2, 16, 1);
  trainingStep(model, optimizer, batch).dispose(); // compile the pipelines first
  await gpu.recorder.sync();
  const before = { ...gpu.recorder.stats };
  const loss = trainingStep(model, optimizer, batch);
  const value = await loss.item();
  const readbacks = gpu.recorder.stats.readbacks - before.readbacks;
  const submits = gpu.recorder.stats.submits - before.submits;
  assert.ok(Number.isFinite(value));
  assert.equal(readbacks, 1, `a step read back ${readbacks} times`);
  assert.equal(submits, 1, `a step submitted ${submits} command buffers`);
  assert.ok(gpu.recorder.stats.dispatches - before.dispatches > 20);
  assert.deepEqual(gpu.errors, []);
  loss.dispose();
  batch.dispose();
  model.dispose();
  optimizer.dispose();
});

Deno.test("200 training steps leave the pools' GPU memory flat", async () => {
  await init();
  const gpu = currentGpu();
  const model = tinyAutoencoder();
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  const batch = stripes(2, 16, 2);
  for (let i = 0; i < 10; i++) trainingStep(model, optimizer, batch).dispose();
  await gpu.recorder.sync();
  const allocated = gpu.pool.stats.allocatedBytes;
  const inUse = gpu.pool.stats.inUseBytes;
  const textures = gpu.textures.allocatedBytes;
  for (let i = 0; i < 200; i++) trainingStep(model, optimizer, batch).dispose();
  await gpu.recorder.sync();
  assert.equal(gpu.pool.stats.allocatedBytes, allocated, "the pool grew during training");
  assert.equal(gpu.pool.stats.inUseBytes, inUse, "tensors leaked during training");
  // Packed operands (textures.ts), the one-channel convolutions' included, go back to their pool.
  assert.equal(gpu.textures.allocatedBytes, textures, "the texture pool grew during training");
  batch.dispose();
  model.dispose();
  optimizer.dispose();
});

Deno.test("Adam and SGD updates match a float64 reference", async () => {
  await init();
  const w0 = [0.5, -1.25, 2, 0.1];
  const grads = [[0.3, -0.2, 0.05, 1], [-0.1, 0.4, 0.2, -0.5]];
  const lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  for (const decoupled of [false, true]) {
    const p = tensor(w0);
    p.requiresGrad = true;
    const adam = new Adam([p], { lr, weightDecay: wd, decoupled });
    const expected = [...w0];
    const m = [0, 0, 0, 0], v = [0, 0, 0, 0];
    for (let t = 1; t <= grads.length; t++) {
      p.grad = tensor(grads[t - 1]);
      adam.step();
      for (let i = 0; i < 4; i++) {
        let g = grads[t - 1][i];
        if (decoupled) expected[i] -= lr * wd * expected[i];
        else g += wd * expected[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        expected[i] -= lr * (m[i] / (1 - b1 ** t)) / (Math.sqrt(v[i] / (1 - b2 ** t)) + eps);
      }
      adam.zeroGrad();
    }
    const actual = await p.toArray();
    actual.forEach((a, i) =>
      assert.ok(
        Math.abs(a - expected[i]) < 1e-6,
        `Adam(decoupled=${decoupled})[${i}]: ${a} vs ${expected[i]}`,
      )
    );
    p.dispose();
    adam.dispose();
  }
  const p = tensor(w0);
  p.requiresGrad = true;
  const sgd = new SGD([p], { lr: 0.1, momentum: 0.9 });
  const expected = [...w0];
  const velocity = [0, 0, 0, 0];
  for (const g of grads) {
    p.grad = tensor(g);
    sgd.step();
    for (let i = 0; i < 4; i++) {
      velocity[i] = 0.9 * velocity[i] + g[i];
      expected[i] -= 0.1 * velocity[i];
    }
    sgd.zeroGrad();
  }
  (await p.toArray()).forEach((a, i) => assert.ok(Math.abs(a - expected[i]) < 1e-6, `SGD[${i}]`));
  p.dispose();
  sgd.dispose();
});

Deno.test("a parameter written between optimizer steps is updated from its new values", async () => {
  const gpu = await init();
  const p = tensor([1, 2, 3, 4]);
  p.requiresGrad = true;
  const untouched = tensor([5, 6, 7, 8]);
  untouched.requiresGrad = true;
  const sgd = new SGD([p, untouched], { lr: 0.5 });
  const step = () => {
    p.grad = tensor([1, 1, 1, 1]);
    untouched.grad = tensor([2, 2, 2, 2]);
    sgd.step();
    sgd.zeroGrad();
  };
  step();
  // Written from the CPU (as loading a checkpoint does), then by a kernel: each time the next
  // step starts from what was written, not from the optimizer's flat copy.
  gpu.recorder.write(p.buffer, 0, new Float32Array([10, 20, 30, 40]));
  step();
  assert.deepEqual([...await p.toArray()], [9.5, 19.5, 29.5, 39.5]);
  op.fillInto(p, -1);
  step();
  assert.deepEqual([...await p.toArray()], [-1.5, -1.5, -1.5, -1.5]);
  // The parameter nothing else wrote went on from its own updates.
  assert.deepEqual([...await untouched.toArray()], [2, 3, 4, 5]);
  p.dispose();
  untouched.dispose();
  sgd.dispose();
});

Deno.test("BatchNorm2d uses batch statistics in training and running ones in evaluation", async () => {
  await init();
  const bn = new BatchNorm2d(2, { momentum: 0.5 });
  const data = [1, 2, 3, 4, 10, 20, 30, 40];
  const x = tensor(data, [1, 2, 2, 2]);
  const y = await bn.forward(x).toArray();
  // Channel 0: mean 2.5, biased variance 1.25.
  const expected0 = [1, 2, 3, 4].map((v) => (v - 2.5) / Math.sqrt(1.25 + 1e-5));
  expected0.forEach((e, i) => assert.ok(Math.abs(y[i] - e) < 1e-4));
  const [runningMean, runningVar] = [await bn.runningMean.toArray(), await bn.runningVar.toArray()];
  assert.ok(Math.abs(runningMean[0] - 1.25) < 1e-5, `running mean ${runningMean[0]}`);
  // Unbiased variance 5/3, half-way from 1.
  assert.ok(Math.abs(runningVar[0] - (0.5 + 0.5 * 5 / 3)) < 1e-5, `running var ${runningVar[0]}`);
  bn.eval();
  const z = await bn.forward(x).toArray();
  assert.ok(Math.abs(z[0] - (1 - 1.25) / Math.sqrt(runningVar[0] + 1e-5)) < 1e-4);
  bn.dispose();
});

Deno.test("Linear computes x·Wᵀ + b and learns a linear map", async () => {
  await init();
  op.manualSeed(4);
  const layer = new Linear(3, 2);
  const x = tensor([1, 2, 3, -1, 0, 2], [2, 3]);
  const [w, b] = [await layer.weight.toArray(), await layer.bias!.toArray()];
  const y = await layer.forward(x).toArray();
  const rows = [[1, 2, 3], [-1, 0, 2]];
  rows.forEach((row, i) => {
    for (let o = 0; o < 2; o++) {
      const expected = row.reduce((s, v, k) => s + v * w[o * 3 + k], 0) + b[o];
      assert.ok(Math.abs(y[i * 2 + o] - expected) < 1e-5);
    }
  });
  // Fit y = [x0 + x1, x2 − x0] with SGD.
  const target = tensor([3, 2, -1, 3], [2, 2]);
  const optimizer = new SGD(layer.parameters(), { lr: 0.05, momentum: 0.9 });
  let loss = 0;
  for (let step = 0; step < 200; step++) {
    const l = tidy(() => {
      optimizer.zeroGrad();
      const value = op.mse(layer.forward(x), target);
      value.backward();
      optimizer.step();
      return value;
    });
    if (step === 199) loss = await l.item();
    l.dispose();
  }
  assert.ok(loss < 1e-4, `loss after 200 steps: ${loss}`);
  layer.dispose();
});

Deno.test("one Adam dispatch updates every parameter, skips those without a gradient, and resumes from stepCount", async () => {
  await init();
  const gpu = currentGpu();
  // Sizes that straddle the kernel's 256-element blocks.
  const sizes = [300, 5, 7];
  const initial = sizes.map((n, k) => Array.from({ length: n }, (_, i) => Math.sin(i + 10 * k)));
  const params = initial.map((w) => {
    const p = tensor(w);
    p.requiresGrad = true;
    return p;
  });
  const lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const adam = new Adam(params, { lr });
  // The kernel's β are f32: (1 − β) differs from float64's by up to 1.3e-5 relative, which over
  // four steps of size ~3·lr would exceed the tolerance on its own, so the moments use them too.
  const [f1, f2] = [Math.fround(b1), Math.fround(b2)];
  // A resumed run: the step count comes from a checkpoint, just before a new table of bias
  // corrections is needed (every 4096 steps).
  adam.stepCount = 4094;
  const expected = initial.map((w) => [...w]);
  const moments = sizes.map((n) => [new Array(n).fill(0), new Array(n).fill(0)]);
  const before = { ...gpu.recorder.stats };
  for (let t = 4095; t <= 4098; t++) {
    // The last parameter has no gradient on odd steps: it and its moments must stay as they are.
    const active = sizes.map((_, k) => k < 2 || t % 2 === 0);
    const grads = sizes.map((n, k) => Array.from({ length: n }, (_, i) => Math.cos(i * t + k)));
    params.forEach((p, k) => p.grad = active[k] ? tensor(grads[k]) : null);
    adam.step();
    sizes.forEach((n, k) => {
      if (!active[k]) return;
      const [m, v] = moments[k];
      for (let i = 0; i < n; i++) {
        const g = grads[k][i];
        m[i] = f1 * m[i] + (1 - f1) * g;
        v[i] = f2 * v[i] + (1 - f2) * g * g;
        expected[k][i] -= lr * (m[i] / (1 - b1 ** t)) / (Math.sqrt(v[i] / (1 - b2 ** t)) + eps);
      }
    });
    adam.zeroGrad();
  }
  assert.equal(gpu.recorder.stats.dispatches - before.dispatches, 4, "one dispatch per step");
  assert.equal(adam.stepCount, 4098);
  const actual = await Promise.all(params.map((p) => p.toArray()));
  actual.forEach((values, k) =>
    values.forEach((a, i) =>
      assert.ok(
        Math.abs(a - expected[k][i]) < 1e-6,
        `parameter ${k}[${i}]: ${a} vs ${expected[k][i]}`,
      )
    )
  );
  assert.deepEqual(gpu.errors, []);
  params.forEach((p) => p.dispose());
  adam.dispose();
});

Deno.test("optimizer steps after the first three record no new uniform block or bind group", async () => {
  await init();
  const gpu = currentGpu();
  const model = tinyAutoencoder();
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  const batch = stripes(2, 16, 3);
  // The pool hands out its textures in a steady order once the packings that parameters keep
  // (gemm.ts) have taken theirs: from the third step on.
  for (let i = 0; i < 3; i++) trainingStep(model, optimizer, batch).dispose();
  const misses = gpu.bindGroups.stats.misses;
  for (let i = 0; i < 3; i++) trainingStep(model, optimizer, batch).dispose();
  await gpu.checkErrors();
  assert.equal(gpu.bindGroups.stats.misses, misses, "a training step made new bind groups");
  batch.dispose();
  model.dispose();
  optimizer.dispose();
});
