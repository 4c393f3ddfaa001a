/**
 * `deno task train <category>`: trains a method on one category and writes a complete run folder
 * (model, config, log, loss curve, anomaly maps, threshold) to `<out>/<method>/<category>/`.
 */

import { parseCommandLine, UsageError } from "../src/util/cli.ts";
import { resolve } from "node:path";
import { ensureFixtures } from "../fixtures/mod.ts";
import { openCategory } from "../src/data/mvtec.ts";
import { init } from "../src/tensor/tensor.ts";
import { applicabilityProblem, getMethod, listMethods } from "../src/methods/method.ts";
import "../src/methods/builtin.ts";
import { runDirectory, trainRun } from "../src/methods/runner.ts";
import { ProgressBar } from "../src/util/progress.ts";

const usage = `Usage: deno task train <category> [options]

Trains an anomaly-detection method on one category of an MVTec AD-style dataset.

Options:
  --method NAME     method (default ae-ssim): ${"{methods}"}
  --data ROOT       dataset root (default: $MVTEC_AD, else the built-in synthetic dataset)
  --preset NAME     quick (minutes on a CPU adapter) or paper (the paper's setting);
                    default: quick on a software adapter, paper on a GPU
  --epochs N        epochs (overrides the preset)
  --batch N         batch size (overrides the preset)
  --patches N       augmented patches per epoch (overrides the preset)
  --lr X            learning rate (overrides the preset)
  --channels 1|3    grayscale (default, as in the paper) or colour
  --image-size N    working image side of gmm (default 400) and variation (default: original)
  --seed N          seed of everything random (default 0)
  --out DIR         runs folder (default runs); the run goes to DIR/<method>/<category>/
  --resume          continue the run in DIR/<method>/<category>/ from its last checkpoint
  --force           train a method on a category kind it is not meant for
  --help            this text`;

function positiveInteger(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number) || number <= 0) {
    throw new UsageError(`${flag} expects a positive integer, got "${value}"`);
  }
  return number;
}

async function main(args: string[]): Promise<void> {
  const parsed = parseCommandLine({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      method: { type: "string", default: "ae-ssim" },
      data: { type: "string" },
      preset: { type: "string" },
      epochs: { type: "string" },
      batch: { type: "string" },
      patches: { type: "string" },
      lr: { type: "string" },
      channels: { type: "string" },
      "image-size": { type: "string" },
      seed: { type: "string", default: "0" },
      out: { type: "string", default: "runs" },
      resume: { type: "boolean", default: false },
      force: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const { values, positionals } = parsed;
  const methods = listMethods().map((m) => m.name).join(", ");
  if (values.help) {
    console.log(usage.replace("{methods}", methods));
    return;
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      `expected exactly one category, got ${positionals.length ? positionals.join(" ") : "none"}`,
    );
  }
  const categoryName = positionals[0];
  const method = getMethod(values.method!);
  if (values.preset !== undefined && values.preset !== "quick" && values.preset !== "paper") {
    throw new UsageError(`--preset expects quick or paper, got "${values.preset}"`);
  }
  const channels = values.channels === undefined ? undefined : Number(values.channels);
  if (channels !== undefined && channels !== 1 && channels !== 3) {
    throw new UsageError(`--channels expects 1 or 3, got "${values.channels}"`);
  }
  const lr = values.lr === undefined ? undefined : Number(values.lr);
  if (lr !== undefined && !(lr > 0)) {
    throw new UsageError(`--lr expects a positive number, got "${values.lr}"`);
  }
  const seed = Number(values.seed);
  if (!Number.isInteger(seed)) {
    throw new UsageError(`--seed expects an integer, got "${values.seed}"`);
  }

  let dataRoot = values.data ?? Deno.env.get("MVTEC_AD");
  if (dataRoot === undefined) {
    console.log(
      "No --data and no $MVTEC_AD: using the built-in synthetic dataset (generated on first use).",
    );
    dataRoot = await ensureFixtures();
  }
  const category = await openCategory(dataRoot, categoryName);
  const problem = applicabilityProblem(method, category.name);
  if (problem && !values.force) throw new UsageError(problem);

  const gpu = await init();
  let preset: string | undefined;
  if (method.presets) {
    preset = values.preset ?? (gpu.adapter.isSoftware ? "quick" : "paper");
    const why = values.preset
      ? "chosen with --preset"
      : gpu.adapter.isSoftware
      ? "the default on a software adapter; --preset paper for the paper's setting"
      : "the default on a GPU";
    console.log(`adapter: ${gpu.adapter.description}. Preset: ${preset} (${why}).`);
    if (method.name === "ae-ssim" && preset === "quick" && category.info.kind === "texture") {
      console.log(
        "Note: a quick ae-ssim run seldom reconstructs a fine texture sharply enough for " +
          "1 − SSIM to find its defects (README: What the autoencoders can find); gmm suits " +
          "textures on a CPU adapter.",
      );
    }
  } else {
    if (values.preset) throw new UsageError(`${method.name} has no presets; leave out --preset`);
    console.log(`adapter: ${gpu.adapter.description}.`);
  }

  const runDir = runDirectory(values.out!, method.name, category.name);
  if (!values.resume) {
    try {
      await Deno.stat(`${runDir}/checkpoint/progress.json`);
      console.log(
        `${runDir} holds an earlier run; it is replaced (use --resume to continue it instead).`,
      );
      await Deno.remove(runDir, { recursive: true });
    } catch {
      // Nothing to replace.
    }
  }

  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) Deno.exit(130);
    console.error("\nStopping after the current step (Ctrl-C again to quit at once)…");
    controller.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  let bar: ProgressBar | null = null;
  const started = performance.now();
  try {
    const result = await trainRun({
      method,
      category,
      runDir,
      preset,
      trainOptions: {
        seed,
        preset,
        resume: values.resume,
        epochs: positiveInteger(values.epochs, "--epochs"),
        batch: positiveInteger(values.batch, "--batch"),
        patches: positiveInteger(values.patches, "--patches"),
        lr,
        channels,
        imageSize: positiveInteger(values["image-size"], "--image-size"),
        workingSize: positiveInteger(values["image-size"], "--image-size"),
        signal: controller.signal,
        onProgress: (p) => {
          bar ??= new ProgressBar({
            label: `${method.name} ${category.name}`,
            total: p.totalSteps,
            unit: "steps",
          });
          bar.update(p.step, {
            epoch: `${p.epoch}/${p.epochs}`,
            ...(p.loss !== undefined ? { loss: p.loss.toFixed(4) } : {}),
            ...(p.samplesPerSecond !== undefined
              ? { "patches/s": p.samplesPerSecond.toFixed(1) }
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
        `Stopped. The last complete checkpoint is in ${runDir}/checkpoint; continue with --resume.`,
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
    }
    result.detector.dispose();
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    const message = (error as Error).message;
    console.error(`error: ${message}`);
    Deno.exit(error instanceof UsageError ? 2 : 1);
  }
}
