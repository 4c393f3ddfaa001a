/**
 * Speed check of the CPU evaluation: scores 83 random 900x900 anomaly maps
 * (about 67 million pixels, the size of a large MVTec AD category) with random
 * elliptic defect masks, plus 20 validation maps for the paper's threshold;
 * and times bringing 83 maps of 256x256 (a method's working size) to that
 * ground-truth size, as evaluation does for maps of another size.
 *
 * Run: deno run -A bench/eval_bench.ts
 */

import { resizePlane } from "../src/data/image.ts";
import { evaluateCategory, type TestImageInput } from "../src/eval/evaluate.ts";

const SIZE = 900;
const TEST_IMAGES = 83;
const VALIDATION_IMAGES = 20;

// Deterministic pseudo-random numbers so runs are comparable.
let seed = 42;
function random(): number {
  seed = (seed * 1664525 + 1013904223) >>> 0;
  return seed / 2 ** 32;
}

function randomMap(): Float32Array {
  const map = new Float32Array(SIZE * SIZE);
  for (let i = 0; i < map.length; i++) map[i] = random();
  return map;
}

/** Adds 1-3 random ellipses to the mask and raises the map there (so metrics are not trivial). */
function addDefects(map: Float32Array): Uint8Array {
  const mask = new Uint8Array(SIZE * SIZE);
  const count = 1 + Math.floor(random() * 3);
  for (let d = 0; d < count; d++) {
    const cx = random() * SIZE;
    const cy = random() * SIZE;
    const rx = 10 + random() * 80;
    const ry = 10 + random() * 80;
    for (let y = Math.max(0, Math.floor(cy - ry)); y < Math.min(SIZE, cy + ry); y++) {
      for (let x = Math.max(0, Math.floor(cx - rx)); x < Math.min(SIZE, cx + rx); x++) {
        if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) {
          mask[y * SIZE + x] = 255;
          map[y * SIZE + x] += 0.3;
        }
      }
    }
  }
  return mask;
}

const setupStart = performance.now();
const testImages: TestImageInput[] = [];
for (let i = 0; i < TEST_IMAGES; i++) {
  const map = randomMap();
  const defective = i % 3 !== 0;
  testImages.push({
    name: `bench/test/${defective ? "defect" : "good"}/${String(i).padStart(3, "0")}.png`,
    defectType: defective ? "defect" : "good",
    map,
    width: SIZE,
    height: SIZE,
    gtMask: defective ? addDefects(map) : null,
  });
}
const validationMaps = Array.from({ length: VALIDATION_IMAGES }, (_, i) => ({
  name: `bench/validation/${i}.png`,
  map: randomMap(),
  width: SIZE,
  height: SIZE,
}));
console.log(`generated inputs in ${((performance.now() - setupStart) / 1000).toFixed(2)} s`);

const start = performance.now();
const metrics = evaluateCategory({ testImages, validationMaps, minArea: 50 });
const seconds = (performance.now() - start) / 1000;
console.log(
  `evaluateCategory: ${TEST_IMAGES} maps of ${SIZE}x${SIZE} ` +
    `(${
      (TEST_IMAGES * SIZE * SIZE / 1e6).toFixed(1)
    } M pixels) + ${VALIDATION_IMAGES} validation maps ` +
    `in ${seconds.toFixed(2)} s`,
);
const { notes: _notes, ...summary } = metrics;
console.log(summary);

const WORKING_SIZE = 256;
const smallMap = Float32Array.from({ length: WORKING_SIZE * WORKING_SIZE }, random);
const resizeStart = performance.now();
for (let i = 0; i < TEST_IMAGES; i++) {
  resizePlane(smallMap, WORKING_SIZE, WORKING_SIZE, SIZE, SIZE, "bilinear");
}
console.log(
  `resizePlane: ${TEST_IMAGES} maps ${WORKING_SIZE}x${WORKING_SIZE} -> ${SIZE}x${SIZE} in ` +
    `${((performance.now() - resizeStart) / 1000).toFixed(2)} s`,
);
