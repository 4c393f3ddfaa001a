/**
 * Running the tasks as the user does, in a subprocess, and checking how they fail: exit code, one
 * line on stderr that names the culprit, and no stack trace.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

/** The repository root, where the tasks run. */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** What a finished task printed and returned. */
export interface TaskOutput {
  /** Exit code. */
  code: number;
  /** Everything it printed to stdout. */
  stdout: string;
  /** Everything it printed to stderr. */
  stderr: string;
}

/** The environment every task subprocess gets, plus `extra`. */
export function taskEnvironment(extra: Record<string, string> = {}): Record<string, string> {
  return { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1", ...extra };
}

/**
 * Runs `deno run -A tasks/<task>.ts ...args` from the repository root.
 *
 * @param task train, eval, predict or fixtures
 * @param args its command line
 * @param env extra environment variables
 * @returns its exit code and output
 */
export function runTaskProcess(
  task: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<TaskOutput> {
  return runScriptProcess(`tasks/${task}.ts`, args, env);
}

/**
 * Runs `deno run -A <script> ...args` from the repository root, in {@link taskEnvironment}.
 *
 * @param script a path from the repository root
 * @param args its command line
 * @param env extra environment variables
 * @returns its exit code and output
 */
export async function runScriptProcess(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<TaskOutput> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: REPO_ROOT,
    env: taskEnvironment(env),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/**
 * Asserts that a task failed as a user error should: exit code `code`, and stderr one line
 * `error: …` that matches `pattern`, with no stack trace and no hint to `--debug` (which is for
 * bugs).
 *
 * @returns the line
 */
export function assertOneLineError(output: TaskOutput, code: number, pattern: RegExp): string {
  const context = `stdout:\n${output.stdout}\nstderr:\n${output.stderr}`;
  assert.equal(output.code, code, context);
  const lines = output.stderr.split("\n").filter((line) => line.trim() !== "");
  assert.equal(lines.length, 1, `one line on stderr expected; ${context}`);
  assert.match(lines[0], /^error: /, context);
  assert.match(lines[0], pattern, context);
  assert.doesNotMatch(output.stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(lines[0], /--debug/, `a user error is not reported as a bug: ${lines[0]}`);
  return lines[0];
}
