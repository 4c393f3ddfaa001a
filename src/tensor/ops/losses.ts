/** Losses: mean squared error, mean absolute error, SSIM and binary cross-entropy with logits. */

import { addGrad, empty, opResult, type Shape, type Tensor } from "../tensor.ts";
import { abs, add, addScalar, exp, log, mul, neg, relu, square, sub } from "./elementwise.ts";
import { mean } from "./reduce.ts";
import { gaussianTaps, maxFilterTaps } from "./filter.ts";
import { bind, run } from "./launch.ts";
import { grid2d } from "../../gpu/kernel.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";

function sameShape(a: Tensor, b: Tensor, what: string): void {
  if (a.shape.join() !== b.shape.join()) {
    throw new Error(`${what}: shapes [${a.shape}] and [${b.shape}] differ`);
  }
}

/** Mean of (a − b)². */
export function mse(a: Tensor, b: Tensor): Tensor {
  sameShape(a, b, "mse");
  return mean(square(sub(a, b)));
}

/** Mean of |a − b|. */
export function l1(a: Tensor, b: Tensor): Tensor {
  sameShape(a, b, "l1");
  return mean(abs(sub(a, b)));
}

/** Mean binary cross-entropy between sigmoid(logits) and targets in [0, 1], without overflow. */
export function bceWithLogits(logits: Tensor, targets: Tensor): Tensor {
  sameShape(logits, targets, "bceWithLogits");
  // max(x, 0) − x·y + log(1 + e^−|x|)
  const softplusTail = log(addScalar(exp(neg(abs(logits))), 1));
  return mean(add(sub(relu(logits), mul(logits, targets)), softplusTail));
}

/** Options of {@link ssim}. */
export interface SsimOptions {
  /** Gaussian window size (default 11). */
  windowSize?: number;
  /** Gaussian window standard deviation (default 1.5). */
  sigma?: number;
  /** Stabiliser constants (defaults 0.01 and 0.03). */
  k1?: number;
  /** See k1. */
  k2?: number;
  /** Range of the pixel values (default 1). */
  dataRange?: number;
}

/** The per-pixel SSIM map and its mean. */
export interface SsimResult {
  /** SSIM at every pixel, NCHW like the inputs (one map per channel). */
  map: Tensor;
  /** Mean of the map: the usual scalar SSIM. */
  mean: Tensor;
}

/**
 * The workgroup tiles of shaders/ssim.wgsl, emitted there in SNAKE_CASE: TILE_LENGTH pixels along
 * the pass's axis by TILE_BREADTH across, each thread computing OUTPUTS_PER_THREAD consecutive
 * ones along the axis (the shader's sliding window is written for 4).
 */
const SsimTiles = {
  // A 128-pixel line is two tiles; even a 63-tap window's tile (with its margins) fits in the
  // 16 KiB of workgroup memory that every WebGPU device has.
  tileLength: 64,
  tileBreadth: 8,
  outputsPerThread: 4,
} as const;

/** The planes, the window's taps and SSIM's stabilisers, for every pass of shaders/ssim.wgsl. */
const SsimParams = uniformStruct("SsimParams", {
  planes: "u32",
  height: "u32",
  width: "u32",
  /** Tiles of this pass across and down a plane. */
  tiles_x: "u32",
  tiles_y: "u32",
  c1: "f32",
  c2: "f32",
  taps: `array<vec4f, ${maxFilterTaps / 4}>`,
});

declareShader("ssim", SsimParams, wgslConstants(SsimTiles));

/** The entry points of shaders/ssim.wgsl: those ending in `_x` filter along x, the others along y. */
type SsimPass = "moments_x" | "ssim_y" | "ssim_y_grad" | "grad_x" | "grad_y";

/** Geometry and constants of one ssim() call, shared by its forward and backward passes. */
interface SsimSetup {
  shape: Shape;
  taps: readonly number[];
  c1: number;
  c2: number;
}

/**
 * Records one pass of shaders/ssim.wgsl. Bindings, in the shader's order: image a, image b, the
 * map's gradient, four values per pixel in, four values per pixel out, and two planes out; an
 * entry point binds only those it uses.
 */
function ssimPass(
  setup: SsimSetup,
  pass: SsimPass,
  taps: readonly number[],
  buffers: (Tensor | null)[],
): void {
  const [n, c, height, width] = setup.shape;
  const alongX = pass.endsWith("_x");
  const tileWidth = alongX ? SsimTiles.tileLength : SsimTiles.tileBreadth;
  const tileRows = alongX ? SsimTiles.tileBreadth : SsimTiles.tileLength;
  const tilesX = Math.ceil(width / tileWidth);
  const tilesY = Math.ceil(height / tileRows);
  const anyTensor = buffers.find((t) => t !== null)!;
  run(anyTensor, {
    shader: "ssim",
    entryPoint: pass,
    constants: { RADIUS: (taps.length - 1) / 2 },
    params: SsimParams.pack({
      planes: n * c,
      height,
      width,
      tiles_x: tilesX,
      tiles_y: tilesY,
      c1: setup.c1,
      c2: setup.c2,
      taps,
    }),
    buffers: buffers.map((t) => (t ? bind(t) : null)),
    workgroups: grid2d(n * c * tilesX * tilesY),
  });
}

/**
 * Structural similarity (Wang et al. 2004) of two NCHW images with 1 or more channels, per pixel,
 * with a Gaussian window. Local statistics at the border use the part of the window inside the
 * image (zero padding, divided by the window's weight inside). Differentiable with respect to both
 * inputs, through the map and through its mean; 1 − mean is the SSIM loss.
 *
 * Fused: two kernels compute the map (and, when gradients are recorded, the map's derivatives
 * with respect to the local moments), two more compute both inputs' gradients; see
 * shaders/ssim.wgsl.
 */
export function ssim(a: Tensor, b: Tensor, options: SsimOptions = {}): SsimResult {
  sameShape(a, b, "ssim");
  if (a.shape.length !== 4) throw new Error(`ssim expects NCHW images, got [${a.shape}]`);
  const taps = gaussianTaps(options.sigma ?? 1.5, options.windowSize ?? 11);
  if (taps.length > maxFilterTaps) {
    throw new Error(`A filter needs 1 to ${maxFilterTaps} taps, got ${taps.length}`);
  }
  const range = options.dataRange ?? 1;
  const setup: SsimSetup = {
    shape: a.shape,
    taps,
    c1: ((options.k1 ?? 0.01) * range) ** 2,
    c2: ((options.k2 ?? 0.03) * range) ** 2,
  };
  // (a, b, a² + b², ab) filtered along x, per pixel.
  const alongX = empty([...a.shape, 4]);
  ssimPass(setup, "moments_x", taps, [a, b, null, null, alongX]);
  // r · ∂map/∂moments per pixel: only the backward pass reads them.
  const derivatives = empty([...a.shape, 4]);
  const map = opResult(a.shape, [a, b], (grad) => ssimBackward(a, b, grad, derivatives, setup));
  if (map.requiresGrad) {
    ssimPass(setup, "ssim_y_grad", taps, [null, null, null, alongX, derivatives, map]);
  } else {
    ssimPass(setup, "ssim_y", taps, [null, null, null, alongX, null, map]);
    derivatives.dispose();
  }
  alongX.dispose();
  return { map, mean: mean(map) };
}

/** Pushes the map's gradient to a and b: the transposed window applied to g · r · ∂map/∂moments. */
function ssimBackward(
  a: Tensor,
  b: Tensor,
  grad: Tensor,
  derivatives: Tensor,
  setup: SsimSetup,
): void {
  // The adjoint of a correlation is the correlation with the reversed taps (the Gaussian's are
  // symmetric, but nothing here relies on it).
  const reversed = [...setup.taps].reverse();
  const alongX = empty(derivatives.shape);
  ssimPass(setup, "grad_x", reversed, [null, null, grad, derivatives, alongX]);
  const gradA = empty(a.shape);
  const gradB = empty(b.shape);
  ssimPass(setup, "grad_y", reversed, [a, b, null, alongX, null, gradA, gradB]);
  alongX.dispose();
  // addGrad takes fresh gradients only for inputs that need them.
  if (a.requiresGrad) addGrad(a, gradA);
  else gradA.dispose();
  if (b.requiresGrad) addGrad(b, gradB);
  else gradB.dispose();
}
