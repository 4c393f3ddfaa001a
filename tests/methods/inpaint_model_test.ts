/**
 * The inpainting autoencoder's network: the SDC block's shapes and dilated convolutions, the
 * layer plan of the paper's Table 1, the output's shape and range, gradients to every parameter,
 * learning on a fixed corrupted batch, and a timing line at the CPU preset's size.
 */

import assert from "node:assert/strict";
import { init, type Tensor, tensor, tidy } from "../../src/tensor/tensor.ts";
import * as op from "../../src/tensor/ops.ts";
import { Adam } from "../../src/nn/optim.ts";
import { assembleBatch } from "../../src/data/augment.ts";
import type { FloatImage } from "../../src/data/image.ts";
import { corrupt } from "../../src/methods/inpaint/corruption.ts";
import { filteringObjective } from "../../src/methods/inpaint/objectives.ts";
import {
  InpaintingNetwork,
  type InpaintingNetworkOptions,
  SDC_BLOCKS,
  SDC_DILATIONS,
  SdcBlock,
} from "../../src/methods/inpaint/model.ts";
import { InputError } from "../../src/util/errors.ts";
import { conv2dRef, randomRef, relativeError, seededRandom } from "../tensor/reference.ts";

const random = seededRandom(17);

function randomTensor(shape: number[], low = 0, high = 1): Tensor {
  return tensor(Float32Array.from(randomRef(shape, random, low, high).data), shape);
}

Deno.test("an SDC block joins six dilated branches and keeps the spatial size", async () => {
  await init();
  op.manualSeed(3);
  for (const [width, kernel] of [[1 / 16, 3], [1 / 8, 5], [1 / 4, 3]]) {
    const network = new InpaintingNetwork({ width, inputSize: 32, sdcKernel: kernel });
    const scaled = (c: number) => Math.max(1, Math.round(c * width));
    const blocks = network.bottleneck.layers as SdcBlock[];
    assert.equal(blocks.length, SDC_BLOCKS);
    for (const block of blocks) {
      assert.deepEqual(
        block.branches.map((b) => b.weight.shape),
        SDC_DILATIONS.map(() => [scaled(64), scaled(256), kernel, kernel]),
      );
      assert.deepEqual(block.branches.map((b) => b.options.dilation), SDC_DILATIONS);
      assert.equal(block.joinedNorm.weight.size, 6 * scaled(64), "joined to 6 × 64 channels");
      assert.deepEqual(block.fuse.layers.length, 3);
    }
    // At the bottleneck of a 32 px input (4×4) most dilations reach past the border.
    const x = randomTensor([2, scaled(256), 4, 4]);
    const y = tidy(() => blocks[0].forward(x));
    assert.deepEqual(y.shape, [2, scaled(256), 4, 4], `width ${width}`);
    const values = await y.toArray();
    assert.ok(values.every((v) => Number.isFinite(v) && v >= 0), "ReLU output");
    [x, y].forEach((t) => t.dispose());
    network.dispose();
  }
});

Deno.test("the SDC branches are the dilated convolutions of a float64 reference", async () => {
  await init();
  op.manualSeed(4);
  for (const kernel of [3, 5]) {
    const block = new SdcBlock(3, 2, 4, kernel);
    const input = randomRef([1, 3, 6, 5], random, -1, 1);
    const x = tensor(Float32Array.from(input.data), input.shape);
    const joined = tidy(() => op.concat(block.branches.map((branch) => branch.forward(x)), 1));
    assert.deepEqual(joined.shape, [1, 12, 6, 5]);
    const actual = await joined.toArray();
    for (let i = 0; i < SDC_DILATIONS.length; i++) {
      const dilation = SDC_DILATIONS[i];
      const weight = block.branches[i].weight;
      const expected = conv2dRef(
        input,
        { data: Float64Array.from(await weight.toArray()), shape: [...weight.shape] },
        { padding: (dilation * (kernel - 1)) / 2, dilation },
      );
      const part = actual.subarray(i * 2 * 30, (i + 1) * 2 * 30);
      const error = relativeError(part, expected.data);
      assert.ok(error < 1e-4, `kernel ${kernel}, dilation ${dilation}: error ${error}`);
    }
    [x, joined].forEach((t) => t.dispose());
    block.dispose();
  }
});

/** Parameters of the paper's Table 1 at a width, counted by hand from the layer plan. */
function tableOneParameters(width: number, channels: number, kernel: number): number {
  const s = (c: number) => Math.max(1, Math.round(c * width));
  const conv = (cin: number, cout: number, k = 3) => cin * cout * k * k + 2 * cout; // + batch norm
  const encoder = conv(channels, s(64)) + conv(s(64), s(64)) + conv(s(64), s(128)) +
    conv(s(128), s(128)) + conv(s(128), s(256)) + conv(s(256), s(256));
  const sdc = 6 * s(256) * s(64) * kernel * kernel + 2 * 6 * s(64) + conv(6 * s(64), s(256));
  const up = (cin: number, cout: number) => conv(cin, cout, 4) + 2 * conv(cout, cout);
  const decoder = up(s(256), s(256)) + up(s(256), s(128)) + up(s(128), s(64)) +
    s(64) * channels + channels;
  return encoder + SDC_BLOCKS * sdc + decoder;
}

Deno.test("the network has the layers of the paper's Table 1 at every width", async () => {
  await init();
  op.manualSeed(5);
  const cases: [InpaintingNetworkOptions, number][] = [
    [{ width: 1, channels: 3, sdcKernel: 3 }, 11_484_419],
    [{ width: 0.25, channels: 3, sdcKernel: 3 }, tableOneParameters(0.25, 3, 3)],
    [{ width: 1 / 16, channels: 1, sdcKernel: 5 }, tableOneParameters(1 / 16, 1, 5)],
  ];
  assert.equal(tableOneParameters(1, 3, 3), 11_484_419);
  for (const [options, expected] of cases) {
    const network = new InpaintingNetwork(options);
    assert.equal(network.parameterCount(), expected, JSON.stringify(options));
    network.dispose();
  }
});

Deno.test("the network maps [N, C, S, S] to a reconstruction of the same shape in (0, 1)", async () => {
  await init();
  op.manualSeed(6);
  for (const channels of [1, 3]) {
    const network = new InpaintingNetwork({ channels, inputSize: 32, width: 1 / 16 });
    const x = randomTensor([2, channels, 32, 32]);
    const y = tidy(() => network.forward(x));
    assert.deepEqual(y.shape, [2, channels, 32, 32]);
    const values = await y.toArray();
    assert.ok(values.every((v) => v > 0 && v < 1), "sigmoid output");
    // Evaluation mode uses the running statistics and gives the same shape.
    const z = tidy(() => network.eval().forward(x));
    assert.deepEqual(z.shape, [2, channels, 32, 32]);
    [x, y, z].forEach((t) => t.dispose());
    network.dispose();
  }
});

Deno.test("a gradient of the filtering objective reaches every parameter", async () => {
  await init();
  op.manualSeed(7);
  const network = new InpaintingNetwork({ channels: 3, inputSize: 32, width: 1 / 16 });
  const x = randomTensor([2, 3, 32, 32]);
  const mask = randomTensor([2, 1, 32, 32]);
  tidy(() => {
    const reconstruction = network.forward(x);
    filteringObjective({ reconstruction, clean: x, mask }).backward();
  });
  const parameters = [...network.namedParameters()];
  assert.equal(parameters.length, network.parameters().length);
  const gradients = await Promise.all(parameters.map(([, p]) => p.grad?.toArray()));
  const missing = parameters
    .filter((_, i) => !gradients[i] || !gradients[i]!.some((g) => g !== 0))
    .map(([name]) => name);
  assert.deepEqual(missing, [], "parameters without a gradient");
  assert.ok(gradients.every((g) => g!.every(Number.isFinite)));
  [x, mask].forEach((t) => t.dispose());
  network.dispose();
});

/** Smooth coloured stripes: an anomaly-free "texture" that a tiny network can learn. */
function stripes(size: number, phase: number): FloatImage {
  const data = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        data[(c * size + y) * size + x] = 0.5 + 0.35 * Math.sin((x + 2 * y) * 0.12 + phase + c);
      }
    }
  }
  return { width: size, height: size, channels: 3, data };
}

Deno.test("a tiny network lowers the filtering objective on a fixed corrupted batch", async () => {
  await init();
  op.manualSeed(8);
  const size = 32;
  const corruptions = [0, 1, 2, 3].map((i) =>
    corrupt(stripes(size, i), i, { patchSize: [0.3, 0.5], maskSmoothness: 1 })
  );
  const upload = (images: FloatImage[]) => {
    const batch = assembleBatch(images);
    return tensor(batch.data, [...batch.shape]);
  };
  const corrupted = upload(corruptions.map((c) => c.corrupted));
  const clean = upload(corruptions.map((c) => c.clean));
  const mask = upload(corruptions.map((c) => c.mask));
  const network = new InpaintingNetwork({ channels: 3, inputSize: size, width: 1 / 16 });
  const optimizer = new Adam(network.parameters(), { lr: 1e-2 });
  const losses: number[] = [];
  for (let step = 0; step < 20; step++) {
    const loss = tidy(() => {
      optimizer.zeroGrad();
      const reconstruction = network.forward(corrupted);
      const value = filteringObjective({ reconstruction, clean, mask });
      value.backward();
      optimizer.step();
      return value;
    });
    losses.push(await loss.item());
    loss.dispose();
  }
  const [first, last] = [losses[0], losses[losses.length - 1]];
  assert.ok(last < 0.85 * first, `the objective went from ${first} to ${last}: ${losses}`);
  [corrupted, clean, mask].forEach((t) => t.dispose());
  optimizer.dispose();
  network.dispose();
});

Deno.test("forward and backward time at the CPU preset's size (printed, not asserted)", async () => {
  await init();
  op.manualSeed(9);
  const [width, size, batch] = [0.25, 128, 2];
  const network = new InpaintingNetwork({ channels: 3, inputSize: size, width });
  const x = randomTensor([batch, 3, size, size]);
  const mask = randomTensor([batch, 1, size, size]);
  const step = async () => {
    const started = performance.now();
    const loss = tidy(() => {
      const value = filteringObjective({ reconstruction: network.forward(x), clean: x, mask });
      value.backward();
      return value;
    });
    assert.ok(Number.isFinite(await loss.item()));
    loss.dispose();
    return performance.now() - started;
  };
  await step(); // compiles the shaders
  const times = [await step(), await step()];
  const perBatch = Math.min(...times);
  console.log(
    `inpainting network, width ${width}, ${size}×${size}, batch ${batch}, ` +
      `${network.parameterCount()} parameters: forward+backward ${perBatch.toFixed(0)} ms per ` +
      `batch, ${(batch / (perBatch / 1000)).toFixed(2)} images/s`,
  );
  [x, mask].forEach((t) => t.dispose());
  network.dispose();
});

Deno.test("bad network settings and inputs are refused by name", async () => {
  await init();
  const cases: [InpaintingNetworkOptions, RegExp][] = [
    [{ channels: 2 }, /option channels: expected 1 or 3, got 2/],
    [{ inputSize: 30 }, /option inputSize: expected a positive multiple of 8, got 30/],
    [{ inputSize: 0 }, /option inputSize/],
    [{ width: 0 }, /option width: expected a multiplier in \(0, 4\], got 0/],
    [{ width: Number.NaN }, /option width/],
    [{ width: 5 }, /option width/],
    [{ sdcKernel: 4 }, /option sdcKernel: expected 3 or 5, got 4/],
  ];
  for (const [options, message] of cases) {
    assert.throws(
      () => new InpaintingNetwork(options),
      (error: unknown) => error instanceof InputError && message.test(error.message),
      JSON.stringify(options),
    );
  }
  const network = new InpaintingNetwork({ channels: 1, inputSize: 16, width: 1 / 16 });
  for (const shape of [[1, 3, 16, 16], [1, 1, 32, 32], [1, 1, 16, 8], [1, 16, 16]]) {
    const x = tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    assert.throws(() => network.forward(x), /InpaintingNetwork expects \[N, 1, 16, 16\], got/);
    x.dispose();
  }
  network.dispose();
});
