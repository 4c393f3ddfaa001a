/**
 * The CNN feature dictionary (Napoletano et al. 2018; MVTec AD paper sec. 4.1.3): every
 * `patchSize`² patch of an image, at stride `stride`, is described by the backbone's features
 * averaged over the patch; PCA keeping `varianceKept` of the variance and k-means (k-means++
 * initialisation) over training patches form the dictionary; a patch's anomaly score is its
 * distance to the nearest centre, and the map interpolates the scores between patch centres.
 *
 * The paper feeds each patch to the network on its own ("crop"): about 3,700 network passes for
 * a 256² object, several seconds per image on a CPU adapter even at the patch's own 16². The
 * default ("pooled") runs the network once over the image scaled so that a patch spans
 * `patchInput` pixels and averages the layer's cells under each patch, which also lets a patch's
 * feature see its surroundings.
 */

import { join } from "node:path";
import { convertChannels, type FloatImage, resize } from "../../data/image.ts";
import type { MvtecCategory } from "../../data/mvtec.ts";
import { Random } from "../../data/random.ts";
import type { StoredTensor } from "../../nn/checkpoint.ts";
import {
  checkSavedSettings,
  MODEL_TENSORS_FILE,
  readModelFiles,
  saveModelFiles,
} from "../model_files.ts";
import { InputError } from "../../util/errors.ts";
import { jsonForMessage } from "../../util/fs.ts";
import type { Backbone } from "../../nn/backbones/runner.ts";
import * as op from "../../tensor/ops.ts";
import { keep, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import {
  BACKBONE_OPTIONS,
  type BackboneChoice,
  type FeatureTrainOptions,
  openBackbone,
  trainingSamples,
} from "../backbone_features.ts";
import {
  type AnomalyDetector,
  defineMethod,
  type MethodDefinition,
  TrainingStoppedError,
} from "../method.ts";
import { kmeans, nearestCentreDistance, type Pca, pca, project } from "./statistics.ts";

const SETTINGS_FILE = "cnn_dict.json";
const FORMAT = "anodet-cnn-dict/1";
/** Patches per backbone batch. */
const PATCH_BATCH = 256;

/** The settings of the CNN feature dictionary. */
export interface CnnDictSettings extends BackboneChoice {
  /** Working size; null: the paper's, 256 for objects and 512 (zoomed) for textures. */
  imageSize: number | null;
  /** Side of a patch in working-size pixels (the paper: 16). */
  patchSize: number;
  /** Step between patches (the paper: 4). */
  stride: number;
  /**
   * How a patch reaches the backbone: "crop" feeds each patch on its own (the paper's procedure,
   * one network pass per patch); "pooled" runs the backbone once over the whole image, scaled so
   * that a patch spans `patchInput` pixels, and averages the layer over each patch's window, so
   * that a patch's feature also sees its surroundings, at a small fraction of the cost.
   */
  patchMode: "crop" | "pooled";
  /** Side the backbone sees a patch at. */
  patchInput: number;
  /** The backbone layer whose average over a patch is the patch's feature. */
  layer: "layer2" | "layer3" | "layer4";
  /** Fraction of the feature variance PCA keeps (the paper: 0.95). */
  varianceKept: number;
  /** k-means centres (the paper: 10). */
  clusters: number;
  /** Training patches the dictionary is fitted on, drawn at random from the training images. */
  dictionaryPatches: number;
  /** Training images the patches are drawn from (0: all). */
  trainImages: number;
}

/**
 * Defaults: the paper's patches, PCA and k; ResNet50's layer 2 over the whole image at twice the
 * working size, averaged over each patch (about a second per 256² object image on lavapipe,
 * where feeding every patch on its own at 16² takes about 6 s).
 */
export const CNN_DICT_DEFAULTS: Readonly<CnnDictSettings> = Object.freeze({
  backbone: "resnet50",
  imageSize: null,
  patchSize: 16,
  stride: 4,
  patchMode: "pooled",
  patchInput: 32,
  // ResNet50's layer 4 has 2,048 channels, whose eigensolve takes minutes on a CPU adapter;
  // layer 3's 1,024 take about 20 s.
  layer: "layer3",
  varianceKept: 0.95,
  clusters: 10,
  dictionaryPatches: 20_000,
  trainImages: 0,
});

/** Patch positions along one side: 0, stride, 2·stride, … while the patch fits. */
export function patchOrigins(size: number, patchSize: number, stride: number): number[] {
  if (patchSize > size) {
    throw new Error(`cnn-dict: a ${patchSize}-pixel patch does not fit a ${size}-pixel image`);
  }
  const count = Math.floor((size - patchSize) / stride) + 1;
  return Array.from({ length: count }, (_, i) => i * stride);
}

/** The patches of an RGB image at the given origins, as one NCHW batch [count, 3, p, p]. */
function cutPatches(
  image: FloatImage,
  origins: readonly [number, number][],
  patchSize: number,
): Float32Array {
  const { width, height, data } = image;
  const perPatch = 3 * patchSize * patchSize;
  const out = new Float32Array(origins.length * perPatch);
  origins.forEach(([top, left], n) => {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < patchSize; y++) {
        const from = (c * height + top + y) * width + left;
        out.set(
          data.subarray(from, from + patchSize),
          n * perPatch + (c * patchSize + y) * patchSize,
        );
      }
    }
  });
  return out;
}

/**
 * Interpolates scores given at patch centres (a `grid`×`grid` lattice, centre i at
 * i·stride + patchSize/2) to every pixel of a size×size image, bilinearly, holding the border
 * values outside the outermost centres.
 */
export function interpolateGrid(
  scores: Float32Array,
  grid: number,
  size: number,
  patchSize: number,
  stride: number,
): Float32Array {
  const taps = Array.from({ length: size }, (_, p) => {
    const u = Math.min(Math.max((p + 0.5 - patchSize / 2) / stride, 0), grid - 1);
    const low = Math.min(Math.floor(u), grid - 2 < 0 ? 0 : grid - 2);
    return { low, high: Math.min(low + 1, grid - 1), weight: u - low };
  });
  const map = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    const ty = taps[y];
    for (let x = 0; x < size; x++) {
      const tx = taps[x];
      const top = scores[ty.low * grid + tx.low] * (1 - tx.weight) +
        scores[ty.low * grid + tx.high] * tx.weight;
      const bottom = scores[ty.high * grid + tx.low] * (1 - tx.weight) +
        scores[ty.high * grid + tx.high] * tx.weight;
      map[y * size + x] = top * (1 - ty.weight) + bottom * ty.weight;
    }
  }
  return map;
}

/** Runs patches through the backbone and returns their features [patches, channels]. */
class PatchDescriber {
  constructor(
    readonly backbone: Backbone,
    readonly settings: CnnDictSettings & { imageSize: number },
  ) {}

  /**
   * The features of every patch of an image (any size; resized here), [grid², channels] in
   * row-major grid order, on the GPU.
   */
  describeImage(image: FloatImage): Tensor {
    const { imageSize, patchSize, stride, patchInput, layer, patchMode } = this.settings;
    const rgb = convertChannels(image, 3);
    if (patchMode === "crop") {
      const working = resize(rgb, imageSize, imageSize);
      const origins = patchOrigins(imageSize, patchSize, stride);
      const positions = origins.flatMap((top) =>
        origins.map((left) => [top, left] as [number, number])
      );
      return this.describe(cutPatches(working, positions, patchSize), positions.length);
    }
    const scaled = Math.round((imageSize * patchInput) / patchSize);
    const input = tensor(resize(rgb, scaled, scaled).data, [1, 3, scaled, scaled]);
    const map = this.backbone.features(input, [layer])[layer];
    input.dispose();
    const cellPixels = scaled / map.shape[2];
    const window = patchInput / cellPixels;
    const step = (stride * patchInput) / patchSize / cellPixels;
    // Where a patch or a step covers part of a cell, the cells are split (nearest upsampling)
    // until both cover whole ones.
    const split = [1, 2, 4, 8, 16].find((f) =>
      Number.isInteger(window * f) && Number.isInteger(step * f)
    );
    if (split === undefined) {
      map.dispose();
      throw new Error(
        `cnn-dict: with --patch-mode pooled, ${layer}'s ${+cellPixels.toFixed(2)}-pixel cells ` +
          "cannot be " +
          `split to fit a patch (--patch-input ${patchInput}) and a step ` +
          `(${(stride * patchInput) / patchSize} pixels); choose another --patch-input or ` +
          "--layer, or --patch-mode crop",
      );
    }
    return noGrad(() =>
      tidy(() => {
        const cells = split === 1 ? map : op.upsample(map, { scale: split, mode: "nearest" });
        const pooled = op.avgPool2d(cells, window * split, { stride: step * split });
        map.dispose();
        const [, channels, rows, columns] = pooled.shape;
        return op.reshape(op.permute(pooled, [0, 2, 3, 1]), [rows * columns, channels]);
      })
    );
  }

  /** The features of `patches` ([count, 3, p, p] values), on the GPU. */
  describe(patches: Float32Array, count: number): Tensor {
    const { patchSize, patchInput, layer } = this.settings;
    const parts: Tensor[] = [];
    for (let start = 0; start < count; start += PATCH_BATCH) {
      const n = Math.min(PATCH_BATCH, count - start);
      const perPatch = 3 * patchSize * patchSize;
      const batch = tensor(
        patches.subarray(start * perPatch, (start + n) * perPatch),
        [n, 3, patchSize, patchSize],
      );
      const input = patchInput === patchSize
        ? batch
        : noGrad(() => op.upsample(batch, { size: [patchInput, patchInput], mode: "bilinear" }));
      const features = this.backbone.features(input, [layer])[layer];
      parts.push(noGrad(() => op.mean(features, [2, 3])));
      for (const t of new Set([batch, input, features])) t.dispose();
    }
    if (parts.length === 1) return parts[0];
    const joined = noGrad(() => op.concat(parts, 0));
    parts.forEach((t) => t.dispose());
    return joined;
  }
}

/** A trained CNN feature dictionary. */
export class CnnDictModel implements AnomalyDetector {
  readonly method = "cnn-dict";
  readonly channels = 3 as const;
  private readonly onGpu: { mean: Tensor; components: Tensor };

  /** Wraps a fitted dictionary and the open backbone (which the model then owns). */
  constructor(
    readonly settings: CnnDictSettings & { imageSize: number },
    readonly dictionary: Pca & { centres: Float32Array },
    private readonly describer: PatchDescriber,
  ) {
    const k = dictionary.eigenvalues.length;
    this.onGpu = {
      mean: keep(tensor(dictionary.mean, [1, dictionary.mean.length])),
      components: keep(tensor(dictionary.components, [dictionary.mean.length, k])),
    };
  }

  /** Each patch's distance to the nearest centre, on the grid of patch origins. */
  async patchScores(image: FloatImage): Promise<{ scores: Float32Array; grid: number }> {
    const { imageSize, patchSize, stride } = this.settings;
    const grid = patchOrigins(imageSize, patchSize, stride).length;
    const features = this.describer.describeImage(image);
    const distances = noGrad(() =>
      tidy(() => {
        const projected = op.matmul(op.sub(features, this.onGpu.mean), this.onGpu.components);
        return nearestCentreDistance(projected, this.dictionary.centres);
      })
    );
    features.dispose();
    try {
      const [scores] = await toArrays([distances]);
      return { scores, grid };
    } finally {
      distances.dispose();
    }
  }

  /** The patch scores interpolated between patch centres, at the image's own size. */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    const { imageSize, patchSize, stride } = this.settings;
    const { scores, grid } = await this.patchScores(image);
    const map = interpolateGrid(scores, grid, imageSize, patchSize, stride);
    const working: FloatImage = { width: imageSize, height: imageSize, channels: 1, data: map };
    return resize(working, image.width, image.height, "bilinear").data;
  }

  /** Writes `model.safetensors` (PCA and centres) and `cnn_dict.json`. */
  async save(directory: string): Promise<void> {
    const { mean, components, eigenvalues, centres } = this.dictionary;
    const d = mean.length, k = eigenvalues.length;
    const tensors = new Map<string, StoredTensor>([
      ["mean", { shape: [d], data: mean }],
      ["components", { shape: [d, k], data: components }],
      ["eigenvalues", { shape: [k], data: eigenvalues }],
      ["centres", { shape: [centres.length / k, k], data: centres }],
    ]);
    await saveModelFiles(directory, SETTINGS_FILE, {
      format: FORMAT,
      settings: this.settings,
      explainedVariance: this.dictionary.explainedVariance,
    }, tensors);
  }

  /** Frees the GPU copies and the backbone. */
  dispose(): void {
    this.onGpu.mean.dispose();
    this.onGpu.components.dispose();
    this.describer.backbone.dispose();
  }
}

/** Reads a model written by {@link CnnDictModel.save} and opens its backbone. */
export async function loadCnnDict(directory: string): Promise<CnnDictModel> {
  const saved = await readModelFiles<{
    format: string;
    settings: CnnDictSettings & { imageSize: number };
    explainedVariance: number;
  }>(directory, SETTINGS_FILE, FORMAT, "CNN feature dictionary");
  const file = saved.settings;
  const settingsPath = join(directory, SETTINGS_FILE);
  const settings = checkSavedSettings<CnnDictSettings & { imageSize: number }>(
    settingsPath,
    cnnDictMethod,
    file.settings,
    ["backbone", "imageSize", "patchSize", "stride", "patchMode", "patchInput", "layer"],
  );
  const explained = file.explainedVariance;
  if (typeof explained !== "number" || !(explained >= 0 && explained <= 1)) {
    throw new InputError(
      `"${settingsPath}": "explainedVariance" is ${jsonForMessage(explained)}; expected a ` +
        "share in [0, 1]",
    );
  }
  const [mean, components, eigenvalues, centres] = ["mean", "components", "eigenvalues", "centres"]
    .map((name) => saved.tensor(name));
  const [d, k] = [mean.shape[0], eigenvalues.shape[0]];
  if (
    mean.shape.length !== 1 || eigenvalues.shape.length !== 1 || centres.shape.length !== 2 ||
    components.shape.join() !== `${d},${k}` || centres.shape[1] !== k
  ) {
    throw new InputError(
      `"${join(directory, MODEL_TENSORS_FILE)}": expected components [${d}, ${k}] and centres ` +
        `[clusters, ${k}], got [${components.shape}] and [${centres.shape}]`,
    );
  }
  const backbone = await openBackbone(settings);
  return new CnnDictModel(
    settings,
    {
      mean: mean.data,
      components: components.data,
      eigenvalues: eigenvalues.data,
      explainedVariance: explained,
      centres: centres.data,
    },
    new PatchDescriber(backbone, settings),
  );
}

/** Options of {@link trainCnnDict}. */
export type CnnDictTrainOptions = Partial<CnnDictSettings> & FeatureTrainOptions;

/**
 * Fits the dictionary: features of `dictionaryPatches` random patches of the training images,
 * PCA, then k-means.
 */
export async function trainCnnDict(
  category: MvtecCategory,
  options: CnnDictTrainOptions = {},
): Promise<CnnDictModel> {
  const defined = Object.fromEntries(
    Object.entries(options).filter(([key, v]) => v !== undefined && key in CNN_DICT_DEFAULTS),
  );
  const chosen: CnnDictSettings = { ...CNN_DICT_DEFAULTS, ...defined };
  const imageSize = chosen.imageSize ?? (category.info.kind === "texture" ? 512 : 256);
  const settings = { ...chosen, imageSize };
  const log = options.log ?? (() => {});
  const samples = trainingSamples(category, settings.trainImages, options.seed);
  if (samples.length === 0) {
    throw new Error(`cnn-dict: category "${category.name}" has no training images`);
  }
  const origins = patchOrigins(imageSize, settings.patchSize, settings.stride);
  const random = new Random(options.seed ?? 0);
  // An even share of the patches from each image, at random positions.
  const perImage = Math.max(1, Math.ceil(settings.dictionaryPatches / samples.length));
  const describer = new PatchDescriber(await openBackbone(settings, log), settings);
  const started = performance.now();
  const parts: Tensor[] = [];
  try {
    log(
      `cnn-dict: ${perImage} patches drawn at random from the ${origins.length ** 2} positions ` +
        `(${settings.patchSize}² at stride ` +
        `${settings.stride}, seen at ${settings.patchInput}², ${settings.patchMode}) from each ` +
        `of ${samples.length} images at ${imageSize}², ${settings.backbone} ${settings.layer}`,
    );
    for (const [i, sample] of samples.entries()) {
      const positions = Array.from(
        { length: perImage },
        () => [random.int(0, origins.length), random.int(0, origins.length)] as [number, number],
      );
      if (settings.patchMode === "crop") {
        // Only the drawn patches go through the network.
        const image = await category.loadImage(sample, {
          channels: 3,
          width: imageSize,
          height: imageSize,
        });
        const corners = positions.map(([row, column]) =>
          [origins[row], origins[column]] as [
            number,
            number,
          ]
        );
        parts.push(describer.describe(cutPatches(image, corners, settings.patchSize), perImage));
      } else {
        const all = describer.describeImage(await category.loadImage(sample, { channels: 3 }));
        const [values] = await toArrays([all]);
        const channels = all.shape[1];
        all.dispose();
        const drawn = new Float32Array(perImage * channels);
        positions.forEach(([row, column], k) => {
          const at = (row * origins.length + column) * channels;
          drawn.set(values.subarray(at, at + channels), k * channels);
        });
        parts.push(tensor(drawn, [perImage, channels]));
      }
      options.onProgress?.({
        stage: "patch features",
        epoch: 1,
        epochs: 1,
        step: i + 1,
        totalSteps: samples.length,
        samplesPerSecond: ((i + 1) * perImage * 1000) / (performance.now() - started),
      });
      if (options.signal?.aborted) throw new TrainingStoppedError("cnn-dict");
    }
    const features = noGrad(() => op.concat(parts, 0));
    parts.forEach((t) => t.dispose());
    parts.length = 0;
    try {
      const fitted = await pca(features, {
        varianceKept: settings.varianceKept,
        signal: options.signal,
      });
      log(
        `cnn-dict: PCA keeps ${fitted.eigenvalues.length} of ${fitted.mean.length} dimensions ` +
          `(${(fitted.explainedVariance * 100).toFixed(1)}% of the variance)`,
      );
      const projected = project(fitted, features);
      try {
        const clustering = await kmeans(projected, settings.clusters, {
          seed: options.seed ?? 0,
          signal: options.signal,
        });
        log(
          `cnn-dict: k-means with k = ${settings.clusters} in ${clustering.iterations} ` +
            `iterations; fitted in ${((performance.now() - started) / 1000).toFixed(1)} s`,
        );
        return new CnnDictModel(settings, { ...fitted, centres: clustering.centres }, describer);
      } finally {
        projected.dispose();
      }
    } finally {
      features.dispose();
    }
  } catch (error) {
    parts.forEach((t) => t.dispose());
    describer.backbone.dispose();
    if (options.signal?.aborted) throw new TrainingStoppedError("cnn-dict");
    throw error;
  }
}

/** The CNN feature dictionary on the plug-in interface. */
export const cnnDictMethod: MethodDefinition = defineMethod({
  name: "cnn-dict",
  description: "CNN feature dictionary (MVTec AD paper): PCA and k-means of pretrained patch " +
    "features, distance to the nearest centre",
  appliesTo: "all",
  options: {
    ...BACKBONE_OPTIONS,
    imageSize: {
      type: "integer",
      min: 16,
      help: "working size (default: 256 for objects, 512 for textures)",
    },
    patchSize: {
      type: "integer",
      min: 4,
      default: CNN_DICT_DEFAULTS.patchSize,
      help: "side of a patch in working-size pixels",
    },
    stride: {
      type: "integer",
      min: 1,
      default: CNN_DICT_DEFAULTS.stride,
      help: "step between patches",
    },
    patchMode: {
      type: "choice",
      choices: ["pooled", "crop"],
      default: CNN_DICT_DEFAULTS.patchMode,
      help: "crop: each patch through the network on its own (the paper; slow); pooled: one " +
        "pass over the scaled image, averaged over each patch",
    },
    patchInput: {
      type: "integer",
      min: 16,
      default: CNN_DICT_DEFAULTS.patchInput,
      help: "side the backbone sees a patch at (larger is slower)",
    },
    layer: {
      type: "choice",
      choices: ["layer2", "layer3", "layer4"],
      default: CNN_DICT_DEFAULTS.layer,
      help: "backbone layer whose average over a patch describes it",
    },
    varianceKept: {
      type: "number",
      min: 0,
      minExclusive: true,
      max: 1,
      default: CNN_DICT_DEFAULTS.varianceKept,
      help: "fraction of the feature variance PCA keeps",
    },
    clusters: {
      type: "integer",
      min: 1,
      default: CNN_DICT_DEFAULTS.clusters,
      help: "k-means centres",
    },
    dictionaryPatches: {
      type: "integer",
      min: 2,
      default: CNN_DICT_DEFAULTS.dictionaryPatches,
      help: "training patches the dictionary is fitted on",
    },
    trainImages: {
      type: "integer",
      min: 0,
      default: CNN_DICT_DEFAULTS.trainImages,
      help: "training images the patches come from (0: all)",
    },
  },
  train: async (category, options) => ({
    detector: await trainCnnDict(category, options),
    stopped: false,
    losses: [],
  }),
  load: loadCnnDict,
});
