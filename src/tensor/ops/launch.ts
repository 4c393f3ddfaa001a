/** Small helpers shared by the op modules: bindings, grids and the default strides. */

import { grid2d, launch, type LaunchSpec, type StorageBinding } from "../../gpu/kernel.ts";
import type { Shape, Tensor } from "../tensor.ts";

/** The storage binding of a tensor's data. */
export function bind(t: Tensor): StorageBinding {
  return { buffer: t.buffer, bytes: t.bytes };
}

/** Workgroups for one thread per element with 256-thread workgroups. */
export function elementGrid(count: number): [number, number] {
  return grid2d(Math.ceil(count / 256));
}

/** Records a dispatch on the GPU that `anyTensor` lives on. */
export function run(anyTensor: Tensor, spec: LaunchSpec): void {
  launch(anyTensor.gpu, spec);
}

/** Row-major strides of a contiguous tensor. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

/** A backward closure for results that have no gradient. */
export function notDifferentiable(name: string): () => never {
  return () => {
    throw new Error(`${name} is not differentiable; compute it under noGrad()`);
  };
}
