/** Losses: mean squared error, mean absolute error, SSIM and binary cross-entropy with logits. */

import type { Tensor } from "../tensor.ts";
import {
  abs,
  add,
  addScalar,
  div,
  exp,
  log,
  mul,
  mulScalar,
  neg,
  relu,
  square,
  sub,
} from "./elementwise.ts";
import { mean } from "./reduce.ts";
import { gaussianTaps, separableFilter } from "./filter.ts";

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
 * Structural similarity (Wang et al. 2004) of two NCHW images with 1 or more channels, per pixel,
 * with a Gaussian window. Local statistics at the border use the part of the window inside the
 * image. Differentiable with respect to both inputs; 1 − mean is the SSIM loss.
 */
export function ssim(a: Tensor, b: Tensor, options: SsimOptions = {}): SsimResult {
  sameShape(a, b, "ssim");
  if (a.shape.length !== 4) throw new Error(`ssim expects NCHW images, got [${a.shape}]`);
  const taps = gaussianTaps(options.sigma ?? 1.5, options.windowSize ?? 11);
  const range = options.dataRange ?? 1;
  const c1 = ((options.k1 ?? 0.01) * range) ** 2;
  const c2 = ((options.k2 ?? 0.03) * range) ** 2;
  const blur = (t: Tensor) => separableFilter(t, taps, taps, { normalizeBorder: true });
  const muA = blur(a);
  const muB = blur(b);
  const muA2 = square(muA);
  const muB2 = square(muB);
  const muAB = mul(muA, muB);
  const varA = sub(blur(square(a)), muA2);
  const varB = sub(blur(square(b)), muB2);
  const covariance = sub(blur(mul(a, b)), muAB);
  const numerator = mul(addScalar(mulScalar(muAB, 2), c1), addScalar(mulScalar(covariance, 2), c2));
  const denominator = mul(addScalar(add(muA2, muB2), c1), addScalar(add(varA, varB), c2));
  const map = div(numerator, denominator);
  return { map, mean: mean(map) };
}
