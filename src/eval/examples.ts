/**
 * Qualitative examples of an evaluated category: its best and worst test images, each drawn as
 * the image with the ground truth and the detection outlined, beside its anomaly map (the
 * MVTec AD paper's Fig. 3).
 *
 * @module
 */

import { encodePng, type FloatImage, resizePlane, type RgbaImage } from "../data/image.ts";
import type { MvtecCategory, Sample } from "../data/mvtec.ts";
import type { EvaluatedImage } from "./evaluate.ts";
import { renderQualitative } from "./plot.ts";

/** A qualitative picture of one test image (image with outlines, heat map beside it). */
export interface EvaluationExample {
  /** Among the best or the worst test images of the category. */
  kind: "best" | "worst";
  /** 1 = the best (or worst) of all. */
  rank: number;
  /** Defect type folder. */
  defect: string;
  /** Image id. */
  id: string;
  /** The image score (map maximum unless given). */
  imageScore: number;
  /**
   * How well the image score separates this image from the other class, in [0, 1]: for a
   * defective image the share of good images scoring lower, for a good image the share of
   * defective images scoring higher (ties count half). 1 = perfectly separated.
   */
  quality: number;
  /** The picture, PNG-encoded. */
  png: Uint8Array;
}

/** Options of {@link drawExamples}. */
export interface DrawExamplesOptions {
  /** Best and worst images drawn (each); 0 for none. */
  count: number;
  /** Largest side of a picture's image half, in pixels (larger images are scaled down). */
  maxSide: number;
  /** Called after each picture, for progress. */
  onPicture?: () => void;
}

/**
 * Draws the best and worst test images of a category.
 *
 * @param category the category, to load the test images from
 * @param images the evaluated test images, in the order of `category.test`
 * @param threshold the segmentation threshold, or null when none was set (nothing is outlined as
 *   detected then)
 * @param options how many, how large, and progress
 * @returns the best images (rank 1 first), then the worst (rank 1 first)
 */
export async function drawExamples(
  category: MvtecCategory,
  images: readonly EvaluatedImage[],
  threshold: number | null,
  options: DrawExamplesOptions,
): Promise<EvaluationExample[]> {
  // One colour scale per category, so heat maps of different images compare.
  let min = Infinity;
  let max = -Infinity;
  for (const image of images) {
    for (let i = 0; i < image.map.length; i++) {
      if (image.map[i] < min) min = image.map[i];
      if (image.map[i] > max) max = image.map[i];
    }
  }
  const examples: EvaluationExample[] = [];
  for (const pick of pickExamples(images, options.count)) {
    const image = images[pick.index];
    const sample = category.test[pick.index];
    const picture = await drawExample(category, sample, image, threshold, { min, max }, options);
    examples.push({
      kind: pick.kind,
      rank: pick.rank,
      defect: sample.defect,
      id: sample.id,
      imageScore: image.imageScore,
      quality: pick.quality,
      png: encodePng(picture),
    });
    options.onPicture?.();
  }
  return examples;
}

/** Scores how well each image is separated from the other class (see {@link EvaluationExample.quality}). */
function separationQuality(images: readonly EvaluatedImage[]): number[] {
  const good = images.filter((image) => !image.isDefective).map((image) => image.imageScore);
  const defective = images.filter((image) => image.isDefective).map((image) => image.imageScore);
  /** Share of `others` on the right side of `score` (ties half); 1 without others to compare. */
  const separated = (others: number[], score: number, othersShouldBeLower: boolean) => {
    if (others.length === 0) return 1;
    let sum = 0;
    for (const other of others) {
      if (other === score) sum += 0.5;
      else if ((other < score) === othersShouldBeLower) sum += 1;
    }
    return sum / others.length;
  };
  return images.map((image) =>
    image.isDefective
      ? separated(good, image.imageScore, true)
      : separated(defective, image.imageScore, false)
  );
}

/** Picks `count` best and `count` worst distinct images by quality (ties: file order). */
function pickExamples(
  images: readonly EvaluatedImage[],
  count: number,
): { index: number; kind: "best" | "worst"; rank: number; quality: number }[] {
  if (count <= 0 || images.length === 0) return [];
  const quality = separationQuality(images);
  // Within equal quality, a defective image scoring higher (a good one lower) is better.
  const margin = (i: number) =>
    images[i].isDefective ? images[i].imageScore : -images[i].imageScore;
  const order = images.map((_, i) => i).sort((a, b) =>
    quality[b] - quality[a] || margin(b) - margin(a) || a - b
  );
  const bestCount = Math.min(count, Math.ceil(order.length / 2));
  const worstCount = Math.min(count, order.length - bestCount);
  const best = order.slice(0, bestCount);
  const worst = order.slice(order.length - worstCount).reverse();
  return [
    ...best.map((index, i) => ({
      index,
      kind: "best" as const,
      rank: i + 1,
      quality: quality[index],
    })),
    ...worst.map((index, i) => ({
      index,
      kind: "worst" as const,
      rank: i + 1,
      quality: quality[index],
    })),
  ];
}

/** Converts a channel-planar image to the interleaved layout of the picture renderer. */
function interleave(image: FloatImage): Float32Array {
  const { width, height, channels, data } = image;
  if (channels === 1) return data;
  const plane = width * height;
  const out = new Float32Array(plane * channels);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < channels; c++) out[i * channels + c] = data[c * plane + i];
  }
  return out;
}

async function drawExample(
  category: MvtecCategory,
  sample: Sample,
  image: EvaluatedImage,
  threshold: number | null,
  heatRange: { min: number; max: number },
  options: DrawExamplesOptions,
): Promise<RgbaImage> {
  const scale = Math.min(1, options.maxSide / Math.max(image.width, image.height));
  const width = Math.max(1, Math.round(image.width * scale));
  const height = Math.max(1, Math.round(image.height * scale));
  const picture = await category.loadImage(sample, { width, height });
  // Map and mask are scaled as the loader scales the image ("auto"), so the halves line up.
  const map = resizePlane(image.map, image.width, image.height, width, height, "auto");
  let mask: Uint8Array | null = null;
  if (image.mask !== null) {
    const asFloat = Float32Array.from(image.mask, (value) => (value !== 0 ? 1 : 0));
    const scaled = resizePlane(asFloat, image.width, image.height, width, height, "auto");
    mask = Uint8Array.from(scaled, (value) => (value >= 0.5 ? 1 : 0));
  }
  return renderQualitative({
    image: interleave(picture),
    channels: picture.channels,
    width,
    height,
    gtMask: mask,
    map,
    // Without a threshold nothing is "detected": the picture shows no green outline.
    threshold: threshold ?? Infinity,
    heatmap: heatRange,
  });
}
