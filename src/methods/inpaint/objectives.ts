/**
 * The two training objectives of the self-supervised inpainting autoencoder (Bauer et al., 2022),
 * as differentiable functions of the network's reconstruction Y = f(X̂), built from the engine's
 * ops. X is the clean image, X̂ the corrupted input and M the corruption's blend mask
 * ({@link corrupt}).
 *
 * - (1) filtering: E(1 − M) + λ·E(M): the network must keep the intact part and repair the
 *   corrupted one, so at test time it removes what does not belong;
 * - (4) amplifying: E(1 − M) − λ·E(|X̂ − X|): it must keep the intact part and move away from
 *   the clean image where the input was changed, weighted by how much it was changed, so that
 *   anomalies come out exaggerated rather than repaired.
 *
 * E(W) = Σ W·(Y − X)² / Σ W is the squared error weighted by W, normalised by the weight's area.
 * Sums run over the whole batch (every image, channel and pixel), so each term is a per-element
 * mean whatever share of the batch the corruptions cover. A mask with one channel counts once per
 * image channel. An empty part (Σ W below {@link MIN_AREA}, e.g. M all 0 or all 1, or X̂ = X)
 * contributes 0 and no gradient, instead of 0/0: its weight's area counts as {@link MIN_AREA},
 * and its weighted sum is 0.
 *
 * @module
 */

import type { Tensor } from "../../tensor/tensor.ts";
import * as op from "../../tensor/ops.ts";

/** The objective a network trains with. */
export type ObjectiveKind = "filtering" | "amplifying";

/** Every {@link ObjectiveKind}, for option parsing and help texts. */
export const OBJECTIVE_KINDS: readonly ObjectiveKind[] = ["filtering", "amplifying"];

/** The paper's weight of the corrupted part. */
export const DEFAULT_LAMBDA = 0.5;

/**
 * The least area a weight counts as in the normalisation: far below one pixel, so it only ever
 * matters for an empty part, whose weighted sum is then 0 as well.
 */
export const MIN_AREA = 1e-6;

/** Largest finite f32, the open upper end of the area's clamp. */
const F32_MAX = 3.4028234663852886e38;

/** What an objective compares: all [N, C, H, W] but the mask, [N, 1, H, W] or [N, C, H, W]. */
export interface ObjectiveInputs {
  /** Y = f(X̂), the network's output; the gradient flows to it. */
  readonly reconstruction: Tensor;
  /** X, the clean image. */
  readonly clean: Tensor;
  /** X̂, the corrupted input (only the amplifying objective reads it). */
  readonly corrupted: Tensor;
  /** M, the corruption's blend mask in [0, 1]. */
  readonly mask: Tensor;
}

/** What the filtering objective compares: {@link ObjectiveInputs} without the corrupted input. */
export type FilteringInputs = Omit<ObjectiveInputs, "corrupted">;

/**
 * E(W) = Σ W·r² / max(Σ W over r's shape, {@link MIN_AREA}) for the squared residual `squared`;
 * `weight` broadcasts along whole axes of it (a one-channel mask over C channels).
 */
function weightedMeanSquare(squared: Tensor, weight: Tensor): Tensor {
  const broadcastCopies = squared.size / weight.size;
  const area = op.mulScalar(op.sum(weight), broadcastCopies);
  return op.div(op.sum(op.mul(squared, weight)), op.clamp(area, MIN_AREA, F32_MAX));
}

function checkShapes(inputs: FilteringInputs & { corrupted?: Tensor }, what: string): void {
  const expected = inputs.reconstruction.shape;
  const describe = (shape: readonly number[]) => `[${shape.join(", ")}]`;
  if (expected.length !== 4) {
    throw new Error(`${what}: reconstruction must be [N, C, H, W], got ${describe(expected)}`);
  }
  const named: [string, Tensor][] = [["clean", inputs.clean]];
  if (inputs.corrupted) named.push(["corrupted", inputs.corrupted]);
  for (const [name, t] of named) {
    if (t.shape.join() !== expected.join()) {
      throw new Error(
        `${what}: ${name} is ${describe(t.shape)}, expected the reconstruction's ` +
          describe(expected),
      );
    }
  }
  const [n, c, h, w] = expected;
  const mask = inputs.mask.shape;
  if (
    mask.length !== 4 || mask[0] !== n || (mask[1] !== 1 && mask[1] !== c) ||
    mask[2] !== h || mask[3] !== w
  ) {
    throw new Error(
      `${what}: mask is ${describe(mask)}, expected [${n}, 1, ${h}, ${w}] or ` +
        describe(expected),
    );
  }
}

function checkLambda(lambda: number, what: string): void {
  if (!(Number.isFinite(lambda) && lambda >= 0)) {
    throw new RangeError(`${what}: λ must be a finite number ≥ 0, got ${lambda}`);
  }
}

/**
 * Objective (1): E(1 − M) + λ·E(M) of the squared reconstruction error against the clean image.
 *
 * @param inputs reconstruction, clean image and mask (the corrupted input is not read)
 * @param lambda weight of the corrupted part (default 0.5)
 * @returns a scalar tensor
 */
export function filteringObjective(
  inputs: FilteringInputs,
  lambda = DEFAULT_LAMBDA,
): Tensor {
  const what = "filtering objective";
  checkShapes(inputs, what);
  checkLambda(lambda, what);
  const squared = op.square(op.sub(inputs.reconstruction, inputs.clean));
  const intact = weightedMeanSquare(squared, op.affine(inputs.mask, -1, 1));
  const repaired = weightedMeanSquare(squared, inputs.mask);
  return op.add(intact, op.mulScalar(repaired, lambda));
}

/**
 * Objective (4): E(1 − M) − λ·E(|X̂ − X|) of the squared reconstruction error against the clean
 * image; the second term's weight is per element (per channel).
 *
 * @param inputs reconstruction, clean image, corrupted input and mask
 * @param lambda weight of the corrupted part (default 0.5)
 * @returns a scalar tensor
 */
export function amplifyingObjective(inputs: ObjectiveInputs, lambda = DEFAULT_LAMBDA): Tensor {
  const what = "amplifying objective";
  checkShapes(inputs, what);
  checkLambda(lambda, what);
  const squared = op.square(op.sub(inputs.reconstruction, inputs.clean));
  const intact = weightedMeanSquare(squared, op.affine(inputs.mask, -1, 1));
  const changed = weightedMeanSquare(squared, op.abs(op.sub(inputs.corrupted, inputs.clean)));
  return op.sub(intact, op.mulScalar(changed, lambda));
}

/**
 * The objective named by `kind`.
 *
 * @param kind "filtering" (1) or "amplifying" (4)
 * @param inputs what the objective compares
 * @param lambda weight of the corrupted part (default 0.5)
 * @returns a scalar tensor
 */
export function inpaintingObjective(
  kind: ObjectiveKind,
  inputs: ObjectiveInputs,
  lambda = DEFAULT_LAMBDA,
): Tensor {
  switch (kind) {
    case "filtering":
      return filteringObjective(inputs, lambda);
    case "amplifying":
      return amplifyingObjective(inputs, lambda);
    default:
      throw new RangeError(
        `inpainting objective: expected one of ${OBJECTIVE_KINDS.join(", ")}, got ${kind}`,
      );
  }
}
