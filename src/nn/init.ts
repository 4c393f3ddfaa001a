/** Weight initialisers, seeded through the random ops. */

import type { Shape, Tensor } from "../tensor/tensor.ts";
import { rand, randn, type RandomOptions } from "../tensor/ops.ts";

/** Fan-in and fan-out of a weight: [out, in, kh, kw] for convolutions, [out, in] for linear. */
export function fans(shape: Shape, transposed = false): { fanIn: number; fanOut: number } {
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1);
  const [a, b] = [shape[0], shape[1] ?? 1];
  // A transposed convolution stores [in, out/groups, kh, kw].
  const [out, inp] = transposed ? [b, a] : [a, b];
  return { fanIn: inp * receptive, fanOut: out * receptive };
}

/** He (Kaiming) normal: std = gain / √fanIn, with gain √(2 / (1 + slope²)) for leaky ReLU. */
export function heNormal(
  shape: Shape,
  slope = 0,
  options: RandomOptions & { transposed?: boolean } = {},
): Tensor {
  const { fanIn } = fans(shape, options.transposed);
  return randn(shape, 0, Math.sqrt(2 / (1 + slope * slope)) / Math.sqrt(fanIn), options);
}

/** Glorot (Xavier) uniform: U(−a, a) with a = √(6 / (fanIn + fanOut)). */
export function glorotUniform(
  shape: Shape,
  options: RandomOptions & { transposed?: boolean } = {},
): Tensor {
  const { fanIn, fanOut } = fans(shape, options.transposed);
  const bound = Math.sqrt(6 / (fanIn + fanOut));
  return rand(shape, -bound, bound, options);
}

/** Normal with the given standard deviation. */
export function normalInit(shape: Shape, std = 0.02, options: RandomOptions = {}): Tensor {
  return randn(shape, 0, std, options);
}
