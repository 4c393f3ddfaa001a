/**
 * `deno task fixtures [--out DIR] [--seed N] [--help]`: generates the synthetic MVTec-AD-like
 * dataset (see fixtures/mod.ts). Without --out it fills the default cache location used by the
 * tests and examples.
 *
 * @module
 */

import { asInputError, parseCommandLine, runTask, UsageError } from "../src/util/cli.ts";
import { DEFAULT_SEED, defaultFixturesDir, generateFixtures } from "../fixtures/mod.ts";

const USAGE = `Usage: deno task fixtures [--out DIR] [--seed N] [--help]

Generates the synthetic MVTec AD miniature (7 categories, 256x256, exact defect masks).

Options:
  --out DIR   output folder (default: ${defaultFixturesDir()})
  --seed N    non-negative integer seed (default: ${DEFAULT_SEED}); same seed, same files
  --help      show this help
  --debug     on an error, print its stack trace`;

/**
 * Parses the command line.
 *
 * @param args command-line arguments
 * @returns the chosen options, or "help"
 * @throws UsageError naming an unknown flag or a bad value
 */
export function parseFixtureArgs(args: string[]): { out: string; seed: number } | "help" {
  const { values } = parseCommandLine({
    args,
    options: {
      out: { type: "string" },
      seed: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  const seed = values.seed === undefined ? DEFAULT_SEED : Number(values.seed);
  if (!/^\d+$/.test(values.seed ?? "0") || !Number.isSafeInteger(seed)) {
    throw new UsageError(`--seed must be a non-negative integer, got "${values.seed}"`);
  }
  return { out: values.out ?? defaultFixturesDir(), seed };
}

async function main(args: string[]): Promise<void> {
  const parsed = parseFixtureArgs(args);
  if (parsed === "help") {
    console.log(USAGE);
    return;
  }
  const { out, seed } = parsed;
  const interactive = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  const started = performance.now();
  const announced = new Set<string>();
  const manifest = await generateFixtures(out, seed, {
    onProgress: ({ category, done, total }) => {
      const percent = Math.floor((100 * done) / total);
      const line = `${category.padEnd(8)} ${done}/${total} images (${percent}%)`;
      if (interactive) {
        Deno.stderr.writeSync(encoder.encode(`\r${line}`));
      } else if (!announced.has(category)) {
        // Logs get one line per category instead of hundreds of carriage returns.
        announced.add(category);
        console.error(`generating ${category}…`);
      }
    },
  }).catch((error) => {
    // An output folder that cannot be made or written is the user's to fix.
    throw asInputError(error);
  });
  if (interactive) Deno.stderr.writeSync(encoder.encode("\n"));
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const categories = Object.keys(manifest.categories).join(", ");
  console.log(`Wrote synthetic MVTec AD (seed ${seed}: ${categories}) to ${out} in ${seconds} s`);
}

if (import.meta.main) await runTask(main);
