/** Elementwise ops: arithmetic with broadcasting, scalar ops, activations and math functions. */

import { addGrad, empty, keep, opResult, type Shape, type Tensor } from "../tensor.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import { bind, contiguousStrides, elementGrid, notDifferentiable, run } from "./launch.ts";
import { sumToShape } from "./reduce.ts";

/** Functions of shaders/unary.wgsl, emitted there as OP_COPY, OP_NEG, …. */
const Unary = {
  copy: 0,
  neg: 1,
  relu: 2,
  leakyRelu: 3, // slope alpha
  sigmoid: 4,
  tanh: 5,
  exp: 6,
  log: 7,
  sqrt: 8,
  square: 9,
  abs: 10,
  affine: 11, // alpha · x + beta
  pow: 12, // x ^ alpha
  reciprocal: 13,
  sign: 14,
  fill: 15, // beta, whatever x is
  clamp: 16, // clamp(x, alpha, beta)
  quantize: 17, // to the 8-bit grid of scale alpha and zero point beta
} as const;

/** Functions of shaders/binary.wgsl, emitted there as OP_ADD, OP_SUB, …. */
const Binary = {
  add: 0,
  sub: 1,
  mul: 2,
  div: 3,
  max: 4,
  min: 5,
  // Gradients of unary functions: a is the incoming gradient, b the saved input or output.
  reluGrad: 6, // b = input
  leakyReluGrad: 7, // b = input, alpha = slope
  sigmoidGrad: 8, // b = output
  tanhGrad: 9, // b = output
  absGrad: 10, // b = input
  greater: 11, // 1 where a > b
} as const;

const UnaryParams = uniformStruct("UnaryParams", { n: "u32", alpha: "f32", beta: "f32" });

/** Shapes and strides hold up to 8 dimensions, as two vec4s. */
const BinaryParams = uniformStruct("BinaryParams", {
  n: "u32",
  rank: "u32",
  alpha: "f32",
  shape: "array<vec4u, 2>",
  a_strides: "array<vec4u, 2>",
  b_strides: "array<vec4u, 2>",
  // With BLOCKS, operand x reads element (i / x_inner) % x_count.
  a_inner: "u32",
  a_count: "u32",
  b_inner: "u32",
  b_count: "u32",
});

declareShader("unary", UnaryParams, wgslConstants(Unary, "OP_"));
declareShader("binary", BinaryParams, wgslConstants(Binary, "OP_"));

/** Writes f(x) into `out` (same size). */
function dispatchUnary(x: Tensor, out: Tensor, op: number, alpha = 0, beta = 0): void {
  run(x, {
    shader: "unary",
    constants: { OP: op },
    params: UnaryParams.pack({ n: out.size, alpha, beta }),
    buffers: [bind(x), bind(out)],
    // Four elements per thread.
    workgroups: elementGrid(Math.ceil(out.size / 4)),
  });
}

/** A unary op whose backward is `grad ↦ backward(grad, out)`. */
function unaryOp(
  x: Tensor,
  op: number,
  backward: ((grad: Tensor, out: Tensor) => Tensor) | null,
  alpha = 0,
  beta = 0,
): Tensor {
  const out: Tensor = opResult(
    x.shape,
    [x],
    backward ? (grad) => addGrad(x, backward(grad, out)) : notDifferentiable(`unary op ${op}`),
  );
  dispatchUnary(x, out, op, alpha, beta);
  return out;
}

/** The shape two operands broadcast to (NumPy rules), or an error naming both shapes. */
export function broadcastShapes(a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const shape: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`Shapes [${a}] and [${b}] do not broadcast (dimension ${i}: ${da} vs ${db})`);
    }
    shape.push(da === 1 ? db : da);
  }
  return shape;
}

/** Strides that read an operand of `shape` broadcast to `outShape` (0 along broadcast axes). */
function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const own = contiguousStrides(shape);
  const offset = outShape.length - shape.length;
  return outShape.map((_, d) => {
    const dim = d - offset;
    return dim < 0 || shape[dim] === 1 ? 0 : own[dim];
  });
}

/**
 * How an operand of `shape` broadcast to `outShape` is indexed when its axes of full size form one
 * run: element i of the output reads element (i / inner) % count. Null for other patterns.
 */
export function blockIndexing(
  shape: Shape,
  outShape: Shape,
): { inner: number; count: number } | null {
  const offset = outShape.length - shape.length;
  const full = outShape.map((d, i) => i >= offset && d > 1 && shape[i - offset] === d);
  const first = full.indexOf(true);
  if (first < 0) return { inner: 1, count: 1 };
  const last = full.lastIndexOf(true);
  // Every axis inside the run must be full (or of size 1, which changes nothing).
  for (let d = first; d <= last; d++) if (!full[d] && outShape[d] !== 1) return null;
  let inner = 1;
  for (let d = last + 1; d < outShape.length; d++) inner *= outShape[d];
  let count = 1;
  for (let d = first; d <= last; d++) count *= outShape[d];
  return { inner, count };
}

/** Writes f(a, b) with broadcasting into a new tensor (no graph). */
function dispatchBinary(a: Tensor, b: Tensor, op: number, alpha = 0, out?: Tensor): Tensor {
  const shape = broadcastShapes(a.shape, b.shape);
  const result = out ?? empty(shape);
  const contiguous = a.size === result.size && b.size === result.size;
  if (shape.length > 8) throw new Error(`At most 8 dimensions are supported, got [${shape}]`);
  const aBlock = blockIndexing(a.shape, shape);
  const bBlock = blockIndexing(b.shape, shape);
  const blocks = !contiguous && aBlock !== null && bBlock !== null;
  run(a, {
    shader: "binary",
    constants: { OP: op, CONTIGUOUS: contiguous, BLOCKS: blocks },
    params: BinaryParams.pack({
      n: result.size,
      rank: shape.length,
      alpha,
      shape,
      a_strides: broadcastStrides(a.shape, shape),
      b_strides: broadcastStrides(b.shape, shape),
      a_inner: aBlock?.inner ?? 1,
      a_count: aBlock?.count ?? 1,
      b_inner: bBlock?.inner ?? 1,
      b_count: bBlock?.count ?? 1,
    }),
    buffers: [bind(a), bind(b), bind(result)],
    // Four elements per thread: each thread owns one vec4 of the output.
    workgroups: elementGrid(Math.ceil(result.size / 4)),
  });
  return result;
}

/** A binary op with broadcasting; `backward` returns the gradients before un-broadcasting. */
function binaryOp(
  a: Tensor,
  b: Tensor,
  op: number,
  backward: (grad: Tensor) => [Tensor | null, Tensor | null],
): Tensor {
  const out = opResult(broadcastShapes(a.shape, b.shape), [a, b], (grad) => {
    const [ga, gb] = backward(grad);
    if (ga) addGrad(a, sumToShape(ga, a.shape));
    if (gb) addGrad(b, sumToShape(gb, b.shape));
  });
  dispatchBinary(a, b, op, 0, out);
  return out;
}

/** a + b, broadcasting. */
export function add(a: Tensor, b: Tensor): Tensor {
  return binaryOp(a, b, Binary.add, (g) => [g, g]);
}

/** a − b, broadcasting. */
export function sub(a: Tensor, b: Tensor): Tensor {
  return binaryOp(a, b, Binary.sub, (g) => [g, b.requiresGrad ? neg(g) : null]);
}

/** a · b elementwise, broadcasting. */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binaryOp(a, b, Binary.mul, (g) => [
    a.requiresGrad ? mul(g, b) : null,
    b.requiresGrad ? mul(g, a) : null,
  ]);
}

/** a / b elementwise, broadcasting. */
export function div(a: Tensor, b: Tensor): Tensor {
  return binaryOp(a, b, Binary.div, (g) => [
    a.requiresGrad ? div(g, b) : null,
    // d(a/b)/db = −a/b²
    b.requiresGrad ? neg(div(mul(g, a), square(b))) : null,
  ]);
}

/** Elementwise maximum (the gradient goes to the larger operand; ties go to a). */
export function maximum(a: Tensor, b: Tensor): Tensor {
  return binaryOp(a, b, Binary.max, (g) => {
    const bWins = dispatchBinary(b, a, Binary.greater);
    const aWins = affine(bWins, -1, 1);
    const grads: [Tensor | null, Tensor | null] = [
      a.requiresGrad ? mul(g, aWins) : null,
      b.requiresGrad ? mul(g, bWins) : null,
    ];
    aWins.dispose();
    bWins.dispose();
    return grads;
  });
}

/** Elementwise minimum (the gradient goes to the smaller operand; ties go to a). */
export function minimum(a: Tensor, b: Tensor): Tensor {
  return neg(maximum(neg(a), neg(b)));
}

/** 1 where a > b, else 0 (no gradient). */
export function greater(a: Tensor, b: Tensor): Tensor {
  const out = opResult(broadcastShapes(a.shape, b.shape), [a, b], notDifferentiable("greater"));
  dispatchBinary(a, b, Binary.greater, 0, out);
  return out;
}

/** A contiguous copy. */
export function copy(x: Tensor): Tensor {
  return unaryOp(x, Unary.copy, (g) => g);
}

/** −x. */
export function neg(x: Tensor): Tensor {
  return unaryOp(x, Unary.neg, (g) => neg(g));
}

/** α·x + β for scalars α, β. */
export function affine(x: Tensor, alpha: number, beta: number): Tensor {
  return unaryOp(x, Unary.affine, (g) => affine(g, alpha, 0), alpha, beta);
}

/** x + s for a scalar s. */
export function addScalar(x: Tensor, s: number): Tensor {
  return affine(x, 1, s);
}

/** x · s for a scalar s. */
export function mulScalar(x: Tensor, s: number): Tensor {
  return affine(x, s, 0);
}

/** x ^ p for a scalar p (x ≥ 0 unless p is an integer). */
export function powScalar(x: Tensor, p: number): Tensor {
  return unaryOp(x, Unary.pow, (g) => mul(g, mulScalar(powScalar(x, p - 1), p)), p);
}

/** max(x, 0). */
export function relu(x: Tensor): Tensor {
  return unaryOp(x, Unary.relu, (g) => dispatchBinary(g, x, Binary.reluGrad));
}

/** x for x > 0, slope·x otherwise. */
export function leakyRelu(x: Tensor, slope = 0.01): Tensor {
  return unaryOp(
    x,
    Unary.leakyRelu,
    (g) => dispatchBinary(g, x, Binary.leakyReluGrad, slope),
    slope,
  );
}

/** 1 / (1 + e^−x), computed without overflow. */
export function sigmoid(x: Tensor): Tensor {
  return unaryOp(x, Unary.sigmoid, (g, y) => dispatchBinary(g, y, Binary.sigmoidGrad));
}

/** tanh(x). */
export function tanh(x: Tensor): Tensor {
  return unaryOp(x, Unary.tanh, (g, y) => dispatchBinary(g, y, Binary.tanhGrad));
}

/** e^x. */
export function exp(x: Tensor): Tensor {
  return unaryOp(x, Unary.exp, (g, y) => mul(g, y));
}

/** Natural logarithm. */
export function log(x: Tensor): Tensor {
  return unaryOp(x, Unary.log, (g) => div(g, x));
}

/** Square root. */
export function sqrt(x: Tensor): Tensor {
  return unaryOp(x, Unary.sqrt, (g, y) => div(mulScalar(g, 0.5), y));
}

/** x². */
export function square(x: Tensor): Tensor {
  return unaryOp(x, Unary.square, (g) => mul(g, mulScalar(x, 2)));
}

/** |x| (gradient sign(x), 0 at 0). */
export function abs(x: Tensor): Tensor {
  return unaryOp(x, Unary.abs, (g) => dispatchBinary(g, x, Binary.absGrad));
}

/** 1 / x. */
export function reciprocal(x: Tensor): Tensor {
  return unaryOp(x, Unary.reciprocal, (g, y) => neg(mul(g, square(y))));
}

/** sign(x) (no gradient). */
export function sign(x: Tensor): Tensor {
  return unaryOp(x, Unary.sign, null);
}

/** x limited to [low, high]; the gradient passes where x is inside. */
export function clamp(x: Tensor, low: number, high: number): Tensor {
  return unaryOp(
    x,
    Unary.clamp,
    (g) => {
      const inside = clampMask(x, low, high);
      const result = mul(g, inside);
      inside.dispose();
      return result;
    },
    low,
    high,
  );
}

/**
 * x rounded to the 8-bit grid of a quantized model, real = scale·(q − zeroPoint) with integer
 * q ∈ [0, 255]: what a uint8 TFLite model stores between its layers. Inference only.
 */
export function fakeQuantize(x: Tensor, scale: number, zeroPoint: number): Tensor {
  if (!(scale > 0)) throw new Error(`fakeQuantize: scale must be positive, got ${scale}`);
  return unaryOp(x, Unary.quantize, null, scale, zeroPoint);
}

function clampMask(x: Tensor, low: number, high: number): Tensor {
  const lowT = fill([1], low);
  const highT = fill([1], high);
  const aboveLow = dispatchBinary(x, lowT, Binary.greater);
  const belowHigh = dispatchBinary(highT, x, Binary.greater);
  const mask = dispatchBinary(aboveLow, belowHigh, Binary.mul);
  for (const t of [lowT, highT, aboveLow, belowHigh]) t.dispose();
  return mask;
}

/** Overwrites every element of `out` with `value` (no graph). */
export function fillInto(out: Tensor, value: number): void {
  // The fill kernel ignores its input, but a buffer must be bound there and it may not alias the
  // output, so fills read a one-element placeholder kept with the device.
  const placeholder = out.gpu.cache.get("fill placeholder", () => keep(empty([1])));
  dispatchUnary(placeholder, out, Unary.fill, 0, value);
}

/** A tensor filled with `value`. */
export function fill(shape: Shape, value: number): Tensor {
  const out = empty(shape);
  fillInto(out, value);
  return out;
}

/** A tensor of zeros. */
export function zeros(shape: Shape): Tensor {
  return fill(shape, 0);
}

/** A tensor of ones. */
export function ones(shape: Shape): Tensor {
  return fill(shape, 1);
}

/** Zeros of another tensor's shape. */
export function zerosLike(x: Tensor): Tensor {
  return fill(x.shape, 0);
}
