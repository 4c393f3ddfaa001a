/**
 * PaDiM (Defard et al., 2021): a Gaussian per feature position. Each image is described on the
 * grid of the backbone's first feature layer by layers 1–3 (the deeper ones brought to that grid
 * by nearest-neighbour repetition), of which a fixed random subset of `channels` is kept. Training
 * estimates each position's mean and covariance (+ 0.01·I); the anomaly map is the Mahalanobis
 * distance of a test image's features, upsampled to the working size and smoothed with σ = 4.
 */

import { join } from "node:path";
import { convertChannels, type FloatImage, resize } from "../../data/image.ts";
import type { MvtecCategory } from "../../data/mvtec.ts";
import { Random } from "../../data/random.ts";
import type { StoredTensor } from "../../nn/checkpoint.ts";
import { checkSavedSettings, readModelFiles, saveModelFiles } from "../model_files.ts";
import { InputError } from "../../util/errors.ts";
import { jsonForMessage } from "../../util/fs.ts";
import type { BackboneName } from "../../nn/backbones/backbones.ts";
import type { Backbone } from "../../nn/backbones/runner.ts";
import { tensor } from "../../tensor/tensor.ts";
import {
  FEATURE_METHOD_OPTIONS,
  type FeatureBatch,
  featureBatches,
  type FeatureMethodSettings,
  type FeatureTrainOptions,
  imageFeatures,
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

const SETTINGS_FILE = "padim.json";
const FORMAT = "anodet-padim/1";
/** The feature layers PaDiM describes a position with. */
const LAYERS = ["layer1", "layer2", "layer3"] as const;
/** Added to every covariance's diagonal, as in the paper, so that it inverts. */
const COVARIANCE_RIDGE = 0.01;

/** PaDiM's settings. */
export interface PadimSettings extends FeatureMethodSettings {
  /** Size of the random channel subset (the paper's d). */
  channels: number;
}

/** What a trained PaDiM model holds, besides its settings. */
interface PadimStatistics {
  /** Indices of the kept channels in the concatenation of layers 1–3. */
  channelIndices: Int32Array;
  /** The feature grid ([height, width]) of layer 1 at the working size. */
  grid: [number, number];
  /** Per position, the mean feature: [positions, d]. */
  mean: Float32Array;
  /** Per position, the inverse covariance: [positions, d, d]. */
  inverseCovariance: Float32Array;
}

/** The layer and channel that a concatenated channel index comes from. */
function locateChannel(index: number, channelsPerLayer: readonly number[]): [number, number] {
  let layer = 0;
  while (index >= channelsPerLayer[layer]) index -= channelsPerLayer[layer++];
  return [layer, index];
}

/**
 * Each image's embedding: [images, positions, d] with positions on layer 1's grid, a deeper layer
 * read at the cell that covers the position.
 */
export function embeddings(
  layers: FeatureBatch["layers"],
  channelIndices: Int32Array,
): { data: Float32Array; images: number; grid: [number, number] } {
  const maps = LAYERS.map((name) => layers[name]);
  const [images, , height, width] = maps[0].shape;
  const perLayer = maps.map((m) => m.shape[1]);
  const d = channelIndices.length;
  const positions = height * width;
  const data = new Float32Array(images * positions * d);
  channelIndices.forEach((index, k) => {
    const [layer, channel] = locateChannel(index, perLayer);
    const [, channels, h, w] = maps[layer].shape;
    const values = maps[layer].data;
    for (let image = 0; image < images; image++) {
      const plane = (image * channels + channel) * h * w;
      for (let y = 0; y < height; y++) {
        const row = plane + Math.floor((y * h) / height) * w;
        for (let x = 0; x < width; x++) {
          data[(image * positions + y * width + x) * d + k] =
            values[row + Math.floor((x * w) / width)];
        }
      }
    }
  });
  return { data, images, grid: [height, width] };
}

/**
 * Inverts a symmetric positive definite d×d matrix (float64, row-major) in place through its
 * Cholesky factor.
 *
 * @throws Error when the matrix is not positive definite
 */
export function invertSpd(a: Float64Array, d: number): void {
  // a = L·Lᵀ, L stored in the lower triangle.
  for (let j = 0; j < d; j++) {
    let diagonal = a[j * d + j];
    for (let k = 0; k < j; k++) diagonal -= a[j * d + k] ** 2;
    if (!(diagonal > 0)) throw new Error("covariance is not positive definite");
    const ljj = Math.sqrt(diagonal);
    a[j * d + j] = ljj;
    for (let i = j + 1; i < d; i++) {
      let s = a[i * d + j];
      for (let k = 0; k < j; k++) s -= a[i * d + k] * a[j * d + k];
      a[i * d + j] = s / ljj;
    }
  }
  // L⁻¹ in the lower triangle.
  for (let j = 0; j < d; j++) {
    a[j * d + j] = 1 / a[j * d + j];
    for (let i = j + 1; i < d; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s -= a[i * d + k] * a[k * d + j];
      a[i * d + j] = s / a[i * d + i];
    }
  }
  // A⁻¹ = L⁻ᵀ·L⁻¹, symmetric: compute the lower triangle, mirror it.
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < d; k++) s += a[k * d + i] * a[k * d + j];
      a[i * d + j] = s;
    }
  }
  for (let i = 0; i < d; i++) {
    for (let j = i + 1; j < d; j++) a[i * d + j] = a[j * d + i];
  }
}

/** A trained PaDiM detector. */
export class PadimModel implements AnomalyDetector {
  readonly method = "padim";
  readonly channels = 3 as const;

  /** Wraps trained statistics and the open backbone (which the model then owns). */
  constructor(
    readonly settings: PadimSettings,
    private readonly statistics: PadimStatistics,
    private readonly backbone: Backbone,
  ) {}

  /** The Mahalanobis distance of each feature position, on layer 1's grid. */
  async distanceGrid(image: FloatImage): Promise<Float32Array> {
    const { channelIndices, mean, inverseCovariance, grid } = this.statistics;
    const size = this.settings.imageSize;
    const working = resize(convertChannels(image, 3), size, size);
    const layers = await imageFeatures(this.backbone, [working], LAYERS);
    const { data } = embeddings(layers, channelIndices);
    const d = channelIndices.length;
    const positions = grid[0] * grid[1];
    const distances = new Float32Array(positions);
    const diff = new Float64Array(d);
    for (let p = 0; p < positions; p++) {
      for (let k = 0; k < d; k++) diff[k] = data[p * d + k] - mean[p * d + k];
      let total = 0;
      const inverse = p * d * d;
      for (let i = 0; i < d; i++) {
        let row = 0;
        for (let j = 0; j < d; j++) row += inverseCovariance[inverse + i * d + j] * diff[j];
        total += diff[i] * row;
      }
      distances[p] = Math.sqrt(Math.max(total, 0));
    }
    return distances;
  }

  /** The distances upsampled to the working size, smoothed, then brought to the image's size. */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    const distances = await this.distanceGrid(image);
    const [height, width] = this.statistics.grid;
    const grid = tensor(distances, [1, 1, height, width]);
    const map = smoothGridMap(grid, this.settings.imageSize, image);
    grid.dispose();
    try {
      return await map.toArray();
    } finally {
      map.dispose();
    }
  }

  /** Writes `model.safetensors` (means, inverse covariances, channel subset) and `padim.json`. */
  async save(directory: string): Promise<void> {
    const { channelIndices, grid, mean, inverseCovariance } = this.statistics;
    const d = channelIndices.length;
    const positions = grid[0] * grid[1];
    const tensors = new Map<string, StoredTensor>([
      ["mean", { shape: [positions, d], data: mean }],
      ["inverse_covariance", { shape: [positions, d, d], data: inverseCovariance }],
      ["channel_indices", { shape: [d], data: Float32Array.from(channelIndices) }],
    ]);
    await saveModelFiles(directory, SETTINGS_FILE, {
      format: FORMAT,
      settings: this.settings,
      grid,
    }, tensors);
  }

  /** Frees the backbone's GPU weights. */
  dispose(): void {
    this.backbone.dispose();
  }
}

/** Reads a model written by {@link PadimModel.save} and opens its backbone. */
export async function loadPadim(directory: string): Promise<PadimModel> {
  const saved = await readModelFiles<
    { format: string; settings: PadimSettings; grid: [number, number] }
  >(directory, SETTINGS_FILE, FORMAT, "PaDiM model");
  const file = saved.settings;
  const settingsPath = join(directory, SETTINGS_FILE);
  const settings = checkSavedSettings<PadimSettings>(
    settingsPath,
    padimMethod,
    file.settings,
    ["backbone", "imageSize", "channels"],
  );
  const grid = file.grid;
  if (
    !Array.isArray(grid) || grid.length !== 2 ||
    !grid.every((side) => Number.isInteger(side) && side >= 1 && side <= settings.imageSize)
  ) {
    throw new InputError(
      `"${settingsPath}": "grid" is ${jsonForMessage(grid)}; expected [rows, columns] of the ` +
        `feature grid (positive integers up to the image size ${settings.imageSize})`,
    );
  }
  const d = settings.channels;
  const positions = grid[0] * grid[1];
  const statistics: PadimStatistics = {
    channelIndices: Int32Array.from(saved.tensor("channel_indices", d).data),
    grid,
    mean: saved.tensor("mean", positions * d).data,
    inverseCovariance: saved.tensor("inverse_covariance", positions * d * d).data,
  };
  return new PadimModel(settings, statistics, await openBackbone(settings));
}

/** Options of {@link trainPadim}. */
export type PadimTrainOptions = Partial<PadimSettings> & FeatureTrainOptions;

/** Defaults: the paper's ResNet features at 224² with d = 100, every training image. */
export const PADIM_DEFAULTS: Readonly<PadimSettings> = Object.freeze({
  backbone: "resnet50" as BackboneName,
  imageSize: 224,
  channels: 100,
  trainImages: 0,
});

/**
 * Estimates PaDiM's per-position Gaussians on a category's training split.
 *
 * @throws Error when the split has too few images for a covariance, or `channels` exceeds the
 *   backbone's feature channels
 */
export async function trainPadim(
  category: MvtecCategory,
  options: PadimTrainOptions = {},
): Promise<PadimModel> {
  const settings: PadimSettings = {
    backbone: options.backbone ?? PADIM_DEFAULTS.backbone,
    backboneWeights: options.backboneWeights,
    imageSize: options.imageSize ?? PADIM_DEFAULTS.imageSize,
    channels: options.channels ?? PADIM_DEFAULTS.channels,
    trainImages: options.trainImages ?? PADIM_DEFAULTS.trainImages,
  };
  const log = options.log ?? (() => {});
  const samples = trainingSamples(category, settings.trainImages, options.seed);
  const random = new Random(options.seed ?? 0);
  if (samples.length < 2) {
    throw new Error(
      `padim: category "${category.name}" has ${samples.length} training image(s); a covariance ` +
        "needs at least two",
    );
  }
  const backbone = await openBackbone(settings, log);
  try {
    const started = performance.now();
    let channelIndices: Int32Array | null = null;
    let grid: [number, number] = [0, 0];
    let sums: Float64Array | null = null;
    let products: Float64Array | null = null;
    const d = settings.channels;
    let seen = 0;
    for await (
      const batch of featureBatches(backbone, category, samples, {
        size: settings.imageSize,
        layers: LAYERS,
      })
    ) {
      if (!channelIndices) {
        const available = LAYERS.reduce((total, name) => total + batch.layers[name].shape[1], 0);
        if (d > available) {
          throw new Error(
            `padim: --channels ${d} exceeds the ${available} feature channels of ` +
              `${settings.backbone}'s layers 1–3`,
          );
        }
        channelIndices = Int32Array.from(
          random.shuffle([...Array(available).keys()]).slice(0, d).sort((a, b) => a - b),
        );
        grid = [batch.layers.layer1.shape[2], batch.layers.layer1.shape[3]];
        const positions = grid[0] * grid[1];
        sums = new Float64Array(positions * d);
        products = new Float64Array(positions * d * d);
        log(
          `padim: ${settings.backbone} layers 1–3 (${available} channels, ${d} kept) on a ` +
            `${grid[0]}×${grid[1]} grid at ${settings.imageSize}²`,
        );
      }
      const { data, images } = embeddings(batch.layers, channelIndices);
      const positions = grid[0] * grid[1];
      for (let image = 0; image < images; image++) {
        for (let p = 0; p < positions; p++) {
          const at = (image * positions + p) * d;
          for (let i = 0; i < d; i++) {
            const xi = data[at + i];
            sums![p * d + i] += xi;
            // The upper triangle only; the covariance is symmetric.
            const row = (p * d + i) * d;
            for (let j = i; j < d; j++) products![row + j] += xi * data[at + j];
          }
        }
      }
      seen += images;
      options.onProgress?.({
        epoch: 1,
        epochs: 1,
        step: seen,
        totalSteps: samples.length,
        samplesPerSecond: (seen * 1000) / (performance.now() - started),
      });
      if (options.signal?.aborted) throw new TrainingStoppedError("padim");
    }
    const positions = grid[0] * grid[1];
    const mean = new Float32Array(positions * d);
    const inverseCovariance = new Float32Array(positions * d * d);
    const covariance = new Float64Array(d * d);
    for (let p = 0; p < positions; p++) {
      for (let i = 0; i < d; i++) mean[p * d + i] = sums![p * d + i] / seen;
      for (let i = 0; i < d; i++) {
        const mi = sums![p * d + i] / seen;
        for (let j = i; j < d; j++) {
          const mj = sums![p * d + j] / seen;
          const value = (products![(p * d + i) * d + j] - seen * mi * mj) / (seen - 1) +
            (i === j ? COVARIANCE_RIDGE : 0);
          covariance[i * d + j] = value;
          covariance[j * d + i] = value;
        }
      }
      invertSpd(covariance, d);
      inverseCovariance.set(covariance, p * d * d);
    }
    log(
      `padim: ${seen} images in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    return new PadimModel(
      settings,
      { channelIndices: channelIndices!, grid, mean, inverseCovariance },
      backbone,
    );
  } catch (error) {
    backbone.dispose();
    throw error;
  }
}

/** PaDiM on the plug-in interface. */
export const padimMethod: MethodDefinition = defineMethod({
  name: "padim",
  description: "PaDiM (Defard et al.): a Gaussian per feature position of a pretrained CNN, " +
    "Mahalanobis distance as the map",
  appliesTo: "all",
  options: {
    ...FEATURE_METHOD_OPTIONS,
    channels: {
      type: "integer",
      min: 1,
      default: PADIM_DEFAULTS.channels,
      help: "random subset of the layer 1–3 feature channels kept (the paper's d)",
    },
  },
  train: async (category, options) => ({
    detector: await trainPadim(category, options),
    stopped: false,
    losses: [],
  }),
  load: loadPadim,
});
