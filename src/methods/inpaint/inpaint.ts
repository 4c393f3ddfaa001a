/**
 * The self-supervised inpainting autoencoder (`inpaint`; Bauer et al., 2022) as a method: the
 * network of ./model.ts learns to map corrupted anomaly-free images (./corruption.ts) back to the
 * clean ones under the filtering or amplifying objective (./objectives.ts), so that at test time
 * it removes (or exaggerates) whatever does not look like the training data.
 *
 * - Training: every image of an epoch is drawn, augmented and corrupted from a seed of its own
 *   (run seed, epoch, index), so an epoch is the same whether a run was resumed or not. Each step
 *   uploads X̂, X and M once and records forward, backward and the Adam update without a readback
 *   (src/nn/fit.ts reads the loss back every few seconds and writes end-of-epoch checkpoints).
 * - Progressive scheme (option): the training images are loaded at twice the input side and a
 *   square crop of them is resized to the input side; the crop grows from half the image to the
 *   whole image over the first half of the epochs, so the network first sees details at twice the
 *   scale of the test images, then more and more of the image, at a fixed input resolution.
 * - Ensemble: two networks, one per objective, trained side by side on the same batches; the map
 *   is the pixel-wise maximum of their maps, each first divided by its mean over the validation
 *   images, since the two objectives' residuals are of different scales.
 * - Maps: the whole image is resized to the input side and goes through the network in one pass;
 *   Diff is the squared residual (or 1 − SSIM) averaged over the channels, smoothed by a k×k
 *   averaging filter applied n times. For objects it may be multiplied by (1 − avgmap)^t, where
 *   avgmap is the mean map of the validation images scaled to a maximum of 1 (so that t means the
 *   same whatever the residuals' scale), which damps the places that are hard to reconstruct even
 *   on good images. The map is brought back to the image's own size; the image score is the sum
 *   of the map at the input side, so images of any size are scored on one scale.
 * - Map search (on in both presets): k, n and t are chosen after training on the validation
 *   images corrupted as in training (./map_search.ts), since the best values depend on the
 *   category and on how well the network learnt it (the bottle wants k 9, n 3, t 4 from the quick
 *   network, the carpet much less smoothing and no avgmap), and no defect labels are at hand.
 *
 * @module
 */

import { join } from "node:path";
import { type Channels, convertChannels, type FloatImage, resize } from "../../data/image.ts";
import type { MvtecCategory, Sample } from "../../data/mvtec.ts";
import { hashSeed, Random } from "../../data/random.ts";
import { init, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import { withSeed } from "../../tensor/ops/random.ts";
import * as op from "../../tensor/ops.ts";
import { Adam } from "../../nn/optim.ts";
import { loadSafetensors, loadTensorsInto, saveSafetensors } from "../../nn/checkpoint.ts";
import { fit } from "../../nn/fit.ts";
import { readJsonFile, writeJsonAtomic } from "../../util/fs.ts";
import { InputError } from "../../util/errors.ts";
import {
  type AnomalyDetector,
  defineMethod,
  type MethodDefinition,
  OptionError,
  type OptionSpecs,
  presetSettings,
  type TrainOptions,
  type TrainResult,
} from "../method.ts";
import { augmentationFor, corrupt, type CorruptionOptions } from "./corruption.ts";
import { inpaintingObjective, type ObjectiveKind } from "./objectives.ts";
import { InpaintingNetwork } from "./model.ts";
import {
  avgmapWeight,
  DEFAULT_MAP_GRID,
  MapSearchError,
  type MapSearchGrid,
  type MapSmoothing,
  type ScoredMapCandidate,
  searchMapSettings,
  smoothMaps,
} from "./map_search.ts";

/** Corrupted copies of each validation image that the map search scores. */
const MAP_SEARCH_COPIES = 8;

/** The objectives a run trains: one of them, or both for the ensemble. */
export type InpaintObjective = ObjectiveKind | "ensemble";

/** The corruptions a run can train with (image occlusion needs other categories' images). */
export const INPAINT_CORRUPTIONS = ["elastic", "cutout", "swap", "noise-occlusion"] as const;

/** One of {@link INPAINT_CORRUPTIONS}. */
export type InpaintCorruption = typeof INPAINT_CORRUPTIONS[number];

/** Everything that shapes a run; unset values come from the preset. */
export interface InpaintSettings {
  /** Multiplier of the paper's channel counts. */
  width: number;
  /** Side of the network's input for texture categories (a multiple of 8). */
  textureSize: number;
  /** Side of the network's input for object categories (a multiple of 8). */
  objectSize: number;
  /** Image channels: 1 or 3. */
  channels: Channels;
  /** Epochs. */
  epochs: number;
  /** Images per optimisation step. */
  batch: number;
  /** Corrupted images per epoch. */
  images: number;
  /** Adam learning rate (the paper: 1e-4). */
  lr: number;
  /** The training objective, or the ensemble of both. */
  objective: InpaintObjective;
  /** Weight λ of the corrupted part in the objective. */
  lambda: number;
  /** What the corruption blends in. */
  corruption: InpaintCorruption;
  /** Largest relative brightness change of the inserted content. */
  brightness: number;
  /** Rotations by multiples of 90° and flips, where the category allows them. */
  augment: boolean;
  /** The progressive scheme (see the module's description). */
  progressive: boolean;
  /** Side k of the averaging filter that smooths the map (odd). */
  smoothSize: number;
  /** Times n the averaging filter is applied (0: no smoothing). */
  smoothPasses: number;
  /** Objects: the exponent t of (1 − avgmap)^t (0: off). */
  avgmapExponent: number;
  /** Diff = 1 − SSIM instead of the squared residual. */
  ssim: boolean;
  /**
   * After training, replace k, n and (objects) t by the values with which the maps best find the
   * training corruption on the validation images (see ./map_search.ts).
   */
  mapSearch: boolean;
}

/** Presets: `paper` for a GPU, `quick` to learn something useful in minutes on a CPU adapter. */
export const INPAINT_PRESETS: Readonly<Record<"quick" | "paper", InpaintSettings>> = {
  quick: {
    width: 1 / 16,
    textureSize: 64,
    objectSize: 64,
    channels: 3,
    epochs: 32,
    batch: 8,
    images: 160,
    lr: 1e-3,
    objective: "filtering",
    lambda: 0.5,
    corruption: "elastic",
    brightness: 0.2,
    augment: true,
    progressive: true,
    smoothSize: 3,
    smoothPasses: 2,
    avgmapExponent: 0,
    ssim: false,
    mapSearch: true,
  },
  paper: {
    width: 1,
    textureSize: 512,
    objectSize: 256,
    channels: 3,
    epochs: 100,
    batch: 16,
    images: 1600,
    lr: 1e-4,
    objective: "filtering",
    lambda: 0.5,
    corruption: "elastic",
    brightness: 0.2,
    augment: true,
    progressive: true,
    smoothSize: 9,
    smoothPasses: 3,
    avgmapExponent: 1,
    ssim: false,
    mapSearch: true,
  },
};

/** The preset names. */
export type InpaintPreset = keyof typeof INPAINT_PRESETS;

/** Options of {@link trainInpaint}. */
export interface InpaintTrainOptions
  extends Omit<TrainOptions, "preset">, Partial<InpaintSettings> {
  /** Preset the unset settings come from (default "quick"). */
  preset?: InpaintPreset;
}

/** What the maps are calibrated with after training, from the validation images. */
interface Calibration {
  /** Per network, what its map is divided by before the ensemble's maximum (1 otherwise). */
  scales: Partial<Record<ObjectiveKind, number>>;
  /** The largest value of the mean validation map, which scales avgmap to a maximum of 1. */
  avgmapMax: number | null;
  /** The map search's choice and its pixel ROC AUC on the corrupted validation images. */
  mapSearch?: ScoredMapCandidate & { corruptedImages: number };
}

/** inpaint.json: what a saved detector needs besides its weights. */
interface InpaintConfig {
  kind: "texture" | "object";
  settings: InpaintSettings;
  calibration: Calibration;
}

const MODEL_FILE = "model.safetensors";
const CONFIG_FILE = "inpaint.json";
const AVGMAP_TENSOR = "avgmap";

/** The objectives whose networks a run trains. */
function objectivesOf(objective: InpaintObjective): ObjectiveKind[] {
  return objective === "ensemble" ? ["filtering", "amplifying"] : [objective];
}

/** The network input side of a category's kind. */
function inputSideOf(kind: "texture" | "object", settings: InpaintSettings): number {
  return kind === "texture" ? settings.textureSize : settings.objectSize;
}

function buildNetworks(
  settings: InpaintSettings,
  inputSize: number,
): Map<ObjectiveKind, InpaintingNetwork> {
  return new Map(
    objectivesOf(settings.objective).map((kind) => [
      kind,
      new InpaintingNetwork({ channels: settings.channels, inputSize, width: settings.width }),
    ]),
  );
}

/** Every network's parameters and buffers, named `<objective>.<name>`. */
function networkTensors(networks: ReadonlyMap<ObjectiveKind, InpaintingNetwork>) {
  const tensors = new Map<string, Tensor>();
  for (const [kind, network] of networks) {
    for (const [name, t] of network.stateDict(`${kind}.`)) tensors.set(name, t);
  }
  return tensors;
}

/** A trained inpainting autoencoder (one network, or two for the ensemble). */
export class InpaintDetector implements AnomalyDetector {
  /** "inpaint". */
  readonly method = "inpaint";
  /** Channels the networks read. */
  readonly channels: Channels;
  /** Side of the networks' input. */
  readonly inputSize: number;
  /** (1 − avgmap)^t per pixel at the input side, or null when not used. */
  #avgmapWeight: Float32Array | null = null;
  #avgmap: Float32Array | null = null;

  /** Wraps trained networks, their configuration and (when calibrated) the mean validation map. */
  constructor(
    readonly networks: ReadonlyMap<ObjectiveKind, InpaintingNetwork>,
    readonly config: InpaintConfig,
    avgmap: Float32Array | null,
  ) {
    this.channels = config.settings.channels;
    this.inputSize = inputSideOf(config.kind, config.settings);
    this.#setAvgmap(avgmap);
  }

  #setAvgmap(avgmap: Float32Array | null): void {
    this.#avgmap = avgmap;
    const { avgmapMax } = this.config.calibration;
    const exponent = this.config.settings.avgmapExponent;
    this.#avgmapWeight = avgmap && avgmapMax && avgmapMax > 0 && exponent > 0
      ? avgmapWeight(avgmap, exponent, avgmapMax)
      : null;
  }

  /**
   * Each network's smoothed Diff map of one image at the input side, without calibration.
   * `smoothing` overrides the settings' filter (e.g. passes 0 for the unsmoothed Diff).
   */
  async rawMaps(
    image: FloatImage,
    smoothing: MapSmoothing = this.config.settings,
  ): Promise<Map<ObjectiveKind, Float32Array>> {
    await init();
    const side = this.inputSize;
    const scaled = resize(convertChannels(image, this.channels), side, side);
    const { settings } = this.config;
    const input = tensor(scaled.data, [1, this.channels, side, side]);
    const maps = noGrad(() =>
      [...this.networks.values()].map((network) =>
        tidy(() => {
          const reconstruction = network.eval().forward(input);
          const perChannel = settings.ssim
            ? op.affine(op.ssim(reconstruction, input).map, -1, 1)
            : op.square(op.sub(reconstruction, input));
          return smoothMaps(op.mean(perChannel, [1], true), smoothing);
        })
      )
    );
    input.dispose();
    const values = await toArrays(maps);
    maps.forEach((map) => map.dispose());
    return new Map([...this.networks.keys()].map((kind, i) => [kind, values[i]]));
  }

  /** Each network's unsmoothed Diff at the input side, divided by its calibration scale. */
  async unsmoothedDiffs(image: FloatImage): Promise<Float32Array[]> {
    const raw = await this.rawMaps(image, { smoothSize: 1, smoothPasses: 0 });
    return [...raw].map(([objective, map]) => {
      const scale = this.config.calibration.scales[objective] ?? 1;
      return map.map((v) => v / scale);
    });
  }

  /** The calibrated map at the input side: scaled, the ensemble's maximum, avgmap-weighted. */
  async #inputSideMap(image: FloatImage): Promise<Float32Array> {
    const raw = await this.rawMaps(image);
    const combined = combineMaps(raw, this.config.calibration.scales);
    if (this.#avgmapWeight) {
      for (let i = 0; i < combined.length; i++) combined[i] *= this.#avgmapWeight[i];
    }
    return combined;
  }

  /** The anomaly map of an image at its own size. */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    return (await this.scoreImage(image)).map;
  }

  /** The map at the image's own size and the image score: the sum of the map at the input side. */
  async scoreImage(image: FloatImage): Promise<{ map: Float32Array; imageScore: number }> {
    const side = this.inputSize;
    const map = await this.#inputSideMap(image);
    const imageScore = map.reduce((total, v) => total + v, 0);
    const own = side === image.width && side === image.height
      ? map
      : resize({ width: side, height: side, channels: 1, data: map }, image.width, image.height)
        .data;
    return { map: own, imageScore };
  }

  /**
   * Computes the calibration anew from validation images (none: no calibration): the ensemble's
   * per-network scales, then the mean calibrated map (avgmap) when the settings use it.
   */
  async calibrate(validation: readonly FloatImage[]): Promise<void> {
    const { settings, kind, calibration } = this.config;
    calibration.scales = {};
    calibration.avgmapMax = null;
    this.#setAvgmap(null);
    const usesAvgmap = kind === "object" && settings.avgmapExponent > 0;
    if (validation.length === 0) return;
    const rawMaps = [];
    for (const image of validation) rawMaps.push(await this.rawMaps(image));
    if (this.networks.size > 1) {
      for (const objective of this.networks.keys()) {
        const mean = rawMaps.reduce((total, maps) => total + meanOf(maps.get(objective)!), 0) /
          rawMaps.length;
        calibration.scales[objective] = mean > 0 ? mean : 1;
      }
    }
    if (!usesAvgmap) return;
    const side = this.inputSize;
    const avgmap = new Float32Array(side * side);
    for (const maps of rawMaps) {
      const combined = combineMaps(maps, calibration.scales);
      for (let i = 0; i < avgmap.length; i++) avgmap[i] += combined[i] / rawMaps.length;
    }
    calibration.avgmapMax = avgmap.reduce((m, v) => Math.max(m, v), 0);
    this.#setAvgmap(avgmap);
  }

  /** Writes model.safetensors (the networks and avgmap) and inpaint.json into `directory`. */
  async save(directory: string): Promise<void> {
    await init();
    const tensors = networkTensors(this.networks);
    const side = this.inputSize;
    const avgmap = this.#avgmap ? tensor(this.#avgmap, [side, side]) : null;
    if (avgmap) tensors.set(AVGMAP_TENSOR, avgmap);
    try {
      await saveSafetensors(join(directory, MODEL_FILE), tensors, { method: this.method });
    } finally {
      avgmap?.dispose();
    }
    await writeJsonAtomic(join(directory, CONFIG_FILE), this.config);
  }

  /** Frees the networks. */
  dispose(): void {
    for (const network of this.networks.values()) network.dispose();
  }
}

/** Each map divided by its scale, then the pixel-wise maximum over the networks. */
function combineMaps(
  maps: ReadonlyMap<ObjectiveKind, Float32Array>,
  scales: Calibration["scales"],
): Float32Array {
  let combined: Float32Array | null = null;
  for (const [objective, map] of maps) {
    const scale = scales[objective] ?? 1;
    if (combined === null) combined = Float32Array.from(map, (v) => v / scale);
    else {
      for (let i = 0; i < map.length; i++) combined[i] = Math.max(combined[i], map[i] / scale);
    }
  }
  return combined!;
}

function meanOf(values: Float32Array): number {
  return values.reduce((total, v) => total + v, 0) / values.length;
}

/**
 * The settings of a run: the preset's, overridden by the given ones, checked.
 *
 * @throws OptionError naming the flag when a value is out of range
 */
export function resolveInpaintSettings(
  options: Partial<InpaintSettings> & { preset?: InpaintPreset },
): InpaintSettings {
  const settings = presetSettings("inpaint", INPAINT_PRESETS, inpaintOptions, options);
  for (const name of ["textureSize", "objectSize"] as const) {
    if (settings[name] % 8 !== 0) {
      const flag = name === "textureSize" ? "--texture-size" : "--object-size";
      throw new OptionError(
        `inpaint: ${flag} expects a multiple of 8 (the network pools three times), got ${
          settings[name]
        }`,
      );
    }
  }
  if (settings.smoothSize % 2 === 0) {
    throw new OptionError(
      `inpaint: --smooth-size expects an odd integer (the filter is centred), got ${settings.smoothSize}`,
    );
  }
  return settings;
}

/**
 * The corruption settings for an input side: the generator's defaults are meant for a 256-pixel
 * image, so its pixel-valued settings scale with the side (a 64-pixel input gets a quarter of the
 * mask's softness and of the displacement), and the category's augmentation is applied if asked
 * and a category is given.
 */
export function corruptionFor(
  settings: InpaintSettings,
  category: MvtecCategory | null,
  side: number,
): CorruptionOptions {
  const scale = side / 256;
  return {
    kind: settings.corruption,
    brightness: settings.brightness,
    maskSmoothness: 2 * scale,
    elasticAmplitude: 4 * scale,
    elasticSmoothness: Math.max(0.5, 4 * scale),
    ...(settings.augment && category ? augmentationFor(category.info) : {}),
  };
}

/** One training batch: X̂, X and M of `count` images, NCHW. */
interface InpaintBatch {
  readonly count: number;
  readonly corrupted: Float32Array;
  readonly clean: Float32Array;
  readonly mask: Float32Array;
}

/** Donor images of the `swap` corruption: other training images, at most this many per epoch. */
const SWAP_POOL_SIZE = 8;

/**
 * The share of the (doubled) training image that the progressive scheme crops in an epoch: from
 * one half in epoch 1 to the whole image at the middle of the run and after.
 */
export function progressiveShare(epoch: number, epochs: number): number {
  const growthEpochs = Math.max(1, Math.floor(epochs / 2));
  return 0.5 + 0.5 * Math.min(1, (epoch - 1) / growthEpochs);
}

/** The training images of an epoch at the input side (cropped as the progressive scheme says). */
async function trainingImage(
  category: MvtecCategory,
  sample: Sample,
  settings: InpaintSettings,
  side: number,
  share: number,
  random: Random,
): Promise<FloatImage> {
  if (!settings.progressive) {
    return category.loadImage(sample, { channels: settings.channels, width: side, height: side });
  }
  const loadSide = 2 * side;
  const whole = await category.loadImage(sample, {
    channels: settings.channels,
    width: loadSide,
    height: loadSide,
  });
  const crop = Math.round(share * loadSide);
  const x = random.int(0, loadSide - crop + 1);
  const y = random.int(0, loadSide - crop + 1);
  const plane = crop * crop;
  const data = new Float32Array(settings.channels * plane);
  for (let c = 0; c < settings.channels; c++) {
    for (let row = 0; row < crop; row++) {
      const from = (c * loadSide + y + row) * loadSide + x;
      data.set(whole.data.subarray(from, from + crop), c * plane + row * crop);
    }
  }
  return resize({ width: crop, height: crop, channels: settings.channels, data }, side, side);
}

async function* epochBatches(
  category: MvtecCategory,
  settings: InpaintSettings,
  side: number,
  seed: number,
  epoch: number,
): AsyncGenerator<InpaintBatch> {
  const train = category.train;
  const corruption = corruptionFor(settings, category, side);
  const share = settings.progressive ? progressiveShare(epoch, settings.epochs) : 1;
  let pool: FloatImage[] | undefined;
  if (settings.corruption === "swap") {
    const poolRandom = new Random(hashSeed(seed, epoch, "swap pool"));
    pool = [];
    for (let i = 0; i < Math.min(SWAP_POOL_SIZE, train.length); i++) {
      const sample = train[poolRandom.int(0, train.length)];
      pool.push(await trainingImage(category, sample, settings, side, share, poolRandom));
    }
  }
  const imageSize = settings.channels * side * side;
  for (let start = 0; start < settings.images; start += settings.batch) {
    const count = Math.min(settings.batch, settings.images - start);
    const batch: InpaintBatch = {
      count,
      corrupted: new Float32Array(count * imageSize),
      clean: new Float32Array(count * imageSize),
      mask: new Float32Array(count * side * side),
    };
    for (let i = 0; i < count; i++) {
      const imageSeed = hashSeed(seed, epoch, start + i);
      const random = new Random(imageSeed);
      const sample = train[random.int(0, train.length)];
      const image = await trainingImage(category, sample, settings, side, share, random);
      const made = corrupt(image, imageSeed, { ...corruption, pool });
      batch.corrupted.set(made.corrupted.data, i * imageSize);
      batch.clean.set(made.clean.data, i * imageSize);
      batch.mask.set(made.mask.data, i * side * side);
    }
    yield batch;
  }
}

/** Trains the inpainting autoencoder on a category's training split. */
export async function trainInpaint(
  category: MvtecCategory,
  options: InpaintTrainOptions = {},
): Promise<TrainResult<InpaintDetector>> {
  await init();
  const settings = resolveInpaintSettings(options);
  const kind = category.info.kind;
  const side = inputSideOf(kind, settings);
  const seed = options.seed ?? 0;
  if (category.train.length === 0) {
    throw new InputError(`${category.path}: no training images to train inpaint on`);
  }
  const networks = withSeed(seed, () => buildNetworks(settings, side));
  const optimizers = new Map(
    [...networks].map(([objective, network]) => [
      objective,
      new Adam(network.parameters(), { lr: settings.lr }),
    ]),
  );
  const disposeNetworks = () => networks.forEach((network) => network.dispose());
  const shape = (channels: number, count: number) => [count, channels, side, side];
  try {
    const result = await fit<InpaintBatch>({
      modules: Object.fromEntries(networks),
      optimizers: Object.fromEntries(optimizers),
      epochs: settings.epochs,
      stepsPerEpoch: Math.ceil(settings.images / settings.batch),
      batches: (epoch) => epochBatches(category, settings, side, seed, epoch),
      step: (batch) => {
        const corrupted = tensor(batch.corrupted, shape(settings.channels, batch.count));
        const clean = tensor(batch.clean, shape(settings.channels, batch.count));
        const mask = tensor(batch.mask, shape(1, batch.count));
        const loss = tidy(() => {
          const losses = [...networks].map(([objective, network]) => {
            const optimizer = optimizers.get(objective)!;
            optimizer.zeroGrad();
            const reconstruction = network.train().forward(corrupted);
            const value = inpaintingObjective(
              objective,
              { reconstruction, clean, corrupted, mask },
              settings.lambda,
            );
            value.backward();
            optimizer.step();
            return value;
          });
          return losses.length === 1 ? losses[0] : noGrad(() => op.add(losses[0], losses[1]));
        });
        [corrupted, clean, mask].forEach((t) => t.dispose());
        return loss;
      },
      samplesIn: (batch) => batch.count,
      checkpointDir: options.checkpointDir,
      resume: options.resume,
      // What the weights' shapes and meaning depend on; epochs and the like may change on resume.
      config: {
        method: "inpaint",
        kind,
        inputSize: side,
        channels: settings.channels,
        width: settings.width,
        objective: settings.objective,
      },
      signal: options.signal,
      onProgress: options.onProgress,
      log: options.log,
    });
    if (result.stopped) {
      disposeNetworks();
      return { detector: null, stopped: true, losses: result.losses };
    }
    const detector = new InpaintDetector(
      networks,
      { kind, settings, calibration: { scales: {}, avgmapMax: null } },
      null,
    );
    // Loaded at the input side, which is where the maps are computed.
    const validation = [];
    for (const sample of category.validation) {
      validation.push(
        await category.loadImage(sample, {
          channels: settings.channels,
          width: side,
          height: side,
        }),
      );
    }
    if (validation.length === 0 && (networks.size > 1 || settings.avgmapExponent > 0)) {
      options.log?.(
        "inpaint: no validation images, so the maps are not calibrated (ensemble scales 1, no avgmap)",
      );
    }
    await detector.calibrate(validation);
    if (settings.mapSearch) {
      // `swap` takes its patches from other images: here, the other validation images.
      const corruption = { ...corruptionFor(settings, null, side), pool: validation };
      await chooseMapSettings(detector, validation, options, corruption);
    }
    return { detector, stopped: false, losses: result.losses };
  } catch (error) {
    disposeNetworks();
    throw error;
  } finally {
    optimizers.forEach((optimizer) => optimizer.dispose());
  }
}

/** What the map search tries: textures without avgmap, which is for objects. */
function searchGrid(kind: "texture" | "object"): MapSearchGrid {
  return kind === "texture" ? { ...DEFAULT_MAP_GRID, avgmapExponents: [0] } : DEFAULT_MAP_GRID;
}

/**
 * Runs the map search on the validation images, takes its best candidate into the detector's
 * settings and calibrates again, so that avgmap is the mean of maps smoothed as chosen.
 */
async function chooseMapSettings(
  detector: InpaintDetector,
  validation: readonly FloatImage[],
  options: InpaintTrainOptions,
  corruption: CorruptionOptions,
): Promise<void> {
  const { settings, kind, calibration } = detector.config;
  let scored;
  try {
    scored = await searchMapSettings(detector, validation, {
      useAvgmap: kind === "object",
      grid: searchGrid(kind),
      copies: MAP_SEARCH_COPIES,
      seed: options.seed ?? 0,
      corruption,
    });
  } catch (error) {
    if (!(error instanceof MapSearchError)) throw error;
    options.log?.(`inpaint: ${error.message}, so the map settings stay as given`);
    return;
  }
  const best = scored[0];
  settings.smoothSize = best.smoothSize;
  settings.smoothPasses = best.smoothPasses;
  settings.avgmapExponent = best.avgmapExponent;
  await detector.calibrate(validation);
  calibration.mapSearch = { ...best, corruptedImages: validation.length * MAP_SEARCH_COPIES };
  options.log?.(
    `inpaint: the map search chose --smooth-size ${best.smoothSize} --smooth-passes ` +
      `${best.smoothPasses}${
        kind === "object" ? ` --avgmap-exponent ${best.avgmapExponent}` : ""
      } ` +
      `(pixel ROC AUC ${best.pixelRocAuc.toFixed(3)} on the corruption of ` +
      `${validation.length * MAP_SEARCH_COPIES} validation images, best of ${scored.length})`,
  );
}

/** Loads a detector saved by {@link InpaintDetector.save}. */
export async function loadInpaint(directory: string): Promise<InpaintDetector> {
  await init();
  const configPath = join(directory, CONFIG_FILE);
  const config = await readJsonFile<InpaintConfig>(
    configPath,
    (reason) => new InputError(`${configPath}: not an inpaint run (${reason})`),
  );
  let settings: InpaintSettings;
  try {
    settings = resolveInpaintSettings(config.settings ?? {});
    if (config.kind !== "texture" && config.kind !== "object") {
      throw new InputError(
        `kind must be "texture" or "object", got ${JSON.stringify(config.kind)}`,
      );
    }
  } catch (error) {
    throw new InputError(`${configPath}: not an inpaint run (${(error as Error).message})`);
  }
  const side = inputSideOf(config.kind, settings);
  const modelPath = join(directory, MODEL_FILE);
  const { tensors } = await loadSafetensors(modelPath);
  const networks = buildNetworks(settings, side);
  try {
    loadTensorsInto(networkTensors(networks), tensors, modelPath);
    const stored = tensors.get(AVGMAP_TENSOR);
    if (stored && stored.data.length !== side * side) {
      throw new InputError(
        `${modelPath}: avgmap has ${stored.data.length} values, expected ${side}²`,
      );
    }
    const calibration: Calibration = {
      scales: config.calibration?.scales ?? {},
      avgmapMax: config.calibration?.avgmapMax ?? null,
    };
    return new InpaintDetector(
      networks,
      { kind: config.kind, settings, calibration },
      stored ? Float32Array.from(stored.data) : null,
    );
  } catch (error) {
    networks.forEach((network) => network.dispose());
    throw error;
  }
}

const inpaintOptions = {
  width: {
    type: "number",
    min: 0,
    minExclusive: true,
    max: 4,
    help: "multiplier of the paper's channel counts (1: Table 1)",
  },
  textureSize: {
    type: "integer",
    min: 32,
    help: "textures: side of the network's input, a multiple of 8 (the paper: 512)",
  },
  objectSize: {
    type: "integer",
    min: 32,
    help: "objects: side of the network's input, a multiple of 8 (the paper: 256 to 512)",
  },
  channels: { type: "choice", choices: [1, 3], help: "grayscale or colour" },
  epochs: { type: "integer", min: 1, help: "epochs" },
  batch: { type: "integer", min: 1, help: "images per optimisation step" },
  images: { type: "integer", min: 1, help: "corrupted training images per epoch" },
  lr: { type: "number", min: 0, minExclusive: true, help: "Adam learning rate (the paper: 1e-4)" },
  objective: {
    type: "choice",
    choices: ["filtering", "amplifying", "ensemble"],
    help: "objective (1), objective (4), or both networks with the maximum of their maps",
  },
  lambda: { type: "number", min: 0, help: "weight λ of the corrupted part (the paper: 0.5)" },
  corruption: {
    type: "choice",
    choices: INPAINT_CORRUPTIONS,
    help: "what the corruption blends in: the image elastically deformed (the paper), zeros, " +
      "another training image, or ellipses of procedural noise",
  },
  brightness: {
    type: "number",
    min: 0,
    max: 0.99,
    help: "largest relative brightness change of the inserted content",
  },
  augment: {
    type: "boolean",
    help: "rotations by 90° and flips, where the category allows them",
  },
  progressive: {
    type: "boolean",
    help: "the progressive scheme: training crops grow from half the image to all of it",
  },
  smoothSize: { type: "integer", min: 1, help: "side k of the map's averaging filter (odd)" },
  smoothPasses: { type: "integer", min: 0, help: "times n the averaging filter is applied" },
  avgmapExponent: {
    type: "number",
    min: 0,
    help: "objects: exponent t of (1 − avgmap)^t over the validation images' mean map (0: off)",
  },
  ssim: { type: "boolean", help: "Diff = 1 − SSIM instead of the squared residual" },
  mapSearch: {
    type: "boolean",
    help: "after training, choose --smooth-size, --smooth-passes and (objects) " +
      "--avgmap-exponent by how well the maps find the training corruption on the validation " +
      "images (false: use them as given)",
  },
} as const satisfies OptionSpecs;

/** The `inpaint` method. */
export const inpaint: MethodDefinition = defineMethod({
  name: "inpaint",
  description: "self-supervised inpainting autoencoder with stacked dilated convolutions; " +
    "map = smoothed residual (Bauer et al. 2022)",
  appliesTo: "all",
  options: inpaintOptions,
  presets: INPAINT_PRESETS,
  defaultPreset: { software: "quick", gpu: "paper" },
  checkpoints: true,
  train: (category, options) =>
    trainInpaint(category, {
      ...options,
      preset: options.preset as InpaintPreset | undefined,
    }),
  load: loadInpaint,
});
