/**
 * The variation model (Steger et al., Machine Vision Algorithms and Applications, 3.4.1.4), the
 * MVTec AD paper's method 4.1.5.
 *
 * Grayscale object images at a working size (default: the category's own size) are aligned
 * rigidly to a reference training image ({@link AlignmentReference}: coarse-to-fine NCC search on
 * the GPU). Training takes `trainImages` random training images, aligns them, and keeps per pixel
 * the mean μ and the (population) standard deviation σ of the aligned images.
 *
 * Anomaly map: the test image is aligned the same way, and every pixel's deviation
 *   |x − μ| / max(a, b·σ)
 * is defined in the aligned frame. The kernel evaluates it directly at the image's pixels, with μ
 * and σ read at the aligned-frame point that each image pixel maps to (the inverse warp), so the
 * map lies in the image frame without resampling the test image itself. Values above 1 are
 * outside HALCON's tolerance band. An optional foreground mask (Otsu threshold of μ, dilated)
 * restricts the model to the object; elsewhere, and where a pixel maps outside the aligned frame,
 * the map is 0.
 *
 * a (`absoluteTolerance`) and b (`relativeTolerance`) default to 10/255 and 2, the values we take
 * for HALCON's prepare_variation_model defaults (AbsThreshold 10 gray levels, VarThreshold 2).
 *
 * @module
 */

import { join } from "node:path";
import { type FloatImage, resize, toGrayscale } from "../../data/image.ts";
import type { MvtecCategory } from "../../data/mvtec.ts";
import { Random } from "../../data/random.ts";
import { encodeSafetensors, loadSafetensors, type StoredTensor } from "../../nn/checkpoint.ts";
import { bind, elementGrid, run } from "../../tensor/ops/launch.ts";
import { empty, init, keep, type Tensor, tensor, toArrays } from "../../tensor/tensor.ts";
import { InputError } from "../../util/errors.ts";
import { readJsonFile, writeFileAtomic, writeJsonAtomic } from "../../util/fs.ts";
import {
  type AnomalyDetector,
  defineMethod,
  type MethodDefinition,
  TrainingStoppedError,
  type TrainOptions,
} from "../method.ts";
import {
  ALIGN_DEFAULTS,
  type AlignFeature,
  type Alignment,
  AlignmentReference,
  type AlignSettings,
  DeviationParams,
  MomentParams,
  type Plane,
  type RigidPose,
  warpInto,
} from "./align.ts";

/** Settings of the variation model; every field has a default (see {@link VARIATION_DEFAULTS}). */
export interface VariationSettings {
  /**
   * Longer side of the working image in pixels (the other side keeps the aspect ratio); null
   * works at the category's original size, as the paper does.
   */
  workingSize: number | null;
  /** Training images drawn at random from the training split (the paper: 30). */
  trainImages: number;
  /** a: absolute tolerance of the deviation, in gray values of [0, 1]. */
  absoluteTolerance: number;
  /** b: relative tolerance, in standard deviations. */
  relativeTolerance: number;
  /** Restrict the model to the object: "auto" thresholds μ (Otsu) and dilates; "none" keeps all. */
  foreground: "none" | "auto";
  /** Dilation of the automatic foreground mask, in working-size pixels. */
  foregroundMargin: number;
  /** What the alignment compares. */
  alignFeature: AlignFeature;
  /** Rotations searched, ± degrees (180: any). */
  maxRotationDegrees: number;
  /** Shifts searched, ± this fraction of the image side. */
  maxShiftFraction: number;
  /** Coarsest pyramid level of the search, in pixels. */
  coarsestSize: number;
  /** Rival poses kept from the coarsest level. */
  alignCandidates: number;
  /** A training image aligns when its NCC with the reference reaches this. */
  minAlignmentNcc: number;
  /**
   * The category is reported as not alignable when more than this fraction of the training
   * images fall below `minAlignmentNcc`.
   */
  maxMisalignedFraction: number;
}

/** Defaults: the paper's 30 images at their original size, HALCON's tolerances. */
export const VARIATION_DEFAULTS: Readonly<VariationSettings> = Object.freeze({
  workingSize: null,
  trainImages: 30,
  absoluteTolerance: 10 / 255,
  relativeTolerance: 2,
  foreground: "none",
  foregroundMargin: 3,
  alignFeature: ALIGN_DEFAULTS.feature,
  maxRotationDegrees: ALIGN_DEFAULTS.maxRotationDegrees,
  maxShiftFraction: ALIGN_DEFAULTS.maxShiftFraction,
  coarsestSize: ALIGN_DEFAULTS.coarsestSize,
  alignCandidates: ALIGN_DEFAULTS.candidates,
  minAlignmentNcc: 0.8,
  maxMisalignedFraction: 0.2,
});

/** Training options of the variation method: the settings plus the common ones. */
export type VariationTrainOptions = TrainOptions & Partial<VariationSettings>;

/** How well one training image aligned. */
export interface AlignmentRecord {
  /** Path of the image. */
  image: string;
  /** NCC with the reference at the found pose. */
  ncc: number;
  /** The pose, angle in degrees, shifts in working-size pixels. */
  angleDegrees: number;
  /** Shift along x. */
  tx: number;
  /** Shift along y. */
  ty: number;
  /** Whether the image went into μ and σ (it aligned well enough). */
  used: boolean;
}

/** `variation.json` in a run folder. */
interface VariationFile {
  format: "anodet-variation/1";
  settings: VariationSettings;
  width: number;
  height: number;
  alignment: AlignmentRecord[];
  alignmentProblem: string | null;
}

const MODEL_FILE = "model.safetensors";
const SETTINGS_FILE = "variation.json";

/** Checks settings, naming the bad one. */
export function validateVariationSettings(settings: VariationSettings): void {
  if (
    settings.workingSize !== null &&
    (!Number.isInteger(settings.workingSize) || settings.workingSize < settings.coarsestSize)
  ) {
    throw new Error(
      `variation: workingSize must be null or an integer ≥ coarsestSize (${settings.coarsestSize}), ` +
        `got ${settings.workingSize}`,
    );
  }
  if (!Number.isInteger(settings.trainImages) || settings.trainImages < 2) {
    throw new Error(`variation: trainImages must be an integer ≥ 2, got ${settings.trainImages}`);
  }
  if (!(settings.absoluteTolerance > 0)) {
    throw new Error(
      `variation: absoluteTolerance must be positive, got ${settings.absoluteTolerance}`,
    );
  }
  if (!(settings.relativeTolerance >= 0)) {
    throw new Error(
      `variation: relativeTolerance must be ≥ 0, got ${settings.relativeTolerance}`,
    );
  }
  if (settings.foreground !== "none" && settings.foreground !== "auto") {
    throw new Error(`variation: foreground must be "none" or "auto", got "${settings.foreground}"`);
  }
  if (!(settings.minAlignmentNcc > -1 && settings.minAlignmentNcc < 1)) {
    throw new Error(
      `variation: minAlignmentNcc must be in (−1, 1), got ${settings.minAlignmentNcc}`,
    );
  }
  if (!(settings.maxMisalignedFraction >= 0 && settings.maxMisalignedFraction <= 1)) {
    throw new Error(
      `variation: maxMisalignedFraction must be in [0, 1], got ${settings.maxMisalignedFraction}`,
    );
  }
}

/** The search settings that a model's settings imply. */
export function alignSettingsOf(settings: VariationSettings): AlignSettings {
  return {
    ...ALIGN_DEFAULTS,
    feature: settings.alignFeature,
    maxRotationDegrees: settings.maxRotationDegrees,
    maxShiftFraction: settings.maxShiftFraction,
    coarsestSize: settings.coarsestSize,
    candidates: settings.alignCandidates,
  };
}

/** The working size (width, height) for images of a given size. */
export function workingSizeOf(
  settings: VariationSettings,
  width: number,
  height: number,
): [number, number] {
  if (settings.workingSize === null) return [width, height];
  const scale = settings.workingSize / Math.max(width, height);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

/**
 * Per-pixel mean and population standard deviation over a stack [images, pixels] on the GPU.
 * Returns two [pixels] tensors (to be disposed by the caller).
 */
export function pixelMoments(stack: Tensor, images: number, pixels: number): [Tensor, Tensor] {
  if (stack.size < images * pixels) {
    throw new Error(`pixelMoments: stack holds ${stack.size} values, not ${images}×${pixels}`);
  }
  const mean = empty([pixels]);
  const std = empty([pixels]);
  run(stack, {
    shader: "align",
    entryPoint: "moments",
    params: MomentParams.pack({ pixels, images }),
    buffers: [bind(stack), bind(mean), bind(std)],
    workgroups: elementGrid(pixels),
  });
  return [mean, std];
}

/** Otsu's threshold of values in [0, 1] (256 bins). */
export function otsuThreshold(values: Float32Array): number {
  const bins = new Float64Array(256);
  for (const v of values) bins[Math.min(255, Math.max(0, Math.floor(v * 256)))]++;
  const total = values.length;
  let sumAll = 0;
  for (let i = 0; i < 256; i++) sumAll += i * bins[i];
  let weightBelow = 0;
  let sumBelow = 0;
  let best = 0;
  let bestBetween = -1;
  for (let i = 0; i < 256; i++) {
    weightBelow += bins[i];
    if (weightBelow === 0 || weightBelow === total) continue;
    sumBelow += i * bins[i];
    const meanBelow = sumBelow / weightBelow;
    const meanAbove = (sumAll - sumBelow) / (total - weightBelow);
    const between = weightBelow * (total - weightBelow) * (meanBelow - meanAbove) ** 2;
    if (between > bestBetween) {
      bestBetween = between;
      best = i;
    }
  }
  return (best + 1) / 256;
}

/** The automatic foreground: μ above Otsu's threshold, dilated by `margin` pixels (a disk). */
export function foregroundFromMean(plane: Plane, margin: number): Float32Array {
  const { width, height, data } = plane;
  const threshold = otsuThreshold(data);
  const out = new Float32Array(width * height);
  const r = Math.max(0, Math.round(margin));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[y * width + x] < threshold) continue;
      for (let dy = -r; dy <= r; dy++) {
        for (let dx = -r; dx <= r; dx++) {
          const u = x + dx;
          const v = y + dy;
          if (dx * dx + dy * dy > r * r || u < 0 || v < 0 || u >= width || v >= height) continue;
          out[v * width + u] = 1;
        }
      }
    }
  }
  return out;
}

/** A trained variation model. */
export class VariationModel implements AnomalyDetector {
  /** Always "variation". */
  readonly method: string = "variation";
  /** Grayscale. */
  readonly channels: 1 | 3 = 1;
  /** The settings it was trained with. */
  readonly settings: VariationSettings;
  /** Working width. */
  readonly width: number;
  /** Working height. */
  readonly height: number;
  /** μ per pixel of the aligned frame (row-major, working size). */
  readonly mean: Float32Array;
  /** σ per pixel of the aligned frame. */
  readonly std: Float32Array;
  /** 1 where the model applies, 0 elsewhere. */
  readonly foreground: Float32Array;
  /** The reference image that everything is aligned to. */
  readonly reference: Float32Array;
  /** The alignment of every training image. */
  readonly alignment: readonly AlignmentRecord[];
  /** Why this category does not align, or null when it does. */
  readonly alignmentProblem: string | null;
  private readonly aligner: AlignmentReference;
  private readonly onGpu: { mean: Tensor; std: Tensor; foreground: Tensor };

  /** Wraps trained statistics; use {@link trainVariation} or {@link loadVariation}. */
  constructor(fields: {
    settings: VariationSettings;
    width: number;
    height: number;
    mean: Float32Array;
    std: Float32Array;
    foreground: Float32Array;
    reference: Float32Array;
    alignment: readonly AlignmentRecord[];
    alignmentProblem: string | null;
  }) {
    this.settings = fields.settings;
    this.width = fields.width;
    this.height = fields.height;
    this.mean = fields.mean;
    this.std = fields.std;
    this.foreground = fields.foreground;
    this.reference = fields.reference;
    this.alignment = fields.alignment;
    this.alignmentProblem = fields.alignmentProblem;
    this.aligner = new AlignmentReference(
      { width: this.width, height: this.height, data: this.reference },
      alignSettingsOf(this.settings),
    );
    this.onGpu = {
      mean: keep(tensor(this.mean)),
      std: keep(tensor(this.std)),
      foreground: keep(tensor(this.foreground)),
    };
  }

  /** The working-size grayscale plane of an image. */
  workingPlane(image: FloatImage): Plane {
    const gray = image.channels === 1 ? image : toGrayscale(image);
    const sized = gray.width === this.width && gray.height === this.height
      ? gray
      : resize(gray, this.width, this.height);
    return { width: this.width, height: this.height, data: sized.data };
  }

  /** Aligns an image (any size; it is brought to the working size) to the reference. */
  align(image: FloatImage): Promise<Alignment> {
    return this.aligner.align(this.workingPlane(image));
  }

  /** The anomaly map at working size and the pose it was computed with. */
  async workingMap(image: FloatImage): Promise<{ map: Float32Array; alignment: Alignment }> {
    const plane = this.workingPlane(image);
    const alignment = await this.aligner.align(plane);
    const { pose } = alignment;
    const x = tensor(plane.data);
    const out = empty([this.width * this.height]);
    try {
      run(x, {
        shader: "align",
        entryPoint: "deviation",
        params: DeviationParams.pack({
          width: this.width,
          height: this.height,
          cos_angle: Math.cos(pose.angle),
          sin_angle: Math.sin(pose.angle),
          tx: pose.tx,
          ty: pose.ty,
          absolute_tolerance: this.settings.absoluteTolerance,
          relative_tolerance: this.settings.relativeTolerance,
        }),
        buffers: [
          bind(x),
          bind(this.onGpu.mean),
          bind(this.onGpu.std),
          bind(this.onGpu.foreground),
          bind(out),
        ],
        workgroups: elementGrid(this.width * this.height),
      });
      const [map] = await toArrays([out]);
      return { map, alignment };
    } finally {
      x.dispose();
      out.dispose();
    }
  }

  /** |x − μ| / max(a, b·σ) in the image frame, at the image's own size (0 off the object). */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    const { map } = await this.workingMap(image);
    if (image.width === this.width && image.height === this.height) return map;
    const working: FloatImage = { width: this.width, height: this.height, channels: 1, data: map };
    return resize(working, image.width, image.height, "bilinear").data;
  }

  /** Writes `model.safetensors` (μ, σ, foreground, reference) and `variation.json`. */
  async save(directory: string): Promise<void> {
    const shape = [this.height, this.width];
    const tensors = new Map<string, StoredTensor>([
      ["mean", { shape, data: this.mean }],
      ["std", { shape, data: this.std }],
      ["foreground", { shape, data: this.foreground }],
      ["reference", { shape, data: this.reference }],
    ]);
    await writeFileAtomic(
      join(directory, MODEL_FILE),
      encodeSafetensors(tensors, { method: "variation" }),
    );
    const file: VariationFile = {
      format: "anodet-variation/1",
      settings: this.settings,
      width: this.width,
      height: this.height,
      alignment: [...this.alignment],
      alignmentProblem: this.alignmentProblem,
    };
    await writeJsonAtomic(join(directory, SETTINGS_FILE), file);
  }

  /** Frees the GPU copies of the model and the reference pyramid. */
  dispose(): void {
    this.aligner.dispose();
    this.onGpu.mean.dispose();
    this.onGpu.std.dispose();
    this.onGpu.foreground.dispose();
  }
}

/**
 * Reads a model written by {@link VariationModel.save}.
 *
 * @throws InputError naming the file for a missing or malformed settings file, settings out of
 *   range, or tensors that do not fit the model size
 */
export async function loadVariation(directory: string): Promise<VariationModel> {
  await init();
  const settingsPath = join(directory, SETTINGS_FILE);
  const tensorsPath = join(directory, MODEL_FILE);
  const file = await readJsonFile<VariationFile>(
    settingsPath,
    (reason) => new InputError(`Cannot read variation model "${settingsPath}": ${reason}`),
  );
  const bad = (what: string): never => {
    throw new InputError(`"${settingsPath}" is not a valid variation model: ${what}`);
  };
  if (typeof file !== "object" || file === null || file.format !== "anodet-variation/1") {
    bad(`expected "format": "anodet-variation/1"`);
  }
  if (typeof file.settings !== "object" || file.settings === null) bad(`"settings" is missing`);
  const settings: VariationSettings = { ...VARIATION_DEFAULTS, ...file.settings };
  try {
    validateVariationSettings(settings);
  } catch (error) {
    bad((error as Error).message);
  }
  const side = (value: unknown) => Number.isInteger(value) && (value as number) >= 1;
  if (!side(file.width) || !side(file.height) || file.width * file.height > 1 << 28) {
    bad(`"width" and "height" must be positive integers (at most 2^28 pixels together)`);
  }
  if (!Array.isArray(file.alignment)) bad(`"alignment" must be a list`);
  if (file.alignmentProblem !== null && typeof file.alignmentProblem !== "string") {
    bad(`"alignmentProblem" must be text or null`);
  }
  const { tensors } = await loadSafetensors(tensorsPath);
  const get = (name: string): Float32Array => {
    const stored = tensors.get(name);
    if (!stored) throw new InputError(`"${tensorsPath}" lacks tensor "${name}"`);
    if (stored.data.length !== file.width * file.height) {
      throw new InputError(`"${tensorsPath}": "${name}" does not match the model size`);
    }
    return stored.data;
  };
  return new VariationModel({
    settings,
    width: file.width,
    height: file.height,
    mean: get("mean"),
    std: get("std"),
    foreground: get("foreground"),
    reference: get("reference"),
    alignment: file.alignment,
    alignmentProblem: file.alignmentProblem,
  });
}

/**
 * Trains the variation model on a category's training split: picks `trainImages` images at
 * random (seeded), aligns them to the first, and computes μ and σ over those that aligned.
 *
 * @throws Error when the split has fewer images than `trainImages`, or fewer than two align
 */
export async function trainVariation(
  category: MvtecCategory,
  options: VariationTrainOptions = {},
): Promise<VariationModel> {
  const settings: VariationSettings = {
    ...VARIATION_DEFAULTS,
    ...definedOnly(options),
  } as VariationSettings;
  validateVariationSettings(settings);
  const log = options.log ?? (() => {});
  if (category.train.length < settings.trainImages) {
    throw new Error(
      `variation: category "${category.name}" has ${category.train.length} training images; the ` +
        `model needs ${settings.trainImages} (lower trainImages to use fewer)`,
    );
  }
  const [width, height] = workingSizeOf(settings, category.width, category.height);
  const chosen = new Random(options.seed ?? 0).shuffle([...category.train])
    .slice(0, settings.trainImages);
  const started = performance.now();
  const planes: Plane[] = [];
  for (const sample of chosen) {
    const image = await category.loadImage(sample, { channels: 1, width, height });
    planes.push({ width, height, data: image.data });
  }
  const reference = planes[0];
  const aligner = new AlignmentReference(reference, alignSettingsOf(settings));
  const alignments: Alignment[] = [];
  try {
    for (let i = 0; i < planes.length; i++) {
      // The reference aligns to itself at the identity by definition.
      alignments.push(
        i === 0 ? { pose: { angle: 0, tx: 0, ty: 0 }, ncc: 1 } : await aligner.align(planes[i]),
      );
      options.onProgress?.({
        epoch: 1,
        epochs: 1,
        step: i + 1,
        totalSteps: planes.length,
        samplesPerSecond: ((i + 1) * 1000) / (performance.now() - started),
      });
      if (options.signal?.aborted) throw new TrainingStoppedError("variation");
    }
  } finally {
    aligner.dispose();
  }
  const records: AlignmentRecord[] = alignments.map(({ pose, ncc }, i) => ({
    image: chosen[i].imagePath,
    ncc,
    angleDegrees: (pose.angle * 180) / Math.PI,
    tx: pose.tx,
    ty: pose.ty,
    used: ncc >= settings.minAlignmentNcc,
  }));
  const misaligned = records.filter((r) => !r.used).length;
  let alignmentProblem: string | null = null;
  if (misaligned > settings.maxMisalignedFraction * records.length) {
    alignmentProblem = `category "${category.name}" does not align: ${misaligned} of ` +
      `${records.length} training images reach an NCC below ${settings.minAlignmentNcc} with the ` +
      `reference (median NCC ${median(records.map((r) => r.ncc)).toFixed(3)}). The variation ` +
      `model assumes rigidly alignable objects (the paper restricts it to those); expect poor maps.`;
    log(`WARNING: ${alignmentProblem}`);
  }
  // Poorly aligned images would blur μ and inflate σ; they are left out while enough remain.
  let used = records.filter((r) => r.used).length;
  if (used < 2) {
    log(`variation: fewer than two images aligned; using all ${records.length}`);
    records.forEach((r) => (r.used = true));
    used = records.length;
  }
  log(
    `variation: aligned ${records.length} images at ${width}×${height}, NCC min ` +
      `${Math.min(...records.map((r) => r.ncc)).toFixed(3)}, median ` +
      `${median(records.map((r) => r.ncc)).toFixed(3)}; ${used} used for μ and σ`,
  );

  const pixels = width * height;
  const stack = empty([used * pixels]);
  let slot = 0;
  const uploads: Tensor[] = [];
  records.forEach((record, i) => {
    if (!record.used) return;
    const image = tensor(planes[i].data);
    uploads.push(image);
    warpInto(image, width, height, alignments[i].pose, stack, slot++);
  });
  const [meanOnGpu, stdOnGpu] = pixelMoments(stack, used, pixels);
  const [mean, std] = await toArrays([meanOnGpu, stdOnGpu]);
  [stack, meanOnGpu, stdOnGpu, ...uploads].forEach((t) => t.dispose());
  const foreground = settings.foreground === "auto"
    ? foregroundFromMean({ width, height, data: mean }, settings.foregroundMargin)
    : new Float32Array(pixels).fill(1);
  log(
    `variation: trained in ${((performance.now() - started) / 1000).toFixed(2)} s ` +
      `(${((records.length * 1000) / (performance.now() - started)).toFixed(2)} images/s)`,
  );
  return new VariationModel({
    settings,
    width,
    height,
    mean,
    std,
    foreground,
    reference: reference.data,
    alignment: records,
    alignmentProblem,
  });
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** The fields of an options object that are not undefined, restricted to the settings. */
function definedOnly(options: VariationTrainOptions): Partial<VariationSettings> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(VARIATION_DEFAULTS)) {
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) out[key] = value;
  }
  return out as Partial<VariationSettings>;
}

/** The pose record of a training image as a {@link RigidPose}. */
export function recordPose(record: AlignmentRecord): RigidPose {
  return { angle: (record.angleDegrees * Math.PI) / 180, tx: record.tx, ty: record.ty };
}

/** The "variation" method: the variation model for the object categories. */
export const variationMethod: MethodDefinition = defineMethod({
  name: "variation",
  description:
    "Variation model (Steger et al.): aligned per-pixel mean and deviation, |x−μ|/max(a,bσ)",
  appliesTo: "objects",
  options: {
    imageSize: {
      type: "integer",
      min: VARIATION_DEFAULTS.coarsestSize,
      help: "longer side of the working image (default: the images' own size)",
    },
    trainImages: {
      type: "integer",
      min: 2,
      default: VARIATION_DEFAULTS.trainImages,
      help: "training images aligned into the model",
    },
    absoluteTolerance: {
      type: "number",
      min: 0,
      default: VARIATION_DEFAULTS.absoluteTolerance,
      help: "a: tolerated deviation in gray values of [0, 1] (10/255 by default)",
    },
    relativeTolerance: {
      type: "number",
      min: 0,
      minExclusive: true,
      default: VARIATION_DEFAULTS.relativeTolerance,
      help: "b: tolerated deviation in standard deviations",
    },
    foreground: {
      type: "choice",
      choices: ["none", "auto"],
      default: VARIATION_DEFAULTS.foreground,
      help: "restrict the model to the object (auto) or keep the whole image",
    },
  },
  train: async (category, { imageSize, ...options }) => {
    const detector = await trainVariation(category, { ...options, workingSize: imageSize });
    return { detector, stopped: false, losses: [] };
  },
  load: loadVariation,
});
