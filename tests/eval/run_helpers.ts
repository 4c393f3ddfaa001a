/**
 * Helpers for the tests of the on-disk evaluation (src/eval/maps_folder.ts, runs.ts) and of
 * `deno task eval`: a tiny synthetic dataset and maps folders made from its ground truth.
 *
 * @module
 */

import { join } from "node:path";
import { generateFixtures } from "../../fixtures/mod.ts";
import { writeMapsToDisk } from "../../src/eval/evaluate.ts";
import { writeTiffFile } from "../../src/eval/tiff.ts";
import { openCategory } from "../../src/data/mvtec.ts";

/** Side of the tiny images. */
export const TINY_SIZE = 48;

/**
 * Generates a tiny synthetic dataset (carpet and bottle, 48x48) into a fresh temporary folder.
 *
 * @returns the temporary folder, the dataset root inside it and a cleanup function
 */
export async function tinyEvalDataset(): Promise<
  { temp: string; dataRoot: string; cleanup: () => Promise<void> }
> {
  const temp = await Deno.makeTempDir({ prefix: "anodet-eval-run-test-" });
  const dataRoot = join(temp, "data");
  await generateFixtures(dataRoot, 3, {
    categories: ["carpet", "bottle"],
    trainCount: 10,
    testGoodCount: 3,
    testDefectiveCount: 4,
    size: TINY_SIZE,
    workers: 1,
  });
  return { temp, dataRoot, cleanup: () => Deno.remove(temp, { recursive: true }) };
}

/**
 * How the maps relate to the ground truth:
 * - `perfect`: the mask itself (1 on defects, 0 elsewhere), validation maps all 0.
 * - `inverted`: every defect pixel and defective image scores below every normal one: good test
 *   images are 1 everywhere, defective ones 0.5 off the defect and 0 on it.
 */
export type MapKind = "perfect" | "inverted";

/**
 * Writes maps for every test image (and, unless disabled, every validation image) of a category.
 *
 * @param mapsRoot maps folder
 * @param dataRoot dataset root
 * @param category category name
 * @param kind perfect or inverted maps
 * @param withValidation also write `validation/good` maps
 */
export async function writeGroundTruthMaps(
  mapsRoot: string,
  dataRoot: string,
  category: string,
  kind: MapKind,
  withValidation = true,
): Promise<void> {
  const opened = await openCategory(dataRoot, category, { onWarning: () => {} });
  const maps = [];
  for (const sample of opened.test) {
    const mask = await opened.loadMask(sample, { width: sample.width, height: sample.height });
    const map = new Float32Array(mask.data.length);
    for (let i = 0; i < map.length; i++) {
      if (kind === "perfect") map[i] = mask.data[i];
      else map[i] = sample.anomalous ? 0.5 * (1 - mask.data[i]) : 1;
    }
    maps.push({
      defect: sample.defect,
      id: sample.id,
      map,
      width: sample.width,
      height: sample.height,
    });
  }
  await writeMapsToDisk(mapsRoot, category, maps);
  if (!withValidation) return;
  for (const sample of opened.validation) {
    const map = new Float32Array(sample.width * sample.height).fill(kind === "perfect" ? 0 : 1);
    await writeTiffFile(
      join(mapsRoot, category, "validation", "good", `${sample.id}.tiff`),
      map,
      sample.width,
      sample.height,
    );
  }
}

/**
 * The test samples of a category (defect and id), for tests that damage single maps.
 *
 * @param dataRoot dataset root
 * @param category category name
 * @returns defect type, id and whether the image is defective, in loader order
 */
export async function testSamples(
  dataRoot: string,
  category: string,
): Promise<{ defect: string; id: string; anomalous: boolean }[]> {
  const opened = await openCategory(dataRoot, category, { onWarning: () => {} });
  return opened.test.map(({ defect, id, anomalous }) => ({ defect, id, anomalous }));
}
