/**
 * Rigid alignment: random rotations (any angle) and shifts applied to an image are undone to
 * within 1° and 1 pixel at the original resolution. A synthetic asymmetric pattern runs always;
 * the real MVTec AD bottle (downscaled to 256 px) runs when ../shared/data is present.
 */

import assert from "node:assert/strict";
import { resolve } from "node:path";
import { init } from "../../src/tensor/tensor.ts";
import "../../src/tensor/ops.ts";
import { readImage, resize, toGrayscale } from "../../src/data/image.ts";
import { Random } from "../../src/data/random.ts";
import {
  ALIGN_DEFAULTS,
  AlignmentReference,
  inversePose,
  type Plane,
  type RigidPose,
  warpPlane,
  wrapAngle,
} from "../../src/methods/variation/align.ts";

const repoRoot = resolve(import.meta.dirname!, "../..");
const bottlePath = resolve(repoRoot, "../shared/data/mvtec_ad/bottle/train/good/000.png");
const bottlePresent = (() => {
  try {
    return Deno.statSync(bottlePath).isFile;
  } catch {
    return false;
  }
})();

/** Applies random poses and checks that alignment recovers each within the tolerances. */
async function checkRecovery(
  plane: Plane,
  poses: RigidPose[],
  pixelsPerWorkingPixel: number,
): Promise<void> {
  const reference = new AlignmentReference(plane, ALIGN_DEFAULTS);
  try {
    for (const truth of poses) {
      // moved(q) = plane(P⁻¹(q)): aligning `moved` to `plane` must find P.
      const moved = warpPlane(plane, inversePose(truth));
      const { pose, ncc } = await reference.align(moved);
      const angleError = Math.abs(wrapAngle(pose.angle - truth.angle)) * 180 / Math.PI;
      const shiftError = Math.hypot(pose.tx - truth.tx, pose.ty - truth.ty) * pixelsPerWorkingPixel;
      const what = `truth (${(truth.angle * 180 / Math.PI).toFixed(1)}°, ${truth.tx.toFixed(2)}, ` +
        `${truth.ty.toFixed(2)}), found (${(pose.angle * 180 / Math.PI).toFixed(2)}°, ` +
        `${pose.tx.toFixed(2)}, ${pose.ty.toFixed(2)}), NCC ${ncc.toFixed(4)}`;
      assert.ok(angleError <= 1, `angle off by ${angleError.toFixed(2)}°: ${what}`);
      assert.ok(shiftError <= 1, `shift off by ${shiftError.toFixed(2)} px: ${what}`);
      assert.ok(ncc > 0.9, `low NCC: ${what}`);
    }
  } finally {
    reference.dispose();
  }
}

function randomPoses(seed: number, count: number, maxShift: number): RigidPose[] {
  const random = new Random(seed);
  return Array.from({ length: count }, () => ({
    angle: random.uniform(-Math.PI, Math.PI),
    tx: random.uniform(-maxShift, maxShift),
    ty: random.uniform(-maxShift, maxShift),
  }));
}

Deno.test("variation alignment undoes rotations and shifts of an asymmetric pattern", async () => {
  await init();
  const size = 128;
  const data = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let v = 0.1;
      if (Math.hypot(x - 64, y - 64) < 40) v = 0.4 + 0.1 * Math.sin(x / 5);
      if (x > 70 && x < 95 && y > 50 && y < 60) v = 0.9; // a bar to one side
      if (Math.hypot(x - 50, y - 80) < 8) v = 0.7; // and a spot to another
      data[y * size + x] = v;
    }
  }
  await checkRecovery({ width: size, height: size, data }, randomPoses(11, 4, 10), 1);
});

Deno.test({
  name: "variation alignment undoes rotations (±180°) and shifts of the real bottle",
  ignore: !bottlePresent,
  fn: async () => {
    await init();
    const original = toGrayscale(await readImage(bottlePath));
    const size = 256;
    const plane = resize(original, size, size);
    // Errors are judged at the original resolution: one working pixel is 900/256 original ones.
    await checkRecovery(
      { width: size, height: size, data: plane.data },
      randomPoses(7, 4, 20),
      original.width / size,
    );
  },
});

if (!bottlePresent) {
  console.warn(`variation_align_test: ${bottlePath} is absent; the real-bottle case is skipped`);
}
