/**
 * The child process that runs one target's cases for {@link ./runner.ts}. It builds the target's
 * seed once, then for each case number it reads on stdin it makes the case (from the seed and the
 * number alone), runs the target's reads on it and writes how they ended on stdout. It is a
 * process of its own so that the runner can kill it when a case hangs, even in a synchronous
 * loop, and so that a parser exhausting the memory ends this process, not the harness.
 *
 * Usage (by the runner only):
 * `deno run -A worker.ts TARGETS_MODULE TARGET SEED MEMORY_LIMIT_BYTES DIRECTORY`, where
 * TARGETS_MODULE is the URL of a module exporting `FUZZ_TARGETS`.
 *
 * @module
 */

import { join } from "node:path";
import { isInputError } from "../util/errors.ts";
import { caseNumber, type FuzzTarget, type SeedFile } from "./targets.ts";
import { type CaseOutcome, type FromWorker, PROTOCOL_PREFIX } from "./protocol.ts";
import { loadTargets } from "./runner.ts";

const encoder = new TextEncoder();

function post(message: FromWorker): void {
  // Synchronous, so that a message is out before a hang that follows it.
  const line = encoder.encode(`${PROTOCOL_PREFIX}${JSON.stringify(message)}\n`);
  for (let written = 0; written < line.length;) {
    written += Deno.stdout.writeSync(line.subarray(written));
  }
}

/** The first line of an error and where it was thrown, for the report. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return `non-Error thrown: ${String(error)}`;
  const where = error.stack?.split("\n").find((line) => line.trim().startsWith("at "))?.trim();
  const message = error.message.length > 300 ? `${error.message.slice(0, 297)}...` : error.message;
  return `${error.name}: ${message}${where ? ` (${where})` : ""}`;
}

/** Memory the case may have taken: the larger growth of the resident set and of array buffers. */
function memoryGrowth(before: Deno.MemoryUsage, after: Deno.MemoryUsage): number {
  return Math.max(after.rss - before.rss, after.external - before.external);
}

/** How the case's reads ended: the worst of them (a crash over a rejection over acceptance). */
async function runSteps(
  target: FuzzTarget,
  files: ReadonlyMap<string, Uint8Array>,
  caseDirectory: string,
  memoryLimitBytes: number,
): Promise<{ outcome: CaseOutcome; milliseconds: number; detail?: string }> {
  let outcome: CaseOutcome = "accepted";
  let detail: string | undefined;
  // Results stay referenced until memory is measured, so that what they hold is counted.
  const results: unknown[] = [];
  const before = Deno.memoryUsage();
  const start = performance.now();
  for (const step of target.steps(files, caseDirectory)) {
    try {
      results.push(await step());
    } catch (error) {
      if (!isInputError(error)) {
        outcome = "crash";
        detail = describeError(error);
        break;
      }
      if (outcome === "accepted") {
        outcome = "rejected";
        detail = describeError(error);
      }
    }
  }
  const milliseconds = performance.now() - start;
  // One turn of the event loop, so that a promise the reads left behind that rejects is reported
  // (as a stray) before this case's result.
  await new Promise((resolve) => setTimeout(resolve, 0));
  const growth = memoryGrowth(before, Deno.memoryUsage());
  results.length = 0;
  if (outcome !== "crash" && growth > memoryLimitBytes) {
    outcome = "crash";
    detail = `the case grew memory by ${Math.round(growth / 2 ** 20)} MiB (limit ${
      Math.round(memoryLimitBytes / 2 ** 20)
    } MiB): an allocation driven by an unchecked header`;
  }
  return { outcome, milliseconds, detail };
}

async function runCase(
  target: FuzzTarget,
  seed: ReadonlyMap<string, SeedFile>,
  fuzzSeed: number,
  index: number,
  directory: string,
  memoryLimitBytes: number,
): Promise<void> {
  const fuzzCase = caseNumber(target, seed, fuzzSeed, index);
  const caseDirectory = join(directory, `case-${index}`);
  if (target.onDisk) {
    // It may be there already: a case that hung is run again, after its worker was killed.
    await Deno.mkdir(caseDirectory, { recursive: true });
    for (const [name, bytes] of fuzzCase.files) {
      await Deno.writeFile(join(caseDirectory, name), bytes);
    }
  }
  // The runner's time limit starts here: making and writing the case is not the parser's time.
  post({ type: "started", index, description: fuzzCase.description });
  const result = await runSteps(target, fuzzCase.files, caseDirectory, memoryLimitBytes);
  if (target.onDisk) await Deno.remove(caseDirectory, { recursive: true });
  post({ type: "done", index, ...result });
}

async function main(
  [targetsModule, name, seedText, limitText, directory]: string[],
): Promise<void> {
  const target = (await loadTargets(targetsModule)).find((candidate) => candidate.name === name);
  if (!target) {
    post({ type: "failed", message: `no fuzz target "${name}" in ${targetsModule}` });
    return;
  }
  let seed: Map<string, SeedFile>;
  try {
    seed = await target.seed();
  } catch (error) {
    post({ type: "failed", message: `cannot build the seed: ${describeError(error)}` });
    return;
  }
  // A promise a parser left behind that rejects later is a crash of the case being run.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    post({ type: "stray", detail: `unhandled rejection: ${describeError(event.reason)}` });
  });
  post({ type: "ready" });
  let pending = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let newline;
    while ((newline = pending.indexOf("\n")) !== -1) {
      const index = Number(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      try {
        await runCase(target, seed, Number(seedText), index, directory, Number(limitText));
      } catch (error) {
        // Making, writing or removing the case's files failed: the harness's fault.
        post({ type: "failed", message: `case ${index}: ${describeError(error)}` });
      }
    }
  }
}

if (import.meta.main) await main(Deno.args);
