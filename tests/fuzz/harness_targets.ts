/**
 * Fuzz targets that misbehave on purpose, for the harness's own tests: each fails in one of the
 * ways the harness must count (a hang, a crash, a huge allocation, a dead process, a rejection
 * left behind), or seems to (a stall that does not come back), on odd input, and accepts its
 * input on even ones.
 */

import { join } from "node:path";
import type { FuzzTarget, SeedFile } from "../../src/fuzz/targets.ts";
import { InputError } from "../../src/util/errors.ts";

/** One file whose mutation writes the case number's parity into its only byte. */
function seed(): Promise<Map<string, SeedFile>> {
  const file: SeedFile = {
    bytes: Uint8Array.of(0),
    mutate: (_, random) => {
      const odd = random.chance(0.5) ? 1 : 0;
      return { bytes: Uint8Array.of(odd), description: odd ? "odd" : "even" };
    },
  };
  return Promise.resolve(new Map([["input.bin", file]]));
}

/** A target that misbehaves with `misbehave` when its input byte is 1. */
function target(name: string, misbehave: () => unknown): FuzzTarget {
  return {
    name,
    description: `${name} on odd input`,
    onDisk: false,
    seed,
    steps: (files) => [() => (files.get("input.bin")![0] === 1 ? misbehave() : "parsed")],
  };
}

/**
 * Hangs on odd input the first time only, as a case may seem to on a busy machine: a marker left
 * in the case's folder (which outlives the killed worker) says it was tried.
 */
const stallsOnce: FuzzTarget = {
  name: "stalls-once",
  description: "stalls-once on odd input",
  onDisk: true,
  seed,
  steps: (files, directory) => [() => {
    if (files.get("input.bin")![0] !== 1) return "parsed";
    const marker = join(directory, "tried");
    try {
      Deno.statSync(marker);
      return "parsed";
    } catch {
      Deno.writeTextFileSync(marker, "");
    }
    while (Date.now() > 0) {
      // Stalled until killed.
    }
  }],
};

/** Keeps large buffers alive, as a parser's result would. */
const kept: Uint8Array[] = [];

export const FUZZ_TARGETS: readonly FuzzTarget[] = [
  target("rejects", () => {
    throw new InputError("input.bin: odd input; expected even");
  }),
  target("throws", () => {
    throw new TypeError("cannot read properties of undefined");
  }),
  target("hangs", () => {
    // A synchronous endless loop: only killing the process stops it.
    while (true) {
      // Deliberately empty.
    }
  }),
  target("allocates", () => {
    // 1.5 GiB of array buffer, never touched, so it costs no physical memory.
    kept.push(new Uint8Array(1.5 * 2 ** 30));
    return kept.length;
  }),
  target("exits", () => Deno.exit(3)),
  stallsOnce,
  target("leaves-a-rejection", () => {
    Promise.reject(new RangeError("a promise nobody awaited"));
    return "parsed";
  }),
];
