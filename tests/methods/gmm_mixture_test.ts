/**
 * The GMM's GPU kernels against float64 CPU references: the E-step's log-likelihoods, the
 * M-step's sums, EM recovering a known mixture, BIC choosing its size, and the neighbourhood
 * features.
 */

import assert from "node:assert/strict";
import { init, tensor, tidy } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { currentGpu } from "../../src/gpu/device.ts";
import { Random } from "../../src/data/random.ts";
import {
  choleskyLower,
  featureMajorFromRows,
  fitGaussianMixture,
  fitGaussianMixtureBic,
  type GaussianMixture,
  mixtureLogLikelihood,
  rowsFromFeatureMajor,
  sufficientStatistics,
  uploadMixture,
} from "../../src/methods/gmm/mixture.ts";
import {
  neighbourhoodFeatures,
  neighbourhoodProjection,
  projectionTensor,
} from "../../src/methods/gmm/features.ts";

/** A known mixture: means, covariances built from given standard deviations and correlations. */
function knownMixture(): GaussianMixture {
  // Three well separated components in 3-D with different shapes and weights.
  const dim = 3;
  const weights = Float64Array.from([0.5, 0.3, 0.2]);
  const means = Float64Array.from([0, 0, 0, 4, 4, 0, -4, 3, 3]);
  const covariances = new Float64Array(3 * 9);
  const shapes = [
    [1.0, 0.3, 0.5, 0.2, 0.1, -0.1],
    [0.5, 0.8, 0.4, -0.3, 0.0, 0.2],
    [0.7, 0.4, 0.9, 0.0, 0.3, 0.0],
  ];
  shapes.forEach(([s0, s1, s2, r01, r02, r12], k) => {
    const sd = [s0, s1, s2];
    const correlation = [[1, r01, r02], [r01, 1, r12], [r02, r12, 1]];
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) {
        covariances[k * 9 + i * 3 + j] = sd[i] * sd[j] * correlation[i][j];
      }
    }
  });
  return { dim, components: 3, weights, means, covariances };
}

/** Samples from a mixture on the CPU, in float64 then stored as f32 rows. */
function sampleMixture(mixture: GaussianMixture, count: number, seed: number): Float32Array {
  const { dim } = mixture;
  const random = new Random(seed);
  const out = new Float32Array(count * dim);
  const factors = Array.from(
    { length: mixture.components },
    (_, k) => choleskyLower(mixture.covariances.subarray(k * dim * dim, (k + 1) * dim * dim), dim)!,
  );
  for (let n = 0; n < count; n++) {
    let u = random.next();
    let k = 0;
    while (k < mixture.components - 1 && u >= mixture.weights[k]) u -= mixture.weights[k++];
    const z = Array.from({ length: dim }, () => random.normal());
    for (let i = 0; i < dim; i++) {
      let value = mixture.means[k * dim + i];
      for (let j = 0; j <= i; j++) value += factors[k][i * dim + j] * z[j];
      out[n * dim + i] = value;
    }
  }
  return out;
}

/** log p(x) under a mixture in float64, straight from the definition. */
function referenceLogLikelihood(mixture: GaussianMixture, x: ArrayLike<number>): number {
  const { dim } = mixture;
  const terms: number[] = [];
  for (let k = 0; k < mixture.components; k++) {
    const l = choleskyLower(mixture.covariances.subarray(k * dim * dim, (k + 1) * dim * dim), dim)!;
    // Solve L z = x − μ.
    const z = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      let value = x[i] - mixture.means[k * dim + i];
      for (let j = 0; j < i; j++) value -= l[i * dim + j] * z[j];
      z[i] = value / l[i * dim + i];
    }
    let logDet = 0;
    let squared = 0;
    for (let i = 0; i < dim; i++) {
      logDet += 2 * Math.log(l[i * dim + i]);
      squared += z[i] * z[i];
    }
    terms.push(
      Math.log(mixture.weights[k]) - 0.5 * (dim * Math.log(2 * Math.PI) + logDet + squared),
    );
  }
  const best = Math.max(...terms);
  return best + Math.log(terms.reduce((s, t) => s + Math.exp(t - best), 0));
}

Deno.test("the E-step kernel's log-likelihood matches a float64 reference, far samples included", async () => {
  await init();
  const mixture = knownMixture();
  const host = sampleMixture(mixture, 500, 1);
  // Samples far from every component: the log-sum-exp must stay finite and accurate.
  host.set([40, -30, 25, 1e3, 1e3, -1e3], 0);
  const samples = tensor(featureMajorFromRows(host, 3, 500), [3, 500]);
  const uploaded = uploadMixture(mixture);
  const { logLikelihood, responsibilities } = mixtureLogLikelihood(samples, uploaded, true);
  const [ll, resp] = [await logLikelihood.toArray(), await responsibilities!.toArray()];
  for (let n = 0; n < 500; n++) {
    const expected = referenceLogLikelihood(mixture, host.subarray(n * 3, n * 3 + 3));
    assert.ok(Number.isFinite(ll[n]), `sample ${n}: ${ll[n]}`);
    const tolerance = 2e-5 * Math.max(1, Math.abs(expected));
    assert.ok(Math.abs(ll[n] - expected) <= tolerance, `sample ${n}: ${ll[n]} vs ${expected}`);
    const total = resp[n] + resp[500 + n] + resp[1000 + n];
    assert.ok(Math.abs(total - 1) < 1e-4, `responsibilities of ${n} sum to ${total}`);
  }
  for (const t of [samples, logLikelihood, responsibilities!]) t.dispose();
  uploaded.dispose();
  assert.deepEqual(currentGpu().errors, []);
});

Deno.test("NaN or infinite samples get finite log-likelihoods and leave the others alone", async () => {
  await init();
  const mixture = knownMixture();
  const host = sampleMixture(mixture, 64, 3);
  host.set([NaN, 0, 0, Infinity, 1, 2, 0, -Infinity, 0, NaN, NaN, NaN], 0);
  const samples = tensor(featureMajorFromRows(host, 3, 64), [3, 64]);
  const uploaded = uploadMixture(mixture);
  const { logLikelihood, responsibilities } = mixtureLogLikelihood(samples, uploaded, true);
  const [ll, resp] = [await logLikelihood.toArray(), await responsibilities!.toArray()];
  ll.forEach((value, n) => assert.ok(Number.isFinite(value), `sample ${n}: ${value}`));
  resp.forEach((value, i) => assert.ok(Number.isFinite(value), `responsibility ${i}: ${value}`));
  for (let n = 0; n < 4; n++) assert.ok(ll[n] <= -1e29, `sample ${n} is impossible: ${ll[n]}`);
  for (let n = 4; n < 64; n++) {
    const expected = referenceLogLikelihood(mixture, host.subarray(n * 3, n * 3 + 3));
    assert.ok(Math.abs(ll[n] - expected) <= 2e-5 * Math.max(1, Math.abs(expected)));
  }
  for (const t of [samples, logLikelihood, responsibilities!]) t.dispose();
  uploaded.dispose();
  assert.deepEqual(currentGpu().errors, []);
});

Deno.test("an E-step split into column chunks gives the same result as one pass", async () => {
  await init();
  const mixture = knownMixture();
  const host = sampleMixture(mixture, 301, 4);
  const samples = tensor(featureMajorFromRows(host, 3, 301), [3, 301]);
  const uploaded = uploadMixture(mixture);
  const whole = mixtureLogLikelihood(samples, uploaded, true);
  const chunked = mixtureLogLikelihood(samples, uploaded, true, 64); // 5 chunks, the last partial
  assert.deepEqual(await chunked.logLikelihood.toArray(), await whole.logLikelihood.toArray());
  assert.deepEqual(
    await chunked.responsibilities!.toArray(),
    await whole.responsibilities!.toArray(),
  );
  for (
    const t of [
      samples,
      whole.logLikelihood,
      whole.responsibilities!,
      chunked.logLikelihood,
      chunked.responsibilities!,
    ]
  ) {
    t.dispose();
  }
  uploaded.dispose();
});

Deno.test("the M-step's GPU sums match a float64 reference", async () => {
  await init();
  const random = new Random(5);
  const [count, dim, components] = [300, 4, 2];
  const host = Float32Array.from({ length: count * dim }, () => random.uniform(-1, 2));
  const respHost = new Float32Array(count * components);
  for (let n = 0; n < count; n++) {
    const r = random.next();
    respHost[n] = r;
    respHost[count + n] = 1 - r;
  }
  const shifts = Float64Array.from({ length: components * dim }, () => random.uniform(0, 1));
  const stats = tidy(() =>
    sufficientStatistics(
      tensor(featureMajorFromRows(host, dim, count), [dim, count]),
      tensor(respHost, [components, count]),
      shifts,
      components,
    )
  );
  const actual = await stats.toArray();
  stats.dispose();
  const side = dim + 1;
  for (let k = 0; k < components; k++) {
    // Reference: the (d+1)×(d+1) matrix Σ r [x − s; 1][x − s; 1]ᵀ.
    const expected = new Float64Array(side * side);
    for (let n = 0; n < count; n++) {
      const r = respHost[k * count + n];
      const v = [
        ...Array.from({ length: dim }, (_, i) => host[n * dim + i] - shifts[k * dim + i]),
        1,
      ];
      for (let i = 0; i < side; i++) {
        for (let j = 0; j < side; j++) expected[i * side + j] += r * v[i] * v[j];
      }
    }
    for (let e = 0; e < side * side; e++) {
      const value = actual[k * side * side + e];
      assert.ok(
        Math.abs(value - expected[e]) <= 1e-4 * Math.max(1, Math.abs(expected[e])),
        `component ${k}, statistic ${e}: ${value} vs ${expected[e]}`,
      );
    }
  }
});

function assertRecovers(actual: GaussianMixture, expected: GaussianMixture, tolerance: number) {
  const { dim } = expected;
  // Components come back in any order: match each known one to the nearest fitted mean.
  for (let k = 0; k < expected.components; k++) {
    let match = -1;
    let best = Infinity;
    for (let m = 0; m < actual.components; m++) {
      let d = 0;
      for (let i = 0; i < dim; i++) {
        d += (actual.means[m * dim + i] - expected.means[k * dim + i]) ** 2;
      }
      if (d < best) [match, best] = [m, d];
    }
    assert.ok(Math.sqrt(best) < tolerance, `component ${k}: mean off by ${Math.sqrt(best)}`);
    assert.ok(
      Math.abs(actual.weights[match] - expected.weights[k]) < 0.03,
      `component ${k}: weight ${actual.weights[match]} vs ${expected.weights[k]}`,
    );
    for (let e = 0; e < dim * dim; e++) {
      const a = actual.covariances[match * dim * dim + e];
      const b = expected.covariances[k * dim * dim + e];
      assert.ok(Math.abs(a - b) < tolerance, `component ${k}, covariance entry ${e}: ${a} vs ${b}`);
    }
  }
}

Deno.test("EM on the GPU recovers a 3-D mixture sampled from known Gaussians", async () => {
  await init();
  const truth = knownMixture();
  const samples = tensor(featureMajorFromRows(sampleMixture(truth, 6000, 2), 3, 6000), [3, 6000]);
  const fit = await fitGaussianMixture(samples, {
    components: 3,
    regularization: 1e-6,
    seed: 3,
    tolerance: 1e-6,
  });
  samples.dispose();
  assertRecovers(fit.mixture, truth, 0.12);
  assert.deepEqual(currentGpu().errors, []);
});

Deno.test("EM recovers a 2-D mixture and BIC picks its number of components", async () => {
  await init();
  const truth: GaussianMixture = {
    dim: 2,
    components: 2,
    weights: Float64Array.from([0.6, 0.4]),
    means: Float64Array.from([-2, 0, 2, 1]),
    covariances: Float64Array.from([0.5, 0.2, 0.2, 0.4, 0.3, -0.1, -0.1, 0.6]),
  };
  const samples = tensor(featureMajorFromRows(sampleMixture(truth, 4000, 7), 2, 4000), [2, 4000]);
  const selection = await fitGaussianMixtureBic(samples, [1, 2, 3, 4], {
    regularization: 1e-6,
    seed: 1,
    tolerance: 1e-6,
  });
  samples.dispose();
  assert.equal(selection.best.mixture.components, 2, JSON.stringify(selection.table));
  assertRecovers(selection.best.mixture, truth, 0.1);
});

Deno.test("neighbourhood features read each pixel's window with replicated borders", async () => {
  await init();
  const [width, height, patch] = [9, 6, 3];
  const image = Float32Array.from({ length: width * height }, (_, i) => i * 0.01);
  const plane = tensor(image, [1, 1, height, width]);
  const identity = projectionTensor(neighbourhoodProjection(patch, 9, 0), patch);
  const grid = { stride: 2, offsetX: 1, offsetY: 0 };
  const features = neighbourhoodFeatures(plane, identity, patch, grid);
  const count = features.shape[1];
  const actual = rowsFromFeatureMajor(await features.toArray(), 9, count);
  const clampTo = (v: number, n: number) => Math.min(Math.max(v, 0), n - 1);
  let s = 0;
  for (let y = 0; y < height; y += 2) {
    for (let x = 1; x < width; x += 2) {
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const expected = image[clampTo(y + dy, height) * width + clampTo(x + dx, width)];
          const value = actual[s * 9 + (dy + 1) * 3 + dx + 1];
          assert.ok(Math.abs(value - expected) < 1e-6, `sample ${s} (${x}, ${y}): ${value}`);
        }
      }
      s++;
    }
  }
  assert.equal(count, s);
  // A random projection is the same matrix product on the window.
  const matrix = neighbourhoodProjection(patch, 4, 9);
  const projected = rowsFromFeatureMajor(
    await neighbourhoodFeatures(plane, projectionTensor(matrix, patch), patch, grid).toArray(),
    4,
    count,
  );
  for (let n = 0; n < s; n++) {
    for (let j = 0; j < 4; j++) {
      let expected = 0;
      for (let t = 0; t < 9; t++) expected += matrix[j * 9 + t] * actual[n * 9 + t];
      assert.ok(Math.abs(projected[n * 4 + j] - expected) < 1e-5);
    }
  }
});
