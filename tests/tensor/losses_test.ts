/** Losses and composite ops against float64 references, forward and backward. */

import assert from "node:assert/strict";
import * as op from "../../src/tensor/ops.ts";
import { backward, init, noGrad, tensor, tidy } from "../../src/tensor/tensor.ts";
import { currentGpu } from "../../src/gpu/device.ts";
import {
  checkOp,
  filterRef,
  type OpCase,
  randomRef,
  type Ref,
  relativeError,
  seededRandom,
  sumRef,
} from "./reference.ts";

const random = seededRandom(11);

async function expectOp(name: string, c: OpCase): Promise<void> {
  const result = await checkOp(c);
  assert.ok(
    result.forwardError <= (c.tolerance ?? 1e-4),
    `${name}: forward error ${result.forwardError}`,
  );
  result.gradErrors.forEach((e, i) =>
    assert.ok(e <= (c.gradTolerance ?? 2e-3), `${name}: gradient ${i} error ${e}`)
  );
}

function scalar(v: number): Ref {
  return { data: Float64Array.of(v), shape: [] };
}

function meanOf(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return s / values.length;
}

Deno.test("mse forward and backward", () =>
  expectOp("mse", {
    inputs: [randomRef([2, 3, 5], random), randomRef([2, 3, 5], random)],
    gpu: op.mse,
    ref: (a, b) => scalar(meanOf(a.data.map((v, i) => (v - b.data[i]) ** 2))),
  }));

Deno.test("l1 forward and backward", () =>
  expectOp("l1", {
    inputs: [randomRef([2, 3, 5], random), randomRef([2, 3, 5], random)],
    gpu: op.l1,
    ref: (a, b) => scalar(meanOf(a.data.map((v, i) => Math.abs(v - b.data[i])))),
  }));

Deno.test("bceWithLogits forward and backward, stable for large logits", async () => {
  await expectOp("bce", {
    inputs: [randomRef([3, 7], random, -4, 4), randomRef([3, 7], random, 0, 1)],
    gpu: op.bceWithLogits,
    ref: (x, y) => {
      const terms = x.data.map((v, i) => {
        const p = 1 / (1 + Math.exp(-v));
        return -(y.data[i] * Math.log(p) + (1 - y.data[i]) * Math.log(1 - p));
      });
      return scalar(meanOf(terms));
    },
    gradInputs: [0],
  });
  await init();
  const loss = await op.bceWithLogits(tensor([200, -200]), tensor([0, 1])).item();
  assert.ok(Math.abs(loss - 200) < 1e-3, `bce of saturated logits is ${loss}`);
});

/** SSIM with a Gaussian window and border-normalised statistics, in float64. */
function ssimRef(a: Ref, b: Ref, taps: number[]): Ref {
  const blur = (x: Ref) => filterRef(x, taps, true);
  const mul = (x: Ref, y: Ref): Ref => ({
    data: x.data.map((v, i) => v * y.data[i]),
    shape: x.shape,
  });
  const muA = blur(a), muB = blur(b);
  const aa = blur(mul(a, a)), bb = blur(mul(b, b)), ab = blur(mul(a, b));
  const c1 = 0.01 ** 2, c2 = 0.03 ** 2;
  const data = muA.data.map((ma, i) => {
    const mb = muB.data[i];
    const va = aa.data[i] - ma * ma, vb = bb.data[i] - mb * mb, cov = ab.data[i] - ma * mb;
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
  });
  return { data, shape: a.shape };
}

for (const channels of [1, 3]) {
  Deno.test(`ssim map with ${channels} channel(s) matches the reference, forward and backward`, async () => {
    const taps = op.gaussianTaps(1.5, 11);
    // Each case draws its own inputs, so running a subset of the tests changes nothing.
    const random = seededRandom(20 + channels);
    await expectOp("ssim map", {
      inputs: [
        randomRef([2, channels, 13, 12], random, 0, 1),
        randomRef([2, channels, 13, 12], random, 0, 1),
      ],
      gpu: (a, b) => op.ssim(a, b).map,
      ref: (a, b) => ssimRef(a, b, taps),
      gradInputs: [],
      // σ² = E[x²] − μ² cancels in f32 where the local variance is small: the composite of ops
      // that are each within 1e-4 lands within 3e-4 of the float64 SSIM.
      tolerance: 3e-4,
    });
    await expectOp("ssim mean", {
      inputs: [
        randomRef([1, channels, 6, 5], random, 0, 1),
        randomRef([1, channels, 6, 5], random, 0, 1),
      ],
      gpu: (a, b) => op.ssim(a, b).mean,
      ref: (a, b) => scalar(meanOf(ssimRef(a, b, taps).data)),
      gradTolerance: 5e-3,
    });
  });
}

Deno.test("ssim of an image with itself is 1 everywhere", async () => {
  await init();
  const x = tensor(randomRef([1, 1, 16, 16], random, 0, 1).data.map((v) => v), [1, 1, 16, 16]);
  const { map, mean } = op.ssim(x, x);
  const values = await map.toArray();
  assert.ok(values.every((v) => Math.abs(v - 1) < 1e-4));
  assert.ok(Math.abs((await mean.item()) - 1) < 1e-4);
});

/**
 * SSIM's map of images of `shape` against the reference, and the gradients of Σ R·map (R random)
 * with respect to both images against central differences of the reference at `probes` pixels
 * (the corners of the first plane and random ones): full finite differences would take minutes.
 */
async function checkSsimMap(shape: number[], seed: number, probes: number): Promise<void> {
  await init();
  const random = seededRandom(seed);
  const taps = op.gaussianTaps(1.5, 11);
  const inputs = [randomRef(shape, random, 0, 1), randomRef(shape, random, 0, 1)];
  const upstream = randomRef(shape, random);
  const expected = ssimRef(inputs[0], inputs[1], taps);
  // The images stay alive until the end: disposing one disposes its gradient.
  const { a, b, map } = tidy(() => {
    const [a, b] = inputs.map((r) => tensor(Float32Array.from(r.data), shape));
    a.requiresGrad = b.requiresGrad = true;
    const { map } = op.ssim(a, b);
    backward(map, tensor(Float32Array.from(upstream.data), shape));
    return { a, b, map };
  });
  const forwardError = relativeError(await map.toArray(), expected.data);
  assert.ok(forwardError <= 3e-4, `ssim map [${shape}]: forward error ${forwardError}`);
  const [, , h, w] = shape;
  const corners = [0, w - 1, (h - 1) * w, h * w - 1];
  const picked = [
    ...corners,
    ...Array.from({ length: probes }, () => {
      return Math.floor(random() * expected.data.length);
    }),
  ];
  const step = 1e-5;
  const objective = () => {
    const out = ssimRef(inputs[0], inputs[1], taps).data;
    return out.reduce((total, v, i) => total + v * upstream.data[i], 0);
  };
  for (const [index, grad] of [await a.grad!.toArray(), await b.grad!.toArray()].entries()) {
    const data = inputs[index].data;
    const actual: number[] = [];
    const numeric: number[] = [];
    for (const i of picked) {
      const saved = data[i];
      data[i] = saved + step;
      const plus = objective();
      data[i] = saved - step;
      const minus = objective();
      data[i] = saved;
      numeric.push((plus - minus) / (2 * step));
      actual.push(grad[i]);
    }
    const error = relativeError(actual, numeric);
    assert.ok(error <= 5e-3, `ssim map [${shape}]: gradient ${index} error ${error}`);
  }
  for (const t of [map, a, b]) t.dispose();
  assert.deepEqual(currentGpu().errors, []);
}

Deno.test("ssim map of awkward sizes matches the reference, forward and backward", async () => {
  // Neither side a multiple of the kernels' tiles, 3 channels, more than one image.
  await checkSsimMap([2, 3, 13, 17], 31, 24);
  // Several tiles along both axes, and planes smaller than the window.
  await checkSsimMap([1, 2, 70, 67], 32, 8);
  await checkSsimMap([3, 1, 4, 9], 33, 12);
});

Deno.test("ssim forward and backward record a handful of dispatches", async () => {
  await init();
  const gpu = currentGpu();
  const shape = [2, 1, 32, 32];
  const a = op.rand(shape, 0, 1, { seed: 1 });
  const b = op.rand(shape, 0, 1, { seed: 2 });
  a.requiresGrad = b.requiresGrad = true;
  let before = gpu.recorder.stats.dispatches;
  const forward = tidy(() => noGrad(() => op.ssim(a, b).mean));
  const forwardOnly = gpu.recorder.stats.dispatches - before;
  before = gpu.recorder.stats.dispatches;
  tidy(() => op.ssim(a, b).mean.backward());
  const both = gpu.recorder.stats.dispatches - before;
  // Forward: the moments along x, along y with the map, and the mean. Backward: the mean's
  // gradient (seed, broadcast, scale), then the adjoint along x and along y.
  assert.ok(forwardOnly <= 3, `ssim forward recorded ${forwardOnly} dispatches`);
  assert.ok(both <= 8, `ssim forward and backward recorded ${both} dispatches`);
  assert.ok(a.grad && b.grad, "both images received gradients");
  assert.ok(Number.isFinite(await forward.item()));
  for (const t of [a, b, a.grad, b.grad, forward]) t?.dispose();
  assert.deepEqual(gpu.errors, []);
});

Deno.test("batchNorm2d in training mode: forward and backward", () =>
  expectOp("batchNorm2d", {
    inputs: [
      randomRef([2, 3, 3, 2], random),
      randomRef([3], random, 0.5, 1.5),
      randomRef([3], random),
    ],
    gpu: (x, gamma, beta) =>
      op.batchNorm2d(x, gamma, beta, {
        runningMean: op.zeros([3]),
        runningVar: op.ones([3]),
        training: true,
      }),
    ref: (x, gamma, beta) => {
      const mu = sumRef(x, [0, 2, 3], true, true);
      const [n, c, h, w] = x.shape;
      const count = n * h * w;
      const variance = new Float64Array(c);
      x.data.forEach((v, i) => {
        const ch = Math.floor(i / (h * w)) % c;
        variance[ch] += (v - mu.data[ch]) ** 2 / count;
      });
      const data = x.data.map((v, i) => {
        const ch = Math.floor(i / (h * w)) % c;
        return gamma.data[ch] * (v - mu.data[ch]) / Math.sqrt(variance[ch] + 1e-5) + beta.data[ch];
      });
      return { data, shape: x.shape };
    },
    gradTolerance: 5e-3,
  }));

Deno.test("random tensors are seeded and have the requested moments", async () => {
  await init();
  const a = await op.randn([20000], 2, 3, { seed: 5 }).toArray();
  const b = await op.randn([20000], 2, 3, { seed: 5 }).toArray();
  const c = await op.randn([20000], 2, 3, { seed: 6 }).toArray();
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const m = meanOf(a);
  const sd = Math.sqrt(meanOf(a.map((v) => (v - m) ** 2)));
  assert.ok(Math.abs(m - 2) < 0.1 && Math.abs(sd - 3) < 0.1, `mean ${m}, std ${sd}`);
  const u = await op.rand([20000], -1, 3, { seed: 9 }).toArray();
  assert.ok(u.every((v) => v >= -1 && v < 3));
  assert.ok(Math.abs(meanOf(u) - 1) < 0.05, `uniform mean ${meanOf(u)}`);
});
