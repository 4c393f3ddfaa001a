/**
 * PatchCore's GPU searches against float64 CPU references on small random data: the greedy
 * coreset (exact without projection, a close covering radius with it, identical when chunked),
 * nearest-neighbour search across bank chunks and query blocks, nearestOfRow, bad input, and one
 * timing of a realistic size.
 */

import assert from "node:assert/strict";
import { currentGpu } from "../../src/gpu/device.ts";
import { init, tensor, toArrays } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { greedyCoreset, MemoryBank } from "../../src/methods/patchcore/search.ts";
import { seededRandom } from "../tensor/reference.ts";

function randomRows(n: number, dim: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: n * dim }, () => random() * 2 - 1);
}

/** Rows around `clusters` centres with very unequal sizes, so a random subset misses some. */
function clusteredRows(n: number, dim: number, clusters: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const centres = Array.from({ length: clusters }, () => Array.from({ length: dim }, normal));
  const weights = centres.map((_, c) => 0.7 ** c);
  const total = weights.reduce((a, b) => a + b, 0);
  const rows = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    let pick = random() * total;
    let c = 0;
    while (c < clusters - 1 && (pick -= weights[c]) > 0) c++;
    for (let k = 0; k < dim; k++) rows[i * dim + k] = 4 * centres[c][k] + 0.3 * normal();
  }
  return rows;
}

function squaredDistance(a: Float32Array, i: number, b: Float32Array, j: number, dim: number) {
  let sum = 0;
  for (let k = 0; k < dim; k++) sum += (a[i * dim + k] - b[j * dim + k]) ** 2;
  return sum;
}

/** Exact greedy k-center in float64 from `start`, with the GPU's rules (ties: smaller row). */
function greedyReference(rows: Float32Array, dim: number, count: number, start: number): number[] {
  const n = rows.length / dim;
  const minimum = new Float64Array(n).fill(Infinity);
  const taken = new Uint8Array(n);
  const chosen = [start];
  taken[start] = 1;
  while (chosen.length < count) {
    const last = chosen[chosen.length - 1];
    let best = -1;
    for (let i = 0; i < n; i++) {
      if (taken[i]) continue;
      minimum[i] = Math.min(minimum[i], squaredDistance(rows, i, rows, last, dim));
      if (best < 0 || minimum[i] > minimum[best]) best = i;
    }
    chosen.push(best);
    taken[best] = 1;
  }
  return chosen;
}

/** Largest distance of a row to its nearest chosen row, in the original space. */
function coveringRadius(rows: Float32Array, dim: number, chosen: ArrayLike<number>): number {
  let radius = 0;
  for (let i = 0; i < rows.length / dim; i++) {
    let nearest = Infinity;
    for (let c = 0; c < chosen.length; c++) {
      nearest = Math.min(nearest, squaredDistance(rows, i, rows, chosen[c], dim));
    }
    radius = Math.max(radius, nearest);
  }
  return Math.sqrt(radius);
}

function assertNoGpuErrors(): void {
  assert.deepEqual(currentGpu().errors, []);
}

Deno.test("greedyCoreset without projection is the exact greedy k-center selection", async () => {
  await init();
  for (const [dim, options] of [[23, { projectionDim: 0 }], [16, { projectionDim: 16 }]] as const) {
    const rows = randomRows(700, dim, dim);
    const chosen = await greedyCoreset(rows, dim, 80, { ...options, seed: 5 });
    assert.equal(chosen.length, 80);
    assert.deepEqual([...chosen], greedyReference(rows, dim, 80, chosen[0]));
    const again = await greedyCoreset(rows, dim, 80, { ...options, seed: 5 });
    assert.deepEqual(again, chosen, "the same seed gives the same selection");
  }
  // Every row selected: duplicates included, no row twice.
  const duplicated = new Float32Array(8 * 3).fill(1);
  const all = await greedyCoreset(duplicated, 3, 8, { projectionDim: 0 });
  assert.deepEqual([...all].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7]);
  assertNoGpuErrors();
});

Deno.test("greedyCoreset with a random projection covers almost as well as exact greedy", async () => {
  await init();
  const dim = 64, n = 2000, count = 60;
  const rows = clusteredRows(n, dim, 30, 11);
  const projected = await greedyCoreset(rows, dim, count, { projectionDim: 16, seed: 1 });
  assert.equal(new Set(projected).size, count);
  const exact = coveringRadius(rows, dim, greedyReference(rows, dim, count, projected[0]));
  const approximate = coveringRadius(rows, dim, projected);
  const random = seededRandom(2);
  const subset = Array.from({ length: count }, () => Math.floor(random() * n));
  const baseline = coveringRadius(rows, dim, subset);
  console.log(
    `covering radius: exact greedy ${exact.toFixed(2)}, projected to 16-d ` +
      `${approximate.toFixed(2)}, random subset ${baseline.toFixed(2)}`,
  );
  assert.ok(approximate <= 1.5 * exact, `projected ${approximate} vs exact ${exact}`);
  assert.ok(baseline >= 2 * approximate, `random ${baseline} vs projected ${approximate}`);
  assertNoGpuErrors();
});

Deno.test("greedyCoreset gives the same selection in many small chunks", async () => {
  await init();
  const rows = randomRows(600, 40, 3);
  for (const projectionDim of [0, 12]) {
    const whole = await greedyCoreset(rows, 40, 70, { projectionDim, seed: 9 });
    // 40-d rows are 160 bytes: uploads of 37 rows; points of 40 or 12 floats.
    const chunked = await greedyCoreset(rows, 40, 70, {
      projectionDim,
      seed: 9,
      maxChunkBytes: 160 * 37,
    });
    assert.deepEqual(chunked, whole, `projectionDim ${projectionDim}`);
  }
  assertNoGpuErrors();
});

Deno.test("greedyCoreset reports progress and stops on its signal", async () => {
  await init();
  const rows = randomRows(300, 8, 4);
  const seen: number[] = [];
  await greedyCoreset(rows, 8, 300, { onProgress: (done, total) => seen.push(done, total) });
  assert.deepEqual(seen, [257, 300, 300, 300]);
  const controller = new AbortController();
  await assert.rejects(
    greedyCoreset(rows, 8, 300, {
      signal: controller.signal,
      onProgress: () => controller.abort(),
    }),
    (error: Error) => error.name === "AbortError",
  );
  assertNoGpuErrors();
});

/** Brute-force nearest rows in float64: [index, distance] per query. */
function nearestReference(bank: Float32Array, queries: Float32Array, dim: number) {
  const found: [number, number][] = [];
  for (let q = 0; q < queries.length / dim; q++) {
    let best = -1, bestDistance = Infinity;
    for (let r = 0; r < bank.length / dim; r++) {
      const d = squaredDistance(queries, q, bank, r, dim);
      if (d < bestDistance) [best, bestDistance] = [r, d];
    }
    found.push([best, Math.sqrt(bestDistance)]);
  }
  return found;
}

Deno.test("MemoryBank.nearest matches brute force across bank chunks and query blocks", async () => {
  await init();
  const dim = 48, rows = 3000, q = 200;
  const data = randomRows(rows, dim, 21);
  const queryData = randomRows(q, dim, 22);
  const expected = nearestReference(data, queryData, dim);
  const queries = tensor(queryData, [q, dim]);
  // 700 rows per chunk (5 chunks) and 48 queries per block of scores (5 blocks).
  for (const options of [{}, { maxChunkBytes: 4 * dim * 700 }]) {
    const bank = new MemoryBank(data, dim, options);
    const result = bank.nearest(queries);
    const [distances, indices] = await toArrays([result.distances, result.indices]);
    for (let i = 0; i < q; i++) {
      const [index, distance] = expected[i];
      if (indices[i] !== index) {
        // Only a near-tie may go either way.
        const other = Math.sqrt(squaredDistance(queryData, i, data, indices[i], dim));
        assert.ok(other <= distance * (1 + 1e-5), `query ${i}: row ${indices[i]}, not ${index}`);
      }
      const error = Math.abs(distances[i] - distance) / distance;
      assert.ok(error < 1e-4, `query ${i}: distance ${distances[i]}, expected ${distance}`);
    }
    result.distances.dispose();
    result.indices.dispose();
    bank.dispose();
  }
  // A query that is a bank row finds it, at (almost) zero.
  const bank = new MemoryBank(data, dim, { maxChunkBytes: 4 * dim * 700 });
  const member = tensor(data.subarray(2345 * dim, 2346 * dim), [1, dim]);
  const hit = bank.nearest(member);
  const [[distance], [index]] = await toArrays([hit.distances, hit.indices]);
  assert.equal(index, 2345);
  assert.ok(distance >= 0 && distance < 1e-2, `distance to itself ${distance}`);
  for (const t of [queries, member, hit.distances, hit.indices]) t.dispose();
  bank.dispose();
  assertNoGpuErrors();
});

Deno.test("MemoryBank.nearestOfRow matches brute force", async () => {
  await init();
  const dim = 20, rows = 500;
  const data = randomRows(rows, dim, 31);
  const bank = new MemoryBank(data, dim);
  for (const row of [0, 17, 499]) {
    const { indices, distances } = await bank.nearestOfRow(row, 9);
    const order = Array.from({ length: rows }, (_, r) => r)
      .map((r) => [r, Math.sqrt(squaredDistance(data, row, data, r, dim))])
      .sort((a, b) => a[1] - b[1] || a[0] - b[0])
      .slice(0, 9);
    assert.deepEqual([...indices], order.map(([r]) => r));
    assert.equal(indices[0], row);
    order.forEach(([, d], i) => assert.ok(Math.abs(distances[i] - d) <= 1e-6 * (1 + d)));
  }
  assert.equal((await bank.nearestOfRow(3, 1000)).indices.length, rows);
  bank.dispose();
});

Deno.test("greedyCoreset and MemoryBank refuse bad input, naming what they expected", async () => {
  await init();
  const rows = randomRows(10, 4, 41);
  await assert.rejects(greedyCoreset(rows, 3, 2), /rows × 3 values \(at least one row\), got 40/);
  await assert.rejects(greedyCoreset(new Float32Array(0), 4, 1), /at least one row/);
  await assert.rejects(greedyCoreset(rows, 0, 1), /dim must be a positive integer, got 0/);
  await assert.rejects(greedyCoreset(rows, 4, 11), /count must be an integer from 1 to 10/);
  await assert.rejects(greedyCoreset(rows, 4, 0), /count must be an integer from 1 to 10/);
  await assert.rejects(greedyCoreset(rows, 4, 2.5), /count must be an integer from 1 to 10/);
  await assert.rejects(
    greedyCoreset(rows, 4, 2, { projectionDim: -1 }),
    /projectionDim must be a non-negative integer/,
  );
  await assert.rejects(
    greedyCoreset(rows, 4, 2, { maxChunkBytes: 8 }),
    /maxChunkBytes must be an integer of at least 16/,
  );
  const withNaN = rows.slice();
  withNaN[4 * 7 + 2] = NaN;
  await assert.rejects(greedyCoreset(withNaN, 4, 2), /row 7, column 2 is NaN; .*finite/);
  assert.throws(() => new MemoryBank(withNaN, 4), /MemoryBank: the value at row 7, column 2/);
  assert.throws(() => new MemoryBank(rows, 6), /MemoryBank expects rows × 6 values/);

  const bank = new MemoryBank(rows, 4);
  const wrong = tensor(new Float32Array(10), [2, 5]);
  assert.throws(() => bank.nearest(wrong), /queries of shape \[q ≥ 1, 4\], got \[2,5\]/);
  assert.throws(() => bank.nearestOfRow(10, 9), /rowIndex must be an integer from 0 to 9/);
  assert.throws(() => bank.nearestOfRow(0, 0), /k must be a positive integer/);
  bank.dispose();
  assert.throws(() => bank.nearest(wrong), /used after dispose/);
  wrong.dispose();
  assertNoGpuErrors();
});

Deno.test("timing: coreset of 2,000 from 20,000 × 256, nearest of 784 in 16,000 × 1024", async () => {
  await init();
  const rows = randomRows(20_000, 256, 51);
  await greedyCoreset(rows, 256, 2, { seed: 1 }); // compiles the kernels
  const time = async (count: number) => {
    const started = performance.now();
    const chosen = await greedyCoreset(rows, 256, count, { seed: 1 });
    assert.equal(new Set(chosen).size, count);
    return performance.now() - started;
  };
  const few = await time(10);
  const many = await time(2000);
  console.log(
    `greedyCoreset 20,000 × 256 → 128-d, 2,000 rows: ${(many / 1000).toFixed(2)} s, ` +
      `${((many - few) / 1990).toFixed(2)} ms per iteration (10 rows: ${few.toFixed(0)} ms)`,
  );

  const bankData = randomRows(16_000, 1024, 52);
  let started = performance.now();
  const bank = new MemoryBank(bankData, 1024);
  const built = performance.now() - started;
  const queries = tensor(randomRows(784, 1024, 53), [784, 1024]);
  const times: number[] = [];
  for (let i = 0; i < 2; i++) {
    started = performance.now();
    const { distances, indices } = bank.nearest(queries);
    await toArrays([distances, indices]);
    times.push(performance.now() - started);
    distances.dispose();
    indices.dispose();
  }
  console.log(
    `MemoryBank 16,000 × 1024: built in ${built.toFixed(0)} ms; nearest of 784 queries ` +
      `${times.map((t) => t.toFixed(0)).join(" ms, then ")} ms (with readback)`,
  );
  queries.dispose();
  bank.dispose();
  assertNoGpuErrors();
});
