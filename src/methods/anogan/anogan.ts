/**
 * AnoGAN (Schlegl et al., IPMI 2017) as the MVTec AD paper evaluates it (section 4.1.1): a DCGAN
 * trained on augmented anomaly-free images, and at test time a search for the latent vector whose
 * generated image best explains the input. The anomaly map is the per-pixel squared residual
 * between the input and the image generated from the latent found.
 *
 * The search minimises (1 − λ)·residual + λ·discrimination, the discrimination loss being the
 * feature-matching distance at the discriminator's last hidden layer, with Adam on the latents
 * only (the networks are frozen), for the latents of many images or patches at once.
 *
 * Objects are zoomed to the network's size (128×128 in the paper). Textures are zoomed (512×512),
 * searched on patches of the network's size at `patchStride` (128: no overlap, as the paper does
 * because the search is slow; smaller strides average the overlapping maps). Maps are brought
 * back to each image's own size.
 *
 * Training health: both losses go to the run's loss curve; at each epoch's end the generator's
 * samples from a fixed batch of latents are written as a grid (`samples/epoch_NNN.png`) and their
 * diversity is compared with that of real images, with a warning in the log when it collapses.
 */

import { join } from "node:path";
import {
  type Channels,
  convertChannels,
  createImage,
  type FloatImage,
  resize,
  writePng,
} from "../../data/image.ts";
import type { MvtecCategory } from "../../data/mvtec.ts";
import {
  augment,
  augmentOptionsFor,
  type Batch,
  batches,
  categorySource,
  type ImageSource,
} from "../../data/augment.ts";
import { init, keep, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import { withSeed } from "../../tensor/ops/random.ts";
import * as op from "../../tensor/ops.ts";
import { Adam } from "../../nn/optim.ts";
import { loadModule, saveModule } from "../../nn/checkpoint.ts";
import { fit } from "../../nn/fit.ts";
import { readJsonFile, writeJsonAtomic } from "../../util/fs.ts";
import { InputError } from "../../util/errors.ts";
import { patchPositions } from "../ae/ae.ts";
import { Dcgan, type GanShape, withFrozen } from "./model.ts";
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

/** Training presets: `paper` is the paper's setting, `quick` a useful model in minutes on a CPU. */
export type AnoganPreset = "quick" | "paper";

/** Everything that shapes an AnoGAN run; missing values come from the preset. */
export interface AnoganSettings {
  /** Epochs over the augmented image set. */
  epochs: number;
  /** Images per optimisation step (at least 2, for batch norm). */
  batch: number;
  /** Augmented images (objects) or patches (textures) per epoch. */
  samples: number;
  /** Adam learning rate of the generator. */
  lr: number;
  /**
   * Adam learning rate of the discriminator. The paper's 2e-4 for both networks takes thousands
   * of steps; a faster generator and a slower discriminator keep the discriminator from winning
   * in the few hundred steps of a quick run.
   */
  discriminatorLr: number;
  /** Adam β1 of both networks (0.5 for DCGANs). */
  beta1: number;
  /** Image channels: 1 (grayscale) or 3. */
  channels: Channels;
  /** Latent dimension. */
  latent: number;
  /** Channels of the generator's last and the discriminator's first hidden layer (DCGAN's 64). */
  width: number;
  /** Side of the network's images: objects are zoomed to it, textures cut into patches of it. */
  imageSize: number;
  /** Textures: side of the zoomed image. */
  textureZoom: number;
  /** Textures: stride of the patches searched at test time. */
  patchStride: number;
  /** Adam steps of the latent search. */
  searchSteps: number;
  /** Adam learning rate of the latent search. */
  searchLr: number;
  /** Weight λ of the discrimination loss in the search (1 − λ for the residual). */
  lambda: number;
  /** Images or patches whose latents are searched together. */
  searchBatch: number;
}

/** The presets. */
export const ANOGAN_PRESETS: Readonly<Record<AnoganPreset, AnoganSettings>> = {
  quick: {
    // 12 epochs reached 0.72–0.84 pixel ROC AUC on the synthetic bottle over seeds 1–3 (lavapipe),
    // too close to the test's 0.80; 20 reach 0.90, 0.76 and 0.94.
    epochs: 20,
    batch: 16,
    samples: 320,
    lr: 1e-3,
    discriminatorLr: 2e-4,
    beta1: 0.5,
    channels: 1,
    latent: 64,
    width: 16,
    imageSize: 32,
    textureZoom: 128,
    patchStride: 32,
    searchSteps: 200,
    searchLr: 0.02,
    lambda: 0.1,
    searchBatch: 32,
  },
  paper: {
    epochs: 50,
    batch: 64,
    samples: 10000,
    lr: 2e-4,
    discriminatorLr: 2e-4,
    beta1: 0.5,
    channels: 1,
    latent: 64,
    width: 64,
    imageSize: 128,
    textureZoom: 512,
    patchStride: 128,
    searchSteps: 300,
    searchLr: 0.02,
    lambda: 0.1,
    searchBatch: 64,
  },
};

/** Options of {@link trainAnogan}. */
export interface AnoganTrainOptions extends Omit<TrainOptions, "preset">, Partial<AnoganSettings> {
  /** Preset the unset settings come from (default "quick"). */
  preset?: AnoganPreset;
}

/** What a saved AnoGAN needs to be rebuilt. */
export interface AnoganConfig {
  kind: "texture" | "object";
  settings: AnoganSettings;
}

/** The file of the generator's losses beside the checkpoint, so that `resume` keeps its curve. */
const GENERATOR_LOSSES_FILE = "anogan_generator_losses.json";
/** Samples in the per-epoch grid and in the diversity measure. */
const SAMPLE_COUNT = 16;
/**
 * Below this ratio of the samples' diversity to the real images', the generator is taken to have
 * collapsed: its samples are then far more alike than any two training images.
 */
export const COLLAPSE_RATIO = 0.25;

/** Images in [0, 1] → the generator's range [−1, 1]. */
function toNetworkRange(data: Float32Array, shape: number[]): Tensor {
  return tidy(() => op.affine(tensor(data, shape), 2, -1));
}

/**
 * The search loss of latents `z` for inputs `x` (both batches of n): the sum over the images of
 * (1 − λ)·mean squared residual + λ·mean squared distance of the discriminator's last hidden
 * features (`targetFeatures`, those of `x`). Each image's term depends on its own latent only, so
 * a batch searches each as if alone.
 */
export function searchLoss(
  model: Dcgan,
  x: Tensor,
  z: Tensor,
  targetFeatures: Tensor,
  lambda: number,
): Tensor {
  const generated = model.generator.forward(z);
  const residual = op.mean(op.square(op.sub(x, generated)));
  const features = model.discriminator.features(generated);
  const discrimination = op.mean(op.square(op.sub(features, targetFeatures)));
  const combined = op.add(op.mulScalar(residual, 1 - lambda), op.mulScalar(discrimination, lambda));
  return op.mulScalar(combined, x.shape[0]);
}

/** Settings of {@link latentSearch}. */
export interface LatentSearchOptions {
  /** Adam steps. */
  steps: number;
  /** Adam learning rate. */
  lr: number;
  /** Weight of the discrimination loss. */
  lambda: number;
  /** Seed of the initial latents. */
  seed: number;
}

/** What {@link latentSearch} found. */
export interface LatentSearchResult {
  /** Per-pixel squared residual, averaged over channels: [n, size, size] in row-major order. */
  maps: Float32Array;
  /** The search loss at the initial latents. */
  initialLoss: number;
  /** The search loss at the latents found. */
  finalLoss: number;
}

/**
 * Searches the latents of a batch of inputs [n, c, s, s] (in [−1, 1]) at once: every step is one
 * forward and backward pass of the whole batch, recorded without a readback, and only the latents
 * move (the networks are frozen, in evaluation mode).
 */
export async function latentSearch(
  model: Dcgan,
  inputs: Tensor,
  options: LatentSearchOptions,
): Promise<LatentSearchResult> {
  model.eval();
  const count = inputs.shape[0];
  const z = keep(withSeed(options.seed, () => op.randn([count, model.shape.latent, 1, 1])));
  z.requiresGrad = true;
  const adam = new Adam([z], { lr: options.lr });
  const target = noGrad(() => model.discriminator.features(inputs));
  const lossAt = () => noGrad(() => searchLoss(model, inputs, z, target, options.lambda));
  try {
    const initial = lossAt();
    withFrozen(model, () => {
      for (let step = 0; step < options.steps; step++) {
        tidy(() => {
          adam.zeroGrad();
          searchLoss(model, inputs, z, target, options.lambda).backward();
          adam.step();
        });
      }
    });
    const [final, maps] = noGrad(() =>
      tidy(() => {
        const residual = op.square(op.sub(inputs, model.generator.forward(z)));
        return [lossAt(), op.mean(residual, [1])];
      })
    );
    const [initialValue, finalValue, mapValues] = await toArrays([initial, final, maps]);
    for (const t of [initial, final, maps]) t.dispose();
    return { maps: mapValues, initialLoss: initialValue[0], finalLoss: finalValue[0] };
  } finally {
    adam.dispose();
    z.dispose();
    target.dispose();
  }
}

/** A trained AnoGAN detector. */
export class AnoganDetector implements AnomalyDetector {
  /** "anogan". */
  readonly method = "anogan";
  /** Channels the networks read. */
  readonly channels: Channels;

  /** Wraps the networks and their configuration. */
  constructor(readonly model: Dcgan, readonly config: AnoganConfig) {
    this.channels = config.settings.channels;
  }

  /** The anomaly map of an image at its own size. */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    const [map] = await this.anomalyMaps([image]);
    return map;
  }

  /**
   * The anomaly maps of several images, each at its own size: the latents of all their network
   * inputs (one per object, the patches of each texture) are searched `searchBatch` at a time.
   */
  async anomalyMaps(images: readonly FloatImage[]): Promise<Float32Array[]> {
    await init();
    const { settings, kind } = this.config;
    const size = settings.imageSize;
    const pixels = size * size;
    const working = kind === "texture" ? settings.textureZoom : size;
    const corners = kind === "texture"
      ? patchPositions(working, size, settings.patchStride).flatMap((y) =>
        patchPositions(working, size, settings.patchStride).map((x) => [y, x] as const)
      )
      : [[0, 0] as const];
    const zoomed = images.map((image) =>
      resize(convertChannels(image, this.channels), working, working)
    );
    const inputs = zoomed.flatMap((image, owner) =>
      corners.map(([y, x]) => ({ owner, y, x, data: cropPatch(image, y, x, size) }))
    );
    const sums = zoomed.map(() => new Float32Array(working * working));
    const counts = zoomed.map(() => new Float32Array(working * working));
    for (let start = 0; start < inputs.length; start += settings.searchBatch) {
      const part = inputs.slice(start, start + settings.searchBatch);
      const data = new Float32Array(part.length * this.channels * pixels);
      part.forEach((input, i) => data.set(input.data, i * input.data.length));
      const batch = toNetworkRange(data, [part.length, this.channels, size, size]);
      try {
        const { maps } = await latentSearch(this.model, batch, {
          steps: settings.searchSteps,
          lr: settings.searchLr,
          lambda: settings.lambda,
          // Seeded by position, so the same image gets the same map in any run.
          seed: start + 1,
        });
        part.forEach(({ owner, y, x }, i) => {
          for (let row = 0; row < size; row++) {
            for (let column = 0; column < size; column++) {
              const target = (y + row) * working + x + column;
              sums[owner][target] += maps[i * pixels + row * size + column];
              counts[owner][target] += 1;
            }
          }
        });
      } finally {
        batch.dispose();
      }
    }
    return images.map((image, i) => {
      const map = sums[i].map((sum, p) => sum / counts[i][p]);
      if (image.width === working && image.height === working) return map;
      return resize(
        { width: working, height: working, channels: 1, data: map },
        image.width,
        image.height,
      )
        .data;
    });
  }

  /** Writes model.safetensors and anogan.json into `directory`. */
  async save(directory: string): Promise<void> {
    await saveModule(this.model, join(directory, "model.safetensors"), { method: this.method });
    await writeJsonAtomic(join(directory, "anogan.json"), this.config);
  }

  /** Frees the networks. */
  dispose(): void {
    this.model.dispose();
  }
}

/** The `size`×`size` patch of an image whose top-left corner is (x, y), channel-planar. */
function cropPatch(image: FloatImage, y: number, x: number, size: number): Float32Array {
  if (image.width === size && image.height === size) return image.data;
  const patch = new Float32Array(image.channels * size * size);
  for (let c = 0; c < image.channels; c++) {
    for (let row = 0; row < size; row++) {
      const from = (c * image.height + y + row) * image.width + x;
      patch.set(image.data.subarray(from, from + size), (c * size + row) * size);
    }
  }
  return patch;
}

/** The settings of a run: preset values overridden by explicit options, checked. */
export function resolveAnoganSettings(
  options: Partial<AnoganSettings> & { preset?: AnoganPreset },
): AnoganSettings {
  // Settings saved with a model are checked here too, so one rule covers flags and files.
  const settings = presetSettings("anogan", ANOGAN_PRESETS, anoganOptions, options);
  const refuse = (flag: string, expected: string, got: number): never => {
    throw new OptionError(`anogan: ${flag} expects ${expected}, got ${got}`);
  };
  if (!Number.isInteger(Math.log2(settings.imageSize))) {
    refuse("--image-size", "a power of two", settings.imageSize);
  }
  if (settings.textureZoom < settings.imageSize) {
    refuse("--texture-zoom", `at least --image-size (${settings.imageSize})`, settings.textureZoom);
  }
  if (settings.samples < settings.batch) {
    refuse("--samples", `at least --batch (${settings.batch})`, settings.samples);
  }
  return settings;
}

/** Mean root-mean-square distance over all pairs of `count` equally long vectors in `data`. */
export function meanPairwiseDistance(data: Float32Array, count: number): number {
  const length = data.length / count;
  let total = 0;
  let pairs = 0;
  for (let a = 0; a < count; a++) {
    for (let b = a + 1; b < count; b++) {
      let squared = 0;
      for (let i = 0; i < length; i++) {
        const difference = data[a * length + i] - data[b * length + i];
        squared += difference * difference;
      }
      total += Math.sqrt(squared / length);
      pairs++;
    }
  }
  return pairs === 0 ? 0 : total / pairs;
}

/** The diversity of a generator's samples, relative to that of real images. */
export interface DiversityCheck {
  /** Mean pairwise distance of the samples divided by that of the real images. */
  ratio: number;
  /** Whether the ratio is below {@link COLLAPSE_RATIO}: the generator has collapsed. */
  collapsed: boolean;
  /** The samples [count, c, s, s] in [−1, 1]. */
  samples: Float32Array;
}

/**
 * Generates from fixed latents (in evaluation mode, as the search sees the generator) and compares
 * the samples' diversity with `realDiversity`, the mean pairwise distance of real images in [−1, 1].
 */
export async function checkDiversity(
  model: Dcgan,
  fixedLatents: Tensor,
  realDiversity: number,
): Promise<DiversityCheck> {
  const wasTraining = model.training;
  model.eval();
  const generated = noGrad(() => model.generator.forward(fixedLatents));
  model.train(wasTraining);
  const [samples] = await toArrays([generated]);
  generated.dispose();
  const ratio = meanPairwiseDistance(samples, fixedLatents.shape[0]) /
    Math.max(realDiversity, 1e-8);
  return { ratio, collapsed: ratio < COLLAPSE_RATIO, samples };
}

/**
 * A square grid of `count` images [count, c, s, s] in [−1, 1], with 2-pixel gaps, in [0, 1]; each
 * sample's pixels repeated `zoom` times each way, so that small samples can be looked at.
 */
export function sampleGrid(
  samples: Float32Array,
  count: number,
  channels: Channels,
  size: number,
  zoom = 1,
): FloatImage {
  const columns = Math.ceil(Math.sqrt(count));
  const rows = Math.ceil(count / columns);
  const gap = 2;
  const cell = size * zoom;
  const width = columns * (cell + gap) - gap;
  const height = rows * (cell + gap) - gap;
  const grid = createImage(width, height, channels);
  for (let i = 0; i < count; i++) {
    const left = (i % columns) * (cell + gap);
    const top = Math.floor(i / columns) * (cell + gap);
    for (let c = 0; c < channels; c++) {
      for (let row = 0; row < cell; row++) {
        for (let column = 0; column < cell; column++) {
          const from = ((i * channels + c) * size + Math.floor(row / zoom)) * size +
            Math.floor(column / zoom);
          grid.data[(c * height + top + row) * width + left + column] = Math.min(
            1,
            Math.max(0, (samples[from] + 1) / 2),
          );
        }
      }
    }
  }
  return grid;
}

/** Samples are shown at least this many pixels wide in the grids (32-pixel samples, 3× zoom). */
const GRID_CELL_PIXELS = 96;

/** The path of an epoch's sample grid in a run folder. */
export function sampleGridPath(directory: string, epoch: number): string {
  return join(directory, "samples", `epoch_${String(epoch).padStart(3, "0")}.png`);
}

/** Reads the generator losses kept beside a checkpoint; none when the file is absent. */
async function readGeneratorLosses(directory: string): Promise<[number, number][]> {
  const path = join(directory, GENERATOR_LOSSES_FILE);
  try {
    await Deno.stat(path);
  } catch {
    return [];
  }
  const value = await readJsonFile<unknown>(
    path,
    (reason) => new InputError(`Cannot resume: ${path}: ${reason}`),
  );
  const valid = Array.isArray(value) &&
    value.every((entry) =>
      Array.isArray(entry) && entry.length === 2 && Number.isSafeInteger(entry[0]) &&
      (typeof entry[1] === "number" || entry[1] === null)
    );
  if (!valid) {
    throw new InputError(`Cannot resume: ${path} is not a list of [step, loss] pairs`);
  }
  return value as [number, number][];
}

/** Trains AnoGAN's DCGAN on a category's training split. */
export async function trainAnogan(
  category: MvtecCategory,
  options: AnoganTrainOptions,
): Promise<TrainResult<AnoganDetector>> {
  await init();
  const settings = resolveAnoganSettings(options);
  const kind = category.info.kind;
  const seed = options.seed ?? 0;
  const log = options.log ?? (() => {});
  const size = settings.imageSize;
  const shape: GanShape = {
    imageSize: size,
    channels: settings.channels,
    latent: settings.latent,
    width: settings.width,
  };
  const model = withSeed(seed, () => new Dcgan(shape));
  const generatorOptimizer = new Adam(model.generator.parameters(), {
    lr: settings.lr,
    beta1: settings.beta1,
  });
  const discriminatorOptimizer = new Adam(model.discriminator.parameters(), {
    lr: settings.discriminatorLr,
    beta1: settings.beta1,
  });
  const fixedLatents = keep(
    withSeed(seed + 7919, () => op.randn([SAMPLE_COUNT, settings.latent, 1, 1])),
  );
  const workingSide = kind === "texture" ? settings.textureZoom : size;
  const source = categorySource(category, category.train, {
    channels: settings.channels,
    width: workingSide,
    height: workingSide,
  });
  const augmentation = (count: number, streamSeed: number) =>
    augmentOptionsFor(category.info, count, streamSeed, {
      patchSize: size,
      zoomSize: kind === "texture" ? settings.textureZoom : undefined,
      outputWidth: kind === "object" ? size : undefined,
      outputHeight: kind === "object" ? size : undefined,
    });
  const stepsPerEpoch = Math.floor(settings.samples / settings.batch);
  const realDiversity = await diversityOfReal(source, augmentation(SAMPLE_COUNT, seed + 104729));
  const ones = op.ones([settings.batch]);
  const zeros = op.zeros([settings.batch]);
  const generatorLosses = new Map<number, number>();
  const pendingGeneratorLosses: [number, Tensor][] = [];
  let step = 0;
  let earlierLossesRead = false;

  const endOfEpoch = async (epoch: number) => {
    const values = await toArrays(pendingGeneratorLosses.map(([, loss]) => loss));
    pendingGeneratorLosses.forEach(([at, loss], i) => {
      generatorLosses.set(at, values[i][0]);
      loss.dispose();
    });
    pendingGeneratorLosses.length = 0;
    refreshGeneratorStatistics(model, seed * 10007 + epoch);
    const health = await checkDiversity(model, fixedLatents, realDiversity);
    log(
      `epoch ${epoch}: generator loss ${values.at(-1)?.[0].toFixed(5) ?? "n/a"}, sample ` +
        `diversity ${health.ratio.toFixed(3)} of the real images'`,
    );
    if (health.collapsed) {
      log(
        `warning: mode collapse at epoch ${epoch}: the generator's samples are ${
          health.ratio.toFixed(3)
        } as diverse as real images (below ${COLLAPSE_RATIO}); see the sample grid`,
      );
    }
    if (options.checkpointDir) {
      await writePng(
        sampleGridPath(options.checkpointDir, epoch),
        sampleGrid(
          health.samples,
          SAMPLE_COUNT,
          settings.channels,
          size,
          Math.max(1, Math.ceil(GRID_CELL_PIXELS / size)),
        ),
      );
      await writeJsonAtomic(
        join(options.checkpointDir, GENERATOR_LOSSES_FILE),
        [...generatorLosses].sort(([a], [b]) => a - b),
      );
    }
  };

  async function* epochBatches(epoch: number): AsyncGenerator<Batch> {
    step = (epoch - 1) * stepsPerEpoch;
    if (!earlierLossesRead) {
      earlierLossesRead = true;
      if (options.resume && options.checkpointDir) {
        for (const [at, loss] of await readGeneratorLosses(options.checkpointDir)) {
          // A kill between this file and the checkpoint leaves losses of an epoch to redo.
          if (at <= step) generatorLosses.set(at, loss);
        }
      }
    }
    yield* batches(
      augment(source, augmentation(settings.samples, seed * 100003 + epoch)),
      settings.batch,
      true,
    );
    // Reached only when the epoch ran to its end (a stop leaves the generator here).
    await endOfEpoch(epoch);
  }

  const trainingStep = (batch: Batch): Tensor => {
    step++;
    model.train();
    const real = toNetworkRange(batch.data, [...batch.shape]);
    const noise = withSeed(
      seed * 1000003 + step,
      () => op.randn([settings.batch, settings.latent, 1, 1]),
    );
    const discriminatorLoss = tidy(() => {
      discriminatorOptimizer.zeroGrad();
      const fake = noGrad(() => model.generator.forward(noise));
      const loss = op.add(
        op.bceWithLogits(model.discriminator.forward(real), ones),
        op.bceWithLogits(model.discriminator.forward(fake), zeros),
      );
      loss.backward();
      discriminatorOptimizer.step();
      return loss;
    });
    const generatorLoss = tidy(() =>
      withFrozen(model.discriminator, () => {
        generatorOptimizer.zeroGrad();
        const loss = op.bceWithLogits(
          model.discriminator.forward(model.generator.forward(noise)),
          ones,
        );
        loss.backward();
        generatorOptimizer.step();
        return loss;
      })
    );
    pendingGeneratorLosses.push([step, keep(generatorLoss)]);
    real.dispose();
    noise.dispose();
    return discriminatorLoss;
  };

  try {
    const result = await fit<Batch>({
      modules: { generator: model.generator, discriminator: model.discriminator },
      optimizers: { generator: generatorOptimizer, discriminator: discriminatorOptimizer },
      epochs: settings.epochs,
      stepsPerEpoch,
      batches: epochBatches,
      step: trainingStep,
      samplesIn: (batch) => batch.shape[0],
      checkpointDir: options.checkpointDir,
      resume: options.resume,
      // What the weights' shapes and meaning depend on; epochs and the like may change on resume.
      config: { method: "anogan", kind, ...shape, batch: settings.batch },
      signal: options.signal,
      onProgress: options.onProgress,
      log,
    });
    const generatorSeries = [...generatorLosses].sort(([a], [b]) => a - b);
    return {
      detector: new AnoganDetector(model, { kind, settings }),
      stopped: result.stopped,
      losses: result.losses,
      lossSeries: { discriminator: result.losses, generator: generatorSeries },
    };
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    for (const [, loss] of pendingGeneratorLosses) loss.dispose();
    for (const t of [fixedLatents, ones, zeros]) t.dispose();
    generatorOptimizer.dispose();
    discriminatorOptimizer.dispose();
  }
}

/** Batches of latents that {@link refreshGeneratorStatistics} runs through the generator. */
const STATISTICS_BATCHES = 30;
const STATISTICS_BATCH_SIZE = 64;

/**
 * Re-estimates the generator's batch-norm running statistics from its current weights. The
 * running averages lag behind weights that moved fast during the epoch, and in evaluation mode
 * (the sample grid, the latent search) stale statistics turn the generator's images into noise.
 * With momentum 0.1, 30 batches leave 0.9^30 ≈ 4% of the old statistics.
 */
function refreshGeneratorStatistics(model: Dcgan, seed: number): void {
  model.generator.train();
  noGrad(() => {
    for (let i = 0; i < STATISTICS_BATCHES; i++) {
      tidy(() => {
        const latents = withSeed(
          seed + i,
          () => op.randn([STATISTICS_BATCH_SIZE, model.shape.latent, 1, 1]),
        );
        model.generator.forward(latents);
      });
    }
  });
}

/** Mean pairwise distance of a few augmented training images, in the generator's range. */
async function diversityOfReal(
  source: ImageSource,
  options: ReturnType<typeof augmentOptionsFor>,
): Promise<number> {
  const images: FloatImage[] = [];
  for await (const image of augment(source, options)) images.push(image);
  const length = images[0].data.length;
  const data = new Float32Array(images.length * length);
  images.forEach((image, i) => {
    for (let p = 0; p < length; p++) data[i * length + p] = image.data[p] * 2 - 1;
  });
  return meanPairwiseDistance(data, images.length);
}

/** Loads a detector saved by {@link AnoganDetector.save}. */
export async function loadAnogan(directory: string): Promise<AnoganDetector> {
  await init();
  const configPath = join(directory, "anogan.json");
  const config = await readJsonFile<AnoganConfig>(
    configPath,
    (reason) => new InputError(`${configPath}: not an AnoGAN run (${reason})`),
  );
  if (
    typeof config !== "object" || config === null ||
    (config.kind !== "texture" && config.kind !== "object") ||
    typeof config.settings !== "object" || config.settings === null
  ) {
    throw new InputError(`${configPath}: not an AnoGAN run (expected "kind" and "settings")`);
  }
  let settings: AnoganSettings;
  try {
    settings = resolveAnoganSettings(config.settings);
  } catch (error) {
    throw new InputError(`${configPath}: ${(error as Error).message}`, { cause: error });
  }
  const model = new Dcgan({
    imageSize: settings.imageSize,
    channels: settings.channels,
    latent: settings.latent,
    width: settings.width,
  });
  try {
    await loadModule(model, join(directory, "model.safetensors"));
  } catch (error) {
    model.dispose();
    throw error;
  }
  return new AnoganDetector(model, { kind: config.kind, settings });
}

const anoganOptions = {
  epochs: { type: "integer", min: 1, help: "epochs over the augmented images (the paper: 50)" },
  batch: { type: "integer", min: 2, help: "images per optimisation step (≥ 2 for batch norm)" },
  samples: { type: "integer", min: 2, help: "augmented images or patches per epoch" },
  lr: {
    type: "number",
    min: 0,
    minExclusive: true,
    help: "the generator's Adam learning rate (the paper: 2e-4)",
  },
  discriminatorLr: {
    type: "number",
    min: 0,
    minExclusive: true,
    help: "the discriminator's Adam learning rate (the paper: 2e-4)",
  },
  beta1: { type: "number", min: 0, max: 0.999, help: "Adam β1 (the paper: 0.5)" },
  channels: { type: "choice", choices: [1, 3], help: "grayscale or colour" },
  latent: { type: "integer", min: 1, help: "latent dimension (the paper: 64)" },
  width: {
    type: "integer",
    min: 1,
    help: "channels of the generator's last and the discriminator's first layer (paper: 64)",
  },
  imageSize: {
    type: "integer",
    min: 8,
    max: 1024,
    help: "side of the network's images, a power of two (the paper: 128)",
  },
  textureZoom: { type: "integer", min: 8, help: "textures: side of the zoomed image (512)" },
  patchStride: {
    type: "integer",
    min: 1,
    help: "textures: stride of the searched patches (the paper: 128, no overlap)",
  },
  searchSteps: { type: "integer", min: 1, help: "latent search: Adam steps (the paper: 300)" },
  searchLr: {
    type: "number",
    min: 0,
    minExclusive: true,
    help: "latent search: Adam learning rate (the paper: 0.02)",
  },
  lambda: {
    type: "number",
    min: 0,
    max: 1,
    help: "latent search: weight of the discrimination loss (the paper: 0.1)",
  },
  searchBatch: {
    type: "integer",
    min: 1,
    help: "latent search: images or patches searched together",
  },
} as const satisfies OptionSpecs;

/** The `anogan` method. */
export const anogan: MethodDefinition = defineMethod({
  name: "anogan",
  description: "AnoGAN: a DCGAN and a latent search per image; map = squared residual " +
    "(Schlegl et al. 2017)",
  appliesTo: "all",
  options: anoganOptions,
  presets: ANOGAN_PRESETS,
  defaultPreset: { software: "quick", gpu: "paper" },
  checkpoints: true,
  train: (category, options) =>
    trainAnogan(category, { ...options, preset: options.preset as AnoganPreset | undefined }),
  load: loadAnogan,
});
