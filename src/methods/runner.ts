/**
 * A training run from start to finish, for any method: train on a category, save the model, write
 * the anomaly maps of the validation and test images in MVTec's layout, estimate the threshold
 * with the paper's protocol, and leave `config.json`, `threshold.json`, `train.log` and the loss
 * curve beside them (see the run-folder format in src/run/folder.ts).
 */

import { join, resolve } from "node:path";
import type { MvtecCategory, Sample } from "../data/mvtec.ts";
import { validationThreshold } from "../eval/metrics.ts";
import { defaultMinArea } from "../eval/protocol.ts";
import { writeTiffFile } from "../eval/tiff.ts";
import { imageScoreKey, imageScoresPath, mapPath } from "../eval/evaluate.ts";
import { renderLossCurve } from "../eval/plot.ts";
import { writePng } from "../data/image.ts";
import {
  RUN_FILES,
  type RunConfig,
  type RunThreshold,
  validationMapPath,
  writeRunConfig,
  writeRunThreshold,
} from "../run/folder.ts";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs.ts";
import { holdAtTestPoint } from "../util/test_hold.ts";
import { InputError } from "../util/errors.ts";
import { VERSION } from "../version.ts";
import type { AnomalyDetector, MethodDefinition, TrainOptions } from "./method.ts";

/** Options of {@link trainRun}. */
export interface RunOptions {
  /** The method. */
  method: MethodDefinition;
  /** The opened category. */
  category: MvtecCategory;
  /** The run folder (`runs/<method>/<category>`). */
  runDir: string;
  /** Method options (seed, preset, epochs, …), passed through to `method.train`. */
  trainOptions: TrainOptions & Record<string, unknown>;
  /** Minimum defect area in pixels at ground-truth resolution (default: the evaluation's rule). */
  minArea?: number;
  /** Called for each map written: (done, total). */
  onMapProgress?: (done: number, total: number) => void;
  /** Lines for the log (the runner also appends them to train.log). */
  log?: (line: string) => void;
}

/** What a finished run produced. */
export interface RunResult {
  /** The trained detector (call dispose() when done); null when stopped before it had one. */
  detector: AnomalyDetector | null;
  /** The threshold written to threshold.json (null when training was stopped early). */
  threshold: RunThreshold | null;
  /** Whether training was stopped early by the signal. */
  stopped: boolean;
}

/** Images per call of a detector's {@link AnomalyDetector.anomalyMaps}, when it has one. */
const MAP_BATCH = 32;

/**
 * Trains and writes a complete run folder. `threshold.json` is written last and removed first, so
 * its presence marks a finished run: a run killed at any moment, or being trained again, is never
 * taken for a finished one (its config and maps may be a mix of the old and the new).
 */
export async function trainRun(options: RunOptions): Promise<RunResult> {
  const { method, category, runDir } = options;
  await Deno.mkdir(runDir, { recursive: true });
  await Deno.remove(join(runDir, RUN_FILES.threshold)).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  const logLines: string[] = [];
  let logText = "";
  try {
    logText = await Deno.readTextFile(join(runDir, "train.log"));
  } catch {
    // A new run has no log yet.
  }
  const log = (line: string) => {
    const stamped = `${new Date().toISOString()} ${line}`;
    logLines.push(stamped);
    options.log?.(line);
  };
  const flushLog = async () => {
    logText += logLines.splice(0).map((l) => l + "\n").join("");
    await writeFileAtomic(join(runDir, "train.log"), logText);
  };
  log(
    `training ${method.name} on ${category.name} (${category.train.length} training images, ${category.validation.length} validation, ${category.test.length} test)`,
  );
  const trained = await method.train(category, {
    ...options.trainOptions,
    log,
    checkpointDir: runDir,
  });
  if (trained.stopped || !trained.detector) {
    log(
      method.checkpoints
        ? "stopped before the end of training; the last end-of-epoch checkpoint is kept for --resume"
        : "stopped before the end of training; this method keeps no checkpoint",
    );
    await flushLog();
    return { detector: trained.detector, threshold: null, stopped: true };
  }
  const detector = trained.detector;
  await detector.save(runDir);
  if (trained.losses.length > 1) {
    await writePng(
      join(runDir, RUN_FILES.lossCurve),
      renderLossCurve(trained.lossSeries ?? trained.losses, `${method.name} training loss`),
    );
  }
  await flushLog();
  const threshold = await writeRunOutputs({
    detector,
    category,
    runDir,
    settings: {
      ...method.resolveOptions(options.trainOptions, options.trainOptions.preset),
      seed: options.trainOptions.seed,
      preset: method.presetFor(options.trainOptions.preset),
    },
    minArea: options.minArea,
    onMapProgress: options.onMapProgress,
  });
  log(
    `threshold ${
      threshold.threshold.toPrecision(5)
    } (${threshold.source}, minimum defect area ${threshold.min_area} px)`,
  );
  await flushLog();
  return { detector, threshold, stopped: false };
}

/** Options of {@link writeRunOutputs}. */
export interface RunOutputOptions {
  /** A trained (or loaded) detector. */
  detector: AnomalyDetector;
  /** The category its maps are computed for. */
  category: MvtecCategory;
  /** The run folder. */
  runDir: string;
  /**
   * Settings recorded in the config: `seed` and `preset` go to their own fields, the rest (but
   * functions and objects) to `options`.
   */
  settings?: Record<string, unknown>;
  /** Minimum defect area (default: the evaluation's rule). */
  minArea?: number;
  /** Called for each map written: (done, total). */
  onMapProgress?: (done: number, total: number) => void;
}

/**
 * Writes `config.json`, the anomaly maps of the validation and test images and `threshold.json`
 * for a detector, so that `deno task eval` can score it. Returns the threshold.
 */
export async function writeRunOutputs(options: RunOutputOptions): Promise<RunThreshold> {
  const { detector, category, runDir } = options;
  const { seed, preset, ...settings } = options.settings ?? {};
  const config: RunConfig = {
    method: detector.method,
    category: category.name,
    data_root: resolve(category.root),
    kind: category.info.kind,
    preset: typeof preset === "string" ? preset : undefined,
    seed: Number(seed ?? 0),
    engine_version: VERSION,
    validation_ids: category.validation.map((sample) => sample.id),
    options: Object.fromEntries(
      Object.entries(settings).filter(([, v]) =>
        v !== undefined && typeof v !== "function" && typeof v !== "object"
      ),
    ),
    created: new Date().toISOString(),
  };
  await writeRunConfig(runDir, config);
  const mapsRoot = join(runDir, RUN_FILES.maps);
  const samples: Sample[] = [...category.validation, ...category.test];
  const validationMaps: { map: Float32Array; width: number; height: number }[] = [];
  // Only methods whose image score is not the map's maximum give one.
  const imageScores: Record<string, number> = {};
  let done = 0;
  // A detector that scores many images at once (AnoGAN's batched latent search) gets them in
  // chunks; the others one at a time.
  const chunkSize = detector.anomalyMaps && !detector.scoreImage ? MAP_BATCH : 1;
  for (let start = 0; start < samples.length; start += chunkSize) {
    const chunk = samples.slice(start, start + chunkSize);
    const images = await Promise.all(
      chunk.map((sample) => category.loadImage(sample, { channels: detector.channels })),
    );
    let maps: Float32Array[];
    if (detector.scoreImage) {
      const scored = await detector.scoreImage(images[0]);
      maps = [scored.map];
      if (chunk[0].split === "test") imageScores[imageScoreKey(chunk[0])] = scored.imageScore;
    } else if (detector.anomalyMaps && chunk.length > 1) {
      maps = await detector.anomalyMaps(images);
    } else {
      maps = [await detector.anomalyMap(images[0])];
    }
    for (const [i, sample] of chunk.entries()) {
      const [map, image] = [maps[i], images[i]];
      if (sample.split === "validation") {
        validationMaps.push({ map, width: image.width, height: image.height });
        await writeTiffFile(
          validationMapPath(mapsRoot, category.name, sample.id),
          map,
          image.width,
          image.height,
        );
      } else {
        await writeTiffFile(
          mapPath(mapsRoot, category.name, sample),
          map,
          image.width,
          image.height,
        );
      }
      options.onMapProgress?.(++done, samples.length);
      await holdAtTestPoint("map");
    }
  }
  if (detector.scoreImage) {
    await writeJsonAtomic(imageScoresPath(mapsRoot, category.name), imageScores);
  }
  const minArea = options.minArea ?? defaultMinArea(category.width, category.height);
  const own = detector.methodThreshold?.() ?? null;
  let threshold: RunThreshold;
  if (own !== null) threshold = { threshold: own, source: "method", min_area: minArea };
  else if (validationMaps.length > 0) {
    threshold = {
      threshold: validationThreshold(validationMaps, minArea),
      source: "validation",
      min_area: minArea,
    };
  } else {
    throw new InputError(
      `${category.name} has no validation images, so no threshold can be estimated ` +
        `(${join(category.path, "train", "good")} holds too few images to hold some out)`,
    );
  }
  await writeRunThreshold(runDir, threshold);
  return threshold;
}
