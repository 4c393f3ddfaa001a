/**
 * `deno task fixtures [--out DIR] [--seed N] [--real-world [--scale F]] [--help]`: generates the
 * synthetic MVTec-AD-like dataset (see fixtures/mod.ts), or with --real-world the real-world image
 * shape and format cases (fixtures/real_world.ts). Without --out it fills the default cache
 * location used by the tests and examples.
 *
 * @module
 */

import { asInputError, parseCommandLine, runTask, UsageError } from "../src/util/cli.ts";
import { fileURLToPath } from "node:url";
import { DEFAULT_SEED, defaultFixturesDir, generateFixtures } from "../fixtures/mod.ts";
import { generateRealWorldCases, REAL_WORLD_CASES } from "../fixtures/real_world.ts";

/** Where `--real-world` writes without --out (git-ignored, beside the synthetic dataset). */
const REAL_WORLD_DIR = fileURLToPath(
  new URL("../.fixtures-cache/real_world", import.meta.url),
);

const USAGE = `Usage: deno task fixtures [--out DIR] [--seed N] [--real-world [--scale F]] [--help]

Generates the synthetic MVTec AD miniature (7 categories, 256x256, exact defect masks).

Options:
  --out DIR       output folder (default: ${defaultFixturesDir()};
                  with --real-world: ${REAL_WORLD_DIR})
  --seed N        non-negative integer seed (default: ${DEFAULT_SEED}); same seed, same files
  --real-world    instead, the real-world cases, one category each: ${
  REAL_WORLD_CASES.map((c) => c.name).join(", ")
}
                  (non-square, mixed sizes, 16-bit/alpha/palette PNG, JPEG masks, broken folders)
  --scale F       --real-world sizes: 1 gives line-scan images of 500x1250 (default 0.128)
  --help          show this help
  --debug     on an error, print its stack trace`;

/**
 * Parses the command line.
 *
 * @param args command-line arguments
 * @returns the chosen options, or "help"
 * @throws UsageError naming an unknown flag or a bad value
 */
export function parseFixtureArgs(
  args: string[],
): { out: string; seed: number; realWorld: boolean; scale: number } | "help" {
  const { values } = parseCommandLine({
    args,
    options: {
      out: { type: "string" },
      seed: { type: "string" },
      "real-world": { type: "boolean" },
      scale: { type: "string" },
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
  const realWorld = values["real-world"] ?? false;
  if (values.scale !== undefined && !realWorld) {
    throw new UsageError("--scale sets the sizes of --real-world; add --real-world");
  }
  const scale = values.scale === undefined ? 0.128 : Number(values.scale);
  if (!(scale > 0 && scale <= 4)) {
    throw new UsageError(`--scale expects a number in (0, 4], got "${values.scale}"`);
  }
  const out = values.out ?? (realWorld ? REAL_WORLD_DIR : defaultFixturesDir());
  return { out, seed, realWorld, scale };
}

async function main(args: string[]): Promise<void> {
  const parsed = parseFixtureArgs(args);
  if (parsed === "help") {
    console.log(USAGE);
    return;
  }
  const { out, seed } = parsed;
  if (parsed.realWorld) {
    const cases = await generateRealWorldCases(out, { seed, scale: parsed.scale })
      .catch((error) => {
        throw asInputError(error);
      });
    for (const realCase of cases) {
      const outcome = realCase.refusal ? `refused at ${realCase.refusal.at}` : "works";
      console.log(`  ${realCase.name.padEnd(14)} ${realCase.description} (${outcome})`);
    }
    console.log(`Wrote ${cases.length} real-world cases (seed ${seed}) to ${out}`);
    return;
  }
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
