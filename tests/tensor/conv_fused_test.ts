/**
 * Convolutions with a fused bias and activation (conv2d / convTranspose2d with `activation`):
 * forward against the float64 reference of activation(conv + bias) on awkward sizes, backward
 * against central finite differences for the input, the weight and the bias. Inputs with a
 * multiple of 4 channels take the implicit product (the input read as an image texture), others
 * the packed column matrix; input gradients and transposed convolutions with 4 or more output
 * channels take the rotated-kernel convolution (stride 1) or the phase products (stride 2, even
 * kernels), others the column matrix and col2im. Convolutions of one input channel (and so the
 * input gradients of transposed convolutions to one channel) take the direct kernel of
 * conv_thin.wgsl. All paths are covered.
 */

import assert from "node:assert/strict";
import * as op from "../../src/tensor/ops.ts";
import { empty, init, type Tensor, tidy, zeroGrad } from "../../src/tensor/tensor.ts";
import { gemm, GemmMode, packConvImage, releaseConvImage } from "../../src/tensor/ops/gemm.ts";
import {
  activateRef,
  type ActivationRef,
  addChannelBiasRef,
  conv2dRef,
  convTranspose2dRef,
  expectOp,
  type OpCase,
  padSameRef,
  randomRef,
  type Ref,
  seededRandom,
} from "./reference.ts";

const random = seededRandom(11);
const input = (shape: number[]): Ref => randomRef(shape, random);

type Activation = ActivationRef;

interface ConvCase {
  name: string;
  /** x shape for the forward check (large) and the gradient check (tiny). */
  x: [number[], number[]];
  w: number[];
  options: { stride?: number; padding?: number | "same"; dilation?: number; groups?: number };
  activation: Activation;
}

const leaky: Activation = { kind: "leakyRelu", slope: 0.2 };

const convCases: ConvCase[] = [
  {
    name: "3×3 pad 1, 4 channels (implicit), leaky ReLU, odd image",
    x: [[2, 4, 7, 9], [1, 4, 5, 3]],
    w: [5, 4, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "4×4 stride 2 'same', 8 channels (implicit), leaky ReLU",
    x: [[3, 8, 12, 10], [1, 8, 4, 4]],
    w: [6, 8, 4, 4],
    options: { stride: 2, padding: "same" },
    activation: leaky,
  },
  {
    name: "3×3 pad 1, 8 channels (implicit), rows a multiple of 4 pixels wide",
    x: [[2, 8, 6, 8], [1, 8, 3, 4]],
    w: [5, 8, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "4×4 stride 2 pad 1, 4 channels (implicit), rows a multiple of 4 pixels wide",
    x: [[2, 4, 10, 16], [1, 4, 4, 8]],
    w: [9, 4, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 pad 1, 8 output channels (input gradient as a rotated-kernel convolution)",
    x: [[2, 4, 7, 9], [1, 4, 4, 3]],
    w: [8, 4, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "4×4 'same' stride 1 (padding 1 top, 2 bottom), 4 channels in and out",
    x: [[2, 4, 6, 7], [1, 4, 4, 4]],
    w: [4, 4, 4, 4],
    options: { padding: "same" },
    activation: leaky,
  },
  {
    name: "5×5 pad 5 (over a vector of padding), 6 channels (implicit), rows 8 wide",
    x: [[2, 6, 5, 8], [1, 6, 3, 4]],
    w: [4, 6, 5, 5],
    options: { padding: 5 },
    activation: leaky,
  },
  {
    name: "2×2 stride 2 no padding, 5 channels (implicit), rows 12 wide, ReLU",
    x: [[2, 5, 6, 12], [1, 5, 2, 4]],
    w: [6, 5, 2, 2],
    options: { stride: 2 },
    activation: { kind: "relu" },
  },
  {
    name: "3×3 dilation 2 pad 1, 4 channels in and out, ReLU",
    x: [[1, 4, 9, 8], [1, 4, 5, 5]],
    w: [4, 4, 3, 3],
    options: { dilation: 2, padding: 1 },
    activation: { kind: "relu" },
  },
  {
    name: "4×4 stride 2 'same' on odd sizes, 8 output channels (input gradient by phases)",
    x: [[2, 4, 9, 7], [1, 4, 5, 3]],
    w: [8, 4, 4, 4],
    options: { stride: 2, padding: "same" },
    activation: leaky,
  },
  {
    name: "3×3 dilation 2 pad 2, 4 channels (implicit), ReLU",
    x: [[1, 4, 11, 10], [1, 4, 5, 5]],
    w: [3, 4, 3, 3],
    options: { dilation: 2, padding: 2 },
    activation: { kind: "relu" },
  },
  {
    name: "4×4 stride 2 pad 1, 3 channels (packed), leaky ReLU",
    x: [[2, 3, 10, 9], [1, 3, 6, 5]],
    w: [4, 3, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "groups 2 (packed), leaky ReLU",
    x: [[2, 4, 7, 7], [1, 4, 4, 4]],
    w: [6, 2, 3, 3],
    options: { groups: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 'same', 4 channels (implicit), bias only",
    x: [[2, 4, 6, 5], [1, 4, 4, 3]],
    w: [7, 4, 3, 3],
    options: { padding: "same" },
    activation: undefined,
  },
  {
    name: "3×3 pad 1, 8 channels to 16 (16×16 weight-gradient blocks, the last past the taps)",
    x: [[2, 8, 6, 8], [1, 8, 3, 4]],
    w: [16, 8, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "4×4 stride 2 pad 1, one channel (direct), rows of 16 output pixels, leaky ReLU",
    x: [[2, 1, 12, 32], [1, 1, 4, 16]],
    w: [20, 1, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 pad 1, one channel (direct) to 5, rows ending inside a thread's 8 pixels",
    x: [[2, 1, 7, 11], [1, 1, 4, 5]],
    w: [5, 1, 3, 3],
    options: { padding: 1 },
    activation: { kind: "relu" },
  },
  {
    name: "5×5 dilation 2 pad 3, one channel (direct), bias only",
    x: [[1, 1, 13, 19], [1, 1, 6, 7]],
    w: [17, 1, 5, 5],
    options: { dilation: 2, padding: 3 },
    activation: undefined,
  },
  {
    name: "7×7 pad 3, one channel (direct), rows 12 wide (packed a vector at a time), ReLU",
    x: [[2, 1, 6, 12], [1, 1, 4, 8]],
    w: [5, 1, 7, 7],
    options: { padding: 3 },
    activation: { kind: "relu" },
  },
  {
    name: "3×4 stride 3 pad 2, one channel (direct), leaky ReLU",
    x: [[2, 1, 10, 26], [1, 1, 5, 9]],
    w: [6, 1, 3, 4],
    options: { stride: 3, padding: 2 },
    activation: leaky,
  },
  {
    name: "6×3 pad 2, one channel (direct; dw in two blocks of kernel rows), leaky ReLU",
    x: [[2, 1, 9, 16], [1, 1, 7, 6]],
    w: [9, 1, 6, 3],
    options: { padding: 2 },
    activation: leaky,
  },
  {
    name: "7×7 valid on 7×7 images, 24 channels (few outputs: a part per kernel row), leaky ReLU",
    x: [[3, 24, 7, 7], [1, 24, 7, 7]],
    w: [6, 24, 7, 7],
    options: {},
    activation: leaky,
  },
  {
    name: "8×8 valid on an 8×8 image (one window: dx by the column matrix), leaky ReLU",
    x: [[2, 4, 8, 8], [1, 4, 8, 8]],
    w: [5, 4, 8, 8],
    options: {},
    activation: leaky,
  },
];

// The AE's latent layer: 100 outputs per image from an 8 × 8 kernel over 8 × 8 images, too few
// threads for the cores, so the product splits the kernel's 8 rows into 4 parts of 2 (forward
// only: finite differences over its 102,400 weights would take minutes).
Deno.test("fused conv2d 8×8 valid to 100 channels (kernel rows split in parts of 2): forward matches the float64 reference", () =>
  expectOp("latent", {
    ...conv2dCase({
      name: "latent",
      x: [[8, 16, 8, 8], [8, 16, 8, 8]],
      w: [100, 16, 8, 8],
      options: {},
      activation: leaky,
    }, 0),
    gradInputs: [],
  }));

function conv2dCase(c: ConvCase, shapeSet: 0 | 1): OpCase {
  return {
    inputs: [input(c.x[shapeSet]), input(c.w), input([c.w[0]])],
    gpu: (x: Tensor, w: Tensor, b: Tensor) =>
      op.conv2d(x, w, b, { ...c.options, activation: c.activation }),
    ref: (x: Ref, w: Ref, b: Ref) => {
      const { padding, ...rest } = c.options;
      const y = padding === "same"
        ? conv2dRef(padSameRef(x, c.w[2], c.options.stride ?? 1), w, rest)
        : conv2dRef(x, w, { ...rest, padding });
      return activateRef(addChannelBiasRef(y, b), c.activation);
    },
  };
}

for (const c of convCases) {
  Deno.test(`fused conv2d ${c.name}: forward matches the float64 reference`, () =>
    expectOp(c.name, { ...conv2dCase(c, 0), gradInputs: [] }));
  Deno.test(`fused conv2d ${c.name}: backward matches finite differences`, () =>
    expectOp(c.name, conv2dCase(c, 1)));
}

interface ConvTCase {
  name: string;
  x: [number[], number[]];
  w: number[];
  options: { stride?: number; padding?: number; outputPadding?: number; groups?: number };
  activation: Activation;
  /** Only the forward pass is checked (the backward's finite differences would be slow). */
  forwardOnly?: boolean;
}

const convTCases: ConvTCase[] = [
  {
    name: "4×4 stride 2 pad 1, leaky ReLU",
    x: [[2, 4, 5, 6], [1, 4, 3, 3]],
    w: [4, 3, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 stride 1 pad 1, 3 channels, ReLU",
    x: [[2, 3, 7, 5], [1, 3, 4, 3]],
    w: [3, 8, 3, 3],
    options: { padding: 1 },
    activation: { kind: "relu" },
  },
  {
    name: "3×3 stride 1 pad 1, 8 channels (a rotated-kernel convolution), leaky ReLU",
    x: [[2, 8, 5, 6], [1, 8, 3, 3]],
    w: [8, 4, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "2×2 stride 1 no padding, 4 channels, leaky ReLU",
    x: [[2, 4, 4, 7], [1, 4, 2, 3]],
    w: [4, 5, 2, 2],
    options: {},
    activation: leaky,
  },
  {
    name: "4×4 stride 2 pad 1 output padding 1 (phases of unequal size), leaky ReLU",
    x: [[2, 4, 3, 5], [1, 4, 2, 3]],
    w: [4, 4, 4, 4],
    options: { stride: 2, padding: 1, outputPadding: 1 },
    activation: leaky,
  },
  {
    name: "2×2 stride 2 (an upsampling), 8 channels, ReLU",
    x: [[2, 8, 3, 5], [1, 8, 2, 2]],
    w: [8, 4, 2, 2],
    options: { stride: 2 },
    activation: { kind: "relu" },
  },
  {
    name: "4×4 stride 2 pad 1, inputs 4 pixels wide (implicit weight gradient), leaky ReLU",
    x: [[2, 4, 3, 4], [1, 4, 2, 4]],
    w: [4, 4, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 stride 1 pad 1, 8 channels, inputs 4 pixels wide (dx and dw share dy's packing)",
    x: [[2, 8, 3, 8], [1, 8, 2, 4]],
    w: [8, 8, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "8×8 from a 1×1 input (the column matrix, not a convolution of padding), leaky ReLU",
    x: [[2, 8, 1, 1], [1, 8, 1, 1]],
    w: [8, 4, 8, 8],
    options: {},
    activation: leaky,
  },
  {
    name: "4×4 stride 2 pad 1 to one channel (dx by the direct kernel), leaky ReLU",
    x: [[2, 8, 6, 8], [1, 8, 3, 4]],
    w: [8, 1, 4, 4],
    options: { stride: 2, padding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 stride 1 pad 1 to one channel, 20 input channels, ReLU",
    x: [[2, 20, 5, 9], [1, 20, 3, 3]],
    w: [20, 1, 3, 3],
    options: { padding: 1 },
    activation: { kind: "relu" },
  },
  {
    name: "3×3 stride 2 output padding 1 to one channel, 6 input channels, rows of 10, leaky ReLU",
    x: [[2, 6, 4, 5], [1, 6, 2, 3]],
    w: [6, 1, 3, 3],
    options: { stride: 2, padding: 1, outputPadding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 pad 1 to one channel, rows of 8 (dy copied into the texture as it lies in memory)",
    x: [[2, 6, 5, 8], [1, 6, 3, 4]],
    w: [6, 1, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  },
  {
    name: "8×8 valid to one channel, rows of 4 (a stretch from two texels before its pixels)",
    x: [[2, 5, 6, 4], [1, 5, 2, 4]],
    w: [5, 1, 8, 8],
    options: {},
    activation: { kind: "relu" },
  },
  {
    name: "3×3 pad 2 to one channel, rows of 12 (a stretch starting on a texel)",
    x: [[2, 4, 6, 12], [1, 4, 3, 4]],
    w: [4, 1, 3, 3],
    options: { padding: 2 },
    activation: leaky,
  },
  {
    name: "3×3 stride 2 output padding 1 to one channel, rows of 4, bias only",
    x: [[2, 6, 4, 4], [1, 6, 2, 4]],
    w: [6, 1, 3, 3],
    options: { stride: 2, padding: 1, outputPadding: 1 },
    activation: undefined,
  },
  {
    // 208 channels (200 padded to 16) × 8 kernel rows × 2 texels = 53 KB of packed weight.
    name: "8×8 pad 3 to one channel, 200 input channels (a weight past workgroup memory), ReLU",
    x: [[1, 200, 5, 6], [1, 200, 2, 2]],
    w: [200, 1, 8, 8],
    options: { padding: 3 },
    activation: { kind: "relu" },
    forwardOnly: true,
  },
  {
    name: "4×4 stride 2 no padding, output padding 1 (rows no window of dy reaches), leaky ReLU",
    x: [[2, 8, 4, 6], [1, 8, 2, 3]],
    w: [8, 8, 4, 4],
    options: { stride: 2, outputPadding: 1 },
    activation: leaky,
  },
  {
    name: "3×3 stride 2 output padding 1, bias only",
    x: [[1, 8, 4, 3], [1, 8, 2, 2]],
    w: [8, 2, 3, 3],
    options: { stride: 2, padding: 1, outputPadding: 1 },
    activation: undefined,
  },
];

function convTCase(c: ConvTCase, shapeSet: 0 | 1): OpCase {
  const cout = c.w[1] * (c.options.groups ?? 1);
  return {
    inputs: [input(c.x[shapeSet]), input(c.w), input([cout])],
    gpu: (x: Tensor, w: Tensor, b: Tensor) =>
      op.convTranspose2d(x, w, b, { ...c.options, activation: c.activation }),
    ref: (x: Ref, w: Ref, b: Ref) =>
      activateRef(addChannelBiasRef(convTranspose2dRef(x, w, c.options), b), c.activation),
  };
}

for (const c of convTCases) {
  Deno.test(`fused convTranspose2d ${c.name}: forward matches the float64 reference`, () =>
    expectOp(c.name, { ...convTCase(c, 0), gradInputs: [] }));
  if (c.forwardOnly) continue;
  Deno.test(`fused convTranspose2d ${c.name}: backward matches finite differences`, () =>
    expectOp(c.name, convTCase(c, 1)));
}

// 128² output pixels per channel: the bias gradient sums each channel with 256 threads (see
// biasGradThreads in gemm.ts), where the small cases above use 64. Finite differences of the
// bias alone keep the check fast.
Deno.test("fused conv2d on 128² pixels: the bias gradient matches finite differences", () => {
  const c: ConvCase = {
    name: "3×3 pad 1 on 128², 4 channels to 2",
    x: [[1, 4, 128, 128], [1, 4, 128, 128]],
    w: [2, 4, 3, 3],
    options: { padding: 1 },
    activation: leaky,
  };
  return expectOp(c.name, { ...conv2dCase(c, 1), gradInputs: [2] });
});

// A one-channel image: the direct weight gradient (conv_thin.wgsl) sums 36 outputs over 3200
// pixels in 200 parts of two 8-pixel groups each, which sumInto adds up. Without an activation:
// over 12,800 outputs, the finite differences of a leaky ReLU cross its kink often enough to
// miss the tolerance by chance (the small cases above check the kernel through the activation).
Deno.test("fused conv2d of a one-channel 40² image: the weight gradient matches finite differences", () => {
  const c: ConvCase = {
    name: "3×3 pad 1 on a one-channel 40² image, to 4 channels",
    x: [[2, 1, 40, 40], [2, 1, 40, 40]],
    w: [4, 1, 3, 3],
    options: { padding: 1 },
    activation: undefined,
  };
  return expectOp(c.name, { ...conv2dCase(c, 1), gradInputs: [1] });
});

Deno.test("conv2d returns the packing of x kept for the backward pass to the pool", async () => {
  const gpu = await init();
  // 8 channels and rows of 8 pixels: the forward product packs x as an image, which the weight
  // gradient reads again.
  const x = op.rand([2, 8, 8, 8], -1, 1, { seed: 3 });
  const w = op.rand([4, 8, 3, 3], -1, 1, { seed: 4 });
  const b = op.rand([4], -1, 1, { seed: 5 });
  for (const t of [x, w, b]) t.requiresGrad = true;
  const step = (backpropagate: boolean) =>
    tidy(() => {
      const y = op.conv2d(x, w, b, { padding: 1, activation: leaky });
      if (backpropagate) op.sum(y).backward();
    });
  step(true);
  step(false);
  const allocated = gpu.textures.allocatedBytes;
  for (let i = 0; i < 4; i++) {
    step(false); // the packing goes when y is disposed
    step(true); // the backward pass releases it
    // An input made in the same scope is disposed before y; the packing still goes back.
    tidy(() => {
      op.conv2d(op.rand([2, 8, 8, 8], -1, 1, { seed: 9 }), w, b, { padding: 1 });
    });
  }
  assert.equal(
    gpu.textures.allocatedBytes,
    allocated,
    "no texture allocated after the first steps",
  );
  zeroGrad([x, w, b]);
  for (const t of [x, w, b]) t.dispose();
});

Deno.test("a product given a packed image or sums it cannot use throws", async () => {
  await init();
  const x = op.rand([1, 4, 4, 4], -1, 1, { seed: 6 });
  const other = op.rand([1, 4, 4, 4], -1, 1, { seed: 7 });
  const w = op.rand([4, 4, 3, 3], -1, 1, { seed: 8 });
  const y = empty([1, 4, 4, 4]);
  const g = op.conv2dGeometry(x.shape, w.shape, { padding: 1 });
  const image = packConvImage(x, g);
  const spec = { mode: GemmMode.convForward, M: 4, N: 16, K: 36, batch: 1, conv: g };
  const unpadded = op.conv2dGeometry(x.shape, w.shape, { padding: 0 });
  assert.throws(
    () => gemm(w, other, y, { ...spec, implicit: true, image }),
    /not packed for/,
  );
  assert.throws(
    () => gemm(w, x, y, { ...spec, N: 4, conv: unpadded, implicit: true, image }),
    /not packed for/,
  );
  assert.throws(() => gemm(w, x, y, { ...spec, image }), /Only an implicit product/);
  const sums = empty([4]);
  assert.throws(() => gemm(w, x, y, { ...spec, biasGradient: sums }), /packs B as an image/);
  assert.throws(
    () => gemm(w, x, y, { ...spec, implicit: true, image, biasGradient: sums }),
    /packs B as an image/,
  );
  sums.dispose();
  releaseConvImage(image);
  for (const t of [x, other, w, y]) t.dispose();
});

Deno.test("a fused conv2d equals leakyRelu(conv2d + bias) composed of separate ops", async () => {
  const [x, w, b] = [[2, 8, 9, 6], [5, 8, 3, 3], [5]].map((s) =>
    op.rand(s, -1, 1, { seed: s[0] + s.length })
  );
  const options = { stride: 2, padding: 1 };
  const fused = op.conv2d(x, w, b, { ...options, activation: { kind: "leakyRelu", slope: 0.1 } });
  const plain = op.leakyRelu(
    op.add(op.conv2d(x, w, undefined, options), op.reshape(b, [1, 5, 1, 1])),
    0.1,
  );
  const [f, p] = [await fused.toArray(), await plain.toArray()];
  for (let i = 0; i < p.length; i++) {
    assert.ok(Math.abs(f[i] - p[i]) <= 1e-5 * (1 + Math.abs(p[i])));
  }
  for (const t of [x, w, b, fused, plain]) t.dispose();
});

// Shapes large enough for threads of 8 columns (see columnsPerThread in gemm.ts): forward only,
// since finite differences would take too long; the 4-column paths' gradients are checked above.
const wideCases: [string, OpCase][] = [
  [
    "conv2d 3×3 pad 1, rows of 16 pixels",
    conv2dCase({
      name: "",
      x: [[8, 4, 16, 16], [8, 4, 16, 16]],
      w: [8, 4, 3, 3],
      options: { padding: 1 },
      activation: leaky,
    }, 0),
  ],
  [
    "conv2d 3×3 pad 1, rows of 20 pixels",
    conv2dCase({
      name: "",
      x: [[8, 8, 16, 20], [8, 8, 16, 20]],
      w: [6, 8, 3, 3],
      options: { padding: 1 },
      activation: { kind: "relu" },
    }, 0),
  ],
  [
    "convTranspose2d 4×4 stride 2 pad 1 (phases of 8×8)",
    convTCase({
      name: "",
      x: [[8, 4, 8, 8], [8, 4, 8, 8]],
      w: [4, 4, 4, 4],
      options: { stride: 2, padding: 1 },
      activation: leaky,
    }, 0),
  ],
];

for (const [name, c] of wideCases) {
  Deno.test(`fused ${name}: forward matches the float64 reference`, () =>
    expectOp(name, { ...c, gradInputs: [] }));
}

// Shapes whose products take 16 rows × 8 columns per thread (see rowsPerThread in gemm.ts),
// forward only. Built when their tests run, after all others, so that the others' random inputs
// stay as they were.
const blockCases: [string, () => OpCase][] = [
  [
    "conv2d 3×3 pad 1, 32 output channels (implicit, 16 rows × 16 columns per thread)",
    () =>
      conv2dCase({
        name: "",
        x: [[8, 16, 16, 16], [8, 16, 16, 16]],
        w: [32, 16, 3, 3],
        options: { padding: 1 },
        activation: leaky,
      }, 0),
  ],
  [
    "conv2d 3×3 pad 1, 3 channels to 32 (packed, 16 rows × 8 columns, odd column count)",
    () =>
      conv2dCase({
        name: "",
        x: [[3, 3, 31, 29], [3, 3, 31, 29]],
        w: [32, 3, 3, 3],
        options: { padding: 1 },
        activation: leaky,
      }, 0),
  ],
  [
    "conv2d 3×3 pad 1, 9 channels to 32 (packed, k = 81: 16 rows × 16 columns, odd column count)",
    () =>
      conv2dCase({
        name: "",
        x: [[3, 9, 31, 29], [3, 9, 31, 29]],
        w: [32, 9, 3, 3],
        options: { padding: 1 },
        activation: leaky,
      }, 0),
  ],
];

for (const [name, build] of blockCases) {
  Deno.test(`fused ${name}: forward matches the float64 reference`, () =>
    expectOp(name, { ...build(), gradInputs: [] }));
}
