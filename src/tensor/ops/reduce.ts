/** Reductions: sum, mean and max over all axes or chosen axes. */

import { addGrad, opResult, type Shape, type Tensor } from "../tensor.ts";
import { bind, contiguousStrides, elementGrid, notDifferentiable, run } from "./launch.ts";
import { grid2d } from "../../gpu/kernel.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
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

/** Reductions of shaders/reduce.wgsl, emitted there as OP_SUM and OP_MAX. */
const Reduce = { sum: 0, max: 1 } as const;

/**
 * Output element o reads base(o) + offset(r) for r < reduce_count: base walks the kept axes,
 * offset the reduced ones (up to 8 each, as two vec4s). The result is multiplied by `scale`.
 */
const ReduceParams = uniformStruct("ReduceParams", {
  out_count: "u32",
  reduce_count: "u32",
  kept_rank: "u32",
  reduced_rank: "u32",
  scale: "f32",
  kept_shape: "array<vec4u, 2>",
  kept_strides: "array<vec4u, 2>",
  reduced_shape: "array<vec4u, 2>",
  reduced_strides: "array<vec4u, 2>",
});

declareShader("reduce", ReduceParams, wgslConstants(Reduce, "OP_"));

/**
 * Sizes and strides of a group of axes, with neighbours that are adjacent in memory merged into
 * one axis, so that the kernel's index arithmetic runs over as few axes as possible.
 */
function mergedAxes(
  shape: Shape,
  strides: number[],
  axes: number[],
): { sizes: number[]; strides: number[] } {
  const sizes: number[] = [];
  const merged: number[] = [];
  for (const axis of axes) {
    const last = sizes.length - 1;
    if (last >= 0 && merged[last] === strides[axis] * shape[axis]) {
      sizes[last] *= shape[axis];
      merged[last] = strides[axis];
    } else {
      sizes.push(shape[axis]);
      merged.push(strides[axis]);
    }
  }
  return { sizes, strides: merged };
}

/** Reduces `axes` of x with sum or max, scaled by `scale`; the result keeps the other axes. */
function dispatchReduce(x: Tensor, axes: number[], op: number, scale: number, out: Tensor): void {
  const strides = contiguousStrides(x.shape);
  const keptAxes = x.shape.map((_, d) => d).filter((d) => !axes.includes(d) && x.shape[d] !== 1);
  const kept = mergedAxes(x.shape, strides, keptAxes);
  const reduced = mergedAxes(x.shape, strides, axes.filter((d) => x.shape[d] !== 1));
  const outCount = out.size;
  const reduceCount = reduced.sizes.reduce((p, d) => p * d, 1);
  // Trailing reduced axes are contiguous: the kernel can skip their index arithmetic.
  const inner = reduced.sizes.length <= 1 && (reduced.strides[0] ?? 1) === 1;
  // Two axes (after merging) get straight-line arithmetic; a single one is the pair [1, n].
  const twoAxes = !inner && reduced.sizes.length <= 2;
  const reducedSizes = reduced.sizes.length === 1 ? [1, reduced.sizes[0]] : reduced.sizes;
  const reducedStrides = reduced.sizes.length === 1 ? [0, reduced.strides[0]] : reduced.strides;
  // Few elements per output: one thread per output beats a cooperative workgroup.
  const small = reduceCount <= 128 || (outCount >= 8192 && reduceCount <= 4096);
  if (kept.sizes.length > 8 || reduced.sizes.length > 8) {
    throw new Error(`At most 8 dimensions are supported`);
  }
  run(x, {
    shader: "reduce",
    constants: { OP: op, INNER: inner, SMALL: small, TWO_AXES: twoAxes },
    params: ReduceParams.pack({
      out_count: outCount,
      reduce_count: reduceCount,
      kept_rank: kept.sizes.length,
      reduced_rank: reducedSizes.length,
      scale,
      kept_shape: kept.sizes,
      kept_strides: kept.strides,
      reduced_shape: reducedSizes,
      reduced_strides: reducedStrides,
    }),
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
  dispatchReduce(x, axes, Reduce.sum, scale, out);
  return out;
}

/**
 * Sums `axes` of x into `out`, whose size is x's without them (its shape is not read); records
 * no gradient. For kernels that leave partial sums to add up.
 */
export function sumInto(x: Tensor, axes: number[], out: Tensor): void {
  dispatchReduce(x, axes, Reduce.sum, 1, out);
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
  dispatchReduce(x, normalized, Reduce.max, 1, out);
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
