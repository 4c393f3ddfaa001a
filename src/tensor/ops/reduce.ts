/** Reductions: sum, mean and max over all axes or chosen axes. */

import { addGrad, opResult, type Shape, type Tensor } from "../tensor.ts";
import { bind, contiguousStrides, elementGrid, notDifferentiable, Params, run } from "./launch.ts";
import { grid2d } from "../../gpu/kernel.ts";
import { expand, reshape } from "./shape.ts";
import { mulScalar } from "./elementwise.ts";

/** Axes to reduce: one axis, several, or all when omitted. Negative axes count from the end. */
export type Axes = number | readonly number[] | undefined;

/** Sorted, non-negative, unique axes; an error names a bad axis. */
export function normalizeAxes(axes: Axes, rank: number): number[] {
  const list = axes === undefined
    ? [...Array(rank).keys()]
    : typeof axes === "number"
    ? [axes]
    : [...axes];
  const result = new Set<number>();
  for (const axis of list) {
    const a = axis < 0 ? axis + rank : axis;
    if (!Number.isInteger(a) || a < 0 || a >= rank) {
      throw new Error(`Axis ${axis} is out of range for a tensor of rank ${rank}`);
    }
    result.add(a);
  }
  return [...result].sort((x, y) => x - y);
}

const SUM = 0;
const MAX = 1;

/** Reduces `axes` of x with sum or max, scaled by `scale`; the result keeps the other axes. */
function dispatchReduce(x: Tensor, axes: number[], op: number, scale: number, out: Tensor): void {
  const strides = contiguousStrides(x.shape);
  const kept = x.shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const keptShape = kept.map((d) => x.shape[d]);
  const reducedShape = axes.map((d) => x.shape[d]);
  const outCount = out.size;
  const reduceCount = reducedShape.reduce((p, d) => p * d, 1);
  // Trailing reduced axes are contiguous: the kernel can skip their index arithmetic.
  const inner = axes.every((axis, i) => axis === x.shape.length - axes.length + i);
  // Few elements per output: one thread per output beats a cooperative workgroup.
  const small = reduceCount <= 128 || (outCount >= 8192 && reduceCount <= 4096);
  if (kept.length > 8 || axes.length > 8) throw new Error(`At most 8 dimensions are supported`);
  run(x, {
    shader: "reduce",
    constants: { OP: op, INNER: inner, SMALL: small },
    params: new Params()
      .u32(outCount).u32(reduceCount).u32(kept.length).u32(axes.length)
      .f32(scale).u32(0).u32(0).u32(0)
      .u32x8(keptShape).u32x8(kept.map((d) => strides[d]))
      .u32x8(reducedShape).u32x8(axes.map((d) => strides[d]))
      .bytes(),
    buffers: [bind(x), bind(out)],
    workgroups: small ? elementGrid(outCount) : grid2d(outCount),
  });
}

function reducedShape(shape: Shape, axes: number[], keepDims: boolean): number[] {
  return keepDims
    ? shape.map((d, i) => (axes.includes(i) ? 1 : d))
    : shape.filter((_, i) => !axes.includes(i));
}

function sumWithScale(x: Tensor, axesArg: Axes, keepDims: boolean, mean: boolean): Tensor {
  const axes = normalizeAxes(axesArg, x.shape.length);
  const count = axes.reduce((p, d) => p * x.shape[d], 1);
  const scale = mean ? 1 / count : 1;
  const outShape = reducedShape(x.shape, axes, keepDims);
  const out = opResult(outShape, [x], (grad) => {
    const spread = expand(reshape(grad, reducedShape(x.shape, axes, true)), x.shape);
    if (scale === 1) return addGrad(x, spread);
    addGrad(x, mulScalar(spread, scale));
    spread.dispose();
  });
  dispatchReduce(x, axes, SUM, scale, out);
  return out;
}

/** Sum over `axes` (all when omitted). */
export function sum(x: Tensor, axes?: Axes, keepDims = false): Tensor {
  return sumWithScale(x, axes, keepDims, false);
}

/** Mean over `axes` (all when omitted). */
export function mean(x: Tensor, axes?: Axes, keepDims = false): Tensor {
  return sumWithScale(x, axes, keepDims, true);
}

/** Maximum over `axes` (all when omitted); not differentiable. */
export function max(x: Tensor, axes?: Axes, keepDims = false): Tensor {
  const normalized = normalizeAxes(axes, x.shape.length);
  const out = opResult(reducedShape(x.shape, normalized, keepDims), [x], notDifferentiable("max"));
  dispatchReduce(x, normalized, MAX, 1, out);
  return out;
}

/**
 * Sums a broadcast gradient back to the operand's shape: over leading axes the operand lacked
 * and over axes where it had size 1.
 */
export function sumToShape(grad: Tensor, shape: Shape): Tensor {
  if (grad.shape.length === shape.length && grad.shape.every((d, i) => d === shape[i])) return grad;
  const offset = grad.shape.length - shape.length;
  const axes: number[] = [];
  grad.shape.forEach((d, i) => {
    if (i < offset || (shape[i - offset] === 1 && d !== 1)) axes.push(i);
  });
  const reduced = sum(grad, axes, true);
  return reshape(reduced, shape);
}
