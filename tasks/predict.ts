/**
 * `deno task predict <run> <image or folder>`: what a production line runs. For each image it
 * writes the anomaly map (32-bit TIFF and a PNG heat map) and prints a good/defective verdict: an
 * image is defective when the map, above the run's threshold, has a connected region of at least
 * the run's minimum defect area.
 */

import { asInputError, parseCommandLine, runTask, UsageError } from "../src/util/cli.ts";
import { basename, extname, join } from "node:path";
import { errorMessage, IMAGE_EXTENSIONS, readImage, writePng } from "../src/data/image.ts";
import { largestComponentAbove } from "../src/eval/components.ts";
import { renderHeatmap } from "../src/eval/plot.ts";
import { writeTiffFile } from "../src/eval/tiff.ts";
import { getMethod } from "../src/methods/registry.ts";
import { init } from "../src/tensor/tensor.ts";
import { type FoundRun, readFinishedRun, type RunThreshold } from "../src/run/folder.ts";
import { listDirectory, writeJsonAtomic } from "../src/util/fs.ts";
import { ProgressBar } from "../src/util/progress.ts";

const usage = `Usage: deno task predict <run folder> <image or folder> [--out DIR]

Computes anomaly maps with a trained run and says, for each image, whether it is good or
defective (a region above the run's threshold at least as large as its minimum defect area).

Options:
  --out DIR   where maps, heat maps and verdicts.json go (default: <run>/predictions)
  --help      this text
  --debug     on an error, print its stack trace`;

/** The run, with its threshold; a folder that is not a finished run is the user's mistake. */
async function readRunForPrediction(dir: string): Promise<FoundRun & { threshold: RunThreshold }> {
  try {
    return await readFinishedRun(dir);
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
}

async function listImages(target: string): Promise<string[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(target);
  } catch {
    throw new UsageError(`${target} does not exist (expected an image or a folder of images)`);
  }
  if (info.isFile) return [target];
  const names = await listDirectory(target, { kind: "file", extensions: IMAGE_EXTENSIONS });
  if (names.length === 0) throw new UsageError(`${target} holds no PNG or JPEG images`);
  return names.map((name) => join(target, name));
}

/** One image's verdict, as written to verdicts.json. */
interface Verdict {
  image: string;
  verdict: "good" | "defective";
  largest_region: number;
  max_score: number;
  map: string;
}

async function main(args: string[]): Promise<void> {
  const parsed = parseCommandLine({
    args,
    allowPositionals: true,
    strict: true,
    options: { out: { type: "string" }, help: { type: "boolean", default: false } },
  });
  if (parsed.values.help) {
    console.log(usage);
    return;
  }
  if (parsed.positionals.length !== 2) {
    throw new UsageError("expected a run folder and an image or folder");
  }
  const [runDir, target] = parsed.positionals;
  const { config, threshold } = await readRunForPrediction(runDir);
  const images = await listImages(target);
  const outDir = parsed.values.out ?? join(runDir, "predictions");
  // Before loading: some methods' loaders make GPU tensors without acquiring the device first.
  await init();
  const detector = await getMethod(config.method).load(runDir);
  const bar = new ProgressBar({ label: "predict", total: images.length, unit: "images" });
  const verdicts: Verdict[] = [];
  for (const path of images) {
    const image = await readImage(path, detector.channels).catch((error) => {
      throw asInputError(error);
    });
    const map = await detector.anomalyMap(image);
    const name = basename(path, extname(path));
    const mapPath = join(outDir, `${name}.tiff`);
    await writeTiffFile(mapPath, map, image.width, image.height);
    await writePng(
      join(outDir, `${name}_heatmap.png`),
      renderHeatmap(map, image.width, image.height),
    );
    const largest = largestComponentAbove(map, image.width, image.height, threshold.threshold);
    let maxScore = -Infinity;
    for (const value of map) maxScore = Math.max(maxScore, value);
    const verdict: Verdict = {
      image: path,
      verdict: largest >= threshold.min_area ? "defective" : "good",
      largest_region: largest,
      max_score: maxScore,
      map: mapPath,
    };
    verdicts.push(verdict);
    bar.log(
      `${
        verdict.verdict.padEnd(9)
      } ${path} (largest region ${largest} px, min ${threshold.min_area})`,
    );
    bar.update(verdicts.length);
  }
  bar.done();
  detector.dispose();
  await writeJsonAtomic(join(outDir, "verdicts.json"), {
    run: runDir,
    method: config.method,
    threshold: threshold.threshold,
    min_area: threshold.min_area,
    images: verdicts,
  });
  const defective = verdicts.filter((v) => v.verdict === "defective").length;
  console.log(`${defective} of ${verdicts.length} defective. Maps and verdicts.json in ${outDir}`);
}

if (import.meta.main) await runTask(main);
