/** Hand-made fixtures shared by the evaluation tests. */
import type { ScoredImage } from "../../src/eval/metrics.ts";

const f32 = (values: number[]) => Float32Array.from(values);

// Threshold protocol example, 4x4 maps, minArea = 3.
// Validation map V1:            Validation map V2:
//   0.1 0.2 0.1 0.1               0.4 0.1  0.1 0.1
//   0.5 0.9 0.1 0.1               0.1 0.65 0.1 0.1
//   0.1 0.8 0.1 0.1               0.1 0.1  0.6 0.1
//   0.1 0.1 0.1 0.3               0.1 0.1  0.1 0.7
// Largest 8-connected component of map > t over both maps:
//   t=0.1: V1 {0.2,0.5,0.9,0.8} = 4; V2 diagonal chain {0.4,0.65,0.6,0.7} = 4 -> not < 3
//   t=0.2, 0.3: V1 {0.5,0.9,0.8} = 3, V2 chain 4 -> not < 3
//   t=0.4: V1 3, V2 {0.65,0.6,0.7} = 3 -> not < 3
//   t=0.5: V1 {0.9,0.8} = 2, but V2 diagonal {0.65,0.6,0.7} = 3 -> not < 3
//          (with 4-connectivity it would be 1, so this checks 8-connectivity)
//   t=0.6: V1 2, V2 {0.65},{0.7} = 1 -> largest 2 < 3: smallest feasible. Threshold 0.6.
// deno-fmt-ignore
export const validationV1: Float32Array = f32([
  0.1, 0.2, 0.1, 0.1,
  0.5, 0.9, 0.1, 0.1,
  0.1, 0.8, 0.1, 0.1,
  0.1, 0.1, 0.1, 0.3,
]);
// deno-fmt-ignore
export const validationV2: Float32Array = f32([
  0.4, 0.1, 0.1, 0.1,
  0.1, 0.65, 0.1, 0.1,
  0.1, 0.1, 0.6, 0.1,
  0.1, 0.1, 0.1, 0.7,
]);

/** 4x4 map of 0.1 with the given (x, y) pixels set to values. */
export function map4x4(pixels: [number, number, number][]): Float32Array {
  const map = new Float32Array(16).fill(0.1);
  for (const [x, y, value] of pixels) map[y * 4 + x] = value;
  return map;
}

/** 4x4 mask with the given (x, y) pixels set to 255. */
export function mask4x4(pixels: [number, number][]): Uint8Array {
  const mask = new Uint8Array(16);
  for (const [x, y] of pixels) mask[y * 4 + x] = 255;
  return mask;
}

// Test images, segmentation map > 0.6, minArea 3:
//   G1 good: 0.9 at (0,0),(1,0): component 2 < 3 -> correctly not flagged.
//   G2 good: 0.7 on the diagonal (0,0),(1,1),(2,2): component 3 -> wrongly flagged.
//   D1 defective, region 2x2 at (0..1, 0..1): 0.8 at (0,0),(1,0),(0,1), 0.5 at (1,1):
//      component 3 -> correctly flagged; overlap 3/4.
//   D2 defective, regions {(3,0)} and {(0,3),(1,3)}: 0.9 at (3,0) only: component 1
//      -> wrongly not flagged; overlaps 1/1 and 0/2.
// accuracy_good = 1/2, accuracy_defective = 1/2, region overlap = (3/4 + 1 + 0)/3 = 7/12.
export const protocolImages: ScoredImage[] = [
  { map: map4x4([[0, 0, 0.9], [1, 0, 0.9]]), mask: null, width: 4, height: 4 },
  { map: map4x4([[0, 0, 0.7], [1, 1, 0.7], [2, 2, 0.7]]), mask: null, width: 4, height: 4 },
  {
    map: map4x4([[0, 0, 0.8], [1, 0, 0.8], [0, 1, 0.8], [1, 1, 0.5]]),
    mask: mask4x4([[0, 0], [1, 0], [0, 1], [1, 1]]),
    width: 4,
    height: 4,
  },
  {
    map: map4x4([[3, 0, 0.9]]),
    mask: mask4x4([[3, 0], [0, 3], [1, 3]]),
    width: 4,
    height: 4,
  },
];
export const protocolValidation: { map: Float32Array; width: number; height: number }[] = [
  { map: validationV1, width: 4, height: 4 },
  { map: validationV2, width: 4, height: 4 },
];
