/** Batch normalisation over NCHW tensors, built from differentiable primitives. */

import { noGrad, type Tensor } from "../tensor.ts";
import { add, addScalar, affine, div, mul, sqrt, square, sub } from "./elementwise.ts";
import { mean } from "./reduce.ts";
import { reshape } from "./shape.ts";

/** Running statistics and options of {@link batchNorm2d}. */
export interface BatchNormState {
  /** Per-channel running mean, updated in place during training. */
  runningMean: Tensor;
  /** Per-channel running variance (unbiased), updated in place during training. */
  runningVar: Tensor;
  /** Whether to use batch statistics (and update the running ones) or the running ones. */
  training: boolean;
  /** Weight of the new batch in the running average (default 0.1, as PyTorch). */
  momentum?: number;
  /** Added to the variance (default 1e-5). */
  eps?: number;
}

/**
 * y = γ·(x − μ)/√(σ² + ε) + β per channel. In training μ and σ² are the batch's (biased
 * variance) and the running statistics move towards them; in evaluation the running ones are used.
 */
export function batchNorm2d(
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  state: BatchNormState,
): Tensor {
  if (x.shape.length !== 4) throw new Error(`batchNorm2d expects NCHW input, got [${x.shape}]`);
  const channels = x.shape[1];
  const perChannel = [1, channels, 1, 1];
  const eps = state.eps ?? 1e-5;
  let normalized: Tensor;
  if (state.training) {
    const mu = mean(x, [0, 2, 3], true);
    const centered = sub(x, mu);
    const variance = mean(square(centered), [0, 2, 3], true);
    normalized = div(centered, sqrt(addScalar(variance, eps)));
    const count = x.size / channels;
    const momentum = state.momentum ?? 0.1;
    noGrad(() => {
      const newMean = add(
        affine(state.runningMean, 1 - momentum, 0),
        affine(reshape(mu, [channels]), momentum, 0),
      );
      const unbiased = affine(
        reshape(variance, [channels]),
        momentum * count / Math.max(count - 1, 1),
        0,
      );
      const newVar = add(affine(state.runningVar, 1 - momentum, 0), unbiased);
      replaceContents(state.runningMean, newMean);
      replaceContents(state.runningVar, newVar);
    });
  } else {
    const mu = reshape(state.runningMean, perChannel);
    const std = sqrt(addScalar(reshape(state.runningVar, perChannel), eps));
    normalized = div(sub(x, mu), std);
  }
  if (gamma) normalized = mul(normalized, reshape(gamma, perChannel));
  if (beta) normalized = add(normalized, reshape(beta, perChannel));
  return normalized;
}

/** Copies `source` into `target`'s buffer (same size) and disposes `source`. */
function replaceContents(target: Tensor, source: Tensor): void {
  target.gpu.recorder.copy(source.buffer, 0, target.buffer, 0, target.bytes);
  source.dispose();
}
