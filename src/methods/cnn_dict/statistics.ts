/**
 * The statistics of the CNN feature dictionary (MVTec AD paper, section 4.1.3) on the GPU
 * (shaders/dictionary.wgsl): PCA keeping a fraction of the variance, k-means with k-means++
 * seeds, and the distance to the nearest centre that scores a patch.
 *
 * The covariance comes from the engine's matmul; its eigenvectors from a parallel cyclic Jacobi
 * solver whose sweeps are recorded whole and read back once each (the off-diagonal norm). k-means
 * reads back once per k-means++ pick and once every few Lloyd iterations.
 */

import { Random } from "../../data/random.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import { bind, elementGrid, run } from "../../tensor/ops/launch.ts";
import * as op from "../../tensor/ops.ts";
import { empty, noGrad, Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";

/** An m × m Jacobi problem (m a multiple of 4) holding a `dim` × `dim` matrix; `pairs` = m / 2. */
const JacobiParams = uniformStruct("JacobiParams", {
  size: "u32",
  pairs: "u32",
  dim: "u32",
});

/**
 * `points` rows of `dim` values against the first `clusters` centres; the sums are taken over
 * `chunks` chunks of `chunk` points. `row` and `slot` are take_row's; `root` makes
 * nearest_distance write distances instead of squared ones; `threshold` bounds the summed
 * squared centre shift of a converged iteration.
 */
const KmeansParams = uniformStruct("KmeansParams", {
  points: "u32",
  dim: "u32",
  clusters: "u32",
  chunk: "u32",
  chunks: "u32",
  row: "u32",
  slot: "u32",
  root: "u32",
  threshold: "f32",
});

declareShader("dictionary", JacobiParams, KmeansParams);

/** Lloyd iterations recorded between convergence checks (each check is one readback). */
const ITERATIONS_PER_CHECK = 5;
/** Points per chunk of the k-means sums, unless the partial sums would not fit a binding. */
const POINTS_PER_CHUNK = 256;

/** Called between submits with the work done and the most there can be. */
export type ProgressCallback = (done: number, total: number) => void;

/** Options of {@link symmetricEigen}. */
export interface EigenOptions {
  /**
   * Converged when the off-diagonal Frobenius norm is at most this fraction of the matrix's
   * (default 1e-6).
   */
  tolerance?: number;
  /** Sweeps before giving up with an error (default 30). */
  maxSweeps?: number;
  /** Called after every sweep with the sweeps done and `maxSweeps`. */
  onProgress?: ProgressCallback;
  /** Stops before the next sweep (throws the signal's reason). */
  signal?: AbortSignal;
}

/** Eigen-decomposition of a symmetric matrix, from {@link symmetricEigen}. */
export interface SymmetricEigen {
  /** [d], in decreasing order. */
  eigenvalues: Float32Array;
  /**
   * [d, d] row-major: column c is the unit eigenvector of eigenvalue c, signed so that its
   * largest-magnitude component is positive.
   */
  eigenvectors: Float32Array;
  /** Jacobi sweeps it took. */
  sweeps: number;
}

/**
 * Eigenvalues and eigenvectors of a symmetric `matrix` ([d, d] on the GPU; only its symmetric
 * part counts) by cyclic Jacobi in the parallel round-robin ordering, the matrix zero-padded to
 * m = d rounded up to a multiple of 4: each round rotates m / 2 disjoint pairs at once (three
 * dispatches: the angles, the matrix, the eigenvectors), and a sweep of m − 1 rounds meets every
 * pair once. Sweeps are recorded without readback; after each the off-diagonal norm is read back.
 * Its cost grows as d³ per sweep; d = 1024 takes about 3 s a sweep on lavapipe (2 cores), and
 * most matrices need 8 to 12 sweeps.
 *
 * @throws Error for a bad shape or option, a non-finite entry, or no convergence in `maxSweeps`
 */
export async function symmetricEigen(
  matrix: Tensor,
  options: EigenOptions = {},
): Promise<SymmetricEigen> {
  const [rows, d] = checkMatrix(matrix, "symmetricEigen", "matrix");
  if (rows !== d) {
    throw new Error(`symmetricEigen expects a square matrix [d, d], got [${matrix.shape}]`);
  }
  const tolerance = options.tolerance ?? 1e-6;
  if (!(tolerance > 0 && tolerance < 1)) {
    throw new Error(`symmetricEigen: tolerance must be in (0, 1), got ${tolerance}`);
  }
  const maxSweeps = options.maxSweeps ?? 30;
  checkPositiveInteger(maxSweeps, "symmetricEigen", "maxSweeps");
  const gpu = matrix.gpu;
  // Whole vec4s per row of Vᵀ; the padding's rows and columns are zero and never rotate.
  const m = 4 * Math.ceil(d / 4);
  if (4 * m * m > gpu.maxBindingBytes) {
    throw new Error(
      `symmetricEigen: a ${m} × ${m} matrix needs ${4 * m * m} bytes, over this device's ` +
        `storage binding limit of ${gpu.maxBindingBytes} bytes`,
    );
  }
  const params = JacobiParams.pack({ size: m, pairs: m / 2, dim: d });
  const a = [empty([m, m]), empty([m, m])];
  const v = [empty([m, m]), empty([m, m])];
  const rotations = empty([4 * (m / 2)]);
  const norms = empty([2]);
  const diagonal = empty([m]);
  try {
    run(matrix, {
      shader: "dictionary",
      entryPoint: "jacobi_init",
      params,
      buffers: [bind(matrix), bind(a[0]), bind(v[0])],
      workgroups: elementGrid(m * m),
    });
    let current = 0;
    const offDiagonal = async (): Promise<{ off: number; total: number }> => {
      run(matrix, {
        shader: "dictionary",
        entryPoint: "jacobi_norms",
        params,
        buffers: [bind(a[current]), bind(norms)],
        workgroups: [1],
      });
      const [off, diag] = await norms.toArray();
      return { off: Math.sqrt(off), total: Math.sqrt(off + diag) };
    };
    let { off, total } = await offDiagonal();
    if (!Number.isFinite(total)) {
      throw new Error("symmetricEigen: the matrix has a non-finite entry (NaN or ±Infinity)");
    }
    const blocks = (m / 2) * (m / 2 + 1) / 2;
    let sweeps = 0;
    while (off > tolerance * total) {
      if (sweeps === maxSweeps) {
        throw new Error(
          `symmetricEigen: Jacobi did not converge in ${maxSweeps} sweeps: the off-diagonal ` +
            `norm is ${(off / total).toExponential(2)} of the matrix's, over the tolerance ` +
            `${tolerance}`,
        );
      }
      options.signal?.throwIfAborted();
      for (let round = 0; round < m - 1; round++) {
        const [from, to] = [current, 1 - current];
        run(matrix, {
          shader: "dictionary",
          entryPoint: "jacobi_angles",
          params,
          buffers: [bind(a[from]), bind(rotations)],
          workgroups: [Math.ceil(m / 2 / 256)],
        });
        run(matrix, {
          shader: "dictionary",
          entryPoint: "jacobi_rotate",
          params,
          buffers: [bind(a[from]), bind(rotations), bind(a[to])],
          workgroups: elementGrid(blocks),
        });
        run(matrix, {
          shader: "dictionary",
          entryPoint: "jacobi_rotate_vectors",
          params,
          buffers: [bind(v[from]), bind(rotations), bind(v[to])],
          workgroups: elementGrid(m * m / 8),
        });
        current = to;
      }
      sweeps++;
      ({ off, total } = await offDiagonal());
      options.onProgress?.(sweeps, maxSweeps);
    }
    run(matrix, {
      shader: "dictionary",
      entryPoint: "jacobi_diagonal",
      params,
      buffers: [bind(a[current]), bind(diagonal)],
      workgroups: [Math.ceil(m / 256)],
    });
    const [values, vectors] = await toArrays([diagonal, v[current]]);
    // The padding's indices (d … m − 1) are left out. After whole sweeps every index is back at
    // its own position, and row i of Vᵀ is the eigenvector of diagonal entry i.
    const order = Array.from({ length: d }, (_, i) => i);
    order.sort((i, j) => values[j] - values[i] || i - j);
    const eigenvalues = Float32Array.from(order, (i) => values[i]);
    const eigenvectors = new Float32Array(d * d);
    order.forEach((source, c) => {
      let largest = 0;
      const vector = vectors.subarray(source * m, source * m + d);
      for (let r = 0; r < d; r++) {
        if (Math.abs(vector[r]) > Math.abs(vector[largest])) largest = r;
      }
      const sign = vector[largest] < 0 ? -1 : 1;
      for (let r = 0; r < d; r++) eigenvectors[r * d + c] = sign * vector[r];
    });
    return { eigenvalues, eigenvectors, sweeps };
  } finally {
    for (const t of [...a, ...v, rotations, norms, diagonal]) t.dispose();
  }
}

/** Options of {@link covariance}. */
export interface CovarianceOptions {
  /**
   * Largest chunk of rows in bytes (default: the device's storage binding limit). Only tests set
   * it, to split small inputs into many chunks.
   */
  maxChunkBytes?: number;
}

/**
 * The column means [d] and the sample covariance [d, d], 1/(n − 1)·XcᵀXc with Xc the centred
 * rows, of `features` ([n ≥ 2, d] on the GPU), by the engine's matmul over chunks of rows that
 * each fit one storage binding, the d × d products summed. Recorded only; nothing is read back.
 */
export function covariance(
  features: Tensor,
  options: CovarianceOptions = {},
): { mean: Tensor; covariance: Tensor } {
  const [n, d] = checkMatrix(features, "covariance", "features");
  if (n < 2) {
    throw new Error(`covariance expects at least 2 rows of features, got ${n}`);
  }
  const limit = options.maxChunkBytes ?? features.gpu.maxBindingBytes;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new Error(`covariance: maxChunkBytes must be a positive integer, got ${limit}`);
  }
  const chunkRows = Math.max(
    1,
    Math.floor(Math.min(limit, features.gpu.maxBindingBytes) / (4 * d)),
  );
  return noGrad(() =>
    tidy(() => {
      const mean = op.mean(features, 0);
      let sum: Tensor | null = null;
      for (let first = 0; first < n; first += chunkRows) {
        const rows = Math.min(chunkRows, n - first);
        const next: Tensor = tidy(() => {
          const part = rows === n ? features : op.slice(features, [first, 0], [rows, d]);
          const centred = op.sub(part, mean);
          const product = op.matmul(op.transpose(centred), centred);
          return sum ? op.add(sum, product) : product;
        });
        sum?.dispose();
        sum = next;
      }
      return { mean, covariance: op.mulScalar(sum!, 1 / (n - 1)) };
    })
  );
}

/** A PCA basis, from {@link pca}. */
export interface Pca {
  /** [d]: the features' mean. */
  mean: Float32Array;
  /** [d, k] row-major: column c is the unit eigenvector of eigenvalue c. */
  components: Float32Array;
  /** [k]: the covariance's largest eigenvalues, decreasing. */
  eigenvalues: Float32Array;
  /** The fraction of the total variance the k components keep. */
  explainedVariance: number;
}

/** Options of {@link pca}. */
export interface PcaOptions extends EigenOptions, CovarianceOptions {
  /** Keep the fewest components whose variance reaches this fraction of the total (0.95). */
  varianceKept?: number;
}

/**
 * PCA of `features` ([n ≥ 2, d] on the GPU): the covariance ({@link covariance}) and its
 * eigenvectors ({@link symmetricEigen}), keeping the smallest k whose eigenvalues sum to at least
 * `varianceKept` of the trace (rounding's negative eigenvalues count as 0).
 *
 * @throws Error for a bad shape or option, a non-finite feature, features with no variance, or
 *   an eigensolver that does not converge
 */
export async function pca(features: Tensor, options: PcaOptions = {}): Promise<Pca> {
  const varianceKept = options.varianceKept ?? 0.95;
  if (!(varianceKept > 0 && varianceKept <= 1)) {
    throw new Error(`pca: varianceKept must be in (0, 1], got ${varianceKept}`);
  }
  const [n, d] = checkMatrix(features, "pca", "features");
  if (n < 2) throw new Error(`pca expects at least 2 rows of features, got ${n}`);
  const statistics = covariance(features, options);
  try {
    const mean = await statistics.mean.toArray();
    const column = mean.findIndex((value) => !Number.isFinite(value));
    if (column >= 0) {
      throw new Error(
        `pca: the features have a non-finite value (NaN or ±Infinity) in column ${column}`,
      );
    }
    const { eigenvalues, eigenvectors } = await symmetricEigen(statistics.covariance, options);
    const variances = Array.from(eigenvalues, (value) => Math.max(value, 0));
    const total = variances.reduce((sum, value) => sum + value, 0);
    if (!(total > 0)) throw new Error("pca: the features have no variance (all rows are equal)");
    let k = 0;
    let kept = 0;
    while (k < d && kept < varianceKept * total) kept += variances[k++];
    const components = new Float32Array(d * k);
    for (let r = 0; r < d; r++) {
      components.set(eigenvectors.subarray(r * d, r * d + k), r * k);
    }
    return {
      mean,
      components,
      eigenvalues: eigenvalues.slice(0, k),
      explainedVariance: kept / total,
    };
  } finally {
    statistics.mean.dispose();
    statistics.covariance.dispose();
  }
}

/** `features` ([n, d] on the GPU) in the PCA basis: (x − mean)·components, [n, k] on the GPU. */
export function project(basis: Pca, features: Tensor): Tensor {
  const d = basis.mean.length;
  const k = basis.eigenvalues.length;
  if (d < 1 || k < 1 || basis.components.length !== d * k) {
    throw new Error(
      `project: the basis must have a mean of d ≥ 1 values and components of d × k values ` +
        `(k = ${k} eigenvalues), got ${d} and ${basis.components.length}`,
    );
  }
  const [, columns] = checkMatrix(features, "project", "features");
  if (columns !== d) {
    throw new Error(`project expects features of shape [n, ${d}], got [${features.shape}]`);
  }
  return noGrad(() =>
    tidy(() => op.matmul(op.sub(features, tensor(basis.mean)), tensor(basis.components, [d, k])))
  );
}

/** Options of {@link kmeans}. */
export interface KmeansOptions {
  /** Seed of the k-means++ picks (default 0). */
  seed?: number;
  /** Most Lloyd iterations (default 100). */
  maxIterations?: number;
  /**
   * Converged when the squared shifts of the centres in one iteration sum to at most this times
   * the points' mean per-column variance (default 1e-4, as scikit-learn; 0: only when no centre
   * moves).
   */
  tolerance?: number;
  /** Start from these centres ([clusters, dim] row-major) instead of k-means++. */
  initialCentres?: Float32Array;
  /** Called at every convergence check with the iterations done and `maxIterations`. */
  onProgress?: ProgressCallback;
  /** Stops before the next batch of iterations (throws the signal's reason). */
  signal?: AbortSignal;
}

/** Result of {@link kmeans}. */
export interface Kmeans {
  /** [clusters, dim] row-major. */
  centres: Float32Array;
  /** Sum of the squared distances of the points to their nearest centre. */
  inertia: number;
  /** Lloyd iterations run. */
  iterations: number;
  /** Whether the centres converged within `maxIterations`. */
  converged: boolean;
  /** The points k-means++ picked as initial centres, in order (empty with `initialCentres`). */
  seeds: Int32Array;
}

/**
 * k-means of `points` ([n, dim] on the GPU) into `clusters` clusters: k-means++ seeds (the first
 * point uniformly at random, each next one with probability ∝ its squared distance to the nearest
 * pick; uniformly among the points not picked when those are all 0), then Lloyd iterations on
 * the GPU. An empty cluster takes the point farthest from its centre. Deterministic for a seed.
 *
 * @throws Error for a bad shape, `clusters` or option, or a non-finite point
 */
export async function kmeans(
  points: Tensor,
  clusters: number,
  options: KmeansOptions = {},
): Promise<Kmeans> {
  const [n, dim] = checkMatrix(points, "kmeans", "points");
  if (!Number.isInteger(clusters) || clusters < 1 || clusters > n) {
    throw new Error(
      `kmeans: clusters must be an integer from 1 to ${n} (the points), got ${clusters}`,
    );
  }
  const maxIterations = options.maxIterations ?? 100;
  checkPositiveInteger(maxIterations, "kmeans", "maxIterations");
  const tolerance = options.tolerance ?? 1e-4;
  if (!(tolerance >= 0 && Number.isFinite(tolerance))) {
    throw new Error(`kmeans: tolerance must be a finite number ≥ 0, got ${tolerance}`);
  }
  const seed = options.seed ?? 0;
  if (!Number.isFinite(seed)) throw new Error(`kmeans: seed must be a finite number, got ${seed}`);
  if (options.initialCentres !== undefined) {
    checkCentres(options.initialCentres, dim, "kmeans: initialCentres", clusters);
  }
  const gpu = points.gpu;
  const variance = await columnVariances(points);
  const meanVariance = variance.reduce((sum, value) => sum + value, 0) / dim;
  const stride = dim + 1;
  let chunk = POINTS_PER_CHUNK;
  while (Math.ceil(n / chunk) * clusters * stride * 4 > gpu.maxBindingBytes) chunk *= 2;
  const chunks = Math.ceil(n / chunk);
  const params = (fields: { clusters?: number; row?: number; slot?: number; root?: number }) =>
    KmeansParams.pack({
      points: n,
      dim,
      clusters: fields.clusters ?? clusters,
      chunk,
      chunks,
      row: fields.row ?? 0,
      slot: fields.slot ?? 0,
      root: fields.root ?? 0,
      threshold: tolerance * meanVariance,
    });
  const centres = empty([clusters, dim]);
  const state = empty([3]);
  const assignment = empty([n]);
  const distance = empty([n]);
  const partials = empty([chunks * clusters * stride]);
  const sums = empty([clusters * stride]);
  try {
    let seeds: Int32Array = new Int32Array(0);
    if (options.initialCentres) gpu.recorder.write(centres.buffer, 0, options.initialCentres);
    else seeds = await kmeansPlusPlus(points, centres, distance, new Random(seed), params);
    gpu.recorder.write(state.buffer, 0, new Uint32Array(3));
    const step = params({});
    let progress = new Uint32Array(3);
    for (let recorded = 0; recorded < maxIterations && progress[1] === 0;) {
      options.signal?.throwIfAborted();
      const batch = Math.min(ITERATIONS_PER_CHECK, maxIterations - recorded);
      for (let i = 0; i < batch; i++) {
        run(points, {
          shader: "dictionary",
          entryPoint: "assign",
          params: step,
          buffers: [bind(points), bind(centres), bind(state), bind(assignment), bind(distance)],
          workgroups: elementGrid(n),
        });
        run(points, {
          shader: "dictionary",
          entryPoint: "partial_sums",
          params: step,
          buffers: [bind(points), bind(assignment), bind(state), bind(partials)],
          workgroups: elementGrid(chunks * stride),
        });
        run(points, {
          shader: "dictionary",
          entryPoint: "reduce_sums",
          params: step,
          buffers: [bind(partials), bind(sums), bind(state)],
          workgroups: elementGrid(clusters * stride),
        });
        run(points, {
          shader: "dictionary",
          entryPoint: "finish",
          params: step,
          buffers: [bind(points), bind(sums), bind(state), bind(centres), bind(distance)],
          workgroups: [1],
        });
      }
      recorded += batch;
      progress = new Uint32Array(await gpu.recorder.read(state.buffer, 0, 12));
      options.onProgress?.(progress[0], maxIterations);
    }
    nearestInto(points, centres, distance, params({ root: 0 }));
    const inertia = noGrad(() => op.sum(distance));
    const [values, [total]] = await toArrays([centres, inertia]).finally(() => inertia.dispose());
    return {
      centres: values,
      inertia: total,
      iterations: progress[0],
      converged: progress[1] !== 0,
      seeds,
    };
  } finally {
    for (const t of [centres, state, assignment, distance, partials, sums]) t.dispose();
  }
}

/**
 * The Euclidean distance of each point ([n, dim] on the GPU) to its nearest centre (`centres`:
 * [clusters, dim] row-major): the dictionary's anomaly score, [n] on the GPU.
 */
export function nearestCentreDistance(points: Tensor, centres: Float32Array): Tensor {
  const [n, dim] = checkMatrix(points, "nearestCentreDistance", "points");
  const clusters = checkCentres(centres, dim, "nearestCentreDistance: centres");
  return noGrad(() =>
    tidy(() => {
      const out = empty([n]);
      nearestInto(
        points,
        tensor(centres, [clusters, dim]),
        out,
        KmeansParams.pack({
          points: n,
          dim,
          clusters,
          chunk: 0,
          chunks: 0,
          row: 0,
          slot: 0,
          root: 1,
          threshold: 0,
        }),
      );
      return out;
    })
  );
}

/** Records nearest_distance: each point's (squared, unless `root`) distance into `out`. */
function nearestInto(points: Tensor, centres: Tensor, out: Tensor, params: ArrayBuffer): void {
  run(points, {
    shader: "dictionary",
    entryPoint: "nearest_distance",
    params,
    buffers: [bind(points), bind(centres), bind(out)],
    workgroups: elementGrid(points.shape[0]),
  });
}

/**
 * k-means++ into `centres`, one readback of the squared distances per pick after the first.
 *
 * @returns the picked points
 */
async function kmeansPlusPlus(
  points: Tensor,
  centres: Tensor,
  squared: Tensor,
  random: Random,
  params: (fields: { clusters?: number; row?: number; slot?: number }) => ArrayBuffer,
): Promise<Int32Array> {
  const [n, dim] = points.shape;
  const clusters = centres.shape[0];
  const picked = new Int32Array(clusters);
  const taken = new Uint8Array(n);
  for (let slot = 0; slot < clusters; slot++) {
    let row = -1;
    if (slot === 0) row = random.int(0, n);
    else {
      nearestInto(points, centres, squared, params({ clusters: slot }));
      const weights = await squared.toArray();
      let total = 0;
      for (let i = 0; i < n; i++) if (!taken[i]) total += weights[i];
      if (total > 0) {
        const target = random.next() * total;
        let sum = 0;
        for (let i = 0; i < n && (row < 0 || sum <= target); i++) {
          // A picked point has weight 0, but is skipped by name: rounding never brings it back.
          if (taken[i] || weights[i] <= 0) continue;
          sum += weights[i];
          row = i;
        }
      } else {
        let skip = random.int(0, n - slot);
        for (let i = 0; i < n; i++) {
          if (taken[i]) continue;
          if (skip-- === 0) {
            row = i;
            break;
          }
        }
      }
    }
    picked[slot] = row;
    taken[row] = 1;
    run(points, {
      shader: "dictionary",
      entryPoint: "take_row",
      params: params({ row, slot }),
      buffers: [bind(points), bind(centres)],
      workgroups: [Math.ceil(dim / 64)],
    });
  }
  return picked;
}

/**
 * The per-column variances of `points` (one readback), which also proves every value finite: a
 * NaN or infinity makes its column's mean non-finite.
 */
async function columnVariances(points: Tensor): Promise<Float32Array> {
  const variance = noGrad(() =>
    tidy(() => op.mean(op.square(op.sub(points, op.mean(points, 0))), 0))
  );
  const values = await variance.toArray().finally(() => variance.dispose());
  const column = values.findIndex((value) => !Number.isFinite(value));
  if (column >= 0) {
    throw new Error(
      `kmeans: the points have a non-finite value (NaN or ±Infinity) in column ${column}`,
    );
  }
  return values;
}

/** [rows, columns] of a 2-D tensor with at least one of each; throws naming `what` otherwise. */
function checkMatrix(t: Tensor, what: string, name: string): [number, number] {
  if (!(t instanceof Tensor) || t.shape.length !== 2 || t.shape[0] < 1 || t.shape[1] < 1) {
    const shape = t instanceof Tensor ? `[${t.shape}]` : String(t);
    throw new Error(`${what} expects ${name} as a 2-D tensor [n ≥ 1, d ≥ 1], got ${shape}`);
  }
  return [t.shape[0], t.shape[1]];
}

/** Clusters in `centres` (rows of `dim` finite values, `expected` of them when given). */
function checkCentres(centres: Float32Array, dim: number, what: string, expected?: number): number {
  const rows = expected ?? centres.length / dim;
  if (
    !(centres instanceof Float32Array) || centres.length === 0 || !Number.isInteger(rows) ||
    centres.length !== rows * dim
  ) {
    const length = centres instanceof Float32Array ? `${centres.length} values` : String(centres);
    throw new Error(
      `${what} must be a Float32Array of ${expected ?? "clusters"} × ${dim} values, got ${length}`,
    );
  }
  const bad = centres.findIndex((value) => !Number.isFinite(value));
  if (bad >= 0) {
    throw new Error(`${what} has a non-finite value at centre ${Math.floor(bad / dim)}`);
  }
  return rows;
}

function checkPositiveInteger(value: number, what: string, name: string): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${what}: ${name} must be a positive integer, got ${value}`);
  }
}
