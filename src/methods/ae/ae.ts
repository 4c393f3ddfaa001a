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
import {
  augment,
  augmentOptionsFor,
  type Batch,
  batches,
  categorySource,
} from "../../data/augment.ts";
import { init, keep, noGrad, type Tensor, tensor, tidy, toArrays } from "../../tensor/tensor.ts";
import { withSeed } from "../../tensor/ops/random.ts";
import * as op from "../../tensor/ops.ts";
import { Adam } from "../../nn/optim.ts";
import type { Sequential } from "../../nn/layers.ts";
import { loadModule, saveModule } from "../../nn/checkpoint.ts";
import { fit } from "../../nn/fit.ts";
import { readJsonFile, writeJsonAtomic } from "../../util/fs.ts";
import { buildAutoencoder } from "./model.ts";
import {
  type AnomalyDetector,
  defineMethod,
  type MethodDefinition,
  type OptionSpecs,
  presetSettings,
  type TrainOptions,
  type TrainResult,
} from "../method.ts";

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
};

/** Options of {@link trainAutoencoder}. */
export interface AutoencoderTrainOptions
  extends Omit<TrainOptions, "preset">, Partial<AutoencoderSettings> {
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
  return presetSettings("ae", AUTOENCODER_PRESETS, autoencoderOptions, options);
}

/** Trains an autoencoder on a category's training split. */
export async function trainAutoencoder(
  category: MvtecCategory,
  options: AutoencoderTrainOptions,
): Promise<TrainResult<AutoencoderDetector>> {
  await init();
  const settings = resolveSettings(options);
  const kind = category.info.kind;
  const lossName = options.loss ?? "ssim";
  const config: AutoencoderConfig = { loss: lossName, kind, settings };
  const seed = options.seed ?? 0;
  const inputSize = kind === "texture" ? patchSize : settings.objectSize;
  const model = withSeed(
    seed,
    () => buildAutoencoder({ inputSize, channels: settings.channels, latent: settings.latent }),
  );
  const optimizer = new Adam(model.parameters(), {
    lr: settings.lr,
    weightDecay: settings.weightDecay,
  });
  // Loaded at the working size, so the category's cache keeps the resized images across epochs
  // instead of decoding and shrinking the originals again for every epoch's stream.
  const workingSide = kind === "texture" ? settings.textureZoom : settings.objectSize;
  const source = categorySource(category, category.train, {
    channels: settings.channels,
    width: workingSide,
    height: workingSide,
  });
  const reconstructionLoss = (reconstruction: Tensor, images: Tensor) =>
    lossName === "l2"
      ? op.mse(reconstruction, images)
      : op.affine(op.ssim(reconstruction, images).mean, -1, 1);
  try {
    const result = await fit<Batch>({
      modules: { model },
      optimizers: { adam: optimizer },
      epochs: settings.epochs,
      stepsPerEpoch: Math.ceil(settings.patches / settings.batch),
      batches: (epoch) => {
        const augmentation = augmentOptionsFor(
          category.info,
          settings.patches,
          seed * 100003 + epoch,
          {
            patchSize,
            zoomSize: kind === "texture" ? settings.textureZoom : undefined,
            outputWidth: kind === "object" ? settings.objectSize : undefined,
            outputHeight: kind === "object" ? settings.objectSize : undefined,
          },
        );
        return batches(augment(source, augmentation), settings.batch);
      },
      step: (batch) => {
        const images = tensor(batch.data, [...batch.shape]);
        const loss = tidy(() => {
          optimizer.zeroGrad();
          const value = reconstructionLoss(model.train().forward(images), images);
          value.backward();
          optimizer.step();
          return value;
        });
        images.dispose();
        return loss;
      },
      samplesIn: (batch) => batch.shape[0],
      checkpointDir: options.checkpointDir,
      resume: options.resume,
      // What the weights' shapes and meaning depend on; epochs and the like may change on resume.
      config: {
        loss: lossName,
        kind,
        inputSize,
        channels: settings.channels,
        latent: settings.latent,
      },
      signal: options.signal,
      onProgress: options.onProgress,
      log: options.log,
    });
    return {
      detector: new AutoencoderDetector(model, config),
      stopped: result.stopped,
      losses: result.losses,
    };
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    optimizer.dispose();
  }
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

const autoencoderOptions = {
  epochs: { type: "integer", min: 1, help: "epochs over the patch set" },
  batch: { type: "integer", min: 1, help: "patches per optimisation step" },
  patches: { type: "integer", min: 1, help: "augmented patches per epoch (the paper: 10000)" },
  lr: { type: "number", min: 0, minExclusive: true, help: "Adam learning rate" },
  weightDecay: { type: "number", min: 0, help: "Adam weight decay" },
  channels: { type: "choice", choices: [1, 3], help: "grayscale (as in the paper) or colour" },
  latent: { type: "integer", min: 1, help: "latent dimension" },
  textureZoom: { type: "integer", min: patchSize, help: "textures: side of the zoomed image" },
  patchStride: { type: "integer", min: 1, help: "textures: stride of the patches at inference" },
  objectSize: {
    type: "integer",
    min: patchSize,
    help: "objects: side of the image fed to the network (128 times a power of two)",
  },
} as const satisfies OptionSpecs;

function definition(loss: AutoencoderLoss): MethodDefinition {
  return defineMethod({
    name: `ae-${loss}`,
    description: loss === "ssim"
      ? "convolutional autoencoder with SSIM loss; map = 1 − SSIM (Bergmann et al. 2019)"
      : "convolutional autoencoder with per-pixel L2 loss; map = squared residual",
    appliesTo: "all",
    options: autoencoderOptions,
    presets: AUTOENCODER_PRESETS,
    defaultPreset: { software: "quick", gpu: "paper" },
    checkpoints: true,
    train: (category, options) =>
      trainAutoencoder(category, {
        ...options,
        preset: options.preset as AutoencoderPreset | undefined,
        loss,
      }),
    load: loadAutoencoder,
    advice: ({ category, preset }) =>
      loss === "ssim" && preset === "quick" && category.info.kind === "texture"
        ? "a quick ae-ssim run seldom reconstructs a fine texture sharply enough for 1 − SSIM " +
          "to find its defects (README: What the autoencoders can find); gmm suits textures on a " +
          "CPU adapter."
        : null,
  });
}

/** The `ae-ssim` method. */
export const aeSsim: MethodDefinition = definition("ssim");
/** The `ae-l2` method. */
export const aeL2: MethodDefinition = definition("l2");
