/**
 * The variation model's statistics and warps against CPU references: per-pixel mean and standard
 * deviation of a stack (float64 on the CPU), and the GPU warp against {@link warpPlane}.
 */

import assert from "node:assert/strict";
import { init, tensor, toArrays } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { Random } from "../../src/data/random.ts";
import { inversePose, warpInto, warpPlane } from "../../src/methods/variation/align.ts";
import { otsuThreshold, pixelMoments } from "../../src/methods/variation/model.ts";
import { empty } from "../../src/tensor/tensor.ts";

Deno.test("variation: per-pixel mean and std match a float64 CPU reference", async () => {
  await init();
  const random = new Random(3);
  const images = 7;
  const pixels = 33 * 29;
  // Values far from 0 with a small spread: the case where a one-pass variance would cancel.
  const stack = Float32Array.from({ length: images * pixels }, () => 0.7 + 0.01 * random.normal());
  const stackOnGpu = tensor(stack);
  const [meanOnGpu, stdOnGpu] = pixelMoments(stackOnGpu, images, pixels);
  const [mean, std] = await toArrays([meanOnGpu, stdOnGpu]);
  [stackOnGpu, meanOnGpu, stdOnGpu].forEach((t) => t.dispose());
  for (let i = 0; i < pixels; i++) {
    let sum = 0;
    for (let n = 0; n < images; n++) sum += stack[n * pixels + i];
    const expectedMean = sum / images;
    let squares = 0;
    for (let n = 0; n < images; n++) squares += (stack[n * pixels + i] - expectedMean) ** 2;
    const expectedStd = Math.sqrt(squares / images);
    assert.ok(
      Math.abs(mean[i] - expectedMean) < 1e-6,
      `mean at ${i}: ${mean[i]} vs ${expectedMean}`,
    );
    assert.ok(Math.abs(std[i] - expectedStd) < 2e-6, `std at ${i}: ${std[i]} vs ${expectedStd}`);
  }
});

Deno.test("variation: the GPU warp matches the CPU warp, and inversePose undoes a pose", async () => {
  await init();
  const random = new Random(5);
  const width = 40;
  const height = 36;
  const plane = {
    width,
    height,
    data: Float32Array.from({ length: width * height }, () => random.next()),
  };
  const pose = { angle: 0.7, tx: 3.25, ty: -2.5 };
  const source = tensor(plane.data);
  const stack = empty([2 * width * height]);
  warpInto(source, width, height, pose, stack, 1);
  const [onGpu] = await toArrays([stack]);
  [source, stack].forEach((t) => t.dispose());
  const expected = warpPlane(plane, pose).data;
  for (let i = 0; i < width * height; i++) {
    assert.ok(Math.abs(onGpu[width * height + i] - expected[i]) < 1e-4, `pixel ${i}`);
  }
  // Warping by a pose and then by its inverse is the identity away from the borders.
  const back = warpPlane(warpPlane(plane, pose), inversePose(pose));
  const smooth = warpPlane(plane, { angle: 0, tx: 0, ty: 0 });
  assert.deepEqual(smooth.data, plane.data);
  let checked = 0;
  for (let y = 12; y < 24; y++) {
    for (let x = 14; x < 26; x++) {
      // Two bilinear resamplings blur: compare to a tolerance, not exactly.
      assert.ok(Math.abs(back.data[y * width + x] - plane.data[y * width + x]) < 0.5);
      checked++;
    }
  }
  assert.ok(checked > 100);
});

Deno.test("variation: Otsu's threshold separates two gray levels", () => {
  const values = Float32Array.from({ length: 1000 }, (_, i) => (i < 600 ? 0.1 : 0.8));
  const threshold = otsuThreshold(values);
  assert.ok(threshold > 0.1 && threshold <= 0.8, `threshold ${threshold}`);
});
