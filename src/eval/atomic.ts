/**
 * Atomic file writes: data goes to a temporary file in the target directory
 * first and is then renamed over the target, so readers never see a partial
 * file (rename is atomic within one file system).
 *
 * @module
 */

import { basename, dirname, join } from "node:path";

/**
 * Writes `data` to `path` atomically, creating the parent directory if needed.
 *
 * @param path destination file
 * @param data bytes, or a string written as UTF-8
 * @returns a promise resolved once the file is in place
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const directory = dirname(path);
  await Deno.mkdir(directory, { recursive: true });
  const suffix = crypto.getRandomValues(new Uint32Array(2)).join("");
  const temporaryPath = join(directory, `.${basename(path)}.${suffix}.tmp`);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  try {
    await Deno.writeFile(temporaryPath, bytes);
    await Deno.rename(temporaryPath, path);
  } catch (error) {
    await Deno.remove(temporaryPath).catch(() => {});
    throw error;
  }
}
