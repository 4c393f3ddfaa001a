/**
 * The fuzzing harness: a seeded subset of `deno task fuzz` over every parser (about 200 cases
 * each; no crash and no hang allowed, and the mutations must reach past the first checks), the
 * harness counting each way a parser can fail (with targets that fail on purpose), and the task's
 * command line.
 */

import assert from "node:assert/strict";
import { type FuzzReport, fuzzTarget } from "../../src/fuzz/runner.ts";
import { caseNumber, FUZZ_TARGETS } from "../../src/fuzz/targets.ts";
import { FUZZ_TARGETS as MISBEHAVING } from "./harness_targets.ts";

const CASES = 200;
const SEED = 15;

/** The failures of a report, one per line, for assertion messages. */
function failures(report: FuzzReport): string {
  return report.failures
    .map((f) => `case ${f.index} (${f.outcome}): ${f.description}\n  ${f.detail}`)
    .join("\n");
}

for (const target of FUZZ_TARGETS) {
  Deno.test(`fuzz ${target.name}: ${CASES} cases, no crash, no hang`, async () => {
    const report = await fuzzTarget(target.name, { cases: CASES, seed: SEED });
    assert.equal(report.cases, CASES);
    assert.equal(report.crashes, 0, failures(report));
    assert.equal(report.hangs, 0, failures(report));
    assert.equal(report.rejected + report.accepted, CASES);
    // Most mutations break the file, some leave it readable, and the rejections are of many
    // kinds: the cases get past the magic number into the parser's structure.
    assert.ok(report.rejected >= CASES / 2, `${report.rejected} rejected`);
    assert.ok(report.accepted >= 1, "no case was accepted");
    assert.ok(report.distinctRejections >= 5, `${report.distinctRejections} kinds of rejection`);
    assert.ok(report.slowestMs < 5000, `slowest case ${report.slowestMs} ms`);
    // A rejection names the file it is about.
    const names = [...(await target.seed()).keys()];
    assert.ok(
      names.some((name) => report.exampleRejection!.includes(name)),
      report.exampleRejection,
    );
  });
}

// ---------------------------------------------------------------------------------------------
// The harness itself, on targets that fail on odd inputs and accept even ones.

const HARNESS_TARGETS = new URL("./harness_targets.ts", import.meta.url).href;

/** Which of cases 0..count-1 of a misbehaving target get odd input (and so misbehave). */
async function oddCases(name: string, count: number): Promise<number[]> {
  const target = MISBEHAVING.find((t) => t.name === name)!;
  const seed = await target.seed();
  return Array.from({ length: count }, (_, i) => i)
    .filter((i) => caseNumber(target, seed, SEED, i).files.get("input.bin")![0] === 1);
}

/** Runs `count` cases of a misbehaving target and checks the counts against its odd cases. */
async function runMisbehaving(
  name: string,
  count: number,
  outcome: "rejected" | "crash" | "hang",
  options: { timeoutMs?: number } = {},
): Promise<FuzzReport> {
  const odd = await oddCases(name, count);
  assert.ok(odd.length > 0 && odd.length < count, "the cases must mix odd and even inputs");
  const report = await fuzzTarget(name, {
    cases: count,
    seed: SEED,
    targetsModule: HARNESS_TARGETS,
    ...options,
  });
  assert.equal(report.cases, count);
  assert.equal(report.accepted, count - odd.length, "every even case runs and is accepted");
  const counted = outcome === "rejected"
    ? report.rejected
    : outcome === "crash"
    ? report.crashes
    : report.hangs;
  assert.equal(counted, odd.length, failures(report));
  if (outcome !== "rejected") {
    assert.deepEqual(report.failures.map((f) => f.index), odd);
    assert.ok(report.failures.every((f) => f.outcome === outcome && f.description.endsWith("odd")));
  }
  return report;
}

Deno.test("fuzz harness: an InputError is a clean rejection", async () => {
  const report = await runMisbehaving("rejects", 6, "rejected");
  assert.equal(report.crashes, 0);
  assert.match(report.exampleRejection!, /^InputError: input\.bin: odd input; expected even/);
});

Deno.test("fuzz harness: any other exception is a crash, with its message and place", async () => {
  const report = await runMisbehaving("throws", 6, "crash");
  assert.match(
    report.failures[0].detail,
    /^TypeError: cannot read properties of undefined \(at .*harness_targets\.ts/,
  );
});

Deno.test("fuzz harness: a hang is stopped at the time limit and the run goes on", async () => {
  const started = performance.now();
  const report = await runMisbehaving("hangs", 5, "hang", { timeoutMs: 1000 });
  assert.equal(report.slowestMs, 1000);
  assert.match(report.failures[0].detail, /over 1 s, 2 times/);
  // Each hang costs its two tries and fresh workers, not the whole run.
  assert.ok(performance.now() - started < 30_000);
});

Deno.test("fuzz harness: a case over the time limit only once is no hang", async () => {
  const odd = await oddCases("stalls-once", 4);
  assert.ok(odd.length > 0);
  const report = await fuzzTarget("stalls-once", {
    cases: 4,
    seed: SEED,
    targetsModule: HARNESS_TARGETS,
    timeoutMs: 1000,
  });
  assert.equal(report.hangs, 0, failures(report));
  assert.equal(report.accepted, 4);
});

Deno.test("fuzz harness: a case allocating over 1 GiB is a crash", async () => {
  const report = await runMisbehaving("allocates", 4, "crash");
  assert.match(report.failures[0].detail, /grew memory by 15\d\d MiB \(limit 1024 MiB\)/);
});

Deno.test("fuzz harness: a dead worker process is a crash, and a new one takes over", async () => {
  const report = await runMisbehaving("exits", 8, "crash");
  assert.match(report.failures[0].detail, /the worker process ended \(exit code 3\)/);
});

Deno.test("fuzz harness: a promise a parser leaves behind that rejects is a crash", async () => {
  const report = await runMisbehaving("leaves-a-rejection", 6, "crash");
  assert.match(report.failures[0].detail, /unhandled rejection: RangeError: a promise nobody/);
});

Deno.test("fuzz harness: the same seed makes the same cases, another seed others", async () => {
  const target = FUZZ_TARGETS.find((t) => t.name === "tiff")!;
  const seed = await target.seed();
  const describe = (fuzzSeed: number) =>
    Array.from({ length: 20 }, (_, i) => caseNumber(target, seed, fuzzSeed, i).description);
  assert.deepEqual(describe(1), describe(1));
  assert.notDeepEqual(describe(1), describe(2));
  const bytes = (fuzzSeed: number) => caseNumber(target, seed, fuzzSeed, 7).files.get("map.tiff");
  assert.deepEqual(bytes(3), bytes(3));
});

// ---------------------------------------------------------------------------------------------
// The task.

async function runFuzzTask(args: string[]): Promise<{ code: number; out: string }> {
  const task = new URL("../../tasks/fuzz.ts", import.meta.url).pathname;
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", task, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, out: new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr) };
}

Deno.test("deno task fuzz prints a table per target and writes it as JSON", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const json = `${dir}/fuzz.json`;
    const { code, out } = await runFuzzTask([
      "--target",
      "tiff,safetensors",
      "--cases",
      "20",
      "--seed",
      "4",
      "--json",
      json,
    ]);
    assert.equal(code, 0, out);
    assert.match(out, /\| target +\| cases \| rejected \| accepted \| crashes \| hangs \|/);
    assert.match(out, /\| tiff +\| +20 \| +\d+ \| +\d+ \| +0 \| +0 \|/);
    assert.match(out, /\| safetensors \| +20 \|/);
    const written = JSON.parse(await Deno.readTextFile(json));
    assert.equal(written.seed, 4);
    assert.deepEqual(written.reports.map((r: FuzzReport) => [r.target, r.cases]), [
      ["tiff", 20],
      ["safetensors", 20],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task fuzz exits 1 and says how to replay when a case crashes", async () => {
  const module = new URL("./harness_targets.ts", import.meta.url).pathname;
  const odd = await oddCases("throws", 6);
  const { code, out } = await runFuzzTask([
    "--module",
    module,
    "--target",
    "throws",
    "--cases",
    "6",
    "--seed",
    String(SEED),
  ]);
  assert.equal(code, 1, out);
  assert.match(
    out,
    new RegExp(
      `crash in case ${odd[0]} \\(--target throws --seed ${SEED} --case ${odd[0]}\\): .*odd`,
    ),
  );
  assert.match(out, /TypeError: cannot read properties of undefined/);
  assert.match(out, new RegExp(`\\| throws \\| +6 \\| +0 \\| +\\d \\| +${odd.length} \\| +0 \\|`));
});

Deno.test("deno task fuzz refuses bad flags, naming them", async () => {
  const cases: [string[], RegExp][] = [
    [["--target", "gif"], /--target "gif" is not a fuzz target; expected one of png, jpeg/],
    [["--cases", "0"], /--cases is "0"; expected an integer of at least 1/],
    [["--cases", "many"], /--cases is "many"/],
    [["--seed=-1"], /--seed is "-1"; expected an integer of at least 0/],
    [["--case", "3"], /--case replays one case of one target; give --target NAME/],
    [["--save", "/tmp/x"], /--save writes one case's files; give --case I/],
    [["--frobnicate"], /Unknown flag "--frobnicate"/],
    [["extra"], /unexpected argument "extra"/],
    [["--module", "/nowhere/targets.ts"], /--module "\/nowhere\/targets.ts" cannot be loaded/],
  ];
  for (const [args, message] of cases) {
    const { code, out } = await runFuzzTask(args);
    assert.equal(code, 2, `${args.join(" ")}: ${out}`);
    assert.match(out, message);
    assert.doesNotMatch(out, /at .*\.ts:\d+/, "no stack trace");
  }
});

Deno.test("deno task fuzz --case replays one case and --save writes its files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { code, out } = await runFuzzTask([
      "--target",
      "run-json",
      "--seed",
      "2",
      "--case",
      "5",
      "--save",
      dir,
    ]);
    assert.equal(code, 0, out);
    assert.match(out, /\| run-json \| +1 \|/);
    const files = [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
    const target = FUZZ_TARGETS.find((t) => t.name === "run-json")!;
    const expected = caseNumber(target, await target.seed(), 2, 5);
    assert.deepEqual(files, [...expected.files.keys()].sort());
    for (const [name, bytes] of expected.files) {
      assert.deepEqual(await Deno.readFile(`${dir}/${name}`), bytes);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
