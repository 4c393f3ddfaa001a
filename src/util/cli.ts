/**
 * What the command-line tasks share: one kind of usage error, parseArgs' errors made plain, and the
 * wrapper that turns a task's errors into one line and an exit code ({@link runTask}).
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { InputError } from "./errors.ts";
import { GpuDeviceLostError, NoGpuAdapterError } from "../gpu/device.ts";

/** A command-line mistake: printed with a hint to `--help`, exit code 2. */
export class UsageError extends InputError {
  /** An error saying `message`, followed by the hint. */
  constructor(message: string) {
    super(`${message.replace(/\.$/, "")}. Run with --help to see the options.`);
    this.name = "UsageError";
  }
}

/**
 * `node:util`'s parseArgs, with what it throws turned into a {@link UsageError} that names an
 * unknown flag plainly.
 */
export function parseCommandLine<T extends ParseArgsConfig>(
  config: T,
): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    throw usageErrorFromParseArgs(error);
  }
}

function usageErrorFromParseArgs(error: unknown): UsageError {
  const message = error instanceof Error ? error.message : String(error);
  const flag = /'([^']+)'/.exec(message)?.[1];
  return new UsageError(
    flag !== undefined && message.toLowerCase().includes("unknown option")
      ? `Unknown flag "${flag}"`
      : message,
  );
}

/** The flag every task takes to print the stack trace of an error. */
export const DEBUG_FLAG = "--debug";

/** Exit code of a usage error (as parseArgs-style tools use). */
export const USAGE_EXIT_CODE = 2;

/** Exit code of every other failure. */
export const FAILURE_EXIT_CODE = 1;

/**
 * Whether `error` is one the user can act on from its message alone: bad input (the project's
 * {@link InputError}, {@link UsageError} included) or a GPU that is missing or was lost. Anything
 * else is a bug, whose stack trace is what would help.
 */
export function isExpectedError(error: unknown): boolean {
  return error instanceof InputError || error instanceof GpuDeviceLostError ||
    error instanceof NoGpuAdapterError;
}

/**
 * `error` as an {@link InputError} when it is a plain `Error` or a file-system error
 * (`Deno.errors.*`, e.g. NotFound) thrown by code that only reads or writes what the user named (a
 * data folder, a run folder, an output folder), for modules that do not throw InputError yet.
 * Errors of other types (TypeError, …) are bugs and stay as they are.
 *
 * @param error what the code threw
 * @returns the error to throw instead
 */
export function asInputError(error: unknown): unknown {
  if (!(error instanceof Error) || isExpectedError(error)) return error;
  const fileSystemError = Object.values(Deno.errors).some((type) => error instanceof type);
  if (error.constructor !== Error && !fileSystemError) return error;
  return new InputError(error.message, { cause: error });
}

/**
 * The one line a task prints for `error`: `error: <message>`, the message's lines joined. An
 * unexpected error also gets its type (when it is not a plain Error) and the hint to `--debug`.
 */
export function errorLine(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  // "a summary:\n  first\n  second" becomes "a summary: first; second"; sentences run on.
  const message = raw.trim().replace(/([.!?])\s*\n\s*/g, "$1 ").replace(/:\s*\n\s*/g, ": ")
    .replace(/\s*\n\s*/g, "; ");
  if (isExpectedError(error)) return `error: ${message}`;
  const type = error instanceof Error && error.name !== "Error" ? `${error.name}: ` : "";
  return `error: ${type}${message} (run with ${DEBUG_FLAG} for the stack trace)`;
}

/** The stack trace of `error` and of its causes, for `--debug`. */
function stackTrace(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error; e !== undefined && parts.length < 10;) {
    parts.push(e instanceof Error ? e.stack ?? `${e.name}: ${e.message}` : String(e));
    e = e instanceof Error ? e.cause : undefined;
    if (e !== undefined) parts.push("caused by:");
  }
  return parts.join("\n");
}

function exitCodeOf(error: unknown): number {
  return error instanceof UsageError ? USAGE_EXIT_CODE : FAILURE_EXIT_CODE;
}

function fail(error: unknown, debug: boolean): never {
  console.error(debug ? stackTrace(error) : errorLine(error));
  Deno.exit(exitCodeOf(error));
}

/**
 * Runs a task's `main` with the command line (less {@link DEBUG_FLAG}). Any error, thrown or
 * rejected anywhere in the process, ends it with one line on stderr ({@link errorLine}) and a
 * non-zero exit: 2 for a {@link UsageError}, 1 otherwise. With `--debug` the stack trace is
 * printed instead.
 *
 * @param main the task; it receives the arguments without `--debug`
 * @param args the command line (default `Deno.args`)
 */
export async function runTask(
  main: (args: string[]) => Promise<void>,
  args: readonly string[] = Deno.args,
): Promise<void> {
  const debug = args.includes(DEBUG_FLAG);
  // Errors of work nobody awaits (a timer, a forgotten promise) end the task the same way.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    fail(event.reason, debug);
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    fail(event.error, debug);
  });
  try {
    await main(args.filter((arg) => arg !== DEBUG_FLAG));
  } catch (error) {
    fail(error, debug);
  }
}
