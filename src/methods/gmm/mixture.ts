/**
 * Gaussian mixture models with full covariances, fitted by EM on the GPU.
 *
 * The expensive parts run in shaders/gmm.wgsl: the E-step (every sample's log-density under every
 * component, combined with log-sum-exp) and the M-step's sums. Only the sufficient statistics,
 * K × (1 + d + d(d+1)/2) numbers, come back each iteration; the CPU turns them into parameters in
 * float64 and factors the covariances (Cholesky), which is cheap for d ≤ 64.
 *
 * @module
 */

import { concat, slice } from "../../tensor/ops/shape.ts";
import { sum } from "../../tensor/ops/reduce.ts";
import { empty, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import { bind, elementGrid, run } from "../../tensor/ops/launch.ts";
import { matmul } from "../../tensor/ops/linalg.ts";
import { Random } from "../../data/random.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";

/** The uniform block of gmm.wgsl's loglik and weighted: the number of samples N. */
const SampleCountParams = uniformStruct("SampleCountParams", { samples: "u32" });

/** The uniform block of gmm.wgsl's pad_replicate: a plane and its padded size. */
export const PadParams = uniformStruct("PadParams", {
  width: "u32",
  height: "u32",
  out_width: "u32",
  out_height: "u32",
});

declareShader("gmm", SampleCountParams, PadParams);

/** A Gaussian mixture in float64: K components in d dimensions. */
export interface GaussianMixture {
  /** Dimension d of the samples. */
  dim: number;
  /** Number of components K. */
  components: number;
  /** Mixing weights π_k (K, summing to 1). */
  weights: Float64Array;
  /** Means, K × d row-major. */
  means: Float64Array;
  /** Full covariances, K × d × d row-major (symmetric, regularised). */
  covariances: Float64Array;
}

/** The most dimensions the kernels' private arrays hold. */
export const MAX_FEATURE_DIM = 64;
/** The most components the E-step kernel holds. */
export const MAX_COMPONENTS = 16;

const LOG_2PI = Math.log(2 * Math.PI);

/**
 * Cholesky factor L (lower triangular, Σ = L Lᵀ) of a d×d symmetric matrix, in float64.
 *
 * @returns L, or null when the matrix is not positive definite
 */
export function choleskyLower(matrix: Float64Array, dim: number): Float64Array | null {
  const lower = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let j = 0; j <= i; j++) {
      let value = matrix[i * dim + j];
      for (let k = 0; k < j; k++) value -= lower[i * dim + k] * lower[j * dim + k];
      if (i === j) {
        if (!(value > 0)) return null;
        lower[i * dim + i] = Math.sqrt(value);
      } else {
        lower[i * dim + j] = value / lower[j * dim + j];
      }
    }
  }
  return lower;
}

/** Inverse of a lower-triangular d×d matrix (itself lower triangular), by forward substitution. */
export function invertLowerTriangular(lower: Float64Array, dim: number): Float64Array {
  const inverse = new Float64Array(dim * dim);
  for (let column = 0; column < dim; column++) {
    inverse[column * dim + column] = 1 / lower[column * dim + column];
    for (let i = column + 1; i < dim; i++) {
      let value = 0;
      for (let k = column; k < i; k++) value -= lower[i * dim + k] * inverse[k * dim + column];
      inverse[i * dim + column] = value / lower[i * dim + i];
    }
  }
  return inverse;
}

/**
 * Cholesky factor of `matrix`, adding growing multiples of the identity until it is positive
 * definite; a covariance of rank < d (flat image regions) then still yields a usable density.
 */
function robustCholesky(matrix: Float64Array, dim: number): Float64Array {
  let trace = 0;
  for (let i = 0; i < dim; i++) trace += matrix[i * dim + i];
  let jitter = Math.max(1e-12, (Math.abs(trace) / dim) * 1e-9);
  const work = matrix.slice();
  for (let attempt = 0; attempt < 40; attempt++) {
    const lower = choleskyLower(work, dim);
    if (lower) return lower;
    for (let i = 0; i < dim; i++) work[i * dim + i] = matrix[i * dim + i] + jitter;
    jitter *= 10;
  }
  throw new Error("A mixture covariance stayed singular after regularisation (NaN in the data?)");
}

/** A mixture's parameters in the form the E-step wants, on the GPU. */
export interface MixtureOnGpu {
  /** The mixture it was made from. */
  readonly mixture: GaussianMixture;
  /** The whitening matrices W_k = L_k⁻¹ stacked: [K·d, d]. */
  readonly whiten: Tensor;
  /** b_k = W_k μ_k stacked: [K·d]. */
  readonly offsets: Tensor;
  /** log π_k − ½(d log 2π + log |Σ_k|): [K]. */
  readonly logConst: Tensor;
  /** Frees the tensors. */
  dispose(): void;
}

/** Factors the covariances on the CPU (float64) and uploads what the E-step needs. */
export function uploadMixture(mixture: GaussianMixture): MixtureOnGpu {
  const { dim, components } = mixture;
  checkMixtureSize(dim, components);
  const whiten = new Float32Array(components * dim * dim);
  const offsets = new Float32Array(components * dim);
  const logConst = new Float32Array(components);
  for (let k = 0; k < components; k++) {
    const covariance = mixture.covariances.subarray(k * dim * dim, (k + 1) * dim * dim);
    const lower = robustCholesky(covariance, dim);
    const inverse = invertLowerTriangular(lower, dim);
    whiten.set(inverse, k * dim * dim);
    for (let i = 0; i < dim; i++) {
      let value = 0;
      for (let j = 0; j <= i; j++) value += inverse[i * dim + j] * mixture.means[k * dim + j];
      offsets[k * dim + i] = value;
    }
    let logDet = 0;
    for (let i = 0; i < dim; i++) logDet += 2 * Math.log(lower[i * dim + i]);
    const weight = Math.max(mixture.weights[k], 1e-300);
    logConst[k] = Math.log(weight) - 0.5 * (dim * LOG_2PI + logDet);
  }
  const whitenTensor = tensor(whiten, [components * dim, dim]);
  const offsetsTensor = tensor(offsets, [components * dim]);
  const logConstTensor = tensor(logConst, [components]);
  return {
    mixture,
    whiten: whitenTensor,
    offsets: offsetsTensor,
    logConst: logConstTensor,
    dispose() {
      whitenTensor.dispose();
      offsetsTensor.dispose();
      logConstTensor.dispose();
    },
  };
}

function checkMixtureSize(dim: number, components: number): void {
  if (!Number.isInteger(dim) || dim < 1 || dim > MAX_FEATURE_DIM) {
    throw new Error(`Mixture dimension must be 1 to ${MAX_FEATURE_DIM}, got ${dim}`);
  }
  if (!Number.isInteger(components) || components < 1 || components > MAX_COMPONENTS) {
    throw new Error(`Mixture components must be 1 to ${MAX_COMPONENTS}, got ${components}`);
  }
}

/** The result of {@link mixtureLogLikelihood}. */
export interface EStepResult {
  /** log p(x_n) per sample, [N]; always finite. */
  logLikelihood: Tensor;
  /** Responsibilities p(k | x_n), [K, N], when asked for. */
  responsibilities: Tensor | null;
}

/**
 * The E-step on the GPU: every sample's log-likelihood under the mixture (log-sum-exp over the
 * components) and, optionally, the responsibilities. The whitening Z = W·X is one GEMM; a kernel
 * then forms the squared norms and the log-sum-exp.
 *
 * @param samples [d, N] samples, feature-major
 * @param mixture the uploaded mixture
 * @param withResponsibilities also write the [K, N] responsibilities
 * @param maxColumns samples per chunk (default: what fits one storage binding)
 */
export function mixtureLogLikelihood(
  samples: Tensor,
  mixture: MixtureOnGpu,
  withResponsibilities = false,
  maxColumns?: number,
): EStepResult {
  const { dim, components } = mixture.mixture;
  if (samples.shape.length !== 2 || samples.shape[0] !== dim) {
    throw new Error(`The E-step expects samples of shape [${dim}, N], got [${samples.shape}]`);
  }
  const count = samples.shape[1];
  // The whitened samples are K·d values per sample; split a large image into column chunks so
  // that no intermediate exceeds one storage binding of the device.
  const columns = maxColumns ??
    Math.max(1, Math.floor(samples.gpu.maxBindingBytes / 8 / (components * dim)));
  if (count > columns) return chunkedLogLikelihood(samples, mixture, withResponsibilities, columns);
  const logLikelihood = empty([count]);
  const responsibilities = withResponsibilities ? empty([components, count]) : null;
  tidy(() => {
    const whitened = matmul(mixture.whiten, samples);
    // The layout always has the binding; a one-element stand-in is never written then.
    const target = responsibilities ?? empty([1]);
    run(samples, {
      shader: "gmm",
      entryPoint: "loglik",
      constants: gmmConstants(dim, components, withResponsibilities),
      params: SampleCountParams.pack({ samples: count }),
      buffers: [
        bind(whitened),
        bind(mixture.offsets),
        bind(mixture.logConst),
        bind(logLikelihood),
        bind(target),
      ],
      workgroups: elementGrid(count),
    });
  });
  return { logLikelihood, responsibilities };
}

function chunkedLogLikelihood(
  samples: Tensor,
  mixture: MixtureOnGpu,
  withResponsibilities: boolean,
  columns: number,
): EStepResult {
  const [dim, count] = samples.shape;
  const parts: EStepResult[] = [];
  for (let start = 0; start < count; start += columns) {
    const chunk = slice(samples, [0, start], [dim, Math.min(columns, count - start)]);
    parts.push(mixtureLogLikelihood(chunk, mixture, withResponsibilities, columns));
    chunk.dispose();
  }
  const logLikelihood = concat(parts.map((p) => p.logLikelihood), 0);
  const responsibilities = withResponsibilities
    ? concat(parts.map((p) => p.responsibilities!), 1)
    : null;
  for (const part of parts) {
    part.logLikelihood.dispose();
    part.responsibilities?.dispose();
  }
  return { logLikelihood, responsibilities };
}

/** The compile-time constants every gmm.wgsl entry point needs (unused ones get harmless values). */
export function gmmConstants(
  dim: number,
  components: number,
  writeResponsibilities = false,
  pad = 0,
): Record<string, number | boolean> {
  return { DIM: dim, K: components, WRITE_RESP: writeResponsibilities, PAD: pad };
}

/**
 * The M-step's sums on the GPU, shifted by `shifts` (K × d, usually the current means) so that
 * f32 sums of squares do not cancel. Returns [K, d+1, d+1]: entry (i, j < d) is
 * Σ r (x_i − s_i)(x_j − s_j), row d holds Σ r (x − s) and the corner Σ r. One batched GEMM.
 *
 * @param samples [d, N] samples
 * @param responsibilities [K, N]
 */
export function sufficientStatistics(
  samples: Tensor,
  responsibilities: Tensor,
  shifts: Float64Array,
  components: number,
): Tensor {
  const [dim, count] = samples.shape;
  return tidy(() => {
    const shiftTensor = tensor(Float32Array.from(shifts), [components, dim]);
    const rows = empty([components, dim + 1, count]);
    const columns = empty([components, count, dim + 1]);
    run(samples, {
      shader: "gmm",
      entryPoint: "weighted",
      constants: gmmConstants(dim, components),
      params: SampleCountParams.pack({ samples: count }),
      buffers: [
        bind(samples),
        bind(responsibilities),
        bind(shiftTensor),
        bind(rows),
        bind(columns),
      ],
      workgroups: elementGrid(rows.size),
    });
    return matmul(rows, columns);
  });
}

/**
 * Turns shifted statistics into new parameters (float64). A component that lost (almost) all its
 * samples keeps its previous mean and covariance with a negligible weight, rather than becoming
 * NaN.
 */
export function mixtureFromStatistics(
  statistics: Float32Array,
  shifts: Float64Array,
  previous: GaussianMixture,
  regularization: number,
): GaussianMixture {
  const { dim, components } = previous;
  const side = dim + 1;
  const at = (k: number, i: number, j: number) => statistics[(k * side + i) * side + j];
  const weights = new Float64Array(components);
  const means = new Float64Array(components * dim);
  const covariances = new Float64Array(components * dim * dim);
  let total = 0;
  for (let k = 0; k < components; k++) total += Math.max(0, at(k, dim, dim));
  for (let k = 0; k < components; k++) {
    const mass = at(k, dim, dim);
    if (!(mass > 1e-6 * Math.max(total, 1)) || !(mass > 1)) {
      weights[k] = 1e-12;
      means.set(previous.means.subarray(k * dim, (k + 1) * dim), k * dim);
      covariances.set(
        previous.covariances.subarray(k * dim * dim, (k + 1) * dim * dim),
        k * dim * dim,
      );
      continue;
    }
    weights[k] = mass / total;
    const meanOffset = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      meanOffset[i] = at(k, dim, i) / mass;
      means[k * dim + i] = shifts[k * dim + i] + meanOffset[i];
    }
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j <= i; j++) {
        // The GEMM's two triangles may differ in the last bit; average them.
        const moment = 0.5 * (at(k, i, j) + at(k, j, i));
        const value = moment / mass - meanOffset[i] * meanOffset[j];
        covariances[k * dim * dim + i * dim + j] = value;
        covariances[k * dim * dim + j * dim + i] = value;
      }
      covariances[k * dim * dim + i * dim + i] += regularization;
    }
  }
  const weightSum = weights.reduce((a, b) => a + b, 0);
  for (let k = 0; k < components; k++) weights[k] /= weightSum;
  return { dim, components, weights, means, covariances };
}

/** Options of {@link fitGaussianMixture}. */
export interface EmOptions {
  /** Number of components K. */
  components: number;
  /** EM iterations at most (default 50). */
  maxIterations?: number;
  /** Stop when the mean log-likelihood per sample improves by less than this (default 1e-4). */
  tolerance?: number;
  /** Added to every covariance diagonal, in squared feature units (default 1e-4). */
  regularization?: number;
  /** Seed of the k-means++ initialisation (default 0). */
  seed?: number;
  /** Start from these parameters instead of k-means++ (tests). */
  initial?: GaussianMixture;
}

/** A fitted mixture and how the fit went. */
export interface EmResult {
  /** The fitted parameters. */
  mixture: GaussianMixture;
  /** Total log-likelihood of the samples under the fitted parameters. */
  logLikelihood: number;
  /** EM iterations run. */
  iterations: number;
  /** Bayesian information criterion: −2 log L + (free parameters) · log N; lower is better. */
  bic: number;
}

/** Free parameters of a full-covariance mixture. */
export function mixtureParameterCount(dim: number, components: number): number {
  return components - 1 + components * dim + (components * dim * (dim + 1)) / 2;
}

/**
 * Fits a K-component mixture to the rows of `samples` by EM. Initialisation runs on the CPU
 * (k-means++ seeds and a few Lloyd iterations on the read-back samples); every EM iteration is
 * one E-step and one statistics dispatch on the GPU and one small readback.
 *
 * @param samples [d, N] samples on the GPU, feature-major
 * @param options components and stopping rules
 * @param hostSamples the same samples on the CPU as [N, d] rows, if at hand (saves a readback)
 */
export async function fitGaussianMixture(
  samples: Tensor,
  options: EmOptions,
  hostSamples?: Float32Array,
): Promise<EmResult> {
  const [dim, count] = samples.shape;
  const components = options.components;
  checkMixtureSize(dim, components);
  if (count < components * 2 || count < dim + 1) {
    throw new Error(
      `EM needs more samples than dimensions and components: ${count} samples of dimension ` +
        `${dim} for ${components} components`,
    );
  }
  const regularization = options.regularization ?? 1e-4;
  const maxIterations = options.maxIterations ?? 50;
  const tolerance = options.tolerance ?? 1e-4;
  const host = hostSamples ?? rowsFromFeatureMajor(await samples.toArray(), dim, count);
  let mixture = options.initial ??
    kMeansInitialisation(host, count, dim, components, regularization, options.seed ?? 0);
  let previousMean = -Infinity;
  let logLikelihood = -Infinity;
  let iterations = 0;
  for (let iteration = 0; iteration < maxIterations; iteration++) {
    const shifts = mixture.means;
    const [statistics, total] = await emStepStatistics(samples, mixture);
    iterations++;
    logLikelihood = total;
    mixture = mixtureFromStatistics(statistics, shifts, mixture, regularization);
    const mean = total / count;
    if (Math.abs(mean - previousMean) < tolerance) break;
    previousMean = mean;
  }
  // The log-likelihood of the final parameters, for BIC.
  logLikelihood = await totalLogLikelihood(samples, mixture);
  const bic = -2 * logLikelihood + mixtureParameterCount(dim, components) * Math.log(count);
  return { mixture, logLikelihood, iterations, bic };
}

/**
 * One EM iteration's GPU work: the E-step and the shifted M-step sums, read back together with
 * the total log-likelihood in a single round trip.
 */
async function emStepStatistics(
  samples: Tensor,
  mixture: GaussianMixture,
): Promise<[Float32Array, number]> {
  const uploaded = uploadMixture(mixture);
  const { statistics, logLikelihoodSum } = tidy(() => {
    const e = mixtureLogLikelihood(samples, uploaded, true);
    return {
      statistics: sufficientStatistics(
        samples,
        e.responsibilities!,
        mixture.means,
        mixture.components,
      ),
      logLikelihoodSum: sum(e.logLikelihood),
    };
  });
  try {
    const [values, total] = await toArrays([statistics, logLikelihoodSum]);
    return [values, total[0]];
  } finally {
    statistics.dispose();
    logLikelihoodSum.dispose();
    uploaded.dispose();
  }
}

/** Σ_n log p(x_n) under a mixture (one E-step and one readback). */
export async function totalLogLikelihood(
  samples: Tensor,
  mixture: GaussianMixture,
): Promise<number> {
  const uploaded = uploadMixture(mixture);
  const total = tidy(() => sum(mixtureLogLikelihood(samples, uploaded).logLikelihood));
  try {
    return await total.item();
  } finally {
    total.dispose();
    uploaded.dispose();
  }
}

/** The fit of every candidate K and the one BIC chose. */
export interface BicSelection {
  /** The fit with the lowest BIC. */
  best: EmResult;
  /** K → BIC of each candidate. */
  table: { components: number; bic: number; logLikelihood: number; iterations: number }[];
}

/** Fits each candidate component count and keeps the one with the lowest BIC. */
export async function fitGaussianMixtureBic(
  samples: Tensor,
  candidates: readonly number[],
  options: Omit<EmOptions, "components" | "initial">,
): Promise<BicSelection> {
  if (candidates.length === 0) throw new Error("BIC selection needs at least one candidate K");
  const [dim, count] = samples.shape;
  const host = rowsFromFeatureMajor(await samples.toArray(), dim, count);
  let best: EmResult | null = null;
  const table: BicSelection["table"] = [];
  for (const components of candidates) {
    const result = await fitGaussianMixture(samples, { ...options, components }, host);
    table.push({
      components,
      bic: result.bic,
      logLikelihood: result.logLikelihood,
      iterations: result.iterations,
    });
    if (!best || result.bic < best.bic) best = result;
  }
  return { best: best!, table };
}

/**
 * Initial parameters: k-means++ seeds, a few Lloyd iterations, then each cluster's weight, mean
 * and covariance (the whole data's covariance for clusters too small to estimate one).
 */
export function kMeansInitialisation(
  host: Float32Array,
  count: number,
  dim: number,
  components: number,
  regularization: number,
  seed: number,
): GaussianMixture {
  const random = new Random(seed);
  const centres = new Float64Array(components * dim);
  const distance = new Float64Array(count).fill(Infinity);
  const squaredDistance = (n: number, k: number): number => {
    let d = 0;
    for (let i = 0; i < dim; i++) {
      const diff = host[n * dim + i] - centres[k * dim + i];
      d += diff * diff;
    }
    return d;
  };
  for (let k = 0; k < components; k++) {
    let chosen = random.int(0, count);
    if (k > 0) {
      let total = 0;
      for (let n = 0; n < count; n++) total += distance[n];
      if (total > 0) {
        let target = random.next() * total;
        for (let n = 0; n < count; n++) {
          target -= distance[n];
          if (target <= 0) {
            chosen = n;
            break;
          }
        }
      }
    }
    for (let i = 0; i < dim; i++) centres[k * dim + i] = host[chosen * dim + i];
    for (let n = 0; n < count; n++) distance[n] = Math.min(distance[n], squaredDistance(n, k));
  }
  const assignment = new Int32Array(count);
  for (let iteration = 0; iteration < 10; iteration++) {
    for (let n = 0; n < count; n++) {
      let best = 0;
      let bestDistance = Infinity;
      for (let k = 0; k < components; k++) {
        const d = squaredDistance(n, k);
        if (d < bestDistance) [best, bestDistance] = [k, d];
      }
      assignment[n] = best;
    }
    const sums = new Float64Array(components * dim);
    const counts = new Float64Array(components);
    for (let n = 0; n < count; n++) {
      counts[assignment[n]]++;
      for (let i = 0; i < dim; i++) sums[assignment[n] * dim + i] += host[n * dim + i];
    }
    for (let k = 0; k < components; k++) {
      if (counts[k] === 0) continue;
      for (let i = 0; i < dim; i++) centres[k * dim + i] = sums[k * dim + i] / counts[k];
    }
  }
  const globalMean = new Float64Array(dim);
  for (let n = 0; n < count; n++) for (let i = 0; i < dim; i++) globalMean[i] += host[n * dim + i];
  for (let i = 0; i < dim; i++) globalMean[i] /= count;
  const globalCovariance = scatter(host, count, dim, globalMean, () => true);
  const weights = new Float64Array(components);
  const covariances = new Float64Array(components * dim * dim);
  for (let k = 0; k < components; k++) {
    const members = assignment.reduce((c, a) => c + (a === k ? 1 : 0), 0);
    weights[k] = Math.max(members, 1) / count;
    const covariance = members > dim
      ? scatter(
        host,
        count,
        dim,
        centres.subarray(k * dim, (k + 1) * dim),
        (n) => assignment[n] === k,
      )
      : globalCovariance;
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < dim; j++) {
        covariances[k * dim * dim + i * dim + j] = covariance[i * dim + j] +
          (i === j ? regularization : 0);
      }
    }
  }
  const weightSum = weights.reduce((a, b) => a + b, 0);
  for (let k = 0; k < components; k++) weights[k] /= weightSum;
  return { dim, components, weights, means: centres, covariances };
}

/** The covariance of the selected rows around `centre` (float64). */
function scatter(
  host: Float32Array,
  count: number,
  dim: number,
  centre: Float64Array,
  selected: (n: number) => boolean,
): Float64Array {
  const out = new Float64Array(dim * dim);
  const diff = new Float64Array(dim);
  let members = 0;
  for (let n = 0; n < count; n++) {
    if (!selected(n)) continue;
    members++;
    for (let i = 0; i < dim; i++) diff[i] = host[n * dim + i] - centre[i];
    for (let i = 0; i < dim; i++) {
      const di = diff[i];
      for (let j = 0; j <= i; j++) out[i * dim + j] += di * diff[j];
    }
  }
  for (let i = 0; i < dim; i++) {
    for (let j = 0; j <= i; j++) {
      out[i * dim + j] /= Math.max(members, 1);
      out[j * dim + i] = out[i * dim + j];
    }
  }
  return out;
}

/** Transposes [d, N] feature-major values to [N, d] rows. */
export function rowsFromFeatureMajor(
  values: Float32Array,
  dim: number,
  count: number,
): Float32Array {
  const rows = new Float32Array(dim * count);
  for (let i = 0; i < dim; i++) {
    for (let n = 0; n < count; n++) rows[n * dim + i] = values[i * count + n];
  }
  return rows;
}

/** Transposes [N, d] rows to the [d, N] feature-major layout the kernels use. */
export function featureMajorFromRows(rows: Float32Array, dim: number, count: number): Float32Array {
  const values = new Float32Array(dim * count);
  for (let n = 0; n < count; n++) {
    for (let i = 0; i < dim; i++) values[i * count + n] = rows[n * dim + i];
  }
  return values;
}

/** Concatenates [d, N_i] sample blocks into one [d, ΣN_i]. */
export function stackSamples(blocks: readonly Tensor[]): Tensor {
  return blocks.length === 1 ? blocks[0] : concat(blocks, 1);
}
