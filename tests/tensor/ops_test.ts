/**
 * Every op's forward against a float64 CPU reference on awkward sizes, and its backward against
 * central finite differences of that reference on tiny shapes.
 */

import assert from "node:assert/strict";
import * as op from "../../src/tensor/ops.ts";
import { backward, init, shapeSize, type Tensor, tensor, tidy } from "../../src/tensor/tensor.ts";
import {
  binaryRef,
  checkOp,
  conv2dRef,
  convTranspose2dRef,
  filterRef,
  mapRef,
  matmulRef,
  type OpCase,
  poolRef,
  randomRef,
  type Ref,
  resizeRef,
  seededRandom,
  strides,
  sumRef,
} from "./reference.ts";

const random = seededRandom(7);
const input = (shape: number[], low = -1, high = 1): Ref => randomRef(shape, random, low, high);

async function expectOp(name: string, c: OpCase): Promise<void> {
  const result = await checkOp(c);
  assert.ok(
    result.forwardError <= (c.tolerance ?? 1e-4),
    `${name}: forward relative error ${result.forwardError}`,
  );
  result.gradErrors.forEach((error, i) => {
    assert.ok(error <= (c.gradTolerance ?? 2e-3), `${name}: gradient ${i} relative error ${error}`);
  });
}

/** A forward check on an awkward, larger shape plus a gradient check on a tiny one. */
function opTest(name: string, make: (shapeSet: "large" | "tiny") => OpCase): void {
  Deno.test(`${name} forward matches the float64 reference`, () =>
    expectOp(name, { ...make("large"), gradInputs: [] }));
  Deno.test(`${name} backward matches finite differences`, () => expectOp(name, make("tiny")));
}

const large = [3, 5, 7, 11]; // 1155 elements: several workgroups, none full
const tiny = [2, 3, 4];

const unaryCases: [string, (t: Tensor) => Tensor, (v: number) => number, number?, number?][] = [
  ["neg", op.neg, (v) => -v],
  ["relu", op.relu, (v) => Math.max(v, 0)],
  ["leakyRelu", (t) => op.leakyRelu(t, 0.2), (v) => (v > 0 ? v : 0.2 * v)],
  ["sigmoid", op.sigmoid, (v) => 1 / (1 + Math.exp(-v)), -6, 6],
  ["tanh", op.tanh, Math.tanh, -3, 3],
  ["exp", op.exp, Math.exp],
  ["log", op.log, Math.log, 0.2, 3],
  ["sqrt", op.sqrt, Math.sqrt, 0.2, 3],
  ["square", op.square, (v) => v * v],
  ["abs", op.abs, Math.abs],
  ["reciprocal", op.reciprocal, (v) => 1 / v, 0.5, 2],
  ["affine", (t) => op.affine(t, -1.5, 0.25), (v) => -1.5 * v + 0.25],
  ["powScalar", (t) => op.powScalar(t, 1.7), (v) => v ** 1.7, 0.2, 2],
  ["clamp", (t) => op.clamp(t, -0.5, 0.5), (v) => Math.min(Math.max(v, -0.5), 0.5)],
];

for (const [name, gpu, f, low, high] of unaryCases) {
  opTest(name, (s) => ({
    inputs: [input(s === "large" ? large : tiny, low ?? -1, high ?? 1)],
    gpu,
    ref: (x) => mapRef(x, f),
  }));
}

const binaryCases: [string, typeof op.add, (x: number, y: number) => number][] = [
  ["add", op.add, (x, y) => x + y],
  ["sub", op.sub, (x, y) => x - y],
  ["mul", op.mul, (x, y) => x * y],
  ["div", op.div, (x, y) => x / y],
  ["maximum", op.maximum, Math.max],
  ["minimum", op.minimum, Math.min],
];

for (const [name, gpu, f] of binaryCases) {
  // Same shapes, then broadcasting over batch and channel as layers use it.
  opTest(name, (s) => ({
    inputs: [input(s === "large" ? large : tiny), input(s === "large" ? large : tiny, 0.5, 1.5)],
    gpu,
    ref: (a, b) => binaryRef(a, b, f),
  }));
  opTest(`${name} with broadcasting`, (s) => ({
    inputs: s === "large"
      ? [input([3, 5, 7, 11]), input([1, 5, 1, 1], 0.5, 1.5)]
      : [input([2, 3, 2, 2]), input([3, 1, 1], 0.5, 1.5)],
    gpu,
    ref: (a, b) => binaryRef(a, b, f),
  }));
}

for (const [name, gpu, f] of binaryCases.slice(0, 3)) {
  // Broadcast axes on both sides of a full one: the general index path, not the block path.
  opTest(`${name} broadcasting around a middle axis`, (s) => ({
    inputs: s === "large"
      ? [input([3, 5, 7]), input([3, 1, 7])]
      : [input([2, 3, 2]), input([2, 1, 2])],
    gpu,
    ref: (a, b) => binaryRef(a, b, f),
  }));
}

opTest("sum over three separated axes of a 5-D tensor", (s) => ({
  inputs: [input(s === "large" ? [3, 4, 5, 6, 7] : [2, 2, 3, 2, 2])],
  gpu: (x) => op.sum(x, [0, 2, 4]),
  ref: (x) => sumRef(x, [0, 2, 4]),
}));

for (const axes of [[0], [1, 3], [2, 3], [0, 2, 3], [0, 1, 2, 3]]) {
  opTest(`sum over [${axes}]`, (s) => ({
    inputs: [input(s === "large" ? [3, 5, 17, 13] : [2, 3, 2, 3])],
    gpu: (x) => op.sum(x, axes),
    ref: (x) => sumRef(x, axes),
  }));
  opTest(`mean over [${axes}] keeping dims`, (s) => ({
    inputs: [input(s === "large" ? [3, 5, 17, 13] : [2, 3, 2, 3])],
    gpu: (x) => op.mean(x, axes, true),
    ref: (x) => sumRef(x, axes, true, true),
  }));
}

Deno.test("sum over 300k elements reduces exactly with one cooperative workgroup", async () => {
  const x = input([300007], 0, 1);
  const result = await checkOp({
    inputs: [x],
    gpu: (t) => op.sum(t),
    ref: (r) => sumRef(r, [0]),
    gradInputs: [],
  });
  assert.ok(result.forwardError < 1e-4, `error ${result.forwardError}`);
});

Deno.test("max over axes matches the reference and refuses gradients", async () => {
  const x = input([3, 5, 7]);
  const result = await checkOp({
    inputs: [x],
    gpu: (t) => op.max(t, [1]),
    ref: (r) => {
      const data = new Float64Array(21).fill(-Infinity);
      for (let a = 0; a < 3; a++) {
        for (let b = 0; b < 5; b++) {
          for (let c = 0; c < 7; c++) {
            data[a * 7 + c] = Math.max(data[a * 7 + c], r.data[(a * 5 + b) * 7 + c]);
          }
        }
      }
      return { data, shape: [3, 7] };
    },
    gradInputs: [],
  });
  // Only the rounding of the inputs to f32 separates the two.
  assert.ok(result.forwardError < 1e-6, `error ${result.forwardError}`);
  tidy(() => {
    const t = tensor([1, 5, 2], [3]);
    t.requiresGrad = true;
    const m = op.max(t);
    assert.throws(() => backward(m), /max is not differentiable/);
  });
});

opTest("matmul", (s) => ({
  inputs: s === "large" ? [input([67, 45]), input([45, 71])] : [input([3, 4]), input([4, 5])],
  gpu: op.matmul,
  ref: matmulRef,
}));
opTest("matmul with 4-aligned rows (vector stores)", (s) => ({
  inputs: s === "large" ? [input([37, 29]), input([29, 64])] : [input([3, 5]), input([5, 8])],
  gpu: op.matmul,
  ref: matmulRef,
}));
// Few outputs over a long k: the k loop is split into parts whose sums are added afterwards
// (kSplits in gemm.ts), the last part shorter than the others.
opTest("matmul with a long k (split into parts)", (s) => ({
  inputs: s === "large" ? [input([5, 5001]), input([5001, 6])] : [input([2, 9]), input([9, 3])],
  gpu: op.matmul,
  ref: matmulRef,
}));
opTest("batched matmul", (s) => ({
  inputs: s === "large"
    ? [input([3, 17, 33]), input([3, 33, 9])]
    : [input([2, 3, 4]), input([2, 4, 2])],
  gpu: op.matmul,
  ref: matmulRef,
}));
opTest("matmul with a shared right operand", (s) => ({
  inputs: s === "large" ? [input([3, 70, 5]), input([5, 3])] : [input([2, 3, 4]), input([4, 2])],
  gpu: op.matmul,
  ref: matmulRef,
}));

const convCases: [
  string,
  number[],
  number[],
  { stride?: number; padding?: number; dilation?: number; groups?: number },
][] = [
  ["plain 3×3", [2, 3, 9, 11], [5, 3, 3, 3], {}],
  ["4×4 stride 2 pad 1", [2, 3, 10, 9], [4, 3, 4, 4], { stride: 2, padding: 1 }],
  ["dilation 2", [1, 2, 11, 10], [3, 2, 3, 3], { dilation: 2, padding: 2 }],
  ["groups 2", [2, 4, 7, 7], [6, 2, 3, 3], { groups: 2, padding: 1 }],
  ["depthwise", [2, 3, 8, 7], [3, 1, 3, 3], { groups: 3, padding: 1 }],
];

for (const [name, xs, ws, options] of convCases) {
  opTest(`conv2d ${name}`, (s) => {
    const shrink = s === "tiny";
    const x = shrink ? [1, xs[1], 5, 4] : xs;
    return {
      inputs: [input(x), input(ws)],
      gpu: (a, b) => op.conv2d(a, b, undefined, options),
      ref: (a, b) => conv2dRef(a, b, options),
    };
  });
}

opTest("conv2d with 'same' padding and bias", () => ({
  inputs: [input([2, 3, 8, 7]), input([4, 3, 4, 4]), input([4])],
  gpu: (x, w, b) => op.conv2d(x, w, b, { stride: 2, padding: "same" }),
  ref: (x, w, b) => {
    // TensorFlow's "same": output ceil(8/2)×ceil(7/2) = 4×4, padding top 1, left 1 (extra at the end).
    const padded = padRef(x, 1, 1, 1, 2);
    const y = conv2dRef(padded, w, { stride: 2 });
    return binaryRef(y, { data: b.data, shape: [1, 4, 1, 1] }, (u, v) => u + v);
  },
}));

function padRef(x: Ref, top: number, bottom: number, left: number, right: number): Ref {
  const [n, c, h, w] = x.shape;
  const oh = h + top + bottom, ow = w + left + right;
  const data = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        data[(p * oh + y + top) * ow + xx + left] = x.data[(p * h + y) * w + xx];
      }
    }
  }
  return { data, shape: [n, c, oh, ow] };
}

const convTCases: [
  string,
  number[],
  number[],
  { stride?: number; padding?: number; outputPadding?: number; dilation?: number; groups?: number },
][] = [
  ["4×4 stride 2 pad 1", [2, 3, 5, 6], [3, 4, 4, 4], { stride: 2, padding: 1 }],
  ["3×3 stride 2 output padding 1", [1, 2, 4, 3], [2, 3, 3, 3], {
    stride: 2,
    padding: 1,
    outputPadding: 1,
  }],
  ["8×8 from 1×1", [2, 5, 1, 1], [5, 3, 8, 8], {}],
  ["groups 2 dilation 2", [1, 4, 4, 4], [4, 1, 3, 3], { groups: 2, dilation: 2 }],
];

for (const [name, xs, ws, options] of convTCases) {
  opTest(`convTranspose2d ${name}`, (s) => ({
    inputs: [input(s === "tiny" ? [1, ...xs.slice(1)] : xs), input(ws)],
    gpu: (a, b) => op.convTranspose2d(a, b, undefined, options),
    ref: (a, b) => convTranspose2dRef(a, b, options),
  }));
}

for (const [kind, gpu] of [["max", op.maxPool2d], ["avg", op.avgPool2d]] as const) {
  opTest(`${kind}Pool2d 3×3 stride 2 pad 1`, (s) => ({
    inputs: [input(s === "large" ? [2, 3, 13, 10] : [1, 2, 5, 4])],
    gpu: (x) => gpu(x, 3, { stride: 2, padding: 1 }),
    ref: (x) => poolRef(x, 3, 2, 1, kind),
  }));
  opTest(`${kind}Pool2d 2×2`, (s) => ({
    inputs: [input(s === "large" ? [2, 3, 12, 10] : [1, 2, 4, 4])],
    gpu: (x) => gpu(x, 2),
    ref: (x) => poolRef(x, 2, 2, 0, kind),
  }));
}

Deno.test("maxPool2d backward sends each gradient to its window's argmax over a large tensor", async () => {
  // 2×2 windows over 6 planes of 40×50: argmax indices up to 1999 within a plane. As f32 bit
  // patterns such small integers are subnormals, which some GPUs flush to zero; the kernel keeps
  // them as u32, and every window must route its gradient to its own winner.
  await init();
  const [planes, h, w] = [6, 40, 50];
  const values = new Float32Array(planes * h * w);
  const rng = seededRandom(11);
  for (let i = 0; i < values.length; i++) values[i] = rng();
  const upstream = Float32Array.from({ length: planes * (h / 2) * (w / 2) }, (_, i) => 1 + i);
  const [x, grad] = [tensor(values, [2, 3, h, w]), tensor(upstream, [2, 3, h / 2, w / 2])];
  x.requiresGrad = true;
  const out = op.maxPool2d(x, 2);
  backward(out, grad);
  const dx = await x.grad!.toArray();
  const expected = new Float32Array(values.length);
  for (let plane = 0; plane < planes; plane++) {
    for (let oy = 0; oy < h / 2; oy++) {
      for (let ox = 0; ox < w / 2; ox++) {
        let best = -Infinity, bestIndex = -1;
        for (let ky = 0; ky < 2; ky++) {
          for (let kx = 0; kx < 2; kx++) {
            const index = plane * h * w + (2 * oy + ky) * w + 2 * ox + kx;
            if (values[index] > best) [best, bestIndex] = [values[index], index];
          }
        }
        expected[bestIndex] = upstream[(plane * (h / 2) + oy) * (w / 2) + ox];
      }
    }
  }
  assert.deepEqual(dx, expected);
  for (const t of [x, grad, out]) t.dispose();
});

for (const mode of ["nearest", "bilinear"] as const) {
  for (const [label, size] of [["up", [13, 17]], ["down", [3, 4]]] as const) {
    opTest(`upsample ${mode} ${label}`, (s) => ({
      inputs: [input(s === "large" ? [2, 3, 7, 9] : [1, 2, 5, 6])],
      gpu: (x) => op.upsample(x, { size: [size[0], size[1]], mode }),
      ref: (x) => resizeRef(x, size[0], size[1], mode),
    }));
  }
}

opTest("gaussianBlur", (s) => ({
  inputs: [input(s === "large" ? [2, 3, 19, 23] : [1, 1, 6, 5])],
  gpu: (x) => op.gaussianBlur(x, 1.5, 11),
  ref: (x) => filterRef(x, op.gaussianTaps(1.5, 11)),
}));
opTest("gaussianBlur with border normalisation", (s) => ({
  inputs: [input(s === "large" ? [2, 3, 19, 23] : [1, 1, 6, 5])],
  gpu: (x) => op.gaussianBlur(x, 1.5, 11, { normalizeBorder: true }),
  ref: (x) => filterRef(x, op.gaussianTaps(1.5, 11), true),
}));
opTest("boxFilter", (s) => ({
  inputs: [input(s === "large" ? [2, 3, 19, 23] : [1, 1, 6, 5])],
  gpu: (x) => op.boxFilter(x, 5),
  ref: (x) => filterRef(x, new Array(5).fill(1 / 5)),
}));

// A reshape to another rank, with an inferred axis in the large case. Weighting the view by a second
// input of the new shape makes the forward check see the data order and the backward check see
// the gradient travel back through the view to the original shape.
opTest("reshape to another shape", (s) => {
  const [from, to, resolved] = s === "large"
    ? [[6, 35], [5, -1, 7], [5, 6, 7]]
    : [[2, 6], [3, 2, 2], [3, 2, 2]];
  return {
    inputs: [input(from), input(resolved)],
    gpu: (x, w) => op.mul(op.reshape(x, to), w),
    ref: (x, w) => binaryRef({ data: x.data, shape: resolved }, w, (a, b) => a * b),
  };
});

Deno.test("reshape keeps the data in row-major order and reshapes the gradient back", async () => {
  const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  x.requiresGrad = true;
  const view = op.reshape(x, [3, 1, 2]);
  assert.deepEqual(view.shape, [3, 1, 2]);
  assert.deepEqual(Array.from(await view.toArray()), [1, 2, 3, 4, 5, 6]);
  const weights = tensor([10, 20, 30, 40, 50, 60], [3, 1, 2]);
  backward(op.sum(op.mul(view, weights)));
  assert.deepEqual(x.grad!.shape, [2, 3]);
  assert.deepEqual(Array.from(await x.grad!.toArray()), [10, 20, 30, 40, 50, 60]);
  assert.throws(() => op.reshape(x, [4, 2]), /Cannot reshape \[2,3\] \(6 elements\) to \[4,2\]/);
});

opTest("permute", (s) => ({
  inputs: [input(s === "large" ? [3, 5, 7, 11] : [2, 3, 2])],
  gpu: (x) => op.permute(x, x.shape.length === 4 ? [2, 0, 3, 1] : [2, 0, 1]),
  ref: (x) => permuteRef(x, x.shape.length === 4 ? [2, 0, 3, 1] : [2, 0, 1]),
}));

function permuteRef(x: Ref, perm: number[]): Ref {
  const shape = perm.map((p) => x.shape[p]);
  const inStrides = strides(x.shape);
  const data = new Float64Array(x.data.length);
  for (let i = 0; i < data.length; i++) {
    let rest = i, source = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      const c = rest % shape[d];
      rest = Math.floor(rest / shape[d]);
      source += c * inStrides[perm[d]];
    }
    data[i] = x.data[source];
  }
  return { data, shape };
}

// Axes 2 and 3 stay together, so the copy runs over one merged axis (see mergeAxes in shape.ts).
opTest("permute that keeps the inner axes together", (s) => ({
  inputs: [input(s === "large" ? [3, 5, 7, 11] : [2, 3, 2, 2])],
  gpu: (x) => op.permute(x, [1, 0, 2, 3]),
  ref: (x) => permuteRef(x, [1, 0, 2, 3]),
}));

opTest("slice", (s) => ({
  inputs: [input(s === "large" ? [3, 5, 7, 11] : [2, 3, 4])],
  gpu: (x) => op.slice(x, [1, 1, 2], [1, 2, -1]),
  ref: (x) => sliceRef(x, [1, 1, 2], [1, 2, x.shape[2] - 2]),
}));

function sliceRef(x: Ref, starts: number[], sizes: number[]): Ref {
  const shape = x.shape.map((d, i) => sizes[i] ?? d);
  const inStrides = strides(x.shape);
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(size);
  for (let i = 0; i < size; i++) {
    let rest = i, source = 0;
    for (let d = shape.length - 1; d >= 0; d--) {
      const c = rest % shape[d];
      rest = Math.floor(rest / shape[d]);
      source += (c + (starts[d] ?? 0)) * inStrides[d];
    }
    data[i] = x.data[source];
  }
  return { data, shape };
}

opTest("pad", (s) => ({
  inputs: [input(s === "large" ? [2, 3, 7, 9] : [1, 2, 3, 2])],
  gpu: (x) => op.pad(x, [[0, 0], [0, 0], [1, 2], [2, 1]]),
  ref: (x) => padRef(x, 1, 2, 2, 1),
}));

opTest("concat along channels", (s) => ({
  inputs: s === "large"
    ? [input([2, 3, 5, 7]), input([2, 4, 5, 7])]
    : [input([1, 2, 2, 2]), input([1, 1, 2, 2])],
  gpu: (a, b) => op.concat([a, b], 1),
  ref: (a, b) => {
    const [n, ca, h, w] = a.shape;
    const cb = b.shape[1];
    const data = new Float64Array(n * (ca + cb) * h * w);
    const plane = h * w;
    for (let i = 0; i < n; i++) {
      data.set(a.data.subarray(i * ca * plane, (i + 1) * ca * plane), i * (ca + cb) * plane);
      data.set(b.data.subarray(i * cb * plane, (i + 1) * cb * plane), (i * (ca + cb) + ca) * plane);
    }
    return { data, shape: [n, ca + cb, h, w] };
  },
}));

// The backward pass of a mean: one value copied over every axis, merged into one.
opTest("expand of one value to an image", (s) => {
  const shape = s === "large" ? [3, 2, 17, 19] : [2, 1, 2, 3];
  return {
    inputs: [input([1, 1, 1, 1])],
    gpu: (x) => op.expand(x, shape),
    ref: (x) => ({ data: new Float64Array(shapeSize(shape)).fill(x.data[0]), shape }),
  };
});

opTest("expand", (s) => ({
  inputs: [input(s === "large" ? [5, 1, 7] : [2, 1, 3])],
  gpu: (x) => op.expand(x, [3, x.shape[0], 4, x.shape[2]]),
  ref: (x) =>
    binaryRef(
      {
        data: new Float64Array(3 * 4 * x.shape[0] * x.shape[2]),
        shape: [3, x.shape[0], 4, x.shape[2]],
      },
      x,
      (_, v) => v,
    ),
}));
