/**
 * `deno task fuzz [--target NAME] [--cases N] [--seed S] [--json FILE]`: seeded mutation fuzzing
 * of every parser (images, TIFF maps, safetensors, run and model JSON, TFLite and TF.js models,
 * converted backbone graphs). Prints a table per target; exits 1 when any case crashed or hung.
 */

import { FAILURE_EXIT_CODE, parseCommandLine, runTask, UsageError } from "../src/util/cli.ts";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { writeFileAtomic, writeJsonAtomic } from "../src/util/fs.ts";
import { errorMessage } from "../src/data/image.ts";
import {
  formatReports,
  type FuzzReport,
  fuzzTarget,
  loadTargets,
  PARSER_TARGETS_MODULE,
} from "../src/fuzz/runner.ts";
import { caseNumber, FUZZ_TARGETS, type FuzzTarget } from "../src/fuzz/targets.ts";

const targetList = FUZZ_TARGETS.map((target) => `  ${target.name.padEnd(12)} ${target.description}`)
  .join("\n");

const usage = `Usage: deno task fuzz [--target NAME] [--cases N] [--seed S] [--json FILE] [...]

Mutates a valid file of each format (bit flips, bytes set, cuts at structural boundaries, wrong
magic, zero and huge sizes, offsets outside the file, JSON of wrong types, deep or huge) and feeds
it to the parser. Each case is accepted, cleanly rejected (the project's InputError), a crash (any
other error, or memory grown by over 1 GiB) or a hang (over the time limit, twice in a row).

Options:
  --target NAME   one target, or several separated by commas (default: all)
  --cases N       cases per target (default 1000)
  --seed S        the run's seed; the same seed gives the same cases (default 1)
  --case I        run only case I (with --target): replays a crash that a run reported
  --save DIR      with --case: also write the case's files into DIR, to look at them
  --timeout S     a case's time limit in seconds (default 5)
  --json FILE     also write the table, with the first 20 crashes and hangs of each target, as
                  JSON
  --module PATH   run the FUZZ_TARGETS of this module (path or URL) instead of the project's
                  parsers (for testing the harness, or fuzzing parsers of your own)
  --help          this text

Targets:
${targetList}

Exit code 1 when any case crashed or hung, 2 for a usage error.`;

/** A non-negative integer flag, or a usage error naming it. */
function integerFlag(
  value: string | undefined,
  flag: string,
  fallback: number,
  min: number,
): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isSafeInteger(number) || number < min) {
    throw new UsageError(`--${flag} is "${value}"; expected an integer of at least ${min}`);
  }
  return number;
}

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      target: { type: "string" },
      cases: { type: "string" },
      seed: { type: "string" },
      case: { type: "string" },
      timeout: { type: "string" },
      json: { type: "string" },
      save: { type: "string" },
      module: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(usage);
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const targetsModule = values.module === undefined
    ? PARSER_TARGETS_MODULE
    : URL.canParse(values.module)
    ? values.module
    : pathToFileURL(resolve(values.module)).href;
  let targets: readonly FuzzTarget[];
  try {
    targets = await loadTargets(targetsModule);
  } catch (error) {
    throw new UsageError(`--module "${values.module}" cannot be loaded: ${errorMessage(error)}`);
  }
  const names = values.target?.split(",").map((name) => name.trim()) ??
    targets.map((target) => target.name);
  for (const name of names) {
    if (!targets.some((target) => target.name === name)) {
      throw new UsageError(
        `--target "${name}" is not a fuzz target; expected one of ${
          targets.map((target) => target.name).join(", ")
        }`,
      );
    }
  }
  const seed = integerFlag(values.seed, "seed", 1, 0);
  const replay = values.case === undefined ? undefined : integerFlag(values.case, "case", 0, 0);
  if (replay !== undefined && names.length !== 1) {
    throw new UsageError("--case replays one case of one target; give --target NAME");
  }
  if (values.save !== undefined && replay === undefined) {
    throw new UsageError("--save writes one case's files; give --case I");
  }
  const cases = replay !== undefined ? 1 : integerFlag(values.cases, "cases", 1000, 1);
  const timeoutMs = integerFlag(values.timeout, "timeout", 5, 1) * 1000;

  if (values.save !== undefined && replay !== undefined) {
    const target = targets.find((candidate) => candidate.name === names[0])!;
    const fuzzCase = caseNumber(target, await target.seed(), seed, replay);
    for (const [name, bytes] of fuzzCase.files) {
      await writeFileAtomic(join(values.save, name), bytes);
    }
    console.log(`case ${replay}: ${fuzzCase.description}; its files are in ${values.save}`);
  }
  const reports: FuzzReport[] = [];
  const started = performance.now();
  for (const name of names) {
    const targetStart = performance.now();
    const report = await fuzzTarget(name, {
      cases,
      seed,
      firstCase: replay,
      timeoutMs,
      targetsModule,
      onProgress: (done) => {
        if (Deno.stderr.isTerminal()) {
          Deno.stderr.writeSync(new TextEncoder().encode(`\r${name}: ${done}/${cases}`));
        }
      },
    });
    if (Deno.stderr.isTerminal()) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
    reports.push(report);
    const seconds = ((performance.now() - targetStart) / 1000).toFixed(1);
    console.log(`${name}: ${report.cases} cases in ${seconds} s`);
    for (const failure of report.failures) {
      console.log(
        `  ${failure.outcome} in case ${failure.index} (--target ${name} --seed ${seed} --case ` +
          `${failure.index}): ${failure.description}\n    ${failure.detail}`,
      );
    }
    if (replay !== undefined && report.exampleRejection) {
      console.log(`  rejected: ${report.exampleRejection}`);
    }
  }
  console.log();
  console.log(formatReports(reports));
  const total = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`\n${names.length} targets, ${cases} cases each, seed ${seed}, ${total} s`);
  if (values.json) await writeJsonAtomic(values.json, { seed, cases, reports });
  if (reports.some((report) => report.crashes > 0 || report.hangs > 0)) {
    Deno.exitCode = FAILURE_EXIT_CODE;
  }
}

if (import.meta.main) await runTask(main);
