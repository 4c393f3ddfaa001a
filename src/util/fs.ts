/**
 * File helpers shared by training, evaluation and the tasks: atomic writes, the JSON reader that
 * goes with them, and the one directory listing.
 *
 * Writes go to a temporary file in the target folder that is then renamed over the target, so a
 * crash never leaves a half-written checkpoint, map or report (a rename within one file system is
 * atomic).
 *
 * @module
 */

import { basename, dirname, extname, join, relative } from "node:path";

/**
 * Writes bytes (or UTF-8 text) to `path` atomically, creating its folder if needed.
 *
 * @param path target file
 * @param data bytes, or text written as UTF-8
 * @throws Error naming `path` when the folder cannot be created or the file cannot be written
 */
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

/**
 * Writes a value as pretty-printed JSON, atomically.
 *
 * @param path target file
 * @param value anything `JSON.stringify` accepts
 */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/**
 * Reads and parses a JSON file. A missing, unreadable or malformed file throws the error that
 * `failure` makes from the reason, so each caller says what the file was for.
 *
 * @param path the file
 * @param failure makes the error to throw from the reason (the system's or the parser's message)
 * @returns the parsed value, unchecked
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

/** Options of {@link listDirectory}. */
export interface ListDirectoryOptions {
  /** List the files or the sub-folders (symbolic links are neither). */
  kind: "file" | "directory";
  /** Only names with one of these extensions, e.g. `[".png", ".jpg"]`; case-insensitive. */
  extensions?: readonly string[];
  /**
   * Also list names starting with "." (default false: editors, macOS (`._000.png`) and our own
   * atomic writes leave such files, and they are never data).
   */
  includeHidden?: boolean;
}

/**
 * Orders names as people number files: "2.png" before "10.png", so that user data without zero
 * padding keeps its order.
 *
 * @param a a name
 * @param b another name
 * @returns negative, zero or positive, as for `Array.prototype.sort`
 */
export function compareNames(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/**
 * The names (not paths) of the files or sub-folders of a folder, sorted by {@link compareNames}.
 *
 * @param path the folder
 * @param options files or folders, which extensions, hidden names or not
 * @returns the matching names
 * @throws Error naming `path` when it is missing or not a readable folder (the system error is the
 *   `cause`)
 */
export async function listDirectory(
  path: string,
  options: ListDirectoryOptions,
): Promise<string[]> {
  const extensions = options.extensions?.map((extension) => extension.toLowerCase());
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(path)) {
      const isKind = options.kind === "file" ? entry.isFile : entry.isDirectory;
      if (!isKind) continue;
      if (!options.includeHidden && entry.name.startsWith(".")) continue;
      if (extensions && !extensions.includes(extname(entry.name).toLowerCase())) continue;
      names.push(entry.name);
    }
  } catch (error) {
    throw new Error(`Cannot list "${path}": ${(error as Error).message}`, { cause: error });
  }
  return names.sort(compareNames);
}

/**
 * A path relative to the working folder when it lies below it, for shorter messages.
 *
 * @param path any path
 * @returns the shorter form
 */
export function displayPath(path: string): string {
  const fromHere = relative(Deno.cwd(), path);
  return fromHere !== "" && !fromHere.startsWith("..") ? fromHere : path;
}

/** Whether `path` is a folder (false when it does not exist or cannot be read). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Whether `path` is a file (false when it does not exist or cannot be read). */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
