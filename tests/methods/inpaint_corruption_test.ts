/**
 * The inpainting autoencoder's corruption generator: statistics of its masks and displacement
 * fields, the defining property of each kind of corruption, rotations and flips, determinism and
 * the refusal of bad options. CPU only.
 */

import assert from "node:assert/strict";
import type { FloatImage } from "../../src/data/image.ts";
import { CATEGORY_INFO } from "../../src/data/mvtec.ts";
import { Random } from "../../src/data/random.ts";
import {
  augmentationFor,
  corrupt,
  CORRUPTION_KINDS,
  type CorruptionOptions,
  displacementField,
  maskMargin,
  rotateFlip,
} from "../../src/methods/inpaint/corruption.ts";
import { gaussianTaps } from "../../src/tensor/ops/filter.ts";
import { InputError } from "../../src/util/errors.ts";

/** An image of independent uniform values: every pixel differs from its neighbours. */
function noiseImage(width: number, height: number, channels: 1 | 3, seed: number): FloatImage {
  const random = new Random(seed);
  const data = Float32Array.from({ length: channels * width * height }, () => random.next());
  return { width, height, channels, data };
}

function constantImage(size: number, value: number): FloatImage {
  return {
    width: size,
    height: size,
    channels: 3,
    data: new Float32Array(3 * size * size).fill(value),
  };
}

const image = noiseImage(64, 64, 3, 1);
const pool = [noiseImage(64, 64, 3, 2), noiseImage(48, 40, 3, 3)];
const plane = 64 * 64;
/** Patches and mask margins that fit the 64×64 test images (the defaults are for 256 px). */
const small: CorruptionOptions = { patchSize: [0.25, 0.5], maskSmoothness: 1 };
/** Larger patches, whose masks reliably reach 1 somewhere inside. */
const large: CorruptionOptions = { patchSize: [0.4, 0.6], maskSmoothness: 1 };

function maskAt(mask: FloatImage, x: number, y: number): number {
  return mask.data[y * mask.width + x];
}

Deno.test("blob masks cover the configured share of the patch interior, and nothing outside the patch", () => {
  const coverage: [number, number] = [0.2, 0.7];
  const options: CorruptionOptions = {
    patchSize: [0.3, 0.6],
    maskCoverage: coverage,
    maskSmoothness: 1.5,
  };
  const margin = maskMargin(1.5);
  assert.equal(margin, 5);
  const shares: number[] = [];
  const sides: number[] = [];
  for (let seed = 0; seed < 200; seed++) {
    const { mask, patch } = corrupt(image, seed, options);
    sides.push(patch.width, patch.height);
    let total = 0;
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 64; x++) {
        const m = maskAt(mask, x, y);
        assert.ok(m >= 0 && m <= 1, `mask value ${m} at (${x}, ${y}), seed ${seed}`);
        const inside = x >= patch.x && x < patch.x + patch.width && y >= patch.y &&
          y < patch.y + patch.height;
        if (!inside) assert.equal(m, 0, `mask outside the patch at (${x}, ${y}), seed ${seed}`);
        total += m;
      }
    }
    const interior = (patch.width - 2 * margin) * (patch.height - 2 * margin);
    const share = total / interior;
    // The blob is round(share · interior) pixels; blurring keeps its sum up to float rounding.
    const slack = 0.5 / interior + 1e-4;
    assert.ok(
      share >= coverage[0] - slack && share <= coverage[1] + slack,
      `share ${share} outside [${coverage}], seed ${seed}`,
    );
    shares.push(share);
  }
  // The sides are drawn from [round(0.3 · 64), round(0.6 · 64)] = [19, 38], all of it.
  assert.equal(Math.min(...sides), 19);
  assert.equal(Math.max(...sides), 38);
  // Uniform over the range: both ends reached, mean in the middle.
  assert.ok(Math.min(...shares) < 0.23, `smallest share ${Math.min(...shares)}`);
  assert.ok(Math.max(...shares) > 0.67, `largest share ${Math.max(...shares)}`);
  const mean = shares.reduce((a, b) => a + b, 0) / shares.length;
  assert.ok(Math.abs(mean - 0.45) < 0.03, `mean share ${mean}`);
});

Deno.test("a soft mask has no hard edge; a mask of smoothness 0 is 0/1", () => {
  for (const kind of ["elastic", "noise-occlusion"] as const) {
    for (const smoothness of [1, 2.5]) {
      // A blurred 0/1 field changes between neighbours by at most the 1-D kernel's peak.
      const taps = gaussianTaps(smoothness);
      const bound = taps[(taps.length - 1) / 2] + 1e-6;
      let fractional = 0;
      for (let seed = 0; seed < 20; seed++) {
        const { mask } = corrupt(image, seed, {
          kind,
          maskSmoothness: smoothness,
          patchSize: [0.4, 0.6],
        });
        for (let y = 0; y < 64; y++) {
          for (let x = 0; x < 64; x++) {
            const m = maskAt(mask, x, y);
            if (m > 0 && m < 1) fractional++;
            if (x + 1 < 64) {
              const step = Math.abs(maskAt(mask, x + 1, y) - m);
              assert.ok(step <= bound, `${kind} σ ${smoothness}: step ${step} > ${bound}`);
            }
            if (y + 1 < 64) {
              const step = Math.abs(maskAt(mask, x, y + 1) - m);
              assert.ok(step <= bound, `${kind} σ ${smoothness}: step ${step} > ${bound}`);
            }
          }
        }
      }
      assert.ok(fractional > 100, `${kind} σ ${smoothness}: only ${fractional} soft pixels`);
    }
    const hard = corrupt(image, 5, { kind, maskSmoothness: 0 }).mask.data;
    assert.ok(hard.every((m) => m === 0 || m === 1), `${kind}: a hard mask has only 0 and 1`);
    assert.ok(hard.some((m) => m === 1));
  }
});

Deno.test("displacements have mean 0, the configured RMS and small neighbour differences", () => {
  const amplitude = 3;
  const smoothness = 4;
  const random = new Random(7);
  let [count, total, squares, neighbourSquares, neighbourCount] = [0, 0, 0, 0, 0];
  for (let field = 0; field < 30; field++) {
    const { dx, dy, width, height } = displacementField(64, 48, amplitude, smoothness, random);
    assert.equal(dx.length, 64 * 48);
    for (const component of [dx, dy]) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const d = component[y * width + x];
          total += d;
          squares += d * d;
          count++;
          if (x + 1 < width) {
            neighbourSquares += (component[y * width + x + 1] - d) ** 2;
            neighbourCount++;
          }
        }
      }
    }
  }
  const mean = total / count;
  const rms = Math.sqrt(squares / count);
  assert.ok(Math.abs(mean) < 0.15 * amplitude, `mean displacement ${mean}`);
  assert.ok(Math.abs(rms / amplitude - 1) < 0.1, `RMS ${rms}, configured ${amplitude}`);
  // For Gaussian-smoothed white noise the lag-1 correlation is Σ k_i k_(i+1) / Σ k_i² (the other
  // axis cancels), so the neighbour difference has RMS amplitude · √(2 (1 − ρ)): about
  // amplitude / (smoothness · √2), against amplitude · √2 for unsmoothed noise.
  const taps = gaussianTaps(smoothness);
  const lagged = taps.slice(1).reduce((s, t, i) => s + t * taps[i], 0);
  const rho = lagged / taps.reduce((s, t) => s + t * t, 0);
  const expected = amplitude * Math.sqrt(2 * (1 - rho));
  const neighbourRms = Math.sqrt(neighbourSquares / neighbourCount);
  assert.ok(
    Math.abs(neighbourRms / expected - 1) < 0.1,
    `neighbour difference RMS ${neighbourRms}, expected ${expected}`,
  );
  assert.ok(neighbourRms < amplitude / 4, `neighbour difference RMS ${neighbourRms}`);
});

Deno.test("every kind leaves X̂ = X exactly where M = 0 and changes the image under the mask", () => {
  for (const kind of CORRUPTION_KINDS) {
    for (let seed = 0; seed < 10; seed++) {
      const { corrupted, clean, mask } = corrupt(image, seed, { ...small, kind, pool });
      assert.deepEqual(clean.data, image.data, `${kind}: without augmentation X is the input`);
      let changed = 0;
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < plane; i++) {
          if (mask.data[i] === 0) {
            assert.equal(
              corrupted.data[c * plane + i],
              clean.data[c * plane + i],
              `${kind} ${seed}`,
            );
          } else if (corrupted.data[c * plane + i] !== clean.data[c * plane + i]) changed++;
        }
      }
      assert.ok(changed > 0, `${kind}, seed ${seed}: nothing changed`);
    }
  }
});

Deno.test("elastic: without displacement or brightness X̂ = X; brightness scales the patch", () => {
  for (let seed = 0; seed < 5; seed++) {
    const still = corrupt(image, seed, { ...small, elasticAmplitude: 0 });
    assert.deepEqual(still.corrupted.data, image.data);
    assert.equal(still.brightnessFactor, 1);
  }
  const factors: number[] = [];
  for (let seed = 0; seed < 40; seed++) {
    const { corrupted, mask, brightnessFactor } = corrupt(image, seed, {
      ...small,
      elasticAmplitude: 0,
      brightness: 0.3,
    });
    factors.push(brightnessFactor);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < plane; i++) {
        const m = mask.data[i];
        const x = image.data[c * plane + i];
        const content = Math.fround(Math.min(1, x * brightnessFactor));
        const actual = corrupted.data[c * plane + i];
        if (m === 1) assert.equal(actual, content);
        else assert.ok(Math.abs(actual - ((1 - m) * x + m * content)) < 1e-6);
      }
    }
  }
  assert.ok(factors.every((f) => f >= 0.7 && f <= 1.3));
  assert.ok(Math.min(...factors) < 0.8 && Math.max(...factors) > 1.2, `factors ${factors}`);
});

Deno.test("elastic: the patch is the image displaced, not new content", () => {
  // On a horizontal ramp a displacement only shifts values along the ramp: every inserted value
  // is one the ramp has within the displacement's reach.
  const size = 64;
  const ramp: FloatImage = {
    width: size,
    height: size,
    channels: 1,
    data: Float32Array.from({ length: size * size }, (_, i) => (i % size) / (size - 1)),
  };
  const { corrupted, mask } = corrupt(ramp, 3, { elasticAmplitude: 2, maskSmoothness: 0 });
  let moved = 0;
  for (let i = 0; i < size * size; i++) {
    if (mask.data[i] !== 1) continue;
    const shift = corrupted.data[i] * (size - 1) - (i % size);
    if (Math.abs(shift) > 1e-3) moved++;
    assert.ok(Math.abs(shift) < 12, `a value moved by ${shift} px`);
  }
  assert.ok(moved > 0, "the displacement moved nothing");
});

Deno.test("cut-out inserts zeros: X̂ = (1 − M)·X", () => {
  for (let seed = 0; seed < 10; seed++) {
    const { corrupted, mask } = corrupt(image, seed, { ...small, kind: "cutout", brightness: 0.5 });
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < plane; i++) {
        const expected = (1 - mask.data[i]) * image.data[c * plane + i];
        if (mask.data[i] === 1) assert.equal(corrupted.data[c * plane + i], 0);
        assert.ok(Math.abs(corrupted.data[c * plane + i] - expected) < 1e-6);
      }
    }
  }
});

Deno.test("swap and image occlusion insert the pool image's pixels under the mask", () => {
  for (const kind of ["swap", "image-occlusion"] as const) {
    const used = new Set<number>();
    for (let seed = 0; seed < 20; seed++) {
      const { corrupted, mask, patch, source } = corrupt(image, seed, { ...large, kind, pool });
      assert.ok(source, `${kind}: the source is reported`);
      used.add(source.poolIndex);
      const donor = pool[source.poolIndex];
      let full = 0;
      for (let py = 0; py < patch.height; py++) {
        for (let px = 0; px < patch.width; px++) {
          const i = (patch.y + py) * 64 + patch.x + px;
          const m = mask.data[i];
          for (let c = 0; c < 3; c++) {
            const inserted: number =
              donor.data[(c * donor.height + source.y + py) * donor.width + source.x + px];
            const actual = corrupted.data[c * plane + i];
            if (m === 1) {
              assert.equal(actual, inserted, `${kind}, seed ${seed}`);
              full++;
            }
            const blended = (1 - m) * image.data[c * plane + i] + m * inserted;
            assert.ok(Math.abs(actual - blended) < 1e-6);
          }
        }
      }
      assert.ok(full > 0, `${kind}, seed ${seed}: no pixel fully replaced`);
    }
    assert.deepEqual([...used].sort(), [0, 1], `${kind}: both pool images are used`);
  }
});

Deno.test("noise occlusion fills ellipses with procedural noise, no pool needed", () => {
  const gray = constantImage(64, 0.5);
  for (let seed = 0; seed < 10; seed++) {
    const { corrupted, mask } = corrupt(gray, seed, { ...large, kind: "noise-occlusion" });
    const inserted: number[] = [];
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < plane; i++) {
        if (mask.data[i] === 1) inserted.push(corrupted.data[c * plane + i]);
      }
    }
    assert.ok(inserted.length > 0);
    assert.ok(inserted.every((v) => v >= 0 && v <= 1));
    // Noise, not a flat fill and not the image.
    const spread = Math.max(...inserted) - Math.min(...inserted);
    assert.ok(spread > 0.01, `seed ${seed}: the fill spans only ${spread}`);
    assert.ok(inserted.some((v) => v !== 0.5));
  }
});

Deno.test("quarter turns and flips move pixels without changing them, as the category allows", () => {
  const tiny: FloatImage = {
    width: 3,
    height: 2,
    channels: 1,
    data: Float32Array.of(1, 2, 3, 4, 5, 6),
  };
  // Counter-clockwise on screen: the right column becomes the top row.
  assert.deepEqual([...rotateFlip(tiny, 1, false, false).data], [3, 6, 2, 5, 1, 4]);
  assert.deepEqual([...rotateFlip(tiny, 2, false, false).data], [6, 5, 4, 3, 2, 1]);
  assert.deepEqual([...rotateFlip(tiny, 3, false, false).data], [4, 1, 5, 2, 6, 3]);
  assert.deepEqual([...rotateFlip(tiny, 0, true, false).data], [3, 2, 1, 6, 5, 4]);
  assert.deepEqual([...rotateFlip(tiny, 0, false, true).data], [4, 5, 6, 1, 2, 3]);
  assert.equal(rotateFlip(tiny, 1, false, false).width, 2);

  const rectangle = noiseImage(5, 3, 3, 9);
  const sorted = [...rectangle.data].sort();
  for (let turns = 0; turns < 4; turns++) {
    for (const flipH of [false, true]) {
      for (const flipV of [false, true]) {
        const moved = rotateFlip(rectangle, turns, flipH, flipV);
        assert.deepEqual([...moved.data].sort(), sorted, `${turns} turns, flips ${flipH} ${flipV}`);
        assert.deepEqual([moved.width, moved.height], turns % 2 ? [3, 5] : [5, 3]);
      }
    }
  }

  const everything = { quarterTurns: true, flipHorizontal: true, flipVertical: true };
  const seen = new Set<string>();
  for (let seed = 0; seed < 60; seed++) {
    const result = corrupt(image, seed, { ...small, ...everything, kind: "cutout" });
    const { quarterTurns, flippedHorizontally, flippedVertically } = result;
    seen.add(`${quarterTurns} ${flippedHorizontally} ${flippedVertically}`);
    const expected = rotateFlip(image, quarterTurns, flippedHorizontally, flippedVertically);
    assert.deepEqual(result.clean.data, expected.data);
    assert.deepEqual([...result.clean.data].sort(), [...image.data].sort());
  }
  assert.ok(seen.size >= 14, `only ${seen.size} of the 16 orientations drawn`);
  // A non-square image is only turned by 0° or 180°, so that batches keep one size.
  const wide = noiseImage(64, 48, 1, 4);
  for (let seed = 0; seed < 20; seed++) {
    const result = corrupt(wide, seed, { ...small, quarterTurns: true });
    assert.ok(result.quarterTurns === 0 || result.quarterTurns === 2);
    assert.deepEqual([result.clean.width, result.clean.height], [64, 48]);
  }
  // Nothing is turned or flipped unless asked.
  for (let seed = 0; seed < 10; seed++) {
    assert.deepEqual(corrupt(image, seed, small).clean.data, image.data);
  }

  assert.deepEqual(augmentationFor(CATEGORY_INFO.carpet), everything);
  assert.deepEqual(augmentationFor(CATEGORY_INFO.transistor), {
    quarterTurns: false,
    flipHorizontal: false,
    flipVertical: false,
  });
});

Deno.test("the result follows from the seed alone", () => {
  for (const kind of CORRUPTION_KINDS) {
    const options: CorruptionOptions = {
      ...small,
      kind,
      pool,
      brightness: 0.2,
      quarterTurns: true,
      flipHorizontal: true,
    };
    const a = corrupt(image, 42, options);
    const b = corrupt(image, 42, options);
    assert.deepEqual(a, b, kind);
    const c = corrupt(image, 43, options);
    assert.notDeepEqual(a.corrupted.data, c.corrupted.data, kind);
  }
  // The input is never modified.
  assert.deepEqual(image.data, noiseImage(64, 64, 3, 1).data);
});

Deno.test("bad options are refused with the option's name", () => {
  const cases: [CorruptionOptions, RegExp][] = [
    [{ kind: "blur" as never }, /option kind: expected one of elastic, cutout/],
    [{ patchSize: [0.5, 0.2] }, /option patchSize: expected \[min, max\]/],
    [{ patchSize: [0, 0.3] }, /option patchSize/],
    [{ patchSize: [0.1, 1.5] }, /option patchSize/],
    [{ patchSize: [0.1] as never }, /option patchSize/],
    [{ maskCoverage: [0.5, 1.2] }, /option maskCoverage/],
    [{ maskCoverage: [Number.NaN, 0.5] }, /option maskCoverage/],
    [{ maskSmoothness: -1 }, /option maskSmoothness: expected a number ≥ 0, got -1/],
    [{ elasticAmplitude: Number.POSITIVE_INFINITY }, /option elasticAmplitude/],
    [{ elasticSmoothness: 0 }, /option elasticSmoothness: expected a positive number, got 0/],
    [{ brightness: 1 }, /option brightness: expected a number in \[0, 1\), got 1/],
    [{ brightness: -0.1 }, /option brightness/],
    [{ patchSize: [0.05, 0.1], maskSmoothness: 3 }, /patchSize and maskSmoothness: .*64×64/],
    [{ kind: "swap" }, /kind swap needs option pool/],
    [{ kind: "image-occlusion", pool: [] }, /kind image-occlusion needs option pool/],
    [
      { kind: "swap", pool: [noiseImage(64, 64, 1, 5)] },
      /pool: image 0 has 1 channels, expected 3/,
    ],
    [
      { kind: "swap", pool: [pool[0], noiseImage(8, 8, 3, 5)], patchSize: [0.3, 0.3] },
      /pool: image 1 is 8×8, smaller than the largest patch, 19×19/,
    ],
    // Refused whatever the seed draws, not only when a large patch comes up.
    [
      { kind: "image-occlusion", pool: [noiseImage(20, 20, 3, 6)] },
      /pool: image 0 is 20×20, smaller than the largest patch, 32×32/,
    ],
  ];
  for (const [options, message] of cases) {
    assert.throws(
      () => corrupt(image, 0, { ...small, ...options }),
      (error: unknown) => error instanceof InputError && message.test(error.message),
      `${JSON.stringify(options)} should fail with ${message}`,
    );
  }
  // An option given as undefined keeps its default.
  assert.deepEqual(corrupt(image, 1, { ...small, kind: undefined }), corrupt(image, 1, small));
  assert.throws(() => rotateFlip(image, 4, false, false), /quarterTurns must be 0, 1, 2 or 3/);
});
