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

import { holdAtTestPoint } from "./test_hold.ts";
import { basename, dirname, extname, join, relative } from "node:path";
import { InputError, isInputError } from "./errors.ts";

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
    await holdAtTestPoint(`atomic-write/${basename(path)}`);
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
 * The largest JSON file {@link readJsonFile} reads (8 MiB). The project's JSON files are settings,
 * run configs and model topologies of at most a few hundred KiB; a larger one is foreign or
 * corrupt, and parsing it could take seconds and gigabytes.
 */
export const JSON_FILE_MAX_BYTES = 8 * 2 ** 20;

/**
 * Reads and parses a JSON file. A missing, unreadable, malformed or oversized file is bad input:
 * it throws the error that `failure` makes from the reason, so each caller says what the file was
 * for, as an {@link InputError} (one that `failure` makes is thrown as it is; another error's
 * message becomes an InputError's).
 *
 * @param path the file
 * @param failure makes the error to throw from the reason (the system's or the parser's message)
 * @returns the parsed value, unchecked
 * @throws InputError with `failure`'s message, the system's or the parser's error as its cause
 */
export async function readJsonFile<T>(
  path: string,
  failure: (reason: string) => Error,
): Promise<T> {
  try {
    const { size } = await Deno.stat(path);
    if (size > JSON_FILE_MAX_BYTES) {
      throw new Error(
        `the file has ${size} bytes, over the ${JSON_FILE_MAX_BYTES} (8 MiB) a JSON settings ` +
          "file may have",
      );
    }
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (error) {
    const made = failure((error as Error).message);
    const { message } = made;
    throw isInputError(made) ? made : new InputError(message, { cause: error });
  }
}

/**
 * A value read from a JSON file, for an error message: its JSON text cut to `maxLength`
 * characters. (A template string would not do: it turns a list nested a million deep into text
 * recursively, and runs out of stack.) A value `JSON.stringify` refuses, such as a cycle, is
 * shown as `[…]` or `{…}`.
 *
 * @param value any parsed JSON value (or undefined, for a missing one)
 * @param maxLength the longest text returned
 * @returns the text
 */
export function jsonForMessage(value: unknown, maxLength = 120): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "[…]" : "{…}";
  }
  return text.length > maxLength ? `${text.slice(0, maxLength - 3)}...` : text;
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
