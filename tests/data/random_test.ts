import assert from "node:assert/strict";
import { hashSeed, Random } from "../../src/data/random.ts";

Deno.test("Random is deterministic per seed and differs across seeds", () => {
  const draw = (seed: number) => {
    const random = new Random(seed);
    return Array.from({ length: 8 }, () => random.nextUint32());
  };
  assert.deepEqual(draw(1), draw(1));
  assert.notDeepEqual(draw(1), draw(2));
  // Neighbouring small seeds must not give correlated first outputs.
  const firsts = new Set(Array.from({ length: 100 }, (_, seed) => new Random(seed).int(0, 1000)));
  assert.ok(firsts.size > 80);
});

Deno.test("Random helpers stay in range and are roughly uniform", () => {
  const random = new Random(123);
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 10000; i++) {
    const v = random.next();
    assert.ok(v >= 0 && v < 1);
    counts[Math.floor(v * 10)]++;
    const k = random.int(3, 7);
    assert.ok(Number.isInteger(k) && k >= 3 && k < 7);
  }
  assert.ok(counts.every((n) => n > 850 && n < 1150), `bins: ${counts}`);
  let sum = 0;
  let squares = 0;
  for (let i = 0; i < 10000; i++) {
    const n = random.normal();
    sum += n;
    squares += n * n;
  }
  assert.ok(Math.abs(sum / 10000) < 0.05);
  assert.ok(Math.abs(squares / 10000 - 1) < 0.05);
  const shuffled = random.shuffle([1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...shuffled].sort(), [1, 2, 3, 4, 5, 6]);
});

Deno.test("hashSeed depends on every part and its order", () => {
  assert.equal(hashSeed(1, "carpet", 3), hashSeed(1, "carpet", 3));
  assert.notEqual(hashSeed(1, "carpet", 3), hashSeed(1, "carpet", 4));
  assert.notEqual(hashSeed(1, "carpet"), hashSeed("carpet", 1));
  assert.notEqual(hashSeed("ab", "c"), hashSeed("a", "bc"));
  assert.notEqual(hashSeed(2 ** 32 + 5), hashSeed(5));
});
