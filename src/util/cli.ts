/** What the command-line tasks share: one kind of usage error, and parseArgs' errors made plain. */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A command-line mistake: printed with a hint to `--help`, exit code 2. */
export class UsageError extends Error {
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
