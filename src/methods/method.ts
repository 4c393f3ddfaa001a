/**
 * What every anomaly-detection method provides. A method declares itself with
 * {@link defineMethod}: its name, what it is for, its presets and its options (type, default,
 * help text, valid range). The command line builds its flags and `--help` from those declarations
 * and refuses a flag the chosen method does not take; the library validates options the same way.
 *
 * The run folder that training leaves behind is described in src/run/folder.ts.
 */

import type { FloatImage } from "../data/image.ts";
import { categoryInfo, type MvtecCategory } from "../data/mvtec.ts";
import type { TrainProgress } from "../nn/fit.ts";
import { InputError } from "../util/errors.ts";

export type { TrainProgress };

/** Options every method's training accepts; methods declare their own on top. */
export interface TrainOptions {
  /** Seed of everything random in the run. */
  seed?: number;
  /** Called as training advances. */
  onProgress?: (progress: TrainProgress) => void;
  /** Lines for the run's log. */
  log?: (line: string) => void;
  /** Stops training after the current step (for example on Ctrl-C). */
  signal?: AbortSignal;
  /** The run folder, for methods that write end-of-epoch checkpoints there. */
  checkpointDir?: string;
  /** Continue from the checkpoint in `checkpointDir` (only for methods with checkpoints). */
  resume?: boolean;
  /** Preset the unset options come from, for methods with presets. */
  preset?: string;
}

const COMMON_OPTION_KEYS: ReadonlySet<string> = new Set<keyof TrainOptions>([
  "seed",
  "onProgress",
  "log",
  "signal",
  "checkpointDir",
  "resume",
  "preset",
]);

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
  /**
   * The maps of several images at once, for methods that gain from it (AnoGAN searches the latents
   * of a whole batch in one loop); the run writer then passes images in chunks.
   */
  anomalyMaps?(images: readonly FloatImage[]): Promise<Float32Array[]>;
  /**
   * The map and the image's anomaly score together, for methods whose image score is not the
   * map's maximum (PatchCore reweights it); without it, evaluation uses the map's maximum.
   */
  scoreImage?(image: FloatImage): Promise<{ map: Float32Array; imageScore: number }>;
  /** Its own threshold, for methods that bring one (the GMM texture model does). */
  methodThreshold?(): number | null;
  /** Writes the model files into a run folder (atomically). */
  save(directory: string): Promise<void>;
  /** Frees GPU memory. */
  dispose(): void;
}

/** What training returns. */
export interface TrainResult<Detector extends AnomalyDetector = AnomalyDetector> {
  /** The detector; null when training stopped before the method had a model to give. */
  detector: Detector | null;
  /**
   * True when the signal stopped training early. Methods with checkpoints keep the last complete
   * one for `resume`; the others have nothing to keep.
   */
  stopped: boolean;
  /** (step, loss) of every optimisation step, for the loss curve; empty for methods without. */
  losses: [number, number][];
  /**
   * Several named losses of every step, for methods that optimise more than one (a GAN's
   * discriminator and generator); when present the loss curve draws these instead of `losses`.
   */
  lossSeries?: Record<string, [number, number][]>;
}

/** A value an option can take. */
export type OptionValue = number | boolean | string;

/** The declaration of one option: its type, default, help text and valid range. */
export type OptionSpec =
  | {
    readonly type: "integer" | "number";
    readonly help: string;
    /** Used when neither the caller nor the preset sets it; none means the method decides. */
    readonly default?: number;
    /** Smallest valid value. */
    readonly min?: number;
    /** Largest valid value. */
    readonly max?: number;
    /** Whether `min` itself is excluded (a learning rate must be > 0). */
    readonly minExclusive?: boolean;
  }
  | { readonly type: "boolean"; readonly help: string; readonly default?: boolean }
  | {
    readonly type: "choice";
    readonly help: string;
    readonly choices: readonly (string | number)[];
    readonly default?: string | number;
  }
  /** A file or folder path, checked by the method when it opens it. */
  | { readonly type: "path"; readonly help: string; readonly default?: string };

/** A method's options by name (camelCase; the flag is the kebab-case name: `--image-size`). */
export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** The type of the value of one declared option. */
export type OptionValueOf<Spec extends OptionSpec> = Spec extends { type: "integer" | "number" }
  ? number
  : Spec extends { type: "boolean" } ? boolean
  : Spec extends { type: "path" } ? string
  : Spec extends { choices: readonly (infer Choice)[] } ? Choice
  : never;

/** The values of a method's declared options, each optional. */
export type OptionValues<Specs extends OptionSpecs> = {
  [Name in keyof Specs]?: OptionValueOf<Specs[Name]>;
};

/** How a method declares itself to {@link defineMethod}. */
export interface MethodDeclaration<Specs extends OptionSpecs, Detector extends AnomalyDetector> {
  /** Name used on the command line (`--method`), for example "ae-ssim". */
  readonly name: string;
  /** One line for `--help`. */
  readonly description: string;
  /** Which categories it is meant for; others need `--force`. */
  readonly appliesTo: "textures" | "objects" | "all";
  /** Its options. */
  readonly options: Specs;
  /** Named sets of option values; the unset options of a run come from one of them. */
  readonly presets?: Readonly<Record<string, OptionValues<Specs>>>;
  /** The preset used when none is asked for: on a software adapter, and on a GPU. */
  readonly defaultPreset?: { readonly software: string; readonly gpu: string };
  /** Whether training writes end-of-epoch checkpoints that `resume` continues. */
  readonly checkpoints?: boolean;
  /** Trains a detector on a category's training split, with validated option values. */
  train(
    category: MvtecCategory,
    options: TrainOptions & OptionValues<Specs>,
  ): Promise<TrainResult<Detector>>;
  /** Loads a detector saved by {@link AnomalyDetector.save}. */
  load(directory: string): Promise<Detector>;
  /** A word to the user before training, when a choice is known to work poorly; else null. */
  advice?(context: { category: MvtecCategory; preset?: string }): string | null;
}

/** A method that the CLI and library can train and load by name. */
export interface MethodDefinition {
  /** Name used on the command line (`--method`), for example "ae-ssim". */
  readonly name: string;
  /** One line for `--help`. */
  readonly description: string;
  /** Which categories it is meant for; others need `--force`. */
  readonly appliesTo: "textures" | "objects" | "all";
  /** Its options. */
  readonly options: OptionSpecs;
  /** Named sets of option values, if it has any (`--preset`). */
  readonly presets?: Readonly<Record<string, Readonly<Record<string, OptionValue | undefined>>>>;
  /** The preset used when none is asked for. */
  readonly defaultPreset?: { readonly software: string; readonly gpu: string };
  /** Whether training writes checkpoints that `resume` continues. */
  readonly checkpoints: boolean;
  /**
   * Trains a detector. Option values are checked against the declaration first: an option the
   * method does not declare, or a value of the wrong type or out of range, is an error naming it.
   */
  train(category: MvtecCategory, options?: TrainOptions & Record<string, unknown>): Promise<
    TrainResult
  >;
  /** Loads a detector saved by {@link AnomalyDetector.save}. */
  load(directory: string): Promise<AnomalyDetector>;
  /** A word to the user before training, when a choice is known to work poorly; else null. */
  advice(context: { category: MvtecCategory; preset?: string }): string | null;
  /**
   * The option values a run uses: the preset's, overridden by the given ones (checked as in
   * {@link MethodDefinition.train}).
   */
  resolveOptions(given: Record<string, unknown>, preset?: string): Record<string, OptionValue>;
  /**
   * The preset a run uses: the one asked for (checked), else the software default for methods
   * with presets, else none.
   */
  presetFor(preset?: string): string | undefined;
}

/**
 * Thrown by a method's own training function (trainGmm, trainVariation) when the signal stops it
 * before it has a model; {@link defineMethod} turns it into a stopped {@link TrainResult}.
 */
export class TrainingStoppedError extends Error {
  /** Creates the error for a method. */
  constructor(method: string) {
    super(`${method}: training was stopped before it had a model`);
    this.name = "TrainingStoppedError";
  }
}

/** A bad option value or an option a method does not take. */
export class OptionError extends InputError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "OptionError";
  }
}

/** The command-line flag of an option name: `imageSize` → `--image-size`. */
export function flagOf(name: string): string {
  return "--" + name.replace(/[A-Z]/g, (letter) => "-" + letter.toLowerCase());
}

/** The valid values of an option, in words (for errors and `--help`). */
export function describeRange(spec: OptionSpec): string {
  switch (spec.type) {
    case "boolean":
      return "true or false";
    case "path":
      return "a path";
    case "choice":
      return spec.choices.join(" or ");
    default: {
      if (
        spec.type === "integer" && spec.min === 1 && !spec.minExclusive && spec.max === undefined
      ) {
        return "a positive integer";
      }
      const kind = spec.type === "integer" ? "an integer" : "a number";
      const low = spec.min === undefined ? "" : `${spec.minExclusive ? ">" : "≥"} ${spec.min}`;
      const high = spec.max === undefined ? "" : `≤ ${spec.max}`;
      return [kind, [low, high].filter(Boolean).join(" and ")].filter(Boolean).join(" ");
    }
  }
}

/**
 * Checks one option value against its declaration; returns it, with a number or choice given as
 * text (from the command line) converted.
 *
 * @throws OptionError naming the option and what was expected
 */
export function checkOptionValue(
  methodName: string,
  name: string,
  spec: OptionSpec,
  value: unknown,
): OptionValue {
  const fail = (): never => {
    throw new OptionError(
      `${methodName}: ${flagOf(name)} expects ${describeRange(spec)}, got ${JSON.stringify(value)}`,
    );
  };
  switch (spec.type) {
    case "path":
      if (typeof value === "string" && value.trim() !== "") return value;
      return fail();
    case "boolean":
      if (typeof value === "boolean") return value;
      if (value === "true" || value === "false") return value === "true";
      return fail();
    case "choice": {
      const choice = spec.choices.find((c) => c === value || String(c) === String(value));
      return choice === undefined ? fail() : choice;
    }
    default: {
      const number = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof number !== "number" || !Number.isFinite(number)) return fail();
      if (spec.type === "integer" && !Number.isInteger(number)) return fail();
      if (spec.min !== undefined && (spec.minExclusive ? number <= spec.min : number < spec.min)) {
        return fail();
      }
      if (spec.max !== undefined && number > spec.max) return fail();
      return number;
    }
  }
}

/**
 * A network method's settings: the named preset's values (default `quick`), overridden by the
 * given ones, each checked against the method's option declarations, so that callers of its train
 * function and the settings saved with a model meet the same rules as command-line flags.
 *
 * @throws OptionError naming the flag of the first bad value, or the unknown preset
 */
export function presetSettings<Settings extends object>(
  methodName: string,
  presets: Readonly<Record<string, Settings>>,
  specs: OptionSpecs,
  options: Partial<Settings> & { preset?: string },
): Settings {
  const presetName = options.preset ?? "quick";
  const preset = presets[presetName];
  if (!preset) {
    throw new OptionError(
      `${methodName}: --preset expects ${Object.keys(presets).join(" or ")}, got "${presetName}"`,
    );
  }
  const settings = { ...preset } as Record<string, unknown>;
  for (const key of Object.keys(preset)) {
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) settings[key] = value;
  }
  for (const [name, spec] of Object.entries(specs)) {
    if (name in settings) checkOptionValue(methodName, name, spec, settings[name]);
  }
  return settings as Settings;
}

/**
 * Declares a method. The result checks every option given to `train` against the declaration,
 * fills unset ones from the preset, and refuses `resume` for methods without checkpoints.
 */
export function defineMethod<
  const Specs extends OptionSpecs,
  Detector extends AnomalyDetector,
>(
  declaration: MethodDeclaration<Specs, Detector>,
): MethodDefinition {
  const { name, options: specs, presets } = declaration;
  for (const [presetName, values] of Object.entries(presets ?? {})) {
    for (const [option, value] of Object.entries(values)) {
      const spec = specs[option];
      if (!spec) throw new Error(`${name}: preset "${presetName}" sets undeclared "${option}"`);
      checkOptionValue(name, option, spec, value);
    }
  }
  const checkPreset = (preset: string | undefined): string | undefined => {
    if (preset === undefined) return presets ? declaration.defaultPreset?.software : undefined;
    if (!presets) throw new OptionError(`${name} has no presets; leave out --preset`);
    if (!(preset in presets)) {
      throw new OptionError(
        `${name}: --preset expects ${Object.keys(presets).join(" or ")}, got "${preset}"`,
      );
    }
    return preset;
  };
  const resolveOptions = (given: Record<string, unknown>, preset?: string) => {
    const chosen = checkPreset(preset);
    const resolved: Record<string, OptionValue> = {};
    for (const [option, spec] of Object.entries(specs)) {
      if (spec.default !== undefined) resolved[option] = spec.default;
    }
    Object.assign(resolved, chosen ? presets![chosen] : {});
    for (const [option, value] of Object.entries(given)) {
      if (value === undefined || COMMON_OPTION_KEYS.has(option)) continue;
      const spec = specs[option];
      if (!spec) {
        const known = Object.keys(specs).map(flagOf).join(", ") || "none";
        throw new OptionError(
          `${name} does not take ${flagOf(option)} (its options: ${known})`,
        );
      }
      resolved[option] = checkOptionValue(name, option, spec, value);
    }
    return resolved;
  };
  return {
    name,
    description: declaration.description,
    appliesTo: declaration.appliesTo,
    options: specs,
    presets,
    defaultPreset: declaration.defaultPreset,
    checkpoints: declaration.checkpoints ?? false,
    resolveOptions,
    presetFor: checkPreset,
    advice: (context) => declaration.advice?.(context) ?? null,
    async train(category, options = {}) {
      if (options.resume && !declaration.checkpoints) {
        throw new OptionError(
          `${name} writes no checkpoints, so there is nothing to resume; leave out --resume`,
        );
      }
      const values = resolveOptions(options, options.preset);
      const common: TrainOptions = {};
      for (const key of COMMON_OPTION_KEYS) {
        const value = options[key as keyof TrainOptions];
        if (value !== undefined) (common as Record<string, unknown>)[key] = value;
      }
      const preset = checkPreset(options.preset);
      // The values were checked against `specs` above, which is what OptionValues<Specs> says.
      const typed = values as OptionValues<Specs>;
      try {
        return await declaration.train(category, { ...common, ...typed, preset });
      } catch (error) {
        if (error instanceof TrainingStoppedError) {
          options.log?.(`${error.message}; nothing is kept (train again to start over)`);
          return { detector: null, stopped: true, losses: [] };
        }
        throw error;
      }
    },
    load: (directory) => declaration.load(directory),
  };
}

/**
 * Why a method is not meant for a category, or null when it is. The CLI prints this and stops
 * unless the user passes `--force`. A category given by name is looked up among MVTec's; an
 * opened category knows its own kind (a user's category may declare it).
 */
export function applicabilityProblem(
  method: Pick<MethodDefinition, "name" | "appliesTo">,
  category: string | MvtecCategory,
): string | null {
  if (method.appliesTo === "all") return null;
  const name = typeof category === "string" ? category : category.name;
  const kind = typeof category === "string" ? categoryInfo(category).kind : category.info.kind;
  const wanted = method.appliesTo === "textures" ? "texture" : "object";
  if (kind === wanted) return null;
  return `Method "${method.name}" is meant for ${wanted} categories; "${name}" is ` +
    `${kind === "object" ? "an object" : "a texture"} category. Pass --force to run it anyway ` +
    `(or --kind ${wanted} if the category is one).`;
}

/** Throws {@link applicabilityProblem}'s message unless `force` is set. */
export function assertApplies(
  method: Pick<MethodDefinition, "name" | "appliesTo">,
  category: string | MvtecCategory,
  force = false,
): void {
  const problem = applicabilityProblem(method, category);
  if (problem && !force) throw new Error(problem);
}
