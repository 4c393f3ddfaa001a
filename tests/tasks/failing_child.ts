/**
 * A task that fails on purpose, for tests/tasks/errors_test.ts: how {@link runTask} reports an
 * error that escapes the task's promise, and a bug.
 *
 * `deno run -A tests/tasks/failing_child.ts MODE [--debug]`, MODE one of:
 * - `rejected-later`: a promise nobody awaits rejects with an InputError while the task waits;
 * - `thrown-later`: a timer's callback throws an InputError while the task waits;
 * - `bug`: the task throws a TypeError.
 *
 * @module
 */

import { runTask, UsageError } from "../../src/util/cli.ts";
import { InputError } from "../../src/util/errors.ts";

/** Waits without end: only the error can stop the task. */
function forever(): Promise<never> {
  return new Promise(() => setInterval(() => {}, 60_000));
}

async function main(args: string[]): Promise<void> {
  switch (args[0]) {
    case "rejected-later":
      setTimeout(() => Promise.reject(new InputError("late.png: not a PNG file")), 10);
      return await forever();
    case "thrown-later":
      setTimeout(() => {
        throw new InputError("timer.json: not JSON");
      }, 10);
      return await forever();
    case "bug":
      throw new TypeError("Cannot read properties of undefined (reading 'width')");
    default:
      throw new UsageError(`expected rejected-later, thrown-later or bug, got "${args[0]}"`);
  }
}

if (import.meta.main) await runTask(main);
