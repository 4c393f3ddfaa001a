import assert from "node:assert/strict";
import { resizeBilinear } from "../../src/eval/resize.ts";

Deno.test("resizeBilinear upsamples 2x2 to 4x4 with align_corners=false", () => {
  // Source [[0,1],[2,3]]. Output x samples source x = (x+0.5)/2-0.5 = -0.25, 0.25, 0.75, 1.25,
  // clamped to 0, 0.25, 0.75, 1; same for y. Row 0: 0, 0.25, 0.75, 1; each source row
  // step adds 2, so rows at y = 0.25, 0.75, 1 add 0.5, 1.5, 2 (matches PyTorch).
  const output = resizeBilinear(Float32Array.from([0, 1, 2, 3]), 2, 2, 4, 4);
  // deno-fmt-ignore
  const expected = [
    0, 0.25, 0.75, 1,
    0.5, 0.75, 1.25, 1.5,
    1.5, 1.75, 2.25, 2.5,
    2, 2.25, 2.75, 3,
  ];
  assert.deepEqual(Array.from(output), expected);
});

Deno.test("resizeBilinear downsamples by sampling between source pixels", () => {
  // 4 -> 2: output x samples (x+0.5)*2-0.5 = 0.5 and 2.5.
  assert.deepEqual(Array.from(resizeBilinear(Float32Array.from([0, 1, 2, 3]), 4, 1, 2, 1)), [
    0.5,
    2.5,
  ]);
  // Different aspect ratio: 1x2 -> 3x1 (x clamps to the single column, y samples 0.5).
  assert.deepEqual(Array.from(resizeBilinear(Float32Array.from([2, 4]), 1, 2, 3, 1)), [3, 3, 3]);
});

Deno.test("resizeBilinear copies same-size input and checks sizes", () => {
  const source = Float32Array.from([1, 2, 3]);
  const copy = resizeBilinear(source, 3, 1, 3, 1);
  assert.deepEqual(copy, source);
  assert.notEqual(copy, source);
  assert.throws(() => resizeBilinear(source, 2, 2, 4, 4), /expected 2x2/);
  assert.throws(() => resizeBilinear(source, 3, 1, 0, 1), /invalid map size/);
});
