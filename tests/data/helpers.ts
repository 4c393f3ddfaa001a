/**
 * Shared helpers for the data tests: temporary folders and a tiny synthetic dataset.
 *
 * @module
 */

import { join } from "node:path";
import { generateFixtures, type GenerateOptions } from "../../fixtures/mod.ts";

/** Options for a small, fast generation (two categories, a handful of images each). */
export const TINY: GenerateOptions = {
  categories: ["carpet", "screw"],
  trainCount: 10,
  testGoodCount: 2,
  testDefectiveCount: 5,
  size: 64,
  // Worker start-up costs more than rendering a few tiny images.
  workers: 1,
};

/**
 * Generates the tiny dataset into a fresh temporary folder.
 *
 * @param options overrides of {@link TINY}
 * @returns the dataset root, the temporary folder holding it (room for a test's other files) and
 *   a cleanup function that removes that folder
 */
export async function tinyDataset(
  options: GenerateOptions = {},
): Promise<{ root: string; parent: string; cleanup: () => Promise<void> }> {
  const parent = await Deno.makeTempDir({ prefix: "anodet-data-test-" });
  const root = join(parent, "mvtec");
  await generateFixtures(root, 7, { ...TINY, ...options });
  return { root, parent, cleanup: () => Deno.remove(parent, { recursive: true }) };
}

/**
 * Lists every file under a folder, relative to it, sorted.
 *
 * @param dir folder
 * @returns relative paths
 */
export async function listFilesRecursive(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (folder: string, prefix: string) => {
    for await (const entry of Deno.readDir(folder)) {
      const relative = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
      if (entry.isDirectory) await walk(join(folder, entry.name), relative);
      else out.push(relative);
    }
  };
  await walk(dir, "");
  return out.sort();
}
