/**
 * Separable filters on NCHW tensors: Gaussian blur and box filter, used by SSIM and to smooth
 * anomaly maps. Borders are zero-padded; `normalizeBorder` rescales each output by the weight
 * that fell inside the image, so a constant image stays constant up to the edge.
 */

import { addGrad, empty, keep, noGrad, opResult, type Tensor, tidy } from "../tensor.ts";
import { bind, elementGrid, Params, run } from "./launch.ts";
import { fill, mul, reciprocal } from "./elementwise.ts";

const maxTaps = 64;

function dispatchPass(
  x: Tensor,
  out: Tensor,
  taps: readonly number[],
  radius: number,
  axis: 0 | 1,
): void {
  const [, , height, width] = x.shape;
  const params = new Params().u32(x.size).u32(height).u32(width).u32(taps.length).i32(radius)
    .u32(0).u32(0).u32(0);
  for (let i = 0; i < maxTaps; i++) params.f32(taps[i] ?? 0);
  run(x, {
    shader: "filter",
    constants: { AXIS: axis },
    params: params.bytes(),
    buffers: [bind(x), bind(out)],
    workgroups: elementGrid(x.size),
  });
}

/** One 1-D correlation pass along x (axis 0) or y (axis 1), differentiable. */
function filterPass(x: Tensor, taps: readonly number[], axis: 0 | 1): Tensor {
  const radius = Math.floor(taps.length / 2);
  const out = opResult(x.shape, [x], (grad) => {
    // The adjoint: reversed taps around the mirrored centre.
    const dx = empty(x.shape);
    dispatchPass(grad, dx, [...taps].reverse(), taps.length - 1 - radius, axis);
    addGrad(x, dx);
  });
  dispatchPass(x, out, taps, radius, axis);
  return out;
}

/** Options of the separable filters. */
export interface FilterOptions {
  /** Divide by the kernel weight inside the image at each pixel, so borders are not darkened. */
  normalizeBorder?: boolean;
}

/** Applies `tapsX` along x, then `tapsY` along y, to every plane of an NCHW tensor. */
export function separableFilter(
  x: Tensor,
  tapsX: readonly number[],
  tapsY: readonly number[],
  options: FilterOptions = {},
): Tensor {
  if (x.shape.length !== 4) throw new Error(`Filters expect NCHW input, got [${x.shape}]`);
  for (const taps of [tapsX, tapsY]) {
    if (taps.length === 0 || taps.length > maxTaps) {
      throw new Error(`A filter needs 1 to ${maxTaps} taps, got ${taps.length}`);
    }
  }
  const filtered = filterPass(filterPass(x, tapsX, 0), tapsY, 1);
  if (!options.normalizeBorder) return filtered;
  return mul(filtered, borderWeights(x, tapsX, tapsY));
}

// 1 / (the filter's weight inside the image) per pixel: the same for every image of a size, and
// SSIM asks for it five times a step, so it is computed once per size and kept.
const borderWeightCache = new Map<string, Tensor>();
const borderWeightCacheLimit = 16;

function borderWeights(x: Tensor, tapsX: readonly number[], tapsY: readonly number[]): Tensor {
  const key = `${x.shape[2]}x${x.shape[3]}:${tapsX.join(",")}:${tapsY.join(",")}`;
  const cached = borderWeightCache.get(key);
  if (cached && !cached.isDisposed && cached.gpu === x.gpu) return cached;
  if (borderWeightCache.size >= borderWeightCacheLimit) {
    const [oldestKey, oldest] = borderWeightCache.entries().next().value!;
    borderWeightCache.delete(oldestKey);
    oldest.dispose();
  }
  const weights = keep(noGrad(() =>
    tidy(() => {
      const ones = fill([1, 1, x.shape[2], x.shape[3]], 1);
      return reciprocal(filterPass(filterPass(ones, tapsX, 0), tapsY, 1));
    })
  ));
  borderWeightCache.set(key, weights);
  return weights;
}

/** Normalised Gaussian taps: `size` taps (odd) with standard deviation `sigma`. */
export function gaussianTaps(sigma: number, size: number = 2 * Math.ceil(3 * sigma) + 1): number[] {
  if (!(sigma > 0)) throw new Error(`Gaussian sigma must be positive, got ${sigma}`);
  if (!Number.isInteger(size) || size < 1 || size % 2 === 0) {
    throw new Error(`Gaussian window size must be a positive odd integer, got ${size}`);
  }
  const radius = (size - 1) / 2;
  const taps = Array.from(
    { length: size },
    (_, i) => Math.exp(-((i - radius) ** 2) / (2 * sigma ** 2)),
  );
  const total = taps.reduce((a, b) => a + b, 0);
  return taps.map((t) => t / total);
}

/** Gaussian blur of every plane of an NCHW tensor. */
export function gaussianBlur(
  x: Tensor,
  sigma: number,
  size?: number,
  options: FilterOptions = {},
): Tensor {
  const taps = gaussianTaps(sigma, size);
  return separableFilter(x, taps, taps, options);
}

/** Mean over a size×size window (odd size) around each pixel. */
export function boxFilter(x: Tensor, size: number, options: FilterOptions = {}): Tensor {
  if (!Number.isInteger(size) || size < 1 || size % 2 === 0) {
    throw new Error(`Box filter size must be a positive odd integer, got ${size}`);
  }
  const taps = new Array<number>(size).fill(1 / size);
  return separableFilter(x, taps, taps, options);
}
