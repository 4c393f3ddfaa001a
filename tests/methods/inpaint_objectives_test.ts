/**
 * The inpainting autoencoder's objectives against a float64 CPU reference: values, gradients with
 * respect to the reconstruction (central finite differences), empty parts and bad inputs.
 */

import assert from "node:assert/strict";
import { init, type Tensor, tensor, tidy } from "../../src/tensor/tensor.ts";
import {
  amplifyingObjective,
  filteringObjective,
  inpaintingObjective,
  MIN_AREA,
  type ObjectiveInputs,
} from "../../src/methods/inpaint/objectives.ts";
import { checkOp, randomRef, type Ref, seededRandom } from "../tensor/reference.ts";

const random = seededRandom(13);
const shape = [2, 3, 4, 5];

/** Σ W·(Y − X)² / max(Σ W, MIN_AREA) in float64, W broadcast over the channels when it has one. */
function weightedMeanSquareRef(y: Ref, x: Ref, weightAt: (i: number) => number): number {
  let [numerator, area] = [0, 0];
  for (let i = 0; i < y.data.length; i++) {
    const w = weightAt(i);
    numerator += w * (y.data[i] - x.data[i]) ** 2;
    area += w;
  }
  return numerator / Math.max(area, MIN_AREA);
}

/** The mask's value for element i of an [N, C, H, W] tensor. */
function maskAt(mask: Ref, i: number): number {
  const [, c, h, w] = shape;
  const [, maskChannels] = mask.shape;
  const plane = h * w;
  const image = Math.floor(i / (c * plane));
  const channel = maskChannels === 1 ? 0 : Math.floor(i / plane) % c;
  return mask.data[(image * maskChannels + channel) * plane + (i % plane)];
}

function filteringRef(y: Ref, x: Ref, mask: Ref, lambda: number): Ref {
  const intact = weightedMeanSquareRef(y, x, (i) => 1 - maskAt(mask, i));
  const repaired = weightedMeanSquareRef(y, x, (i) => maskAt(mask, i));
  return { data: Float64Array.of(intact + lambda * repaired), shape: [] };
}

function amplifyingRef(y: Ref, x: Ref, corrupted: Ref, mask: Ref, lambda: number): Ref {
  const intact = weightedMeanSquareRef(y, x, (i) => 1 - maskAt(mask, i));
  const changed = weightedMeanSquareRef(y, x, (i) => Math.abs(corrupted.data[i] - x.data[i]));
  return { data: Float64Array.of(intact - lambda * changed), shape: [] };
}

/** A mask with exact zeros and ones as well as values between. */
function maskRef(channels: number): Ref {
  const mask = randomRef([shape[0], channels, shape[2], shape[3]], random, -0.5, 1.5);
  mask.data = mask.data.map((m) => Math.min(1, Math.max(0, m)));
  return mask;
}

/** A corrupted input: the clean one with a few elements changed. */
function corruptedRef(clean: Ref): Ref {
  return { data: clean.data.map((v, i) => (i % 3 === 0 ? random() : v)), shape: clean.shape };
}

function constantRef(value: number, channels = 1): Ref {
  const size = shape[0] * channels * shape[2] * shape[3];
  return {
    data: new Float64Array(size).fill(value),
    shape: [shape[0], channels, shape[2], shape[3]],
  };
}

function inputsOf(y: Tensor, x: Tensor, corrupted: Tensor, mask: Tensor): ObjectiveInputs {
  return { reconstruction: y, clean: x, corrupted, mask };
}

async function expectMatches(
  name: string,
  kind: "filtering" | "amplifying",
  refs: { y: Ref; x: Ref; corrupted: Ref; mask: Ref },
  lambda = 0.5,
): Promise<number> {
  const expected = kind === "filtering"
    ? filteringRef(refs.y, refs.x, refs.mask, lambda)
    : amplifyingRef(refs.y, refs.x, refs.corrupted, refs.mask, lambda);
  const result = await checkOp({
    inputs: [refs.y, refs.x, refs.corrupted, refs.mask],
    gpu: (y, x, corrupted, mask) =>
      inpaintingObjective(kind, inputsOf(y, x, corrupted, mask), lambda),
    ref: (y, x, corrupted, mask) =>
      kind === "filtering"
        ? filteringRef(y, x, mask, lambda)
        : amplifyingRef(y, x, corrupted, mask, lambda),
    gradInputs: [0],
  });
  assert.ok(result.forwardError <= 1e-4, `${name}: forward error ${result.forwardError}`);
  assert.ok(result.gradErrors[0] <= 2e-3, `${name}: gradient error ${result.gradErrors[0]}`);
  return expected.data[0];
}

Deno.test("the filtering objective and its gradient match the float64 reference", async () => {
  const x = randomRef(shape, random, 0, 1);
  const y = randomRef(shape, random, 0, 1);
  const corrupted = corruptedRef(x);
  await expectMatches("one-channel mask", "filtering", { y, x, corrupted, mask: maskRef(1) });
  await expectMatches("per-channel mask", "filtering", { y, x, corrupted, mask: maskRef(3) });
  await expectMatches("λ = 2", "filtering", { y, x, corrupted, mask: maskRef(1) }, 2);
});

Deno.test("the amplifying objective and its gradient match the float64 reference", async () => {
  const x = randomRef(shape, random, 0, 1);
  const y = randomRef(shape, random, 0, 1);
  const corrupted = corruptedRef(x);
  const mask = maskRef(1);
  const value = await expectMatches("amplifying", "amplifying", { y, x, corrupted, mask });
  // The second term is subtracted: the value is below the intact part's error alone.
  const intactOnly = await expectMatches("λ = 0", "amplifying", { y, x, corrupted, mask }, 0);
  assert.ok(value < intactOnly - 1e-3, `${value} is not below ${intactOnly}`);
  await expectMatches("amplifying, per-channel mask", "amplifying", {
    y,
    x,
    corrupted,
    mask: maskRef(3),
  });
});

Deno.test("an empty part contributes 0, not 0/0: M all 0, M all 1, X̂ = X", async () => {
  const x = randomRef(shape, random, 0, 1);
  const y = randomRef(shape, random, 0, 1);
  let mse = 0;
  for (let i = 0; i < x.data.length; i++) mse += (y.data[i] - x.data[i]) ** 2 / x.data.length;
  const corrupted = corruptedRef(x);
  const none = constantRef(0);
  const all = constantRef(1);
  // M = 0: only the intact part, the whole image: the plain mean squared error.
  const filteringNone = await expectMatches("M = 0", "filtering", { y, x, corrupted, mask: none });
  assert.ok(Math.abs(filteringNone - mse) < 1e-12);
  // M = 1: only the corrupted part, weighted by λ.
  const filteringAll = await expectMatches("M = 1", "filtering", { y, x, corrupted, mask: all });
  assert.ok(Math.abs(filteringAll - 0.5 * mse) < 1e-12);
  // X̂ = X: nothing was changed, so the amplifying term vanishes.
  const unchanged = await expectMatches("X̂ = X", "amplifying", {
    y,
    x,
    corrupted: x,
    mask: none,
  });
  assert.ok(Math.abs(unchanged - mse) < 1e-12);
  // M = 1 and X̂ = X: both parts are empty; the objective is 0 with a zero gradient.
  await init();
  const yt = tensor(Float32Array.from(y.data), shape);
  yt.requiresGrad = true;
  const xt = tensor(Float32Array.from(x.data), shape);
  const ones = tensor(Float32Array.from(all.data), all.shape);
  const loss = tidy(() => {
    const value = amplifyingObjective(inputsOf(yt, xt, xt, ones));
    value.backward();
    return value;
  });
  assert.equal(await loss.item(), 0);
  assert.ok((await yt.grad!.toArray()).every((g) => g === 0));
  [yt, xt, ones, loss].forEach((t) => t.dispose());
});

Deno.test("mismatched shapes and a bad λ are refused by name", async () => {
  await init();
  const make = (s: number[]) => tensor(new Float32Array(s.reduce((a, b) => a * b, 1)), s);
  const y = make(shape);
  const x = make(shape);
  const mask = make([2, 1, 4, 5]);
  const cases: [() => unknown, RegExp][] = [
    [
      () => filteringObjective({ reconstruction: make([3, 4, 5]), clean: x, mask }),
      /filtering objective: reconstruction must be \[N, C, H, W\], got \[3, 4, 5\]/,
    ],
    [
      () => filteringObjective({ reconstruction: y, clean: make([2, 3, 4, 4]), mask }),
      /filtering objective: clean is \[2, 3, 4, 4\], expected the reconstruction's \[2, 3, 4, 5\]/,
    ],
    [
      () => filteringObjective({ reconstruction: y, clean: x, mask: make([2, 2, 4, 5]) }),
      /filtering objective: mask is \[2, 2, 4, 5\], expected \[2, 1, 4, 5\] or \[2, 3, 4, 5\]/,
    ],
    [
      () => filteringObjective({ reconstruction: y, clean: x, mask: make([1, 1, 4, 5]) }),
      /mask is \[1, 1, 4, 5\]/,
    ],
    [
      () => amplifyingObjective(inputsOf(y, x, make([2, 3, 5, 4]), mask)),
      /amplifying objective: corrupted is \[2, 3, 5, 4\]/,
    ],
    [
      () => filteringObjective({ reconstruction: y, clean: x, mask }, -0.5),
      /filtering objective: λ must be a finite number ≥ 0, got -0.5/,
    ],
    [
      () => amplifyingObjective(inputsOf(y, x, x, mask), Number.NaN),
      /amplifying objective: λ must be a finite number ≥ 0, got NaN/,
    ],
    [
      () => inpaintingObjective("sharpening" as never, inputsOf(y, x, x, mask)),
      /inpainting objective: expected one of filtering, amplifying, got sharpening/,
    ],
  ];
  for (const [call, message] of cases) assert.throws(call, message);
});
