/**
 * The one training loop for networks: epochs of steps, progress with the loss read back rarely,
 * an atomic end-of-epoch checkpoint holding the weights and the optimizer state, `resume`, and a
 * stop signal (Ctrl-C) that ends the run after the current step and keeps the last checkpoint.
 *
 * A method supplies its networks, its optimizers, the batches of an epoch and one training step;
 * everything else about running a training is here, so every network trains alike.
 */

import { join } from "node:path";
import { type Tensor, toArrays } from "../tensor/tensor.ts";
import type { Module } from "./module.ts";
import type { Optimizer } from "./optim.ts";
import { isFile } from "../util/fs.ts";
import { holdAtTestPoint } from "../util/test_hold.ts";
import { InputError } from "../util/errors.ts";
import {
  CheckpointError,
  loadSafetensors,
  loadTensorsInto,
  saveSafetensors,
} from "./checkpoint.ts";

/** An optimizer whose state can be saved and restored (Adam). */
export interface CheckpointableOptimizer extends Optimizer {
  /** Updates taken so far (Adam's bias correction depends on it). */
  stepCount: number;
  /** Its state tensors, in a fixed order. */
  state(): Tensor[];
}

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
  /**
   * The stage, for methods whose training has stages of their own sizes (PatchCore: "features",
   * then "coreset"); `step` and `totalSteps` count within it.
   */
  stage?: string;
}

/** Options of {@link fit}. */
export interface FitOptions<Batch> {
  /** The networks whose weights the checkpoint keeps, by name. */
  modules: Readonly<Record<string, Module>>;
  /** Their optimizers, by name; their state is checkpointed too. */
  optimizers: Readonly<Record<string, CheckpointableOptimizer>>;
  /** Epochs in the run. */
  epochs: number;
  /** Steps in one epoch (for progress and ETA). */
  stepsPerEpoch: number;
  /** The batches of an epoch (from 1); each epoch's stream should be seeded by its number. */
  batches: (epoch: number) => AsyncIterable<Batch>;
  /**
   * Records one training step (forward, backward, update) and returns its loss as a one-element
   * tensor that outlives the step (return it from `tidy`). Nothing is read back here.
   */
  step: (batch: Batch) => Tensor;
  /** Samples in a batch, for the throughput figure. */
  samplesIn: (batch: Batch) => number;
  /** Folder of `checkpoint.safetensors`; without it no checkpoint is written. */
  checkpointDir?: string;
  /** Continue from the checkpoint in `checkpointDir`. */
  resume?: boolean;
  /** Stored in the checkpoint and compared on resume, so a checkpoint of other settings fails. */
  config?: unknown;
  /** Stops after the current step; the last end-of-epoch checkpoint stays as it is. */
  signal?: AbortSignal;
  /** Called when the loss is read back (about every `reportEveryMs`) and at the end. */
  onProgress?: (progress: TrainProgress) => void;
  /** Lines for the run's log. */
  log?: (line: string) => void;
  /** How often the loss is read back, in ms (default 2000): a readback stalls the GPU. */
  reportEveryMs?: number;
}

/** What {@link fit} did. */
export interface FitResult {
  /** True when the signal stopped the run before its last epoch ended. */
  stopped: boolean;
  /** Epochs completed. */
  epoch: number;
  /** Steps completed. */
  step: number;
  /** (step, loss) of every step of the run, resumed parts included. */
  losses: [number, number][];
}

/** The file in `checkpointDir` that {@link fit} writes at the end of every epoch. */
export const CHECKPOINT_FILE = "checkpoint.safetensors";

interface Progress {
  epoch: number;
  step: number;
  losses: [number, number][];
}

/** Trains for the remaining epochs; see the module's description. */
export async function fit<Batch>(options: FitOptions<Batch>): Promise<FitResult> {
  const log = options.log ?? (() => {});
  const reportEvery = options.reportEveryMs ?? 2000;
  let progress: Progress = { epoch: 0, step: 0, losses: [] };
  if (options.resume) {
    if (!options.checkpointDir) throw new Error("resume needs a checkpoint folder");
    progress = await restoreCheckpoint(options);
    log(`resumed after epoch ${progress.epoch} (step ${progress.step})`);
  }
  const totalSteps = options.stepsPerEpoch * options.epochs;
  const started = performance.now();
  let samplesSeen = 0;
  let lastReport = started;
  const pending: [number, Tensor][] = [];
  const readPending = async () => {
    const values = await toArrays(pending.map(([, loss]) => loss));
    pending.forEach(([step, loss], i) => {
      progress.losses.push([step, values[i][0]]);
      loss.dispose();
    });
    pending.length = 0;
  };
  for (let epoch = progress.epoch + 1; epoch <= options.epochs; epoch++) {
    for await (const batch of options.batches(epoch)) {
      if (options.signal?.aborted) break;
      pending.push([progress.step + 1, options.step(batch)]);
      progress.step++;
      await holdAtTestPoint("fit-step");
      samplesSeen += options.samplesIn(batch);
      const now = performance.now();
      if (now - lastReport > reportEvery) {
        lastReport = now;
        await readPending();
        options.onProgress?.({
          epoch,
          epochs: options.epochs,
          step: progress.step,
          totalSteps,
          loss: progress.losses.at(-1)?.[1],
          samplesPerSecond: samplesSeen / ((now - started) / 1000),
        });
      }
    }
    await readPending();
    if (options.signal?.aborted) {
      log(`stopped during epoch ${epoch}; the checkpoint of epoch ${progress.epoch} is intact`);
      return { stopped: true, ...progress };
    }
    progress.epoch = epoch;
    const last = progress.losses.at(-1);
    log(
      `epoch ${epoch}/${options.epochs}: step ${progress.step}, loss ${
        last ? last[1].toFixed(5) : "n/a"
      }`,
    );
    options.onProgress?.({
      epoch,
      epochs: options.epochs,
      step: progress.step,
      totalSteps,
      loss: last?.[1],
      samplesPerSecond: samplesSeen / ((performance.now() - started) / 1000),
    });
    if (options.checkpointDir) {
      await holdAtTestPoint("fit-checkpoint");
      await writeCheckpoint(options, progress);
    }
  }
  return { stopped: false, ...progress };
}

/** Names of the checkpoint's tensors: `module/<name>/<parameter>` and `optimizer/<name>/<i>`. */
function checkpointTensors(
  modules: FitOptions<unknown>["modules"],
  optimizers: FitOptions<unknown>["optimizers"],
): Map<string, Tensor> {
  const tensors = new Map<string, Tensor>();
  for (const [name, module] of Object.entries(modules)) {
    for (const [parameter, t] of module.stateDict()) tensors.set(`module/${name}/${parameter}`, t);
  }
  for (const [name, optimizer] of Object.entries(optimizers)) {
    optimizer.state().forEach((t, i) => tensors.set(`optimizer/${name}/${i}`, t));
  }
  return tensors;
}

/**
 * Weights, optimizer state and progress go into one file written atomically, so a crash at any
 * moment leaves either the previous epoch's checkpoint or this one, never a mix of the two.
 */
async function writeCheckpoint<Batch>(options: FitOptions<Batch>, progress: Progress) {
  const stepCounts = Object.fromEntries(
    Object.entries(options.optimizers).map(([name, o]) => [name, o.stepCount]),
  );
  await saveSafetensors(
    join(options.checkpointDir!, CHECKPOINT_FILE),
    checkpointTensors(options.modules, options.optimizers),
    {
      progress: JSON.stringify(progress),
      step_counts: JSON.stringify(stepCounts),
      config: JSON.stringify(options.config ?? null),
    },
  );
}

/**
 * Loads the checkpoint into the modules and optimizers and returns its progress.
 *
 * @throws InputError naming the checkpoint when it is missing, unreadable, of other settings or
 *   does not fit the networks
 */
async function restoreCheckpoint<Batch>(options: FitOptions<Batch>): Promise<Progress> {
  const path = join(options.checkpointDir!, CHECKPOINT_FILE);
  if (!(await isFile(path))) {
    throw new InputError(
      `Cannot resume: ${path} does not exist (no epoch of this run was completed); ` +
        "train without --resume to start anew",
    );
  }
  const cannotResume = (reason: string, cause?: unknown) =>
    new InputError(`Cannot resume: ${reason.includes(path) ? reason : `${path}: ${reason}`}`, {
      cause,
    });
  let contents;
  try {
    contents = await loadSafetensors(path);
  } catch (error) {
    throw cannotResume((error as Error).message, error);
  }
  const { tensors, metadata } = contents;
  const saved = metadata.config ?? "null";
  if (saved !== JSON.stringify(options.config ?? null)) {
    throw cannotResume(
      `was written with other settings (${saved}); resume with the same options or start anew`,
    );
  }
  const progress = parseProgress(metadata.progress);
  const stepCounts = parseStepCounts(metadata.step_counts);
  if (progress === null || stepCounts === null) {
    throw cannotResume("its progress metadata is missing or malformed (not a checkpoint of fit)");
  }
  try {
    loadTensorsInto(checkpointTensors(options.modules, options.optimizers), tensors, path);
  } catch (error) {
    // Only the file's contents are the user's to fix; a GPU failure stays what it is.
    if (error instanceof CheckpointError) throw cannotResume(error.message, error);
    throw error;
  }
  for (const [name, optimizer] of Object.entries(options.optimizers)) {
    optimizer.stepCount = stepCounts[name] ?? 0;
  }
  return progress;
}

function parseJson(text: string | undefined): unknown {
  try {
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** The checkpoint's `progress` metadata, or null when it is not one {@link fit} wrote. */
function parseProgress(text: string | undefined): Progress | null {
  const value = parseJson(text) as Partial<Progress> | undefined;
  if (typeof value !== "object" || value === null) return null;
  const losses = value.losses;
  // A diverged step's NaN loss was written as null (JSON has no NaN).
  const validLosses = Array.isArray(losses) &&
    losses.every((entry) =>
      Array.isArray(entry) && entry.length === 2 && isCount(entry[0]) &&
      (typeof entry[1] === "number" || entry[1] === null)
    );
  if (!isCount(value.epoch) || !isCount(value.step) || !validLosses) return null;
  return { epoch: value.epoch, step: value.step, losses: losses as [number, number][] };
}

/** The checkpoint's `step_counts` metadata (absent: none), or null when malformed. */
function parseStepCounts(text: string | undefined): Record<string, number> | null {
  if (text === undefined) return {};
  const value = parseJson(text);
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  return Object.values(value).every(isCount) ? value as Record<string, number> : null;
}

/** Whether `dir` holds a checkpoint of {@link fit}, i.e. a run that `resume` can continue. */
export function hasCheckpoint(dir: string): Promise<boolean> {
  return isFile(join(dir, CHECKPOINT_FILE));
}
