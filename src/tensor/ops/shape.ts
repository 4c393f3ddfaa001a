/** Shape ops: reshape (a view), permute, slice, pad, concat and broadcast, all via strided copies. */

import { addGrad, opResult, type Shape, shapeSize, type Tensor } from "../tensor.ts";
import { bind, contiguousStrides, elementGrid, run } from "./launch.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import { fill, fillInto } from "./elementwise.ts";
import { sumToShape } from "./reduce.ts";

/** A strided copy of `n` elements of a region of up to 8 dimensions (shapes as two vec4s). */
const CopyParams = uniformStruct("CopyParams", {
  n: "u32",
  src_offset: "u32",
  dst_offset: "u32",
  shape: "array<vec4u, 2>",
  src_strides: "array<vec4u, 2>",
  dst_strides: "array<vec4u, 2>",
});

declareShader("copy", CopyParams);

/** A view of the region `shape` of a tensor's storage: offset plus per-axis strides. */
interface StridedView {
  tensor: Tensor;
  offset: number;
  strides: readonly number[];
}

/**
 * The same region with fewer axes: axes of size 1 dropped, and each axis merged into the one
 * before it where both views step over the pair as over one axis. The kernel splits every
 * element's index with a division per axis, so fewer axes cost less (a scalar broadcast to an
 * image, the backward pass of a mean, becomes one axis instead of four).
 */
function mergeAxes(
  shape: Shape,
  fromStrides: readonly number[],
  toStrides: readonly number[],
): { shape: number[]; fromStrides: number[]; toStrides: number[] } {
  const merged = { shape: [] as number[], fromStrides: [] as number[], toStrides: [] as number[] };
  shape.forEach((size, d) => {
    if (size === 1) return;
    const last = merged.shape.length - 1;
    const contiguous = last >= 0 &&
      merged.fromStrides[last] === fromStrides[d] * size &&
      merged.toStrides[last] === toStrides[d] * size;
    if (contiguous) {
      merged.shape[last] *= size;
      merged.fromStrides[last] = fromStrides[d];
      merged.toStrides[last] = toStrides[d];
      return;
    }
    merged.shape.push(size);
    merged.fromStrides.push(fromStrides[d]);
    merged.toStrides.push(toStrides[d]);
  });
  return merged;
}

/** Copies every element of `shape` from one strided view to another. */
function stridedCopy(fullShape: Shape, from: StridedView, to: StridedView): void {
  const count = shapeSize(fullShape);
  if (count === 0) return;
  const { shape, fromStrides, toStrides } = mergeAxes(fullShape, from.strides, to.strides);
  if (shape.length > 8) throw new Error(`At most 8 dimensions are supported, got [${fullShape}]`);
  run(from.tensor, {
    shader: "copy",
    constants: { RANK: shape.length },
    params: CopyParams.pack({
      n: count,
      src_offset: from.offset,
      dst_offset: to.offset,
      shape,
      src_strides: fromStrides,
      dst_strides: toStrides,
    }),
    buffers: [bind(from.tensor), bind(to.tensor)],
    workgroups: elementGrid(count),
  });
}

function whole(t: Tensor): StridedView {
  return { tensor: t, offset: 0, strides: contiguousStrides(t.shape) };
}

/** The same data under another shape (no copy). One dimension may be −1 (inferred). */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const resolved = [...shape];
  const unknown = resolved.indexOf(-1);
  if (unknown >= 0) {
    const known = resolved.reduce((p, d, i) => (i === unknown ? p : p * d), 1);
    resolved[unknown] = known === 0 ? 0 : x.size / known;
  }
  if (shapeSize(resolved) !== x.size || resolved.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`Cannot reshape [${x.shape}] (${x.size} elements) to [${shape}]`);
  }
  return x.view(resolved, (grad) => addGrad(x, reshape(grad, x.shape)));
}

/** Reorders axes: output axis i is input axis perm[i]. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const rank = x.shape.length;
  if (perm.length !== rank || [...perm].sort((a, b) => a - b).some((a, i) => a !== i)) {
    throw new Error(`permute: [${perm}] is not a permutation of ${rank} axes`);
  }
  const inverse = new Array<number>(rank);
  perm.forEach((p, i) => (inverse[p] = i));
  const shape = perm.map((p) => x.shape[p]);
  const out = opResult(shape, [x], (grad) => addGrad(x, permute(grad, inverse)));
  const strides = contiguousStrides(x.shape);
  stridedCopy(shape, { tensor: x, offset: 0, strides: perm.map((p) => strides[p]) }, whole(out));
  return out;
}

/** Swaps two axes. */
export function transpose(x: Tensor, axis0 = -2, axis1 = -1): Tensor {
  const rank = x.shape.length;
  const a = axis0 < 0 ? axis0 + rank : axis0;
  const b = axis1 < 0 ? axis1 + rank : axis1;
  const perm = [...Array(rank).keys()];
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

/**
 * The block starting at `starts` with sizes `sizes` (−1 means "to the end"). Axes beyond the
 * given ones are taken whole.
 */
export function slice(x: Tensor, starts: readonly number[], sizes: readonly number[]): Tensor {
  const shape = x.shape.map((d, i) => {
    const start = starts[i] ?? 0;
    const size = sizes[i] === undefined || sizes[i] === -1 ? d - start : sizes[i];
    if (start < 0 || size < 0 || start + size > d) {
      throw new Error(`slice: [${start}, ${start + size}) is outside axis ${i} of size ${d}`);
    }
    return size;
  });
  const strides = contiguousStrides(x.shape);
  const offset = x.shape.reduce((o, _, i) => o + (starts[i] ?? 0) * strides[i], 0);
  const out = opResult(shape, [x], (grad) => {
    const full = fill(x.shape, 0);
    stridedCopy(shape, whole(grad), { tensor: full, offset, strides });
    addGrad(x, full);
  });
  stridedCopy(shape, { tensor: x, offset, strides }, whole(out));
  return out;
}

/** Pads with a constant: `pads[i] = [before, after]` for axis i (missing axes are not padded). */
export function pad(x: Tensor, pads: readonly (readonly [number, number])[], value = 0): Tensor {
  const shape = x.shape.map((d, i) => d + (pads[i]?.[0] ?? 0) + (pads[i]?.[1] ?? 0));
  const starts = x.shape.map((_, i) => pads[i]?.[0] ?? 0);
  if (starts.some((s, i) => s < 0 || (pads[i]?.[1] ?? 0) < 0)) {
    throw new Error(`pad: negative padding [${pads.map((p) => `[${p}]`)}]; use slice to crop`);
  }
  const out = opResult(shape, [x], (grad) => addGrad(x, slice(grad, starts, x.shape)));
  // Fill the border, then copy the input into the interior.
  fillInto(out, value);
  const strides = contiguousStrides(shape);
  const offset = starts.reduce((o, s, i) => o + s * strides[i], 0);
  stridedCopy(x.shape, whole(x), { tensor: out, offset, strides });
  return out;
}

/** Joins tensors along an axis; all other axes must match. */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new Error("concat needs at least one tensor");
  const rank = tensors[0].shape.length;
  const a = axis < 0 ? axis + rank : axis;
  for (const t of tensors) {
    if (t.shape.length !== rank || t.shape.some((d, i) => i !== a && d !== tensors[0].shape[i])) {
      throw new Error(
        `concat along axis ${axis}: shapes ${tensors.map((t) => `[${t.shape}]`).join(", ")} differ`,
      );
    }
  }
  const shape = [...tensors[0].shape];
  shape[a] = tensors.reduce((s, t) => s + t.shape[a], 0);
  const strides = contiguousStrides(shape);
  const starts: number[] = [];
  let position = 0;
  for (const t of tensors) {
    starts.push(position);
    position += t.shape[a];
  }
  const out = opResult(shape, tensors, (grad) => {
    tensors.forEach((t, i) => {
      if (!t.requiresGrad) return;
      const begin = shape.map((_, d) => (d === a ? starts[i] : 0));
      addGrad(t, slice(grad, begin, t.shape));
    });
  });
  tensors.forEach((t, i) => {
    stridedCopy(t.shape, whole(t), { tensor: out, offset: starts[i] * strides[a], strides });
  });
  return out;
}

/** Broadcasts to a larger shape (NumPy rules) by copying. */
export function expand(x: Tensor, shape: Shape): Tensor {
  const offset = shape.length - x.shape.length;
  const own = contiguousStrides(x.shape);
  const strides = shape.map((d, i) => {
    const dim = i - offset;
    if (dim < 0) return 0;
    if (x.shape[dim] === d) return own[dim];
    if (x.shape[dim] === 1) return 0;
    throw new Error(`Cannot expand [${x.shape}] to [${shape}]`);
  });
  const out = opResult(shape, [x], (grad) => addGrad(x, sumToShape(grad, x.shape)));
  stridedCopy(shape, { tensor: x, offset: 0, strides }, whole(out));
  return out;
}

/** Flattens all axes from `startAxis` on into one. */
export function flatten(x: Tensor, startAxis = 1): Tensor {
  return reshape(x, [...x.shape.slice(0, startAxis), -1]);
}
