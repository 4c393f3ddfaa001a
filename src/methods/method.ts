/**
 * What every anomaly-detection method provides, and the run folder that training leaves behind.
 *
 * A run folder `runs/<method>/<category>/` holds:
 * - `config.json`: {@link RunConfig}
 * - the method's model files (for example `model.safetensors`)
 * - `train.log` and, for trained networks, `loss.png`
 * - `threshold.json`: {@link RunThreshold}
 * - `maps/<category>/test/<defect>/<id>.tiff`: one 32-bit float anomaly map per test image at
 *   ground-truth resolution, in MVTec's official layout, so that MVTec's script and other tools can
 *   judge them; and `maps/<category>/validation/good/<id>.tiff` for the anomaly-free validation
 *   images that the threshold protocol needs.
 *
 * `deno task eval` scores a run from its maps and the data root in its config, so evaluation needs
 * no GPU and treats our maps and other tools' maps alike.
 */

import type { FloatImage } from "../data/image.ts";
import { categoryInfo, type MvtecCategory } from "../data/mvtec.ts";

/** Progress of a training run, reported to callbacks (and the progress bar of the CLI). */
export interface TrainProgress {
  /** Current epoch, from 1. */
  epoch: number;
  /** Epochs in the run. */
  epochs: number;
  /** Optimisation steps done so far. */
  step: number;
  /** Steps in the whole run. */
  totalSteps: number;
  /** The latest loss that was read back, if any (it is read rarely). */
  loss?: number;
  /** Training samples (patches or images) processed per second. */
  samplesPerSecond?: number;
}

/** Options every method's training accepts; methods add their own. */
export interface TrainOptions {
  /** Seed of everything random in the run. */
  seed?: number;
  /** Called as training advances. */
  onProgress?: (progress: TrainProgress) => void;
  /** Lines for the run's log. */
  log?: (line: string) => void;
  /** Stops training early (for example on Ctrl-C); the method returns what it has. */
  signal?: AbortSignal;
  /** The run folder, for methods that write end-of-epoch checkpoints there. */
  checkpointDir?: string;
  /** Continue from the checkpoint in `checkpointDir` (methods without checkpoints retrain). */
  resume?: boolean;
}

/** A trained detector: turns an image into an anomaly map. */
export interface AnomalyDetector {
  /** The method's name, as in {@link MethodDefinition.name}. */
  readonly method: string;
  /** The image format the detector wants (channels). */
  readonly channels: 1 | 3;
  /**
   * The anomaly map of one image (larger means more anomalous), at the image's own size, one value
   * per pixel in row-major order.
   */
  anomalyMap(image: FloatImage): Promise<Float32Array>;
  /** Its own threshold, for methods that bring one (the GMM texture model does). */
  methodThreshold?(): number | null;
  /** Writes the model files into a run folder (atomically). */
  save(directory: string): Promise<void>;
  /** Frees GPU memory. */
  dispose(): void;
}

/** A method that the CLI and library can train and load by name. */
export interface MethodDefinition<Options extends TrainOptions = TrainOptions> {
  /** Name used on the command line (`--method`), for example "ae-ssim". */
  readonly name: string;
  /** One line for `--help`. */
  readonly description: string;
  /** Which categories it is meant for; others need `--force`. */
  readonly appliesTo: "textures" | "objects" | "all";
  /** Names of its training presets, if it has any (`--preset`). */
  readonly presets?: readonly string[];
  /** Trains a detector on a category's training split. */
  train(category: MvtecCategory, options: Options): Promise<AnomalyDetector>;
  /** Loads a detector saved by {@link AnomalyDetector.save}. */
  load(directory: string): Promise<AnomalyDetector>;
}

/** `config.json` of a run folder. */
export interface RunConfig {
  /** Method name. */
  method: string;
  /** Category trained on. */
  category: string;
  /** Data root the category was read from (absolute path). */
  data_root: string;
  /** Preset name, when the method has presets. */
  preset?: string;
  /** Seed. */
  seed: number;
  /** Version of this package that trained the run. */
  engine_version: string;
  /** Method-specific settings (epochs, batch, image size, …). */
  options: Record<string, unknown>;
  /** ISO time of the end of training. */
  created: string;
}

/** `threshold.json` of a run folder. */
export interface RunThreshold {
  /** The threshold on the anomaly maps. */
  threshold: number;
  /** "validation" (the paper's protocol) or "method" (a method's own threshold). */
  source: "validation" | "method";
  /** Minimum defect area in pixels at ground-truth resolution used by the protocol. */
  min_area: number;
}

const registry = new Map<string, MethodDefinition>();

/** Makes a method available by name. */
export function registerMethod(method: MethodDefinition): void {
  registry.set(method.name, method as MethodDefinition);
}

/** The method called `name`; the error lists the known ones. */
export function getMethod(name: string): MethodDefinition {
  const method = registry.get(name);
  if (!method) {
    throw new Error(`Unknown method "${name}". Known methods: ${[...registry.keys()].join(", ")}`);
  }
  return method;
}

/** Every registered method. */
export function listMethods(): MethodDefinition[] {
  return [...registry.values()];
}

/**
 * Why a method is not meant for a category, or null when it is. The CLI prints this and stops
 * unless the user passes `--force`.
 */
export function applicabilityProblem(method: MethodDefinition, category: string): string | null {
  if (method.appliesTo === "all") return null;
  const kind = categoryInfo(category).kind;
  const wanted = method.appliesTo === "textures" ? "texture" : "object";
  if (kind === wanted) return null;
  return `Method "${method.name}" is meant for ${wanted} categories; "${category}" is ` +
    `${kind === "object" ? "an object" : "a texture"} category. Pass --force to run it anyway.`;
}

/** Throws {@link applicabilityProblem}'s message unless `force` is set. */
export function assertApplies(method: MethodDefinition, category: string, force = false): void {
  const problem = applicabilityProblem(method, category);
  if (problem && !force) throw new Error(problem);
}
