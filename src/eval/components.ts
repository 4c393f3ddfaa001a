/**
 * Connected components (8-connectivity) of binary masks, as used by the MVTec
 * AD evaluation for ground-truth regions and for the minimum-defect-area rule.
 *
 * @module
 */

import { sortFloat32WithPayload } from "./sort.ts";

/** Result of {@link connectedComponents}. */
export interface ConnectedComponents {
  /** Per pixel (row-major): 0 for background, otherwise the region label 1..count. */
  labels: Int32Array;
  /** Number of regions found. */
  count: number;
  /** `sizes[label - 1]` is the number of pixels of region `label`. */
  sizes: Uint32Array;
}

function checkMaskSize(mask: ArrayLike<unknown>, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) {
    throw new RangeError(`invalid mask size ${width}x${height}`);
  }
  if (mask.length !== width * height) {
    throw new RangeError(
      `mask has ${mask.length} pixels but ${width}x${height} = ${width * height} were expected`,
    );
  }
}

/**
 * Flood-fills the 8-connected region containing `seed`, marking its pixels in
 * `labels` with `label`. `isForeground(i)` decides membership.
 * Returns the region size; stops early (returning `stopAt`) once the region
 * has `stopAt` pixels, leaving it partially labelled.
 */
function floodFill(
  seed: number,
  label: number,
  labels: Int32Array,
  isForeground: (pixelIndex: number) => boolean,
  width: number,
  height: number,
  stack: Int32Array,
  stopAt: number,
): number {
  let stackSize = 0;
  stack[stackSize++] = seed;
  labels[seed] = label;
  let size = 0;
  while (stackSize > 0) {
    const pixel = stack[--stackSize];
    size++;
    if (size >= stopAt) return stopAt;
    const x = pixel % width;
    const y = (pixel - x) / width;
    const yStart = y > 0 ? y - 1 : y;
    const yEnd = y < height - 1 ? y + 1 : y;
    const xStart = x > 0 ? x - 1 : x;
    const xEnd = x < width - 1 ? x + 1 : x;
    for (let ny = yStart; ny <= yEnd; ny++) {
      for (let nx = xStart; nx <= xEnd; nx++) {
        const neighbour = ny * width + nx;
        if (labels[neighbour] === 0 && isForeground(neighbour)) {
          labels[neighbour] = label;
          stack[stackSize++] = neighbour;
        }
      }
    }
  }
  return size;
}

/**
 * Labels the 8-connected regions of the non-zero pixels of a row-major mask.
 * Labels are assigned in raster order of each region's first pixel.
 *
 * @param mask row-major mask; any non-zero value is foreground
 * @param width mask width in pixels
 * @param height mask height in pixels
 * @returns label image, region count and region sizes
 */
export function connectedComponents(
  mask: ArrayLike<number>,
  width: number,
  height: number,
): ConnectedComponents {
  checkMaskSize(mask, width, height);
  const labels = new Int32Array(width * height);
  const stack = new Int32Array(width * height);
  const sizes: number[] = [];
  const isForeground = (pixelIndex: number) => mask[pixelIndex] !== 0;
  for (let pixel = 0; pixel < labels.length; pixel++) {
    if (labels[pixel] !== 0 || mask[pixel] === 0) continue;
    const label = sizes.length + 1;
    sizes.push(floodFill(pixel, label, labels, isForeground, width, height, stack, Infinity));
  }
  return { labels, count: sizes.length, sizes: Uint32Array.from(sizes) };
}

/**
 * Size of the largest 8-connected region of pixels with `map[i] > threshold`.
 * Stops early once a region of `stopAt` pixels is found and then returns
 * `stopAt`, which is all the minimum-area rule needs to know.
 *
 * @param map row-major anomaly map
 * @param width map width
 * @param height map height
 * @param threshold pixels strictly above it are segmented
 * @param stopAt optional early-exit size (default: no early exit)
 * @returns the largest region size, or `stopAt` if a region reaches it
 */
export function largestComponentAbove(
  map: Float32Array,
  width: number,
  height: number,
  threshold: number,
  stopAt: number = Infinity,
): number {
  checkMaskSize(map, width, height);
  const labels = new Int32Array(width * height);
  const stack = new Int32Array(width * height);
  const isForeground = (pixelIndex: number) => map[pixelIndex] > threshold;
  let largest = 0;
  let label = 0;
  for (let pixel = 0; pixel < labels.length; pixel++) {
    if (labels[pixel] !== 0 || !(map[pixel] > threshold)) continue;
    label++;
    const size = floodFill(pixel, label, labels, isForeground, width, height, stack, stopAt);
    if (size >= stopAt) return stopAt;
    if (size > largest) largest = size;
  }
  return largest;
}

/** Root of `pixel` in a union-find forest, halving paths on the way. */
function findRoot(parent: Int32Array, pixel: number): number {
  while (parent[pixel] !== pixel) {
    parent[pixel] = parent[parent[pixel]];
    pixel = parent[pixel];
  }
  return pixel;
}

/**
 * The smallest value `v` of the map such that every 8-connected component of
 * `map > v` has fewer than `minArea` pixels, or null when even marking every
 * pixel leaves all components smaller than `minArea`.
 *
 * Pixels are added from the highest value down, merging 8-neighbours with a
 * union-find; the first value whose pixels make a component reach `minArea`
 * is the answer (above it, the segmentation was still clean; at any lower
 * threshold these pixels are segmented). One sort, near-linear time.
 *
 * @param map row-major anomaly map (no NaN)
 * @param width map width
 * @param height map height
 * @param minArea minimum defect area in pixels (>= 1)
 * @returns the smallest clean threshold among the map's values, or null
 */
export function smallestCleanThreshold(
  map: Float32Array,
  width: number,
  height: number,
  minArea: number,
): number | null {
  checkMaskSize(map, width, height);
  const pixelCount = width * height;
  const pixelIndices = new Uint32Array(pixelCount);
  for (let i = 0; i < pixelCount; i++) pixelIndices[i] = i;
  const { values, payload: pixels } = sortFloat32WithPayload(map, pixelIndices);
  const notAdded = -1;
  const parent = new Int32Array(pixelCount).fill(notAdded);
  const componentSize = new Uint32Array(pixelCount);
  for (let k = pixelCount - 1; k >= 0; k--) {
    const pixel = pixels[k];
    parent[pixel] = pixel;
    componentSize[pixel] = 1;
    let root = pixel;
    if (componentSize[root] >= minArea) return values[k];
    const x = pixel % width;
    const y = (pixel - x) / width;
    for (let ny = Math.max(0, y - 1); ny <= Math.min(height - 1, y + 1); ny++) {
      for (let nx = Math.max(0, x - 1); nx <= Math.min(width - 1, x + 1); nx++) {
        const neighbour = ny * width + nx;
        if (parent[neighbour] === notAdded) continue;
        const neighbourRoot = findRoot(parent, neighbour);
        if (neighbourRoot === root) continue;
        // Union by size: hang the smaller tree under the larger.
        const [big, small] = componentSize[root] >= componentSize[neighbourRoot]
          ? [root, neighbourRoot]
          : [neighbourRoot, root];
        parent[small] = big;
        componentSize[big] += componentSize[small];
        root = big;
        if (componentSize[root] >= minArea) return values[k];
      }
    }
  }
  return null;
}
