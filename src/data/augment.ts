/**
 * Training-data augmentation as in the MVTec AD paper (Bergmann et al., CVPR 2019), and batch
 * assembly into one contiguous NCHW buffer.
 *
 * - Textures: random crops of a fixed size (128x128 by default) from random rotations of the
 *   (optionally zoomed) training images, plus mirroring.
 * - Objects: random translation and rotation of the whole image, plus mirroring where the category
 *   allows it ({@link CategoryInfo}).
 *
 * The stream is deterministic: patch i depends only on the seed and i, so runs are reproducible
 * and independent of how far a previous run got.
 *
 * @module
 */

import { type Channels, type FloatImage, resize } from "./image.ts";
import {
  type CategoryInfo,
  type ImageRequest,
  LruCache,
  type MvtecCategory,
  type Sample,
} from "./mvtec.ts";
import { hashSeed, Random } from "./random.ts";

/** Anything that hands out training images by index, lazily if it likes. */
export interface ImageSource {
  /** Number of images. */
  readonly length: number;
  /**
   * Fetches one image.
   *
   * @param index 0 ≤ index < length
   * @returns the image (treated as read-only)
   */
  get(index: number): Promise<FloatImage> | FloatImage;
}

/** Augmentation settings; see {@link augmentOptionsFor} for the per-category defaults. */
export interface AugmentOptions {
  /** Number of patches to produce. */
  readonly count: number;
  /** Stream seed; same seed and sources, same patches. */
  readonly seed: number;
  /** Texture: rotated crops. Object: transformed whole images. */
  readonly kind: "texture" | "object";
  /** Texture patch side in pixels. Default 128. */
  readonly patchSize?: number;
  /**
   * Texture only: resize each source to this square size before cropping. The MVTec AD paper
   * zoomed textures to 512x512; by default the images are used as loaded.
   */
  readonly zoomSize?: number;
  /** Object only: output width and height. Default: the source size. */
  readonly outputWidth?: number;
  /** Object only: output height. Default: the source height. */
  readonly outputHeight?: number;
  /** Largest rotation in degrees, either direction. Default 180 (texture) or 0 (object). */
  readonly maxRotationDegrees?: number;
  /** Object only: largest shift as a fraction of the image size, either direction. Default 0. */
  readonly maxTranslation?: number;
  /** Mirror left–right with probability 0.5. Default false. */
  readonly mirrorHorizontal?: boolean;
  /** Mirror top–bottom with probability 0.5. Default false. */
  readonly mirrorVertical?: boolean;
}

/**
 * Per-category augmentation defaults: the category's kind, rotation limit and mirroring rules, and
 * for objects a translation of up to 5% of the image size.
 *
 * @param info category facts
 * @param count number of patches
 * @param seed stream seed
 * @param overrides settings that replace the defaults
 * @returns the options for {@link augment}
 */
export function augmentOptionsFor(
  info: CategoryInfo,
  count: number,
  seed: number,
  overrides: Partial<AugmentOptions> = {},
): AugmentOptions {
  return {
    count,
    seed,
    kind: info.kind,
    patchSize: 128,
    maxRotationDegrees: info.maxRotationDegrees,
    // Objects are roughly centred in MVTec AD; a few percent shift covers the natural variation
    // without pushing parts out of frame (transistor, whose pose is a defect, gets none).
    maxTranslation: info.kind === "object" && info.maxRotationDegrees > 0 ? 0.05 : 0,
    mirrorHorizontal: info.mirrorHorizontal,
    mirrorVertical: info.mirrorVertical,
    ...overrides,
  };
}

/**
 * Makes an {@link ImageSource} over samples of a category, decoding lazily through its cache.
 *
 * @param category opened category
 * @param samples which samples (e.g. `category.train`)
 * @param request channels and size to load at
 * @returns the source
 */
export function categorySource(
  category: MvtecCategory,
  samples: readonly Sample[],
  request: ImageRequest = {},
): ImageSource {
  return {
    length: samples.length,
    get: (index: number) => category.loadImage(samples[index], request),
  };
}

/**
 * Yields a seeded, deterministic stream of `options.count` augmented patches drawn from `source`.
 *
 * @param source training images (an array or a lazy {@link ImageSource})
 * @param options augmentation settings
 * @returns an async stream of new images (never aliases the sources)
 */
export async function* augment(
  source: readonly FloatImage[] | ImageSource,
  options: AugmentOptions,
): AsyncGenerator<FloatImage> {
  const images: ImageSource = Array.isArray(source)
    ? { length: source.length, get: (i: number) => (source as readonly FloatImage[])[i] }
    : source as ImageSource;
  if (images.length === 0) throw new Error("augment: no source images");
  if (!Number.isInteger(options.count) || options.count < 0) {
    throw new RangeError(`augment: count must be a non-negative integer, got ${options.count}`);
  }
  // Sources are resized once and reused by many patches: textures to the zoom size, objects to the
  // output size. The cache keeps a few hundred MiB of them, never all, and a hit skips decoding.
  const resized = new LruCache<FloatImage>(256 * 1024 * 1024);
  const [width, height] = options.kind === "texture"
    ? [options.zoomSize, options.zoomSize]
    : [options.outputWidth, options.outputHeight];
  const sourceAt = async (index: number): Promise<FloatImage> => {
    const key = String(index);
    const hit = resized.get(key);
    if (hit !== undefined) return hit;
    const image = await images.get(index);
    const [toWidth, toHeight] = [width ?? image.width, height ?? image.height];
    if (image.width === toWidth && image.height === toHeight) return image;
    const small = resize(image, toWidth, toHeight);
    resized.set(key, small, small.data.byteLength);
    return small;
  };
  for (let i = 0; i < options.count; i++) {
    const random = new Random(hashSeed(options.seed, i));
    const image = await sourceAt(random.int(0, images.length));
    // Objects are moved at the output's own scale after an area-averaged resize: bilinear
    // sampling straight from a much larger image would alias, and the training images would no
    // longer look like the resized images that inference sees.
    yield options.kind === "texture"
      ? texturePatch(image, random, options)
      : transformObject(image, random, options);
  }
}

/** A 2-D affine map from output pixel offsets (du, dv) to source pixel coordinates. */
interface Placement {
  /** Source point that the output centre maps to. */
  readonly centerX: number;
  readonly centerY: number;
  /** Rotation angle in radians. */
  readonly angle: number;
  /** Source pixels per output pixel. */
  readonly scaleX: number;
  readonly scaleY: number;
  readonly flipX: boolean;
  readonly flipY: boolean;
}

function drawCommon(
  random: Random,
  options: AugmentOptions,
  defaultRotation: number,
): { angle: number; flipX: boolean; flipY: boolean } {
  const maxRotation = ((options.maxRotationDegrees ?? defaultRotation) * Math.PI) / 180;
  return {
    angle: random.uniform(-maxRotation, maxRotation),
    flipX: options.mirrorHorizontal === true && random.chance(0.5),
    flipY: options.mirrorVertical === true && random.chance(0.5),
  };
}

function texturePatch(image: FloatImage, random: Random, options: AugmentOptions): FloatImage {
  const size = options.patchSize ?? 128;
  const { angle, flipX, flipY } = drawCommon(random, options, 180);
  // Half the bounding box of the rotated square: keep it inside the image so no border pixels are
  // invented; only when the image is too small does reflection fill the corners.
  const reach = (size / 2) * (Math.abs(Math.cos(angle)) + Math.abs(Math.sin(angle)));
  const centerX = image.width >= 2 * reach
    ? random.uniform(reach, image.width - reach)
    : image.width / 2;
  const centerY = image.height >= 2 * reach
    ? random.uniform(reach, image.height - reach)
    : image.height / 2;
  const placement = { centerX, centerY, angle, scaleX: 1, scaleY: 1, flipX, flipY };
  return sampleAffine(image, size, size, placement, "reflect");
}

function transformObject(image: FloatImage, random: Random, options: AugmentOptions): FloatImage {
  const width = options.outputWidth ?? image.width;
  const height = options.outputHeight ?? image.height;
  const { angle, flipX, flipY } = drawCommon(random, options, 0);
  const shift = options.maxTranslation ?? 0;
  const placement = {
    centerX: image.width / 2 + random.uniform(-shift, shift) * image.width,
    centerY: image.height / 2 + random.uniform(-shift, shift) * image.height,
    angle,
    scaleX: image.width / width,
    scaleY: image.height / height,
    flipX,
    flipY,
  };
  // Replicating the edge continues the (mostly uniform) backgrounds of MVTec AD objects.
  return sampleAffine(image, width, height, placement, "clamp");
}

/** Bilinear sampling of `image` through an affine placement, producing a width x height image. */
function sampleAffine(
  image: FloatImage,
  width: number,
  height: number,
  placement: Placement,
  border: "clamp" | "reflect",
): FloatImage {
  const { channels } = image;
  const data = new Float32Array(channels * width * height);
  const cos = Math.cos(placement.angle);
  const sin = Math.sin(placement.angle);
  const srcPlane = image.width * image.height;
  const outPlane = width * height;
  const wrapX = border === "clamp" ? clampIndex : reflectIndex;
  for (let y = 0; y < height; y++) {
    let dv = (y + 0.5 - height / 2) * placement.scaleY;
    if (placement.flipY) dv = -dv;
    for (let x = 0; x < width; x++) {
      let du = (x + 0.5 - width / 2) * placement.scaleX;
      if (placement.flipX) du = -du;
      // Source coordinates in pixel-index space (pixel centres at integers).
      const sx = placement.centerX + cos * du - sin * dv - 0.5;
      const sy = placement.centerY + sin * du + cos * dv - 0.5;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const tx = sx - x0;
      const ty = sy - y0;
      const xa = wrapX(x0, image.width);
      const xb = wrapX(x0 + 1, image.width);
      const ya = wrapX(y0, image.height) * image.width;
      const yb = wrapX(y0 + 1, image.height) * image.width;
      const out = y * width + x;
      for (let c = 0; c < channels; c++) {
        const base = c * srcPlane;
        const top = image.data[base + ya + xa] * (1 - tx) + image.data[base + ya + xb] * tx;
        const bottom = image.data[base + yb + xa] * (1 - tx) + image.data[base + yb + xb] * tx;
        data[c * outPlane + out] = top * (1 - ty) + bottom * ty;
      }
    }
  }
  return { width, height, channels, data };
}

function clampIndex(i: number, size: number): number {
  return i < 0 ? 0 : i >= size ? size - 1 : i;
}

/** Mirror padding without repeating the edge pixel (numpy "reflect"). */
function reflectIndex(i: number, size: number): number {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  let m = i % period;
  if (m < 0) m += period;
  return m < size ? m : period - m;
}

/** A batch of equally shaped images in one contiguous NCHW buffer. */
export interface Batch {
  /** `n * c * h * w` values, image after image, each in CHW layout. */
  readonly data: Float32Array;
  /** [batch, channels, height, width]. */
  readonly shape: readonly [number, Channels, number, number];
}

/**
 * Packs images into one contiguous NCHW buffer, so the engine can upload a batch with one write.
 *
 * @param images non-empty list of images with equal size and channels
 * @param into optional buffer to fill (reused across batches); must hold at least n*c*h*w values
 * @returns the batch; its `data` is `into` (or a view of its prefix) when given
 * @throws RangeError when shapes differ or `into` is too small
 */
export function assembleBatch(images: readonly FloatImage[], into?: Float32Array): Batch {
  if (images.length === 0) throw new RangeError("assembleBatch: no images");
  const { width, height, channels } = images[0];
  const size = channels * width * height;
  const needed = images.length * size;
  if (into !== undefined && into.length < needed) {
    throw new RangeError(`assembleBatch: buffer holds ${into.length} values, need ${needed}`);
  }
  const data = into === undefined
    ? new Float32Array(needed)
    : into.length === needed
    ? into
    : into.subarray(0, needed);
  images.forEach((image, i) => {
    if (image.width !== width || image.height !== height || image.channels !== channels) {
      throw new RangeError(
        `assembleBatch: image ${i} is ${image.channels}x${image.height}x${image.width}, ` +
          `expected ${channels}x${height}x${width}`,
      );
    }
    data.set(image.data, i * size);
  });
  return { data, shape: [images.length, channels, height, width] };
}

/**
 * Groups a stream of images into batches.
 *
 * @param images stream (e.g. from {@link augment})
 * @param batchSize images per batch
 * @param dropLast drop a final batch smaller than `batchSize`
 * @returns an async stream of batches, each with its own buffer
 */
export async function* batches(
  images: AsyncIterable<FloatImage> | Iterable<FloatImage>,
  batchSize: number,
  dropLast = false,
): AsyncGenerator<Batch> {
  if (!Number.isInteger(batchSize) || batchSize <= 0) {
    throw new RangeError(`batches: batch size must be a positive integer, got ${batchSize}`);
  }
  let pending: FloatImage[] = [];
  for await (const image of images) {
    pending.push(image);
    if (pending.length === batchSize) {
      yield assembleBatch(pending);
      pending = [];
    }
  }
  if (pending.length > 0 && !dropLast) yield assembleBatch(pending);
}
