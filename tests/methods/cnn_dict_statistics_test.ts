/**
 * The CNN feature dictionary's GPU statistics against float64 CPU references on small data: the
 * chunked covariance, the parallel Jacobi eigensolver (odd sizes, repeated eigenvalues, one
 * timing at d = 256), the variance rule of PCA, project(), k-means (blobs, inertia, seeds, empty
 * clusters), nearestCentreDistance, and bad input.
 */

import assert from "node:assert/strict";
import { currentGpu } from "../../src/gpu/device.ts";
import { init, type Tensor, tensor } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import {
  covariance,
  kmeans,
  nearestCentreDistance,
  pca,
  project,
  symmetricEigen,
} from "../../src/methods/cnn_dict/statistics.ts";
import { seededRandom } from "../tensor/reference.ts";

function normals(count: number, seed: number): Float64Array {
  const random = seededRandom(seed);
  return Float64Array.from(
    { length: count },
    () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()),
  );
}

/** A random d × d orthogonal matrix (Gram–Schmidt of Gaussian columns), row-major. */
function randomOrthogonal(d: number, seed: number): Float64Array {
  const q = normals(d * d, seed);
  for (let c = 0; c < d; c++) {
    for (let previous = 0; previous < c; previous++) {
      let dot = 0;
      for (let r = 0; r < d; r++) dot += q[r * d + c] * q[r * d + previous];
      for (let r = 0; r < d; r++) q[r * d + c] -= dot * q[r * d + previous];
    }
    let norm = 0;
    for (let r = 0; r < d; r++) norm += q[r * d + c] ** 2;
    for (let r = 0; r < d; r++) q[r * d + c] /= Math.sqrt(norm);
  }
  return q;
}

/** Q·diag(values)·Qᵀ. */
function withEigenvalues(values: readonly number[], q: Float64Array): Float64Array {
  const d = values.length;
  const out = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let sum = 0;
      for (let k = 0; k < d; k++) sum += q[i * d + k] * values[k] * q[j * d + k];
      out[i * d + j] = sum;
    }
  }
  return out;
}

/** A random symmetric matrix with entries in [−1, 1]. */
function randomSymmetric(d: number, seed: number): Float64Array {
  const random = seededRandom(seed);
  const out = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) out[i * d + j] = out[j * d + i] = 2 * random() - 1;
  }
  return out;
}

/** Plain cyclic Jacobi in float64: the eigenvalues, decreasing. */
function jacobiReference(matrix: Float64Array, d: number): number[] {
  const a = Float64Array.from(matrix);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let i = 0; i < d; i++) for (let j = i + 1; j < d; j++) off += a[i * d + j] ** 2;
    if (off === 0) break;
    for (let p = 0; p < d; p++) {
      for (let q = p + 1; q < d; q++) {
        const apq = a[p * d + q];
        if (apq === 0) continue;
        const theta = (a[q * d + q] - a[p * d + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < d; k++) {
          const [kp, kq] = [a[k * d + p], a[k * d + q]];
          a[k * d + p] = c * kp - s * kq;
          a[k * d + q] = s * kp + c * kq;
        }
        for (let k = 0; k < d; k++) {
          const [pk, qk] = [a[p * d + k], a[q * d + k]];
          a[p * d + k] = c * pk - s * qk;
          a[q * d + k] = s * pk + c * qk;
        }
      }
    }
  }
  return Array.from({ length: d }, (_, i) => a[i * d + i]).sort((x, y) => y - x);
}

/** Checks A·v = λ·v for every pair and VᵀV = I, to `tolerance` times the largest |λ|. */
function assertEigenpairs(
  matrix: Float64Array,
  d: number,
  values: Float32Array,
  vectors: Float32Array,
  tolerance: number,
): void {
  const scale = Math.max(...Array.from(values, Math.abs), 1e-30);
  for (let c = 0; c < d; c++) {
    for (let i = 0; i < d; i++) {
      let av = 0;
      for (let k = 0; k < d; k++) av += matrix[i * d + k] * vectors[k * d + c];
      const residual = Math.abs(av - values[c] * vectors[i * d + c]);
      assert.ok(residual <= tolerance * scale, `d ${d}: |Av − λv| = ${residual} (vector ${c})`);
    }
    for (let other = c; other < d; other++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += vectors[k * d + c] * vectors[k * d + other];
      const expected = other === c ? 1 : 0;
      assert.ok(Math.abs(dot - expected) < 1e-4, `d ${d}: v${c}·v${other} = ${dot}`);
    }
  }
}

function upload(data: ArrayLike<number>, shape: number[]): Tensor {
  return tensor(Float32Array.from(data), shape);
}

function assertNoGpuErrors(): void {
  assert.deepEqual(currentGpu().errors, []);
}

Deno.test("covariance over chunks of rows matches float64", async () => {
  await init();
  const n = 300, d = 13;
  const random = seededRandom(1);
  const rows = Float32Array.from({ length: n * d }, (_, i) => 3 * random() + (i % d) * 0.5);
  const features = upload(rows, [n, d]);
  // 64 rows per chunk: five chunks, the last one short.
  const result = covariance(features, { maxChunkBytes: 64 * 4 * d });
  const [mean, cov] = [await result.mean.toArray(), await result.covariance.toArray()];
  const expectedMean = new Float64Array(d);
  for (let i = 0; i < n * d; i++) expectedMean[i % d] += rows[i] / n;
  for (let j = 0; j < d; j++) assert.ok(Math.abs(mean[j] - expectedMean[j]) < 1e-5);
  for (let a = 0; a < d; a++) {
    for (let b = 0; b < d; b++) {
      let sum = 0;
      for (let r = 0; r < n; r++) {
        sum += (rows[r * d + a] - expectedMean[a]) * (rows[r * d + b] - expectedMean[b]);
      }
      const expected = sum / (n - 1);
      assert.ok(Math.abs(cov[a * d + b] - expected) < 1e-5, `cov[${a}, ${b}]`);
    }
  }
  [features, result.mean, result.covariance].forEach((t) => t.dispose());
  assertNoGpuErrors();
});

Deno.test("symmetricEigen matches float64 Jacobi: odd and tiny sizes, repeated eigenvalues", async () => {
  await init();
  const repeated = withEigenvalues(
    [5, 5, 5, 2, 2, 1, 1, 1, 1, 0.5, -3, -3],
    randomOrthogonal(12, 4),
  );
  const cases: [string, Float64Array, number][] = [
    ["random 24", randomSymmetric(24, 2), 24],
    ["random 17 (odd)", randomSymmetric(17, 3), 17],
    ["repeated eigenvalues", repeated, 12],
    ["1 × 1", Float64Array.of(-2.5), 1],
    ["3 × 3", randomSymmetric(3, 5), 3],
    ["diagonal", Float64Array.of(1, 0, 0, 0, 3, 0, 0, 0, 2), 3],
  ];
  for (const [name, matrix, d] of cases) {
    const input = upload(matrix, [d, d]);
    const { eigenvalues, eigenvectors, sweeps } = await symmetricEigen(input);
    input.dispose();
    const expected = jacobiReference(matrix, d);
    const scale = Math.max(...expected.map(Math.abs));
    expected.forEach((value, i) => {
      assert.ok(
        Math.abs(eigenvalues[i] - value) <= 1e-4 * scale,
        `${name}: λ${i} = ${eigenvalues[i]}, expected ${value}`,
      );
    });
    assertEigenpairs(matrix, d, eigenvalues, eigenvectors, 1e-4);
    assert.ok(sweeps <= 15, `${name}: ${sweeps} sweeps`);
  }
  assertNoGpuErrors();
});

Deno.test("symmetricEigen of a random 256 × 256 SPD matrix (timed)", async () => {
  await init();
  const d = 256;
  const values = Array.from({ length: d }, (_, i) => 1 + 100 * 0.97 ** i);
  const matrix = withEigenvalues(values, randomOrthogonal(d, 6));
  const input = upload(matrix, [d, d]);
  const stats = currentGpu().recorder.stats;
  const readbacks = stats.readbacks;
  const started = performance.now();
  const { eigenvalues, eigenvectors, sweeps } = await symmetricEigen(input);
  const seconds = (performance.now() - started) / 1000;
  // The norms before the first sweep and after each, then the result.
  assert.equal(stats.readbacks - readbacks, sweeps + 2);
  input.dispose();
  console.log(`symmetricEigen d = ${d}: ${seconds.toFixed(2)} s, ${sweeps} sweeps`);
  values.sort((a, b) => b - a).forEach((value, i) => {
    assert.ok(Math.abs(eigenvalues[i] - value) <= 1e-4 * values[0], `λ${i}`);
  });
  assertEigenpairs(matrix, d, eigenvalues, eigenvectors, 1e-4);
  assertNoGpuErrors();
});

/**
 * Rows with covariance exactly Q·diag(variances)·Qᵀ around `centre`: orthogonal ±1 columns of a
 * Sylvester Hadamard matrix (each of mean 0) scaled and rotated.
 */
function dataWithVariances(variances: readonly number[], n: number, seed: number) {
  const d = variances.length;
  const hadamard = (r: number, c: number) => {
    let bits = r & c, parity = 0;
    while (bits) [parity, bits] = [parity ^ (bits & 1), bits >> 1];
    return parity ? -1 : 1;
  };
  const q = randomOrthogonal(d, seed);
  const centre = Array.from({ length: d }, (_, j) => j - 3);
  const rows = new Float64Array(n * d);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < d; j++) {
      let sum = centre[j];
      for (let k = 0; k < d; k++) {
        sum += hadamard(r, k + 1) * Math.sqrt(variances[k] * (n - 1) / n) * q[j * d + k];
      }
      rows[r * d + j] = sum;
    }
  }
  return { rows, q, centre };
}

Deno.test("pca keeps the fewest components that reach the variance fraction", async () => {
  await init();
  // Cumulative: 50, 70, 80, 88, 93, 96, 98, 99, 99.6, 100 (of 100).
  const variances = [50, 20, 10, 8, 5, 3, 2, 1, 0.6, 0.4];
  const d = variances.length, n = 64;
  const { rows, q, centre } = dataWithVariances(variances, n, 8);
  const features = upload(rows, [n, d]);
  for (const [kept, k] of [[0.95, 6], [0.9, 5], [0.45, 1], [0.999, 10], [1, 10]] as const) {
    const basis = await pca(features, { varianceKept: kept });
    assert.equal(basis.eigenvalues.length, k, `varianceKept ${kept}`);
    assert.equal(basis.components.length, d * k);
    const expectedFraction = variances.slice(0, k).reduce((a, b) => a + b, 0) / 100;
    assert.ok(Math.abs(basis.explainedVariance - expectedFraction) < 1e-4);
    basis.eigenvalues.forEach((value, i) => assert.ok(Math.abs(value - variances[i]) < 1e-3));
    basis.mean.forEach((value, j) => assert.ok(Math.abs(value - centre[j]) < 1e-5));
    for (let c = 0; c < k; c++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += basis.components[j * k + c] * q[j * d + c];
      assert.ok(Math.abs(Math.abs(dot) - 1) < 1e-4, `component ${c}: |dot| = ${Math.abs(dot)}`);
    }
  }
  features.dispose();

  // Fewer rows than columns: a covariance of rank n − 1, whose zero eigenvalues are f32 noise.
  const few = 30, wide = 64;
  const random = seededRandom(12);
  const narrow = Float32Array.from({ length: few * wide }, () => random());
  const input = upload(narrow, [few, wide]);
  const basis = await pca(input, { varianceKept: 0.999 });
  assert.ok(basis.eigenvalues.length <= few - 1, `k = ${basis.eigenvalues.length}`);
  let trace = 0;
  for (let j = 0; j < wide; j++) {
    let mean = 0, square = 0;
    for (let r = 0; r < few; r++) mean += narrow[r * wide + j] / few;
    for (let r = 0; r < few; r++) square += (narrow[r * wide + j] - mean) ** 2;
    trace += square / (few - 1);
  }
  const kept = basis.eigenvalues.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(kept / trace - basis.explainedVariance) < 1e-4);
  input.dispose();
  assertNoGpuErrors();
});

Deno.test("project matches (x − mean)·components in float64", async () => {
  await init();
  const n = 200, d = 20;
  const random = seededRandom(9);
  const rows = Float32Array.from({ length: n * d }, (_, i) => random() * (1 + (i % d)));
  const features = upload(rows, [n, d]);
  const basis = await pca(features, { varianceKept: 0.9 });
  const k = basis.eigenvalues.length;
  assert.ok(k > 1 && k < d, `k = ${k}`);
  const projected = project(basis, features);
  assert.deepEqual(projected.shape, [n, k]);
  const values = await projected.toArray();
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      let sum = 0;
      for (let j = 0; j < d; j++) {
        sum += (rows[r * d + j] - basis.mean[j]) * basis.components[j * k + c];
      }
      assert.ok(Math.abs(values[r * k + c] - sum) < 1e-4, `[${r}, ${c}]`);
    }
  }
  [features, projected].forEach((t) => t.dispose());
  assertNoGpuErrors();
});

/** `perBlob` points around each of `blobs` centres far apart, and each blob's sample mean. */
function blobs(blobCount: number, perBlob: number, dim: number, seed: number) {
  const random = seededRandom(seed);
  const noise = normals(blobCount * perBlob * dim, seed + 1);
  const centres = Array.from(
    { length: blobCount },
    () => Array.from({ length: dim }, () => 40 * random() - 20),
  );
  const points = new Float32Array(blobCount * perBlob * dim);
  const means = new Float64Array(blobCount * dim);
  for (let b = 0; b < blobCount; b++) {
    for (let p = 0; p < perBlob; p++) {
      for (let j = 0; j < dim; j++) {
        const i = (b * perBlob + p) * dim + j;
        points[i] = centres[b][j] + 0.5 * noise[i];
        means[b * dim + j] += points[i] / perBlob;
      }
    }
  }
  return { points, means };
}

function squaredDistance(
  a: ArrayLike<number>,
  i: number,
  b: ArrayLike<number>,
  j: number,
  dim: number,
) {
  let sum = 0;
  for (let k = 0; k < dim; k++) sum += (a[i * dim + k] - b[j * dim + k]) ** 2;
  return sum;
}

/** Sum over the points of the squared distance to the nearest centre, in float64. */
function inertiaReference(points: Float32Array, centres: Float32Array, dim: number): number {
  let total = 0;
  for (let i = 0; i < points.length / dim; i++) {
    let best = Infinity;
    for (let c = 0; c < centres.length / dim; c++) {
      best = Math.min(best, squaredDistance(points, i, centres, c, dim));
    }
    total += best;
  }
  return total;
}

/** Every expected centre has a found centre within `tolerance` (each found centre used once). */
function assertSameCentres(
  found: Float32Array,
  expected: Float64Array,
  dim: number,
  tolerance: number,
) {
  const used = new Set<number>();
  for (let e = 0; e < expected.length / dim; e++) {
    let best = -1;
    for (let f = 0; f < found.length / dim; f++) {
      if (used.has(f)) continue;
      if (
        best < 0 ||
        squaredDistance(found, f, expected, e, dim) < squaredDistance(found, best, expected, e, dim)
      ) {
        best = f;
      }
    }
    used.add(best);
    const distance = Math.sqrt(squaredDistance(found, best, expected, e, dim));
    assert.ok(distance < tolerance, `centre ${e}: nearest found centre at ${distance}`);
  }
}

Deno.test("kmeans finds separated blobs; inertia, seeds and determinism", async () => {
  await init();
  const dim = 8, count = 5, perBlob = 200;
  const { points, means } = blobs(count, perBlob, dim, 10);
  const input = upload(points, [count * perBlob, dim]);
  const stats = currentGpu().recorder.stats;
  const readbacks = stats.readbacks;
  const result = await kmeans(input, count, { seed: 3 });
  // The variances, a k-means++ pick after the first, a check every 5 iterations, the result.
  const checks = Math.ceil(result.iterations / 5);
  assert.equal(stats.readbacks - readbacks, 1 + (count - 1) + checks + 1);
  assertSameCentres(result.centres, means, dim, 1e-3);
  assert.ok(result.converged && result.iterations >= 1 && result.iterations < 100);
  const inertia = inertiaReference(points, result.centres, dim);
  assert.ok(
    Math.abs(result.inertia - inertia) <= 1e-4 * inertia,
    `${result.inertia} vs ${inertia}`,
  );
  assert.equal(result.seeds.length, count);
  assert.equal(new Set(result.seeds).size, count, "k-means++ picks distinct points");
  result.seeds.forEach((row, slot) => assert.ok(row >= 0 && row < count * perBlob, `seed ${slot}`));
  const again = await kmeans(input, count, { seed: 3 });
  assert.deepEqual(again, result, "the same seed gives the same result");
  const other = await kmeans(input, count, { seed: 4 });
  assert.notDeepEqual(other.seeds, result.seeds);
  input.dispose();
  assertNoGpuErrors();
});

Deno.test("kmeans re-seeds empty clusters; duplicate points", async () => {
  await init();
  const dim = 4, count = 3, perBlob = 50;
  const { points, means } = blobs(count, perBlob, dim, 20);
  const input = upload(points, [count * perBlob, dim]);
  // Two starting centres share the first blob and one is far from everything: two clusters are
  // empty after the first assignment, and re-seeding must still find all three blobs.
  const initialCentres = new Float32Array(count * dim);
  initialCentres.set(points.subarray(0, dim), 0);
  initialCentres.set(points.subarray(dim, 2 * dim), dim);
  initialCentres.fill(1e4, 2 * dim);
  const result = await kmeans(input, count, { initialCentres, tolerance: 0 });
  assertSameCentres(result.centres, means, dim, 1e-3);
  assert.equal(result.seeds.length, 0);

  // Two empty clusters in one iteration take the farthest and the next farthest point from the
  // centre that every point was assigned to.
  const n = count * perBlob;
  const far = new Float32Array(count * dim);
  far.set(points.subarray(0, dim), 0);
  far.fill(1e4, dim);
  const once = await kmeans(input, count, { initialCentres: far, maxIterations: 1 });
  assert.equal(once.iterations, 1);
  assert.equal(once.converged, false);
  const byDistance = Array.from({ length: n }, (_, i) => i)
    .sort((a, b) =>
      squaredDistance(points, b, far, 0, dim) - squaredDistance(points, a, far, 0, dim) || a - b
    );
  assert.deepEqual(
    once.centres.slice(dim, 2 * dim),
    points.slice(byDistance[0] * dim, (byDistance[0] + 1) * dim),
  );
  assert.deepEqual(
    once.centres.slice(2 * dim),
    points.slice(byDistance[1] * dim, (byDistance[1] + 1) * dim),
  );
  for (let j = 0; j < dim; j++) {
    let mean = 0;
    for (let i = 0; i < n; i++) mean += points[i * dim + j] / n;
    assert.ok(Math.abs(once.centres[j] - mean) < 1e-4, `centre 0 is the mean of all points`);
  }
  input.dispose();

  const same = upload(new Float32Array(20 * dim).fill(2.5), [20, dim]);
  const duplicates = await kmeans(same, 3, { seed: 1 });
  assert.equal(new Set(duplicates.seeds).size, 3, "distinct rows even when all points are equal");
  assert.ok(duplicates.centres.every((value) => value === 2.5));
  assert.equal(duplicates.inertia, 0);
  assert.ok(duplicates.converged);
  same.dispose();
  assertNoGpuErrors();
});

Deno.test("nearestCentreDistance matches brute force", async () => {
  await init();
  const n = 777, dim = 6, clusters = 9;
  const random = seededRandom(30);
  const points = Float32Array.from({ length: n * dim }, () => 4 * random() - 2);
  const centres = Float32Array.from({ length: clusters * dim }, () => 4 * random() - 2);
  const input = upload(points, [n, dim]);
  const distances = nearestCentreDistance(input, centres);
  assert.deepEqual(distances.shape, [n]);
  const values = await distances.toArray();
  for (let i = 0; i < n; i++) {
    let best = Infinity;
    for (let c = 0; c < clusters; c++) {
      best = Math.min(best, squaredDistance(points, i, centres, c, dim));
    }
    assert.ok(Math.abs(values[i] - Math.sqrt(best)) < 1e-5, `point ${i}`);
  }
  [input, distances].forEach((t) => t.dispose());
  assertNoGpuErrors();
});

Deno.test("bad input is rejected with errors naming what was expected", async () => {
  await init();
  const good = upload(normals(40, 40), [10, 4]);
  const withNaN = Float32Array.from(normals(40, 41));
  withNaN[13] = NaN;
  const nan = upload(withNaN, [10, 4]);
  const flat = upload([1, 2, 3], [3]);
  const oneRow = upload([1, 2, 3], [1, 3]);

  await assert.rejects(pca(nan), /non-finite value .* in column 1/);
  await assert.rejects(pca(oneRow), /at least 2 rows/);
  await assert.rejects(pca(flat), /2-D tensor \[n ≥ 1, d ≥ 1\], got \[3\]/);
  for (const varianceKept of [0, -0.5, 1.5, NaN]) {
    await assert.rejects(pca(good, { varianceKept }), /varianceKept must be in \(0, 1\]/);
  }
  await assert.rejects(symmetricEigen(good), /square matrix \[d, d\], got \[10,4\]/);
  const nanMatrix = upload([1, NaN, NaN, 1], [2, 2]);
  await assert.rejects(symmetricEigen(nanMatrix), /non-finite entry/);
  const hard = upload(randomSymmetric(16, 42), [16, 16]);
  await assert.rejects(symmetricEigen(hard, { maxSweeps: 1 }), /did not converge in 1 sweeps/);
  const stopped = new AbortController();
  stopped.abort(new Error("stopped"));
  await assert.rejects(symmetricEigen(hard, { signal: stopped.signal }), /stopped/);

  const basis = await pca(good);
  const wide = upload(normals(50, 43), [10, 5]);
  assert.throws(() => project(basis, wide), /features of shape \[n, 4\], got \[10,5\]/);
  assert.throws(() => project({ ...basis, components: new Float32Array(3) }, good), /components/);

  await assert.rejects(kmeans(good, 11), /clusters must be an integer from 1 to 10/);
  await assert.rejects(kmeans(good, 0), /clusters must be an integer from 1 to 10/);
  await assert.rejects(kmeans(good, 2.5), /clusters must be an integer/);
  await assert.rejects(kmeans(nan, 2), /non-finite value .* in column 1/);
  await assert.rejects(kmeans(flat, 1), /2-D tensor/);
  await assert.rejects(kmeans(good, 2, { maxIterations: 0 }), /maxIterations must be a positive/);
  await assert.rejects(kmeans(good, 2, { tolerance: -1 }), /tolerance must be a finite number ≥ 0/);
  await assert.rejects(
    kmeans(good, 2, { initialCentres: new Float32Array(6) }),
    /initialCentres must be a Float32Array of 2 × 4 values, got 6 values/,
  );
  assert.throws(
    () => nearestCentreDistance(good, new Float32Array(6)),
    /centres must be a Float32Array of clusters × 4 values, got 6 values/,
  );
  assert.throws(
    () => nearestCentreDistance(good, Float32Array.of(0, 0, NaN, 0)),
    /non-finite value at centre 0/,
  );
  for (const t of [good, nan, flat, oneRow, nanMatrix, hard, wide]) t.dispose();
  assertNoGpuErrors();
});
