/**
 * Atomic file writes, and the JSON reader that goes with them: data goes to a temporary file in the target folder and is then renamed over
 * the target, so a crash never leaves a half-written checkpoint, map or report (a rename within
 * one file system is atomic).
 */

import { basename, dirname, join } from "node:path";

/** Writes bytes (or UTF-8 text) to `path` atomically, creating its folder if needed. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const directory = dirname(path);
  const temporary = join(directory, `.${basename(path)}.${crypto.randomUUID().slice(0, 8)}.tmp`);
  try {
    await Deno.mkdir(directory, { recursive: true });
    await Deno.writeFile(
      temporary,
      typeof data === "string" ? new TextEncoder().encode(data) : data,
    );
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
}

/** Writes a value as pretty-printed JSON, atomically. */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/**
 * Reads and parses a JSON file. A missing, unreadable or malformed file throws the error that
 * `failure` makes from the reason, so each caller says what the file was for.
 */
export async function readJsonFile<T>(
  path: string,
  failure: (reason: string) => Error,
): Promise<T> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (error) {
    throw failure((error as Error).message);
  }
}
