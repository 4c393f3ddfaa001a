/**
 * Features of the GMM texture model: a Gaussian image pyramid and, on each level, every pixel's
 * square neighbourhood as a vector, optionally randomly projected to fewer dimensions (the
 * compressed-sensing idea of Böttger & Ulrich 2016: random projections keep distances between
 * neighbourhoods, so the mixture needs far fewer covariance entries).
 *
 * @module
 */

import { avgPool2d } from "../../tensor/ops/pool.ts";
import { copy } from "../../tensor/ops/elementwise.ts";
import { gaussianBlur } from "../../tensor/ops/filter.ts";
import { empty, type Tensor, tensor, tidy } from "../../tensor/tensor.ts";
import { bind, elementGrid, run } from "../../tensor/ops/launch.ts";
import { conv2d } from "../../tensor/ops/conv.ts";
import { reshape, slice } from "../../tensor/ops/shape.ts";
import { Random } from "../../data/random.ts";
import { gmmConstants, MAX_FEATURE_DIM, PadParams } from "./mixture.ts";

/**
 * A Gaussian pyramid of a [1, 1, H, W] plane: level 0 is a copy of the input, each next level is
 * blurred (σ = 1, border-normalised) and halved by 2×2 averaging.
 */
export function gaussianPyramid(plane: Tensor, levels: number): Tensor[] {
  if (plane.shape.length !== 4 || plane.shape[0] !== 1 || plane.shape[1] !== 1) {
    throw new Error(`A pyramid needs a [1, 1, H, W] plane, got [${plane.shape}]`);
  }
  const pyramid: Tensor[] = [copy(plane)];
  for (let level = 1; level < levels; level++) {
    const previous = pyramid[level - 1];
    if (previous.shape[2] < 2 || previous.shape[3] < 2) {
      pyramid.forEach((t) => t.dispose());
      throw new Error(
        `A ${levels}-level pyramid does not fit an image of ${plane.shape[3]}×${plane.shape[2]}`,
      );
    }
    pyramid.push(tidy(() => avgPool2d(gaussianBlur(previous, 1, 5, { normalizeBorder: true }), 2)));
  }
  return pyramid;
}

/**
 * The projection applied to each flattened neighbourhood: the identity (no projection) when
 * `dim` equals the neighbourhood size, else a seeded Gaussian random matrix scaled by 1/√dim.
 *
 * @returns a row-major dim × patch² matrix
 */
export function neighbourhoodProjection(patch: number, dim: number, seed: number): Float32Array {
  const area = patch * patch;
  if (!Number.isInteger(dim) || dim < 1 || dim > Math.min(area, MAX_FEATURE_DIM)) {
    throw new Error(
      `The feature dimension must be 1 to ${
        Math.min(area, MAX_FEATURE_DIM)
      } for ${patch}×${patch} ` +
        `neighbourhoods, got ${dim}`,
    );
  }
  const matrix = new Float32Array(dim * area);
  if (dim === area) {
    for (let i = 0; i < dim; i++) matrix[i * area + i] = 1;
    return matrix;
  }
  const random = new Random(seed);
  const scale = 1 / Math.sqrt(dim);
  for (let i = 0; i < matrix.length; i++) matrix[i] = random.normal() * scale;
  return matrix;
}

/** Which pixels to take features from: a regular grid with a step and an origin. */
export interface PixelGrid {
  /** Step between sampled pixels along both axes (1 = every pixel). */
  stride: number;
  /** Column of the first sample, 0 ≤ offsetX < stride. */
  offsetX: number;
  /** Row of the first sample, 0 ≤ offsetY < stride. */
  offsetY: number;
}

/**
 * Neighbourhood features of the pixels of a grid on a [1, 1, H, W] plane (borders replicated):
 * [dim, N], feature-major, N = samples per row × rows in row-major pixel order. The projection of
 * every window is a valid convolution of the replicate-padded plane, so it runs on the GEMM
 * engine.
 *
 * @param plane the image level
 * @param projection dim × patch² matrix (see {@link neighbourhoodProjection}) on the GPU
 * @param patch neighbourhood side (odd)
 * @param grid pixels to sample; every pixel by default
 */
export function neighbourhoodFeatures(
  plane: Tensor,
  projection: Tensor,
  patch: number,
  grid: PixelGrid = { stride: 1, offsetX: 0, offsetY: 0 },
): Tensor {
  const [, , height, width] = plane.shape;
  if (!Number.isInteger(patch) || patch < 1 || patch % 2 === 0) {
    throw new Error(`The neighbourhood size must be an odd positive integer, got ${patch}`);
  }
  const area = patch * patch;
  if (projection.shape.length !== 2 || projection.shape[1] !== area) {
    throw new Error(`The projection must be [dim, ${area}], got [${projection.shape}]`);
  }
  const dim = projection.shape[0];
  const radius = (patch - 1) / 2;
  return tidy(() => {
    const padded = empty([1, 1, height + 2 * radius, width + 2 * radius]);
    run(plane, {
      shader: "gmm",
      entryPoint: "pad_replicate",
      constants: gmmConstants(dim, 1, false, radius),
      params: PadParams.pack({
        width,
        height,
        out_width: width + 2 * radius,
        out_height: height + 2 * radius,
      }),
      buffers: [bind(plane), bind(padded)],
      workgroups: elementGrid(padded.size),
    });
    const origin = grid.offsetX === 0 && grid.offsetY === 0 ? padded : slice(
      padded,
      [0, 0, grid.offsetY, grid.offsetX],
      [1, 1, height + 2 * radius - grid.offsetY, width + 2 * radius - grid.offsetX],
    );
    const windows = conv2d(origin, reshape(projection, [dim, 1, patch, patch]), undefined, {
      stride: grid.stride,
      padding: 0,
    });
    return reshape(windows, [dim, windows.shape[2] * windows.shape[3]]);
  });
}

/** Uploads a projection matrix as a [dim, patch²] tensor. */
export function projectionTensor(matrix: Float32Array, patch: number): Tensor {
  return tensor(matrix, [matrix.length / (patch * patch), patch * patch]);
}
