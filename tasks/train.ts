/**
 * `deno task train <category>`: trains a method on one category and writes a complete run folder
 * (model, config, log, loss curve, anomaly maps, threshold) to `<out>/<method>/<category>/`.
 *
 * The flags of the methods come from their declarations (src/methods/method.ts): the usage text
 * lists them, and a flag the chosen method does not take is refused by name.
 */

import { join, resolve } from "node:path";
import type { ParseArgsConfig } from "node:util";
import { asInputError, parseCommandLine, runTask, UsageError } from "../src/util/cli.ts";
import { ensureFixtures } from "../fixtures/mod.ts";
import { openCategory, parseCategoryKind } from "../src/data/mvtec.ts";
import { init } from "../src/tensor/tensor.ts";
import { GpuDeviceLostError } from "../src/gpu/device.ts";
import {
  applicabilityProblem,
  describeRange,
  flagOf,
  type MethodDefinition,
  type OptionSpec,
} from "../src/methods/method.ts";
import { getMethod, listMethods } from "../src/methods/registry.ts";
import { trainRun } from "../src/methods/runner.ts";
import { CHECKPOINT_FILE, hasCheckpoint } from "../src/nn/fit.ts";
import { InputError } from "../src/util/errors.ts";
import { readFinishedRun, runDirectory } from "../src/run/folder.ts";
import { evaluateRuns } from "../src/eval/runs.ts";
import { ProgressBar } from "../src/util/progress.ts";

/** Flags every method takes. */
const COMMON_FLAGS = {
  method: { type: "string", default: "patchcore" },
  data: { type: "string" },
  kind: { type: "string" },
  preset: { type: "string" },
  seed: { type: "string", default: "0" },
  out: { type: "string", default: "runs" },
  resume: { type: "boolean", default: false },
  force: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
} as const satisfies ParseArgsConfig["options"];

const COMMON_USAGE = `Usage: deno task train <category> [options]

Trains an anomaly-detection method on one category of an MVTec AD-style dataset and writes a run
folder <out>/<method>/<category>/ (model, config, log, maps, threshold); then: deno task eval.

Options for every method:
  --method NAME     method (default patchcore); see below
  --data ROOT       dataset root (default: $MVTEC_AD, else the built-in synthetic dataset)
  --kind KIND       texture or object, for a category of your own (default: its category.json,
                    else MVTec's kind for MVTec's names, else object)
  --preset NAME     for methods with presets; default: the quick one on a software adapter,
                    the paper's on a GPU
  --seed N          seed of everything random (default 0)
  --out DIR         runs folder (default runs)
  --resume          continue the run in <out>/<method>/<category>/ from its last checkpoint
                    (methods that write checkpoints)
  --force           train a method on a category kind it is not meant for
  --help            this text; with --method NAME, that method's options
  --debug           on an error, print its stack trace`;

/** A value as `--help` shows it: numbers to four significant digits. */
function shortValue(value: string | number | boolean): string {
  return typeof value === "number" ? String(Number(value.toPrecision(4))) : String(value);
}

function optionLine(name: string, spec: OptionSpec, method: MethodDefinition): string {
  const placeholder = spec.type === "boolean"
    ? ""
    : spec.type === "choice"
    ? ` ${spec.choices.length <= 3 ? spec.choices.join("|") : "X"}`
    : spec.type === "path"
    ? " PATH"
    : " N";
  const flag = `  ${flagOf(name)}${placeholder}`;
  const helpColumn = 22;
  const facts = [describeRange(spec)];
  const presetValues = Object.entries(method.presets ?? {})
    .filter(([, values]) => values[name] !== undefined)
    .map(([preset, values]) => `${preset} ${shortValue(values[name]!)}`);
  if (presetValues.length > 0) facts.push(`preset: ${presetValues.join(", ")}`);
  else if (spec.default !== undefined) facts.push(`default ${shortValue(spec.default)}`);
  const indent = " ".repeat(helpColumn);
  // A flag too long for its column puts its help on the next line.
  const head = flag.length < helpColumn
    ? flag.padEnd(helpColumn) + spec.help
    : `${flag}\n${indent}${spec.help}`;
  return `${head}\n${indent}${facts.join("; ")}`;
}

/** The part of `--help` about one method. */
export function methodUsage(method: MethodDefinition): string {
  const lines = [`${method.name}: ${method.description}`];
  lines.push(`  for ${method.appliesTo === "all" ? "textures and objects" : method.appliesTo}`);
  if (method.presets) lines.push(`  presets: ${Object.keys(method.presets).join(", ")}`);
  if (method.checkpoints) lines.push("  writes end-of-epoch checkpoints (--resume)");
  const options = Object.entries(method.options);
  if (options.length > 0) lines.push("  options:");
  for (const [name, spec] of options) {
    lines.push(optionLine(name, spec, method).replace(/^/gm, "  "));
  }
  return lines.join("\n");
}

/** The whole `--help` text: every method, or only `methodName`'s. */
export function usage(methodName?: string): string {
  const methods = methodName ? [getMethod(methodName)] : listMethods();
  return `${COMMON_USAGE}\n\nMethods:\n\n${methods.map(methodUsage).join("\n\n")}`;
}

/** The flags of every method's options, so parseArgs knows them all (a typo is still refused). */
function methodFlags(): NonNullable<ParseArgsConfig["options"]> {
  const flags: NonNullable<ParseArgsConfig["options"]> = {};
  for (const method of listMethods()) {
    for (const [name, spec] of Object.entries(method.options)) {
      flags[flagOf(name).slice(2)] = { type: spec.type === "boolean" ? "boolean" : "string" };
    }
  }
  return flags;
}

/** The parsed command line of the train task. */
export interface TrainCommand {
  /** The category to train on. */
  category: string;
  /** The method. */
  method: MethodDefinition;
  /** Its option values as given (checked against its declaration), by option name. */
  methodOptions: Record<string, unknown>;
  /** The common flags. */
  data?: string;
  kind?: "texture" | "object";
  preset?: string;
  seed: number;
  out: string;
  resume: boolean;
  force: boolean;
}

/**
 * Parses the train task's arguments; "help" when the usage should be printed.
 *
 * @throws UsageError naming the flag: unknown flags, flags the method does not take, bad values
 */
export function parseTrainArgs(args: string[]): TrainCommand | { help: string } {
  const { values, positionals } = parseCommandLine({
    args,
    allowPositionals: true,
    strict: true,
    options: { ...methodFlags(), ...COMMON_FLAGS },
  });
  let method: MethodDefinition;
  try {
    method = getMethod(String(values.method));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    return { help: usage(args.some((a) => a.startsWith("--method")) ? method.name : undefined) };
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      `expected exactly one category, got ${positionals.length ? positionals.join(" ") : "none"}`,
    );
  }
  const methodOptions: Record<string, unknown> = {};
  for (const name of Object.keys(methodFlags())) {
    const value = (values as Record<string, unknown>)[name];
    if (value === undefined) continue;
    const optionName = name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
    if (!(optionName in method.options)) {
      const known = Object.keys(method.options).map(flagOf).join(", ") || "none";
      throw new UsageError(
        `--${name} is not an option of ${method.name} (its options: ${known}; ` +
          `deno task train --help --method ${method.name})`,
      );
    }
    methodOptions[optionName] = value;
  }
  const seed = Number(values.seed);
  if (!Number.isInteger(seed)) {
    throw new UsageError(`--seed expects an integer, got "${values.seed}"`);
  }
  if (values.resume && !method.checkpoints) {
    throw new UsageError(
      `--resume: ${method.name} writes no checkpoints, so there is nothing to resume`,
    );
  }
  try {
    // Checks every value and the preset now, before any data is read.
    method.resolveOptions(methodOptions, values.preset as string | undefined);
    return {
      category: positionals[0],
      method,
      methodOptions,
      data: values.data as string | undefined,
      kind: values.kind === undefined
        ? undefined
        : parseCategoryKind(String(values.kind), "--kind"),
      preset: values.preset as string | undefined,
      seed,
      out: String(values.out),
      resume: Boolean(values.resume),
      force: Boolean(values.force),
    };
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message);
  }
}

/** The run's test metrics in one line, e.g. "Test: pixel ROC AUC 0.971 · image ROC AUC 0.99 …". */
export async function testMetricsLine(runDir: string): Promise<string> {
  const [{ categories: [result] }] = await evaluateRuns([await readFinishedRun(runDir)], {
    examples: 0,
    onWarning: () => {},
  });
  const m = result.metrics;
  const value = (v: number | null) => (v === null ? "n/a" : v.toFixed(3));
  return `Test (${m.n_test_images} images): pixel ROC AUC ${value(m.pixel_auroc)} · ` +
    `image ROC AUC ${value(m.image_auroc)} · AU-PRO ${value(m.au_pro)} · ` +
    `pixel AP ${value(m.pixel_ap)} · accuracy good ${value(m.accuracy_good)}, ` +
    `defective ${value(m.accuracy_defective)}`;
}

/** The train task: parses `args`, trains and writes the run folder, and prints the outcome. */
export async function main(args: string[]): Promise<void> {
  const command = parseTrainArgs(args);
  if ("help" in command) {
    console.log(command.help);
    return;
  }
  const { method } = command;
  let dataRoot = command.data ?? Deno.env.get("MVTEC_AD");
  if (dataRoot === undefined) {
    console.log(
      "No --data and no $MVTEC_AD: using the built-in synthetic dataset (generated on first use).",
    );
    dataRoot = await ensureFixtures();
  }
  const category = await openCategory(dataRoot, command.category, { kind: command.kind })
    .catch((error) => {
      throw asInputError(error);
    });
  const problem = applicabilityProblem(method, category);
  if (problem && !command.force) throw new UsageError(problem);
  const runDir = runDirectory(command.out, method.name, category.name);
  if (command.resume && !(await hasCheckpoint(runDir))) {
    throw new InputError(
      `--resume: ${join(runDir, CHECKPOINT_FILE)} does not exist (no epoch of this run was ` +
        "completed); train without --resume to start anew",
    );
  }

  const gpu = await init();
  let preset = command.preset;
  if (method.presets && method.defaultPreset) {
    const software = gpu.adapter.isSoftware;
    preset ??= software ? method.defaultPreset.software : method.defaultPreset.gpu;
    const why = command.preset
      ? "chosen with --preset"
      : software
      ? `the default on a software adapter; --preset ${method.defaultPreset.gpu} for the paper's setting`
      : "the default on a GPU";
    console.log(`adapter: ${gpu.adapter.description}. Preset: ${preset} (${why}).`);
  } else {
    console.log(`adapter: ${gpu.adapter.description}.`);
  }
  const advice = method.advice({ category, preset });
  if (advice) console.log(`Note: ${advice}`);

  if (!command.resume && await hasCheckpoint(runDir)) {
    console.log(
      `${runDir} holds an earlier run; it is replaced (use --resume to continue it instead).`,
    );
    await Deno.remove(runDir, { recursive: true });
  }

  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) Deno.exit(130);
    console.error("\nStopping after the current step (Ctrl-C again to quit at once)…");
    controller.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  let bar: ProgressBar | null = null;
  let stage: string | undefined;
  const started = performance.now();
  try {
    const result = await trainRun({
      method,
      category,
      runDir,
      trainOptions: {
        ...command.methodOptions,
        seed: command.seed,
        preset,
        resume: command.resume,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.stage !== stage) {
            (bar as ProgressBar | null)?.done();
            bar = null;
            stage = p.stage;
          }
          bar ??= new ProgressBar({
            label: `${method.name} ${category.name}${p.stage ? `: ${p.stage}` : ""}`,
            total: p.totalSteps,
            unit: "steps",
          });
          bar.update(p.step, {
            ...(p.epochs > 1 ? { epoch: `${p.epoch}/${p.epochs}` } : {}),
            ...(p.loss !== undefined ? { loss: p.loss.toFixed(4) } : {}),
            ...(p.samplesPerSecond !== undefined
              ? { "samples/s": p.samplesPerSecond.toFixed(1) }
              : {}),
          });
        },
      },
      log: (line) => (bar ? bar.log(line) : console.log(line)),
      onMapProgress: (done, total) => {
        if (done === 1) {
          (bar as ProgressBar | null)?.done();
          bar = new ProgressBar({ label: "anomaly maps", total, unit: "images" });
        }
        bar?.update(done);
      },
    });
    (bar as ProgressBar | null)?.done();
    if (result.stopped) {
      console.log(
        method.checkpoints
          ? `Stopped. The last complete checkpoint is in ${runDir}; continue with --resume.`
          : `Stopped. ${method.name} keeps no checkpoint; train again to start over.`,
      );
      Deno.exitCode = 130;
    } else {
      const minutes = ((performance.now() - started) / 60000).toFixed(1);
      console.log(`Done in ${minutes} min. Run folder: ${resolve(runDir)}`);
      console.log(
        `Threshold ${result.threshold!.threshold.toPrecision(5)} (${
          result.threshold!.source
        }). Next: deno task eval`,
      );
      if (category.test.some((sample) => sample.maskPath !== null)) {
        console.log(await testMetricsLine(runDir));
      }
    }
    result.detector?.dispose();
  } catch (error) {
    if (error instanceof GpuDeviceLostError && method.checkpoints) {
      throw new GpuDeviceLostError(
        error.info,
        `The last complete checkpoint is in ${runDir}; continue with --resume`,
      );
    }
    throw error;
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

if (import.meta.main) await runTask(main);
