/**
 * The L2 and SSIM autoencoders of the MVTec AD paper (section 4.1.2; Bergmann et al., VISAPP 2019):
 * trained on augmented anomaly-free patches, they reconstruct an image, and the anomaly map is the
 * per-pixel squared residual (`ae-l2`) or 1 − SSIM (`ae-ssim`).
 *
 * Textures are zoomed (512×512 by default), cut into 128×128 patches at a stride of 30, and the
 * overlapping patch maps are averaged. Objects are processed whole at 256×256. Maps are brought back
 * to the image's own size.
 */

import { join } from "node:path";
import { type Channels, convertChannels, type FloatImage, resize } from "../../data/image.ts";
import type { MvtecCategory } from "../../data/mvtec.ts";
import { augment, augmentOptionsFor, batches, categorySource } from "../../data/augment.ts";
import { init, keep, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import * as op from "../../tensor/ops.ts";
import { Adam } from "../../nn/optim.ts";
import type { Sequential } from "../../nn/layers.ts";
import { loadModule, loadSafetensors, saveModule, saveSafetensors } from "../../nn/checkpoint.ts";
import { readJsonFile, writeJsonAtomic } from "../../util/fs.ts";
import { buildAutoencoder } from "./model.ts";
import type { AnomalyDetector, MethodDefinition, TrainOptions } from "../method.ts";

/** The reconstruction loss, which also names the anomaly map. */
export type AutoencoderLoss = "l2" | "ssim";

/** Training presets: `paper` is the paper's setting, `quick` a useful model in minutes on a CPU. */
export type AutoencoderPreset = "quick" | "paper";

/** Everything that shapes an autoencoder run; missing values come from the preset. */
export interface AutoencoderSettings {
  /** Epochs over the patch set. */
  epochs: number;
  /** Patches per optimisation step. */
  batch: number;
  /** Augmented patches per epoch (the paper uses 10000). */
  patches: number;
  /** Image channels: 1 (grayscale, as in the paper) or 3 (the colour extension). */
  channels: Channels;
  /** Latent dimension. */
  latent: number;
  /** Adam learning rate. */
  lr: number;
  /** Adam weight decay (added to the gradient, as Keras and PyTorch's Adam do). */
  weightDecay: number;
  /** Textures: side of the zoomed image. */
  textureZoom: number;
  /** Textures: stride between reconstructed patches at inference. */
  patchStride: number;
  /** Objects: side of the whole image fed to the network. */
  objectSize: number;
}

/** The presets. */
export const AUTOENCODER_PRESETS: Readonly<Record<AutoencoderPreset, AutoencoderSettings>> = {
  paper: {
    epochs: 200,
    batch: 128,
    patches: 10000,
    channels: 1,
    latent: 100,
    lr: 2e-4,
    weightDecay: 1e-5,
    textureZoom: 512,
    patchStride: 30,
    objectSize: 256,
  },
  quick: {
    epochs: 6,
    batch: 8,
    patches: 160,
    channels: 1,
    latent: 100,
    lr: 1e-3,
    weightDecay: 1e-5,
    textureZoom: 256,
    patchStride: 32,
    objectSize: 256,
  },
};

/** Options of {@link trainAutoencoder}. */
export interface AutoencoderTrainOptions extends TrainOptions, Partial<AutoencoderSettings> {
  /** ae-l2 or ae-ssim (default "ssim"). */
  loss?: AutoencoderLoss;
  /** Preset the unset settings come from (default "quick"). */
  preset?: AutoencoderPreset;
}

const patchSize = 128;

/** What a saved autoencoder needs to be rebuilt. */
interface AutoencoderConfig {
  loss: AutoencoderLoss;
  kind: "texture" | "object";
  settings: AutoencoderSettings;
}

/** A trained autoencoder detector. */
export class AutoencoderDetector implements AnomalyDetector {
  /** "ae-l2" or "ae-ssim". */
  readonly method: string;
  /** Channels the network reads. */
  readonly channels: Channels;
  /** (step, loss) pairs of the training run that made it, for the loss curve. */
  losses: [number, number][] = [];

  /** Wraps a model and its configuration. */
  constructor(readonly model: Sequential, readonly config: AutoencoderConfig) {
    this.method = `ae-${config.loss}`;
    this.channels = config.settings.channels;
  }

  /** Network input side: 128 for texture patches, the object size for whole objects. */
  get inputSize(): number {
    return this.config.kind === "texture" ? patchSize : this.config.settings.objectSize;
  }

  /** Per-pixel anomaly maps of a batch of network inputs [n, c, s, s] → [n, 1, s, s]. */
  private mapsOf(batch: Tensor): Tensor {
    return tidy(() => {
      const reconstruction = this.model.forward(batch);
      const perChannel = this.config.loss === "l2"
        ? op.square(op.sub(reconstruction, batch))
        : op.affine(op.ssim(reconstruction, batch).map, -1, 1);
      return op.mean(perChannel, [1], true);
    });
  }

  /** The anomaly map of an image at its own size. */
  async anomalyMap(image: FloatImage): Promise<Float32Array> {
    await init();
    const input = convertChannels(image, this.channels);
    const map = this.config.kind === "texture"
      ? await this.textureMap(input)
      : await this.objectMap(input);
    return map;
  }

  private async objectMap(image: FloatImage): Promise<Float32Array> {
    const size = this.inputSize;
    const scaled = resize(image, size, size);
    this.model.eval();
    const maps = noGrad(() =>
      tidy(() => keep(this.mapsOf(tensor(scaled.data, [1, this.channels, size, size]))))
    );
    const [values] = await toArrays([maps]);
    maps.dispose();
    return resizeMap(values, size, size, image.width, image.height);
  }

  private async textureMap(image: FloatImage): Promise<Float32Array> {
    const zoom = this.config.settings.textureZoom;
    const stride = this.config.settings.patchStride;
    const zoomed = resize(image, zoom, zoom);
    const positions = patchPositions(zoom, patchSize, stride);
    const sum = new Float32Array(zoom * zoom);
    const count = new Float32Array(zoom * zoom);
    this.model.eval();
    const whole = tensor(zoomed.data, [1, this.channels, zoom, zoom]);
    const corners = positions.flatMap((y) => positions.map((x) => [y, x] as const));
    // Patches go through the network in chunks, so memory stays bounded for any zoom.
    const chunk = 32;
    for (let start = 0; start < corners.length; start += chunk) {
      const part = corners.slice(start, start + chunk);
      const maps = noGrad(() =>
        tidy(() => {
          const patches = op.concat(
            part.map(([y, x]) =>
              op.slice(whole, [0, 0, y, x], [1, this.channels, patchSize, patchSize])
            ),
            0,
          );
          return keep(this.mapsOf(patches));
        })
      );
      const [values] = await toArrays([maps]);
      maps.dispose();
      part.forEach(([y, x], p) => {
        const offset = p * patchSize * patchSize;
        for (let row = 0; row < patchSize; row++) {
          for (let column = 0; column < patchSize; column++) {
            const target = (y + row) * zoom + x + column;
            sum[target] += values[offset + row * patchSize + column];
            count[target] += 1;
          }
        }
      });
    }
    whole.dispose();
    for (let i = 0; i < sum.length; i++) sum[i] /= count[i];
    return resizeMap(sum, zoom, zoom, image.width, image.height);
  }

  /** Writes model.safetensors and autoencoder.json into `directory`. */
  async save(directory: string): Promise<void> {
    await saveModule(this.model, join(directory, "model.safetensors"), { method: this.method });
    await writeJsonAtomic(join(directory, "autoencoder.json"), this.config);
  }

  /** Frees the network. */
  dispose(): void {
    this.model.dispose();
  }
}

/** Top-left corners of patches covering [0, size) with the given stride, the last flush right. */
export function patchPositions(size: number, patch: number, stride: number): number[] {
  if (patch > size) throw new Error(`A ${patch}-pixel patch does not fit a ${size}-pixel image`);
  const positions: number[] = [];
  for (let p = 0; p + patch <= size; p += stride) positions.push(p);
  if (positions[positions.length - 1] !== size - patch) positions.push(size - patch);
  return positions;
}

/** Bilinear resize of a one-channel map. */
function resizeMap(
  map: Float32Array,
  width: number,
  height: number,
  toWidth: number,
  toHeight: number,
): Float32Array {
  if (width === toWidth && height === toHeight) return map;
  return resize({ width, height, channels: 1, data: map }, toWidth, toHeight).data;
}

/** The settings of a run: preset values overridden by explicit options. */
export function resolveSettings(
  options: Partial<AutoencoderSettings> & { preset?: AutoencoderPreset },
): AutoencoderSettings {
  const preset = AUTOENCODER_PRESETS[options.preset ?? "quick"];
  if (!preset) throw new Error(`Unknown preset "${options.preset}" (expected quick or paper)`);
  const settings = { ...preset };
  for (const key of Object.keys(preset) as (keyof AutoencoderSettings)[]) {
    const value = options[key];
    if (value !== undefined) (settings as Record<string, number>)[key] = value;
  }
  for (
    const key of [
      "epochs",
      "batch",
      "patches",
      "latent",
      "textureZoom",
      "patchStride",
      "objectSize",
    ] as const
  ) {
    if (!Number.isInteger(settings[key]) || settings[key] <= 0) {
      throw new Error(`${key} must be a positive integer, got ${settings[key]}`);
    }
  }
  if (settings.channels !== 1 && settings.channels !== 3) {
    throw new Error(`channels must be 1 or 3, got ${settings.channels}`);
  }
  if (settings.textureZoom < patchSize) {
    throw new Error(`textureZoom must be at least ${patchSize}`);
  }
  return settings;
}

interface TrainingState {
  epoch: number;
  step: number;
  losses: [number, number][];
}

/** Trains an autoencoder on a category's training split. */
export async function trainAutoencoder(
  category: MvtecCategory,
  options: AutoencoderTrainOptions,
): Promise<AutoencoderDetector> {
  await init();
  const settings = resolveSettings(options);
  const kind = category.info.kind;
  const lossName = options.loss ?? "ssim";
  const config: AutoencoderConfig = { loss: lossName, kind, settings };
  const seed = options.seed ?? 0;
  op.manualSeed(seed);
  const inputSize = kind === "texture" ? patchSize : settings.objectSize;
  const model = buildAutoencoder({
    inputSize,
    channels: settings.channels,
    latent: settings.latent,
  });
  const optimizer = new Adam(model.parameters(), {
    lr: settings.lr,
    weightDecay: settings.weightDecay,
  });
  const log = options.log ?? (() => {});
  let state: TrainingState = { epoch: 0, step: 0, losses: [] };
  if (options.resume) {
    if (!options.checkpointDir) throw new Error("resume needs checkpointDir");
    state = await restoreCheckpoint(options.checkpointDir, model, optimizer);
    log(`resumed after epoch ${state.epoch} (step ${state.step})`);
  }
  const stepsPerEpoch = Math.ceil(settings.patches / settings.batch);
  const totalSteps = stepsPerEpoch * settings.epochs;
  // Loaded at the working size, so the category's cache keeps the resized images across epochs
  // instead of decoding and shrinking the originals again for every epoch's stream.
  const workingSide = kind === "texture" ? settings.textureZoom : settings.objectSize;
  const source = categorySource(category, category.train, {
    channels: settings.channels,
    width: workingSide,
    height: workingSide,
  });
  const started = performance.now();
  let samplesSeen = 0;
  let lastReport = 0;
  for (let epoch = state.epoch + 1; epoch <= settings.epochs; epoch++) {
    const augmentation = augmentOptionsFor(category.info, settings.patches, seed * 100003 + epoch, {
      patchSize,
      zoomSize: kind === "texture" ? settings.textureZoom : undefined,
      outputWidth: kind === "object" ? settings.objectSize : undefined,
      outputHeight: kind === "object" ? settings.objectSize : undefined,
    });
    const pendingLosses: [number, Tensor][] = [];
    for await (const batch of batches(augment(source, augmentation), settings.batch)) {
      if (options.signal?.aborted) break;
      const images = tensor(batch.data, [...batch.shape]);
      const loss = tidy(() => {
        optimizer.zeroGrad();
        const reconstruction = model.train().forward(images);
        const value = lossName === "l2"
          ? op.mse(reconstruction, images)
          : op.affine(op.ssim(reconstruction, images).mean, -1, 1);
        value.backward();
        optimizer.step();
        return value;
      });
      images.dispose();
      state.step++;
      samplesSeen += batch.shape[0];
      pendingLosses.push([state.step, loss]);
      // Loss values come back rarely: a readback stalls the GPU pipeline.
      const now = performance.now();
      if (now - lastReport > 2000 || state.step === totalSteps) {
        lastReport = now;
        const values = await toArrays(pendingLosses.map(([, t]) => t));
        pendingLosses.forEach(([step, t], i) => {
          state.losses.push([step, values[i][0]]);
          t.dispose();
        });
        pendingLosses.length = 0;
        options.onProgress?.({
          epoch,
          epochs: settings.epochs,
          step: state.step,
          totalSteps,
          loss: state.losses[state.losses.length - 1][1],
          samplesPerSecond: samplesSeen / ((now - started) / 1000),
        });
      }
    }
    const values = await toArrays(pendingLosses.map(([, t]) => t));
    pendingLosses.forEach(([step, t], i) => {
      state.losses.push([step, values[i][0]]);
      t.dispose();
    });
    if (options.signal?.aborted) {
      log(`stopped during epoch ${epoch}; the checkpoint of epoch ${state.epoch} is intact`);
      break;
    }
    state.epoch = epoch;
    const last = state.losses[state.losses.length - 1];
    log(
      `epoch ${epoch}/${settings.epochs}: step ${state.step}, loss ${
        last ? last[1].toFixed(5) : "n/a"
      }`,
    );
    if (options.checkpointDir) {
      await writeCheckpoint(options.checkpointDir, model, optimizer, state, config);
    }
  }
  optimizer.dispose();
  const detector = new AutoencoderDetector(model, config);
  detector.losses = state.losses;
  return detector;
}

async function writeCheckpoint(
  directory: string,
  model: Sequential,
  optimizer: Adam,
  state: TrainingState,
  config: AutoencoderConfig,
): Promise<void> {
  // The model goes last: a crash between the writes leaves the previous epoch's set whole
  // except for files that are already the new epoch's, and progress.json names what is complete.
  const moments = new Map<string, Tensor>();
  optimizer.state().forEach((t, i) => moments.set(`moment.${i}`, t));
  await saveSafetensors(join(directory, "checkpoint", "optimizer.safetensors"), moments, {
    step: String(optimizer.stepCount),
  });
  await saveModule(model, join(directory, "checkpoint", "model.safetensors"));
  await writeJsonAtomic(join(directory, "checkpoint", "progress.json"), { ...state, config });
}

async function restoreCheckpoint(
  directory: string,
  model: Sequential,
  optimizer: Adam,
): Promise<TrainingState> {
  const progressPath = join(directory, "checkpoint", "progress.json");
  const progress = await readJsonFile<TrainingState>(
    progressPath,
    (reason) => new Error(`Cannot resume: ${progressPath} is missing or unreadable (${reason})`),
  );
  await loadModule(model, join(directory, "checkpoint", "model.safetensors"));
  const { tensors, metadata } = await loadSafetensors(
    join(directory, "checkpoint", "optimizer.safetensors"),
  );
  optimizer.state().forEach((t, i) => {
    const stored = tensors.get(`moment.${i}`);
    if (!stored || stored.data.length !== t.size) {
      throw new Error(`Optimizer checkpoint does not fit this model`);
    }
    const source = tensor(stored.data, t.shape);
    t.gpu.recorder.copy(source.buffer, 0, t.buffer, 0, t.bytes);
    source.dispose();
  });
  optimizer.stepCount = Number(metadata.step ?? progress.step);
  return { epoch: progress.epoch, step: progress.step, losses: progress.losses };
}

/** Loads a detector saved by {@link AutoencoderDetector.save}. */
export async function loadAutoencoder(directory: string): Promise<AutoencoderDetector> {
  await init();
  const configPath = join(directory, "autoencoder.json");
  const config = await readJsonFile<AutoencoderConfig>(
    configPath,
    (reason) => new Error(`${configPath}: not an autoencoder run (${reason})`),
  );
  const inputSize = config.kind === "texture" ? patchSize : config.settings.objectSize;
  const model = buildAutoencoder({
    inputSize,
    channels: config.settings.channels,
    latent: config.settings.latent,
  });
  await loadModule(model, join(directory, "model.safetensors"));
  return new AutoencoderDetector(model, config);
}

function definition(loss: AutoencoderLoss): MethodDefinition<AutoencoderTrainOptions> {
  return {
    name: `ae-${loss}`,
    description: loss === "ssim"
      ? "convolutional autoencoder with SSIM loss; map = 1 − SSIM (Bergmann et al. 2019)"
      : "convolutional autoencoder with per-pixel L2 loss; map = squared residual",
    appliesTo: "all",
    presets: Object.keys(AUTOENCODER_PRESETS),
    train: (category, options) => trainAutoencoder(category, { ...options, loss }),
    load: loadAutoencoder,
  };
}

/** The `ae-ssim` method. */
export const aeSsim: MethodDefinition<AutoencoderTrainOptions> = definition("ssim");
/** The `ae-l2` method. */
export const aeL2: MethodDefinition<AutoencoderTrainOptions> = definition("l2");
