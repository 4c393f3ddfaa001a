/**
 * Separable filters on NCHW tensors: Gaussian blur and box filter, used by SSIM and to smooth
 * anomaly maps. Borders are zero-padded; `normalizeBorder` rescales each output by the weight
 * that fell inside the image, so a constant image stays constant up to the edge.
 */

import { addGrad, empty, keep, noGrad, opResult, type Tensor, tidy } from "../tensor.ts";
import { bind, elementGrid, run } from "./launch.ts";
import { fill, mul, reciprocal } from "./elementwise.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";

/** The most taps a filter (and SSIM's window) may have. */
export const maxFilterTaps = 64;

/** The axis a pass runs along, emitted in shaders/filter.wgsl as AXIS_X and AXIS_Y. */
const FilterAxis = { x: 0, y: 1 } as const;
type FilterAxis = typeof FilterAxis[keyof typeof FilterAxis];

/** out[i] = Σ_t taps[t] · in[i + t − radius] along one axis of `height` × `width` planes. */
const FilterParams = uniformStruct("FilterParams", {
  n: "u32",
  height: "u32",
  width: "u32",
  tap_count: "u32",
  radius: "i32",
  taps: `array<vec4f, ${maxFilterTaps / 4}>`,
});

declareShader("filter", FilterParams, wgslConstants(FilterAxis, "AXIS_"));

function dispatchPass(
  x: Tensor,
  out: Tensor,
  taps: readonly number[],
  radius: number,
  axis: FilterAxis,
): void {
  const [, , height, width] = x.shape;
  run(x, {
    shader: "filter",
    constants: { AXIS: axis },
    params: FilterParams.pack({ n: x.size, height, width, tap_count: taps.length, radius, taps }),
    buffers: [bind(x), bind(out)],
    workgroups: elementGrid(x.size),
  });
}

/** One 1-D correlation pass along x (axis 0) or y (axis 1), differentiable. */
function filterPass(x: Tensor, taps: readonly number[], axis: FilterAxis): Tensor {
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
    if (taps.length === 0 || taps.length > maxFilterTaps) {
      throw new Error(`A filter needs 1 to ${maxFilterTaps} taps, got ${taps.length}`);
    }
  }
  const filtered = filterPass(filterPass(x, tapsX, FilterAxis.x), tapsY, FilterAxis.y);
  if (!options.normalizeBorder) return filtered;
  return mul(filtered, borderWeights(x, tapsX, tapsY));
}

/**
 * 1 / (the filter's weight inside the image) per pixel: the same for every image of a size, so
 * it is computed once per size and kept with the device (`gpu.cache`, freed by `gpu.destroy()`).
 * (SSIM's fused kernels, shaders/ssim.wgsl, compute the same weights themselves.)
 */
function borderWeights(x: Tensor, tapsX: readonly number[], tapsY: readonly number[]): Tensor {
  const key = `filter border weights ${x.shape[2]}x${x.shape[3]}:${tapsX}:${tapsY}`;
  return x.gpu.cache.get(key, () =>
    keep(noGrad(() =>
      tidy(() => {
        const ones = fill([1, 1, x.shape[2], x.shape[3]], 1);
        const blurred = filterPass(filterPass(ones, tapsX, FilterAxis.x), tapsY, FilterAxis.y);
        return reciprocal(blurred);
      })
    )));
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
