/**
 * PatchCore (Roth et al., CVPR 2022): a memory bank of locally aware patch features of normal
 * images, thinned by a greedy coreset; a test patch's anomaly score is its distance to the
 * nearest patch in the bank.
 *
 * - Features: the backbone's layer 2 and layer 3, each averaged over 3×3 neighbourhoods, layer 3
 *   brought to layer 2's grid (bilinear), concatenated, and projected to `embeddingDim` channels
 *   by adaptive average pooling over the channels of each layer, then averaging the layers (the
 *   paper's projection).
 * - The images are resized, not cropped, so the map covers the whole image, borders included.
 * - Map: nearest-neighbour distance per patch, upsampled to the working size, smoothed with a
 *   Gaussian (σ = 4), then brought to the image's size.
 * - Image score: the paper's reweighted maximum (eq. 7), with the softmax over the distances of
 *   the worst patch to its nearest bank feature's `neighbours` nearest bank features.
 */

import { join } from "node:path";
import { convertChannels, type FloatImage, resize } from "../../data/image.ts";
import type { MvtecCategory } from "../../data/mvtec.ts";
import type { StoredTensor } from "../../nn/checkpoint.ts";
import {
  checkSavedSettings,
  MODEL_TENSORS_FILE,
  readModelFiles,
  saveModelFiles,
} from "../model_files.ts";
import { InputError } from "../../util/errors.ts";
import type { Backbone } from "../../nn/backbones/runner.ts";
import * as op from "../../tensor/ops.ts";
import { keep, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import {
  FEATURE_METHOD_OPTIONS,
  type FeatureMethodSettings,
  type FeatureTrainOptions,
  imageBatch,
  openBackbone,
  smoothGridMap,
  trainingSamples,
} from "../backbone_features.ts";
import {
  type AnomalyDetector,
  defineMethod,
  type MethodDefinition,
  TrainingStoppedError,
} from "../method.ts";
import { greedyCoreset, MemoryBank } from "./search.ts";

const SETTINGS_FILE = "patchcore.json";
const FORMAT = "anodet-patchcore/1";
/** The layers the patch features come from. */
const LAYERS = ["layer2", "layer3"] as const;
/** Images per backbone batch. */
const BATCH_SIZE = 8;

/** PatchCore's settings. */
export interface PatchcoreSettings extends FeatureMethodSettings {
  /** Fraction of the training patches the coreset keeps (the paper: 0.1, or 0.01). */
  coresetRatio: number;
  /** Channels of a patch feature after the projection. */
  embeddingDim: number;
  /** Bank features whose distances reweight the image score (the paper's b). */
  neighbours: number;
}

/** Defaults: the paper's ResNet50 layers 2+3, 1024-d features, a 10% coreset, b = 9. */
export const PATCHCORE_DEFAULTS: Readonly<PatchcoreSettings> = Object.freeze({
  backbone: "resnet50",
  imageSize: 224,
  coresetRatio: 0.1,
  embeddingDim: 1024,
  neighbours: 9,
  trainImages: 0,
});

/**
 * The [channels, dim] matrix of adaptive average pooling over channels (PyTorch's
 * adaptive_avg_pool1d bins: output j averages inputs ⌊j·C/D⌋ … ⌈(j+1)·C/D⌉ − 1).
 */
export function projectionMatrix(channels: number, dim: number): Float32Array {
  const matrix = new Float32Array(channels * dim);
  for (let j = 0; j < dim; j++) {
    const start = Math.floor((j * channels) / dim);
    const end = Math.ceil(((j + 1) * channels) / dim);
    for (let c = start; c < end; c++) matrix[c * dim + j] = 1 / (end - start);
  }
  return matrix;
}

/**
 * Adaptive average pooling over the channels of an NCHW map, to `dim` channels: a repeat of each
 * channel when `dim` is a multiple of the channel count, a mean over groups when the count is a
 * multiple of `dim` (ResNet50's layers need only these, at no cost), else the product with
 * {@link projectionMatrix}, whose uploads `matrices` keeps by channel count.
 */
export function poolChannels(x: Tensor, dim: number, matrices: Map<number, Tensor>): Tensor {
  const [n, channels, height, width] = x.shape;
  const plane = height * width;
  if (channels === dim) return x;
  if (dim % channels === 0) {
    const repeated = op.expand(op.reshape(x, [n, channels, 1, plane]), [
      n,
      channels,
      dim / channels,
      plane,
    ]);
    return op.reshape(repeated, [n, dim, height, width]);
  }
  if (channels % dim === 0) {
    const grouped = op.mean(op.reshape(x, [n, dim, channels / dim, plane]), [2]);
    return op.reshape(grouped, [n, dim, height, width]);
  }
  let matrix = matrices.get(channels);
  if (!matrix) {
    matrix = keep(tensor(projectionMatrix(channels, dim), [channels, dim]));
    matrices.set(channels, matrix);
  }
  const rows = op.reshape(op.permute(x, [0, 2, 3, 1]), [n * plane, channels]);
  const pooled = op.reshape(op.matmul(rows, matrix), [n, height, width, dim]);
  return op.permute(pooled, [0, 3, 1, 2]);
}

/** Turns a batch of images into patch features [images · positions, dim] on the GPU. */
class PatchFeatures {
  private readonly matrices = new Map<number, Tensor>();
  /** The patch grid ([height, width]) of the last batch. */
  grid: [number, number] = [0, 0];

  constructor(readonly backbone: Backbone, readonly dim: number) {}

  /** Patch features of equally sized images, one row per patch, image after image. */
  extract(images: readonly FloatImage[]): Tensor {
    const input = imageBatch(images);
    const layers = this.backbone.features(input, LAYERS);
    input.dispose();
    return noGrad(() =>
      tidy(() => {
        // Locally aware: each position sees its 3×3 neighbourhood.
        const [second, third] = LAYERS.map((name) =>
          op.avgPool2d(layers[name], 3, { stride: 1, padding: 1 })
        );
        for (const name of LAYERS) layers[name].dispose();
        const [n, , height, width] = second.shape;
        this.grid = [height, width];
        const upsampled = op.upsample(third, { size: [height, width], mode: "bilinear" });
        // The projection: each layer pooled to dim channels, then the layers averaged.
        const [a, b] = [second, upsampled].map((x) => poolChannels(x, this.dim, this.matrices));
        const averaged = op.mulScalar(op.add(a, b), 0.5);
        return op.reshape(op.permute(averaged, [0, 2, 3, 1]), [n * height * width, this.dim]);
      })
    );
  }

  dispose(): void {
    for (const matrix of this.matrices.values()) matrix.dispose();
  }
}

/** A trained PatchCore detector. */
export class PatchcoreModel implements AnomalyDetector {
  readonly method = "patchcore";
  readonly channels = 3 as const;
  private readonly bank: MemoryBank;

  /** Wraps the coreset rows ([rows, embeddingDim]) and the open backbone (which it then owns). */
  constructor(
    readonly settings: PatchcoreSettings,
    readonly memory: Float32Array,
    private readonly features: PatchFeatures,
  ) {
    this.bank = new MemoryBank(memory, settings.embeddingDim);
  }

  /** Rows in the memory bank. */
  get bankSize(): number {
    return this.memory.length / this.settings.embeddingDim;
  }

  /** The map at the image's own size and the reweighted image score. */
  async scoreImage(image: FloatImage): Promise<{ map: Float32Array; imageScore: number }> {
    const size = this.settings.imageSize;
    const patches = this.features.extract([resize(convertChannels(image, 3), size, size)]);
    const [height, width] = this.features.grid;
    const nearest = this.bank.nearest(patches);
    const grid = nearest.distances.view([1, 1, height, width]);
    const map = smoothGridMap(grid, size, image);
    grid.dispose();
    try {
      const [values, distances, indices] = await toArrays([
        map,
        nearest.distances,
        nearest.indices,
      ]);
      let worst = 0;
      for (let p = 1; p < distances.length; p++) if (distances[p] > distances[worst]) worst = p;
      const row = await this.patchRow(patches, worst);
      const imageScore = await this.reweight(row, distances[worst], indices[worst]);
      return { map: values, imageScore };
    } finally {
      for (const t of [patches, map, nearest.distances, nearest.indices]) t.dispose();
    }
  }

  /** The map alone (see {@link scoreImage}). */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    return (await this.scoreImage(image)).map;
  }

  /** Writes `model.safetensors` (the memory bank) and `patchcore.json`. */
  async save(directory: string): Promise<void> {
    const tensors = new Map<string, StoredTensor>([
      ["memory_bank", { shape: [this.bankSize, this.settings.embeddingDim], data: this.memory }],
    ]);
    await saveModelFiles(directory, SETTINGS_FILE, {
      format: FORMAT,
      settings: this.settings,
    }, tensors);
  }

  /** Frees the bank and the backbone. */
  dispose(): void {
    this.bank.dispose();
    this.features.dispose();
    this.features.backbone.dispose();
  }

  private async patchRow(patches: Tensor, index: number): Promise<Float32Array> {
    const dim = this.settings.embeddingDim;
    const row = op.slice(patches, [index, 0], [1, dim]);
    try {
      return await row.toArray();
    } finally {
      row.dispose();
    }
  }

  /**
   * Eq. 7 of the paper: the worst patch's score s times 1 − softmax of its distances to its
   * nearest bank feature m* and m*'s nearest bank features, taken at m*.
   */
  private async reweight(patch: Float32Array, score: number, nearestRow: number): Promise<number> {
    const dim = this.settings.embeddingDim;
    const support = await this.bank.nearestOfRow(nearestRow, this.settings.neighbours);
    const distances = Array.from(support.indices, (row) => {
      let sum = 0;
      for (let k = 0; k < dim; k++) sum += (patch[k] - this.memory[row * dim + k]) ** 2;
      return Math.sqrt(sum);
    });
    // The support lists m* itself first; the softmax is shifted for stability.
    const top = Math.max(...distances);
    const total = distances.reduce((s, d) => s + Math.exp(d - top), 0);
    return score * (1 - Math.exp(distances[0] - top) / total);
  }
}

/** Reads a model written by {@link PatchcoreModel.save} and opens its backbone. */
export async function loadPatchcore(directory: string): Promise<PatchcoreModel> {
  const saved = await readModelFiles<{ format: string; settings: PatchcoreSettings }>(
    directory,
    SETTINGS_FILE,
    FORMAT,
    "PatchCore model",
  );
  const settings = checkSavedSettings<PatchcoreSettings>(
    join(directory, SETTINGS_FILE),
    patchcoreMethod,
    saved.settings.settings,
    ["backbone", "imageSize", "embeddingDim", "neighbours"],
  );
  const memory = saved.tensor("memory_bank");
  if (memory.shape.length !== 2 || memory.shape[1] !== settings.embeddingDim) {
    throw new InputError(
      `"${join(directory, MODEL_TENSORS_FILE)}": expected a tensor "memory_bank" [rows, ` +
        `${settings.embeddingDim}], got [${memory.shape}]`,
    );
  }
  const backbone = await openBackbone(settings);
  return new PatchcoreModel(
    settings,
    memory.data,
    new PatchFeatures(backbone, settings.embeddingDim),
  );
}

/** Options of {@link trainPatchcore}. */
export type PatchcoreTrainOptions = Partial<PatchcoreSettings> & FeatureTrainOptions;

/**
 * Builds PatchCore's memory bank from a category's training split: patch features of every image,
 * then the greedy coreset.
 */
export async function trainPatchcore(
  category: MvtecCategory,
  options: PatchcoreTrainOptions = {},
): Promise<PatchcoreModel> {
  const settings: PatchcoreSettings = {
    backbone: options.backbone ?? PATCHCORE_DEFAULTS.backbone,
    backboneWeights: options.backboneWeights,
    imageSize: options.imageSize ?? PATCHCORE_DEFAULTS.imageSize,
    coresetRatio: options.coresetRatio ?? PATCHCORE_DEFAULTS.coresetRatio,
    embeddingDim: options.embeddingDim ?? PATCHCORE_DEFAULTS.embeddingDim,
    neighbours: options.neighbours ?? PATCHCORE_DEFAULTS.neighbours,
    trainImages: options.trainImages ?? PATCHCORE_DEFAULTS.trainImages,
  };
  const log = options.log ?? (() => {});
  const samples = trainingSamples(category, settings.trainImages, options.seed);
  if (samples.length === 0) {
    throw new Error(`patchcore: category "${category.name}" has no training images`);
  }
  const features = new PatchFeatures(await openBackbone(settings, log), settings.embeddingDim);
  try {
    const started = performance.now();
    const dim = settings.embeddingDim;
    let all = new Float32Array(0);
    let rows = 0;
    for (let start = 0; start < samples.length; start += BATCH_SIZE) {
      const chunk = samples.slice(start, start + BATCH_SIZE);
      const images = await Promise.all(
        chunk.map((sample) =>
          category.loadImage(sample, {
            channels: 3,
            width: settings.imageSize,
            height: settings.imageSize,
          })
        ),
      );
      const batch = features.extract(images);
      const [values] = await toArrays([batch]);
      batch.dispose();
      if (rows === 0) {
        const perImage = values.length / dim / chunk.length;
        all = new Float32Array(perImage * samples.length * dim);
        log(
          `patchcore: ${settings.backbone} layers 2+3 on a ${features.grid[0]}×` +
            `${features.grid[1]} grid at ${settings.imageSize}², ${dim}-d patch features`,
        );
      }
      all.set(values, rows * dim);
      rows += values.length / dim;
      options.onProgress?.({
        stage: "features",
        epoch: 1,
        epochs: 1,
        step: start + chunk.length,
        totalSteps: samples.length,
        samplesPerSecond: ((start + chunk.length) * 1000) / (performance.now() - started),
      });
      if (options.signal?.aborted) throw new TrainingStoppedError("patchcore");
    }
    const count = Math.max(1, Math.round(rows * settings.coresetRatio));
    log(
      `patchcore: ${rows} patches from ${samples.length} images in ` +
        `${((performance.now() - started) / 1000).toFixed(1)} s; coreset of ${count}`,
    );
    const coresetStarted = performance.now();
    const chosen = await greedyCoreset(all, dim, count, {
      seed: options.seed ?? 0,
      signal: options.signal,
      onProgress: (done, total) =>
        options.onProgress?.({
          stage: "coreset",
          epoch: 1,
          epochs: 1,
          step: done,
          totalSteps: total,
          samplesPerSecond: (done * 1000) / (performance.now() - coresetStarted),
        }),
    }).catch((error) => {
      // The coreset stops with the signal's reason; the method reports a stopped training.
      if (options.signal?.aborted) throw new TrainingStoppedError("patchcore");
      throw error;
    });
    const memory = new Float32Array(chosen.length * dim);
    chosen.forEach((row, i) => memory.set(all.subarray(row * dim, (row + 1) * dim), i * dim));
    log(
      `patchcore: coreset in ${((performance.now() - coresetStarted) / 1000).toFixed(1)} s`,
    );
    return new PatchcoreModel(settings, memory, features);
  } catch (error) {
    features.dispose();
    features.backbone.dispose();
    throw error;
  }
}

/** PatchCore on the plug-in interface. */
export const patchcoreMethod: MethodDefinition = defineMethod({
  name: "patchcore",
  description: "PatchCore (Roth et al.): nearest-neighbour distance to a coreset of pretrained " +
    "patch features",
  appliesTo: "all",
  options: {
    ...FEATURE_METHOD_OPTIONS,
    coresetRatio: {
      type: "number",
      min: 0,
      minExclusive: true,
      max: 1,
      default: PATCHCORE_DEFAULTS.coresetRatio,
      help: "fraction of the training patches kept in the memory bank (0.1 or 0.01 in the paper)",
    },
    embeddingDim: {
      type: "integer",
      min: 1,
      default: PATCHCORE_DEFAULTS.embeddingDim,
      help: "channels of a patch feature after the projection",
    },
    neighbours: {
      type: "integer",
      min: 1,
      default: PATCHCORE_DEFAULTS.neighbours,
      help: "bank features whose distances reweight the image score (the paper's b)",
    },
  },
  train: async (category, options) => ({
    detector: await trainPatchcore(category, options),
    stopped: false,
    losses: [],
  }),
  load: loadPatchcore,
});
