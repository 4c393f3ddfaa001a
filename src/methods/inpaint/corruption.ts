/**
 * The corruption generator of the self-supervised inpainting autoencoder (Bauer et al., 2022):
 * training inputs X̂ made from anomaly-free images X, so that a network trained to map X̂ back to
 * X learns to repair anything that does not look like the training data.
 *
 * One call picks a patch of random size and place, draws a smooth random shape mask M inside it
 * (1 where the corruption is fully visible, 0 outside the patch) and blends new content in:
 * X̂ = (1 − M)·X + M·content. The content is, by {@link CorruptionKind}:
 *
 * - `elastic` (the paper's method): the image itself under a Gaussian-smoothed random
 *   displacement field, so the patch is a plausibly textured but locally wrong version of itself;
 * - `cutout`: zeros;
 * - `swap`: a patch of another image of the caller's pool (meant: other training images of the
 *   same category), through the same kind of mask;
 * - `noise-occlusion`: random ellipses filled with procedural noise (smoothed Gaussian noise
 *   around a random colour). The paper occluded with other images; this variant needs none;
 * - `image-occlusion`: random ellipses filled with a patch of another image of the caller's pool
 *   (meant: training images of other categories), as the paper did for cable, screw and
 *   transistor.
 *
 * The inserted content (all but cut-out) may have its brightness changed at random, and the image
 * may first be rotated by multiples of 90° and flipped where its category allows it. Everything
 * runs on the CPU and follows from the seed alone.
 *
 * @module
 */

import type { FloatImage } from "../../data/image.ts";
import type { CategoryInfo } from "../../data/mvtec.ts";
import { Random } from "../../data/random.ts";
import { gaussianTaps } from "../../tensor/ops/filter.ts";
import { InputError } from "../../util/errors.ts";

/** What is blended into the patch; see the module's description. */
export type CorruptionKind = "elastic" | "cutout" | "swap" | "noise-occlusion" | "image-occlusion";

/** Every {@link CorruptionKind}, for option parsing and help texts. */
export const CORRUPTION_KINDS: readonly CorruptionKind[] = [
  "elastic",
  "cutout",
  "swap",
  "noise-occlusion",
  "image-occlusion",
];

/** Settings of {@link corrupt}; all are optional. */
export interface CorruptionOptions {
  /** What is blended in (default "elastic"). */
  readonly kind?: CorruptionKind;
  /**
   * Patch width and height, each drawn uniformly from [min, max] as fractions of the image's
   * width and height (default [0.1, 0.35]).
   */
  readonly patchSize?: readonly [number, number];
  /**
   * For the blob mask of `elastic`, `cutout` and `swap`: the fraction of the patch's interior
   * (the patch less a margin of {@link maskMargin} pixels on each side) that the mask covers,
   * drawn uniformly from [min, max] (default [0.3, 0.9]). The mask's sum equals this fraction of
   * the interior's area; blurring moves mass across the edge but keeps it.
   */
  readonly maskCoverage?: readonly [number, number];
  /**
   * Standard deviation in pixels of the Gaussian that softens the mask's edge (default 2); 0
   * gives a hard 0/1 mask.
   */
  readonly maskSmoothness?: number;
  /**
   * `elastic`: standard deviation in pixels of each component (x and y) of the displacement
   * (default 4); 0 leaves the patch where it is.
   */
  readonly elasticAmplitude?: number;
  /**
   * `elastic`: standard deviation in pixels of the Gaussian that smooths the displacement field
   * (default 4). Larger values bend the patch as a whole, smaller ones crumple it.
   */
  readonly elasticSmoothness?: number;
  /**
   * Largest relative brightness change of the inserted content: it is multiplied by a factor
   * drawn from [1 − brightness, 1 + brightness] and clipped to [0, 1] (default 0: unchanged).
   * Cut-out inserts zeros and is not affected.
   */
  readonly brightness?: number;
  /**
   * Rotate the image by a random multiple of 90° before corrupting it (default false). A
   * non-square image is only turned by 0° or 180°, so that its size stays the same.
   */
  readonly quarterTurns?: boolean;
  /** Mirror the image left–right with probability 0.5 (default false). */
  readonly flipHorizontal?: boolean;
  /** Mirror the image top–bottom with probability 0.5 (default false). */
  readonly flipVertical?: boolean;
  /**
   * Images that `swap` and `image-occlusion` take content from: the same number of channels as
   * the corrupted image, and at least as large as the largest patch.
   */
  readonly pool?: readonly FloatImage[];
}

/** A rectangle of pixels. */
export interface Box {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/** What {@link corrupt} made, and the random choices it made it from. */
export interface Corruption {
  /** X̂: the input the network sees. */
  readonly corrupted: FloatImage;
  /** M: one channel, in [0, 1]; 0 outside {@link patch}, and X̂ = X wherever M = 0. */
  readonly mask: FloatImage;
  /** X: the image after rotation and flips, before corruption; the network's target. */
  readonly clean: FloatImage;
  /** Where the patch is, in the (rotated) image. */
  readonly patch: Box;
  /** The multiple of 90° (counter-clockwise) the image was turned by: 0–3. */
  readonly quarterTurns: number;
  /** Whether the image was mirrored left–right (before turning). */
  readonly flippedHorizontally: boolean;
  /** Whether the image was mirrored top–bottom (before turning). */
  readonly flippedVertically: boolean;
  /** The factor the inserted content's brightness was multiplied by (1 when unchanged). */
  readonly brightnessFactor: number;
  /** `swap` and `image-occlusion`: which pool image, and the corner of the region taken from it. */
  readonly source?: { readonly poolIndex: number; readonly x: number; readonly y: number };
}

/** Defaults of {@link CorruptionOptions}. */
export const DEFAULT_CORRUPTION: Required<Omit<CorruptionOptions, "pool">> = {
  kind: "elastic",
  patchSize: [0.1, 0.35],
  maskCoverage: [0.3, 0.9],
  maskSmoothness: 2,
  elasticAmplitude: 4,
  elasticSmoothness: 4,
  brightness: 0,
  quarterTurns: false,
  flipHorizontal: false,
  flipVertical: false,
};

/**
 * The augmentation a category allows: quarter turns when any rotation keeps its images
 * defect-free, and the mirrorings it allows.
 *
 * @param info category facts
 * @returns the rotation and flip options for {@link corrupt}
 */
export function augmentationFor(
  info: CategoryInfo,
): Pick<CorruptionOptions, "quarterTurns" | "flipHorizontal" | "flipVertical"> {
  return {
    quarterTurns: info.maxRotationDegrees >= 180,
    flipHorizontal: info.mirrorHorizontal,
    flipVertical: info.mirrorVertical,
  };
}

/**
 * Pixels left free of the mask on each side of the patch: the reach of the Gaussian that softens
 * the mask's edge, so that the softened mask is exactly 0 outside the patch.
 *
 * @param maskSmoothness the Gaussian's standard deviation in pixels (0: a hard mask)
 * @returns the margin in pixels
 */
export function maskMargin(maskSmoothness: number): number {
  return maskSmoothness > 0 ? (gaussianTaps(maskSmoothness).length - 1) / 2 : 0;
}

/**
 * Makes one training input from an anomaly-free image; see the module's description.
 *
 * @param image the anomaly-free image X (not modified)
 * @param seed equal seeds, options and images give equal results
 * @param options settings (defaults: {@link DEFAULT_CORRUPTION})
 * @returns X̂, M, X and the choices made
 * @throws InputError when an option is out of range, when the image is too small for the
 *   patch size and mask smoothness, or when `swap` or `image-occlusion` lack a fitting pool
 */
export function corrupt(
  image: FloatImage,
  seed: number,
  options: CorruptionOptions = {},
): Corruption {
  const settings = resolveSettings(options);
  const random = new Random(seed);

  const square = image.width === image.height;
  const quarterTurns = settings.quarterTurns
    ? (square ? random.int(0, 4) : 2 * random.int(0, 2))
    : 0;
  const flippedHorizontally = settings.flipHorizontal && random.chance(0.5);
  const flippedVertically = settings.flipVertical && random.chance(0.5);
  const clean = rotateFlip(image, quarterTurns, flippedHorizontally, flippedVertically);

  const margin = maskMargin(settings.maskSmoothness);
  const widths = patchSides(settings.patchSize, clean.width, margin, clean);
  const heights = patchSides(settings.patchSize, clean.height, margin, clean);
  // Checked against the largest patch, so that a pool fits every seed or none.
  const pool = settings.kind === "swap" || settings.kind === "image-occlusion"
    ? checkedPool(settings.pool, clean, widths[1], heights[1], settings.kind)
    : [];
  const patch = drawPatch(clean, widths, heights, random);
  const occlusion = settings.kind === "noise-occlusion" || settings.kind === "image-occlusion";
  const interior = occlusion
    ? ellipsesMask(patch.width - 2 * margin, patch.height - 2 * margin, random)
    : blobMask(
      patch.width - 2 * margin,
      patch.height - 2 * margin,
      random.uniform(settings.maskCoverage[0], settings.maskCoverage[1]),
      random,
    );
  const patchMask = softenMask(
    interior,
    patch.width,
    patch.height,
    margin,
    settings.maskSmoothness,
  );

  const brightnessFactor = settings.kind === "cutout"
    ? 1
    : random.uniform(1 - settings.brightness, 1 + settings.brightness);
  let source: Corruption["source"];
  let content: FloatImage;
  switch (settings.kind) {
    case "elastic": {
      const field = displacementField(
        patch.width,
        patch.height,
        settings.elasticAmplitude,
        settings.elasticSmoothness,
        random,
      );
      content = warpPatch(clean, patch, field);
      break;
    }
    case "cutout":
      content = blankPatch(patch, clean.channels);
      break;
    case "noise-occlusion":
      content = noisePatch(patch, clean.channels, random);
      break;
    case "swap":
    case "image-occlusion": {
      const poolIndex = random.int(0, pool.length);
      const donor = pool[poolIndex];
      source = {
        poolIndex,
        x: random.int(0, donor.width - patch.width + 1),
        y: random.int(0, donor.height - patch.height + 1),
      };
      content = cropPatch(donor, { ...patch, x: source.x, y: source.y });
      break;
    }
  }
  if (brightnessFactor !== 1) scaleBrightness(content.data, brightnessFactor);

  const corrupted = { ...clean, data: Float32Array.from(clean.data) };
  const mask: FloatImage = {
    width: clean.width,
    height: clean.height,
    channels: 1,
    data: new Float32Array(clean.width * clean.height),
  };
  blendPatch(corrupted, content, patchMask, patch, mask.data);
  return {
    corrupted,
    mask,
    clean,
    patch,
    quarterTurns,
    flippedHorizontally,
    flippedVertically,
    brightnessFactor,
    source,
  };
}

function checkRange(name: string, range: readonly [number, number], low: number, high: number) {
  // Options may come from JSON or flags, so the shape is checked too, not only the values.
  const valid = Array.isArray(range) && range.length === 2 && range.every(Number.isFinite) &&
    low < range[0] && range[0] <= range[1] && range[1] <= high;
  if (!valid) {
    throw new InputError(
      `corruption option ${name}: expected [min, max] with ${low} < min ≤ max ≤ ${high}, ` +
        `got [${range}]`,
    );
  }
}

function checkNonNegative(name: string, value: number, exclusiveZero = false): void {
  if (!(Number.isFinite(value) && (exclusiveZero ? value > 0 : value >= 0))) {
    const expected = exclusiveZero ? "a positive number" : "a number ≥ 0";
    throw new InputError(`corruption option ${name}: expected ${expected}, got ${value}`);
  }
}

type Settings = typeof DEFAULT_CORRUPTION & Pick<CorruptionOptions, "pool">;

/** The options over the defaults (an option given as undefined keeps its default), checked. */
function resolveSettings(options: CorruptionOptions): Settings {
  const settings: Record<string, unknown> = { ...DEFAULT_CORRUPTION };
  for (const [name, value] of Object.entries(options)) {
    if (value !== undefined) settings[name] = value;
  }
  checkSettings(settings as Settings);
  return settings as Settings;
}

function checkSettings(settings: Settings): void {
  if (!CORRUPTION_KINDS.includes(settings.kind)) {
    throw new InputError(
      `corruption option kind: expected one of ${CORRUPTION_KINDS.join(", ")}, ` +
        `got ${settings.kind}`,
    );
  }
  checkRange("patchSize", settings.patchSize, 0, 1);
  checkRange("maskCoverage", settings.maskCoverage, 0, 1);
  checkNonNegative("maskSmoothness", settings.maskSmoothness);
  checkNonNegative("elasticAmplitude", settings.elasticAmplitude);
  checkNonNegative("elasticSmoothness", settings.elasticSmoothness, true);
  if (!(settings.brightness >= 0 && settings.brightness < 1)) {
    throw new InputError(
      `corruption option brightness: expected a number in [0, 1), got ${settings.brightness}`,
    );
  }
}

/**
 * The least and largest patch side along an image side of `length` pixels: `patchSize` (fractions)
 * of it, rounded, keeping room for the mask's margins and one pixel between them.
 */
function patchSides(
  patchSize: readonly [number, number],
  length: number,
  margin: number,
  image: FloatImage,
): [number, number] {
  const least = 2 * margin + 1;
  const low = Math.max(1, Math.round(patchSize[0] * length));
  const high = Math.max(low, Math.round(patchSize[1] * length));
  if (low < least) {
    throw new InputError(
      `corruption options patchSize and maskSmoothness: the smallest patch side of a ` +
        `${image.width}×${image.height} image is ${low} px, less than the ${least} px that a ` +
        `mask margin of ${margin} px on each side needs; give a larger patchSize minimum or a ` +
        `smaller maskSmoothness`,
    );
  }
  return [low, high];
}

/** A patch with sides drawn from the given ranges, at a uniformly random place in the image. */
function drawPatch(
  image: FloatImage,
  widths: [number, number],
  heights: [number, number],
  random: Random,
): Box {
  const width = random.int(widths[0], widths[1] + 1);
  const height = random.int(heights[0], heights[1] + 1);
  return {
    x: random.int(0, image.width - width + 1),
    y: random.int(0, image.height - height + 1),
    width,
    height,
  };
}

/**
 * Flips, then turns an image by `quarterTurns` × 90° counter-clockwise (as seen on screen, with y
 * pointing down). Pixels are moved, never resampled.
 *
 * @param image source (not modified)
 * @param quarterTurns 0, 1, 2 or 3
 * @param flipHorizontal mirror left–right first
 * @param flipVertical mirror top–bottom first
 * @returns a new image; width and height swap for odd turns
 */
export function rotateFlip(
  image: FloatImage,
  quarterTurns: number,
  flipHorizontal: boolean,
  flipVertical: boolean,
): FloatImage {
  if (![0, 1, 2, 3].includes(quarterTurns)) {
    throw new RangeError(`rotateFlip: quarterTurns must be 0, 1, 2 or 3, got ${quarterTurns}`);
  }
  const { width, height, channels } = image;
  const odd = quarterTurns % 2 === 1;
  const [outWidth, outHeight] = odd ? [height, width] : [width, height];
  const data = new Float32Array(image.data.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      // The pixel's place after the flips...
      const fx = flipHorizontal ? width - 1 - x : x;
      const fy = flipVertical ? height - 1 - y : y;
      // ...and after the turns: a counter-clockwise quarter takes (x, y) of an image w wide to
      // (y, w − 1 − x), and the image it makes is as wide as the one before was high.
      let [tx, ty] = [fx, fy];
      for (let turn = 0; turn < quarterTurns; turn++) {
        const currentWidth = turn % 2 === 0 ? width : height;
        [tx, ty] = [ty, currentWidth - 1 - tx];
      }
      for (let c = 0; c < channels; c++) {
        data[(c * outHeight + ty) * outWidth + tx] = image.data[(c * height + y) * width + x];
      }
    }
  }
  return { width: outWidth, height: outHeight, channels, data };
}

/**
 * Blurs a `width` × `height` field with a separable kernel, treating everything outside it as 0.
 */
function blurZeroPadded(
  values: Float64Array,
  width: number,
  height: number,
  taps: readonly number[],
): Float64Array {
  const radius = (taps.length - 1) / 2;
  const rows = new Float64Array(values.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let total = 0;
      for (let t = 0; t < taps.length; t++) {
        const sx = x + t - radius;
        if (sx >= 0 && sx < width) total += taps[t] * values[y * width + sx];
      }
      rows[y * width + x] = total;
    }
  }
  const out = new Float64Array(values.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let total = 0;
      for (let t = 0; t < taps.length; t++) {
        const sy = y + t - radius;
        if (sy >= 0 && sy < height) total += taps[t] * rows[sy * width + x];
      }
      out[y * width + x] = total;
    }
  }
  return out;
}

/**
 * Stationary Gaussian noise with unit variance and a Gaussian autocorrelation: white noise
 * blurred with a Gaussian of standard deviation `sigma`, drawn on a larger field and cropped so
 * that the borders are as random as the middle, and divided by the blur's standard deviation
 * Σ taps² (the 2-D kernel taps ⊗ taps has Σ K² = (Σ taps²)²).
 *
 * @param width field width
 * @param height field height
 * @param sigma smoothing in pixels (> 0)
 * @param random generator
 * @returns `width * height` values, row-major
 */
export function smoothNoise(
  width: number,
  height: number,
  sigma: number,
  random: Random,
): Float64Array {
  const taps = gaussianTaps(sigma);
  const radius = (taps.length - 1) / 2;
  const paddedWidth = width + 2 * radius;
  const paddedHeight = height + 2 * radius;
  const white = new Float64Array(paddedWidth * paddedHeight);
  for (let i = 0; i < white.length; i++) white[i] = random.normal();
  const blurred = blurZeroPadded(white, paddedWidth, paddedHeight, taps);
  const gain = taps.reduce((total, t) => total + t * t, 0);
  const out = new Float64Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      out[y * width + x] = blurred[(y + radius) * paddedWidth + x + radius] / gain;
    }
  }
  return out;
}

/** A displacement per pixel of a patch, in pixels. */
export interface DisplacementField {
  readonly width: number;
  readonly height: number;
  /** Horizontal displacement, row-major. */
  readonly dx: Float64Array;
  /** Vertical displacement, row-major. */
  readonly dy: Float64Array;
}

/**
 * The elastic deformation's displacement field: each component is {@link smoothNoise} times
 * `amplitude`, so it has mean 0 and standard deviation `amplitude` in expectation, and
 * neighbouring pixels move nearly alike (their difference has a standard deviation of about
 * amplitude / (smoothness · √2)).
 *
 * @param width patch width
 * @param height patch height
 * @param amplitude standard deviation of each component in pixels (≥ 0)
 * @param smoothness standard deviation of the smoothing Gaussian in pixels (> 0)
 * @param random generator
 * @returns the field
 */
export function displacementField(
  width: number,
  height: number,
  amplitude: number,
  smoothness: number,
  random: Random,
): DisplacementField {
  const dx = smoothNoise(width, height, smoothness, random);
  const dy = smoothNoise(width, height, smoothness, random);
  for (let i = 0; i < dx.length; i++) {
    dx[i] *= amplitude;
    dy[i] *= amplitude;
  }
  return { width, height, dx, dy };
}

/**
 * A random blob covering `coverage` of a `width` × `height` area, as 0/1 values: the pixels where
 * smooth noise minus a bowl centred on the area is highest, so the blob is irregular but tends to
 * the middle. Exactly round(coverage · area) pixels (at least one) are set.
 *
 * @param width area width
 * @param height area height
 * @param coverage fraction of the area to set, in (0, 1]
 * @param random generator
 * @returns `width * height` values, row-major
 */
export function blobMask(
  width: number,
  height: number,
  coverage: number,
  random: Random,
): Float64Array {
  const noise = smoothNoise(width, height, Math.max(1, Math.min(width, height) / 8), random);
  // The bowl's weight 2 against unit-variance noise: steep enough that the blob rarely touches the
  // corners, shallow enough that its outline is the noise's.
  const bowlWeight = 2;
  const score = new Float64Array(width * height);
  for (let y = 0; y < height; y++) {
    const v = (y + 0.5 - height / 2) / (height / 2);
    for (let x = 0; x < width; x++) {
      const u = (x + 0.5 - width / 2) / (width / 2);
      score[y * width + x] = noise[y * width + x] - bowlWeight * (u * u + v * v);
    }
  }
  const order = Array.from(score.keys()).sort((a, b) => score[b] - score[a]);
  const count = Math.max(1, Math.round(coverage * score.length));
  const mask = new Float64Array(score.length);
  for (let i = 0; i < count; i++) mask[order[i]] = 1;
  return mask;
}

/**
 * One to three random ellipses inside a `width` × `height` area, as 0/1 values: the occluding
 * shapes of the occlusion variants. Never empty.
 */
function ellipsesMask(width: number, height: number, random: Random): Float64Array {
  const mask = new Float64Array(width * height);
  const count = random.int(1, 4);
  for (let e = 0; e < count; e++) {
    const centerX = random.uniform(0, width);
    const centerY = random.uniform(0, height);
    const radiusX = random.uniform(0.15, 0.5) * width;
    const radiusY = random.uniform(0.15, 0.5) * height;
    const angle = random.uniform(0, Math.PI);
    const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const u = x + 0.5 - centerX;
        const v = y + 0.5 - centerY;
        const along = (u * cos + v * sin) / radiusX;
        const across = (v * cos - u * sin) / radiusY;
        if (along * along + across * across <= 1) mask[y * width + x] = 1;
      }
    }
    // A very thin ellipse may miss every pixel centre; its own centre pixel stands for it.
    mask[Math.floor(centerY) * width + Math.floor(centerX)] = 1;
  }
  return mask;
}

/**
 * Places the interior mask in the middle of a `width` × `height` patch, `margin` pixels from each
 * side, and softens its edge with a Gaussian of standard deviation `smoothness` whose reach is the
 * margin: the result is exactly 0 outside the patch and keeps the interior's sum. Values are in
 * [0, 1].
 */
function softenMask(
  interior: Float64Array,
  width: number,
  height: number,
  margin: number,
  smoothness: number,
): Float32Array {
  const innerWidth = width - 2 * margin;
  const placed = new Float64Array(width * height);
  for (let i = 0; i < interior.length; i++) {
    const x = i % innerWidth;
    const y = Math.floor(i / innerWidth);
    placed[(y + margin) * width + x + margin] = interior[i];
  }
  const soft = smoothness > 0
    ? blurZeroPadded(placed, width, height, gaussianTaps(smoothness))
    : placed;
  // Rounding of the taps' sum may leave a whole-kernel value a hair above 1.
  return Float32Array.from(soft, (m) => Math.min(1, Math.max(0, m)));
}

/**
 * The patch's pixels moved by a displacement field: the value at (x, y) is the image's, sampled
 * bilinearly at (x + dx, y + dy), with coordinates clamped to the image (the source may lie
 * outside the patch).
 */
function warpPatch(image: FloatImage, patch: Box, field: DisplacementField): FloatImage {
  const { width, height, channels } = image;
  const data = new Float32Array(channels * patch.width * patch.height);
  const plane = patch.width * patch.height;
  const clampTo = (value: number, size: number) => Math.min(size - 1, Math.max(0, value));
  for (let py = 0; py < patch.height; py++) {
    for (let px = 0; px < patch.width; px++) {
      const i = py * patch.width + px;
      const sx = clampTo(patch.x + px + field.dx[i], width);
      const sy = clampTo(patch.y + py + field.dy[i], height);
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const x1 = Math.min(x0 + 1, width - 1);
      const y1 = Math.min(y0 + 1, height - 1);
      const tx = sx - x0;
      const ty = sy - y0;
      for (let c = 0; c < channels; c++) {
        const base = c * height * width;
        const top = image.data[base + y0 * width + x0] * (1 - tx) +
          image.data[base + y0 * width + x1] * tx;
        const bottom = image.data[base + y1 * width + x0] * (1 - tx) +
          image.data[base + y1 * width + x1] * tx;
        data[c * plane + i] = top * (1 - ty) + bottom * ty;
      }
    }
  }
  return { width: patch.width, height: patch.height, channels, data };
}

function blankPatch(patch: Box, channels: FloatImage["channels"]): FloatImage {
  const data = new Float32Array(channels * patch.width * patch.height);
  return { width: patch.width, height: patch.height, channels, data };
}

/**
 * Procedural content for `noise-occlusion`: per channel a random base colour plus smooth noise of
 * random contrast and grain, clipped to [0, 1]; unlike any training image by construction.
 */
function noisePatch(patch: Box, channels: FloatImage["channels"], random: Random): FloatImage {
  const plane = patch.width * patch.height;
  const data = new Float32Array(channels * plane);
  const grain = random.uniform(1, Math.max(1, Math.min(patch.width, patch.height) / 8));
  for (let c = 0; c < channels; c++) {
    const base = random.uniform(0, 1);
    const contrast = random.uniform(0.05, 0.3);
    const noise = smoothNoise(patch.width, patch.height, grain, random);
    for (let i = 0; i < plane; i++) {
      data[c * plane + i] = Math.min(1, Math.max(0, base + contrast * noise[i]));
    }
  }
  return { width: patch.width, height: patch.height, channels, data };
}

/** The region `box` of an image, as an image of its own. */
function cropPatch(image: FloatImage, box: Box): FloatImage {
  const plane = box.width * box.height;
  const data = new Float32Array(image.channels * plane);
  for (let c = 0; c < image.channels; c++) {
    for (let y = 0; y < box.height; y++) {
      const from = (c * image.height + box.y + y) * image.width + box.x;
      data.set(image.data.subarray(from, from + box.width), c * plane + y * box.width);
    }
  }
  return { width: box.width, height: box.height, channels: image.channels, data };
}

function checkedPool(
  pool: readonly FloatImage[] | undefined,
  image: FloatImage,
  patchWidth: number,
  patchHeight: number,
  kind: CorruptionKind,
): readonly FloatImage[] {
  if (!pool || pool.length === 0) {
    throw new InputError(`corruption kind ${kind} needs option pool: images to take content from`);
  }
  pool.forEach((donor, index) => {
    if (donor.channels !== image.channels) {
      throw new InputError(
        `corruption option pool: image ${index} has ${donor.channels} channels, expected ` +
          `${image.channels} like the corrupted image`,
      );
    }
    if (donor.width < patchWidth || donor.height < patchHeight) {
      throw new InputError(
        `corruption option pool: image ${index} is ${donor.width}×${donor.height}, smaller ` +
          `than the largest patch, ${patchWidth}×${patchHeight}`,
      );
    }
  });
  return pool;
}

function scaleBrightness(values: Float32Array, factor: number): void {
  for (let i = 0; i < values.length; i++) values[i] = Math.min(1, values[i] * factor);
}

/**
 * X̂ = (1 − M)·X + M·content over the patch, written into `image`, and M into `mask` (a plane of
 * the image's size). Pixels where M = 0 are left as they are, so X̂ equals X there exactly.
 */
function blendPatch(
  image: FloatImage,
  content: FloatImage,
  patchMask: Float32Array,
  patch: Box,
  mask: Float32Array,
): void {
  const plane = image.width * image.height;
  const patchPlane = patch.width * patch.height;
  for (let py = 0; py < patch.height; py++) {
    for (let px = 0; px < patch.width; px++) {
      const m = patchMask[py * patch.width + px];
      if (m === 0) continue;
      const pixel = (patch.y + py) * image.width + patch.x + px;
      mask[pixel] = m;
      for (let c = 0; c < image.channels; c++) {
        const at = c * plane + pixel;
        image.data[at] = (1 - m) * image.data[at] +
          m * content.data[c * patchPlane + py * patch.width + px];
      }
    }
  }
}
