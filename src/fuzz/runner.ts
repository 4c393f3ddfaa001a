/**
 * Runs a target's cases and counts how each ended: accepted (parsed), cleanly rejected (an
 * `InputError`, src/util/errors.ts), crash (any other exception, an allocation over the memory
 * limit, a promise left behind that rejects, or the process dying), or hang (over the time limit).
 *
 * Hangs: each target's cases run in a child process ({@link ./worker.ts}), one at a time, and the
 * runner waits for each with a timer that starts once the case is made and written (a case over
 * the limit is run a second time, and counts as a hang when it is over the limit again). A parser
 * stuck in a synchronous loop cannot be interrupted from its own thread, and a per-case
 * wall-clock check would only see the hang after it ended (if ever); killing the process stops it
 * whatever it is doing. A process rather than a Worker, because a parser that exhausts V8's heap
 * ends its whole process: the harness then records a crash instead of dying with it. After a hang
 * or a crash that ended the worker, the runner starts a fresh one and goes on with the next case,
 * so a hang costs two timeouts and never stalls the run.
 *
 * @module
 */

import { type CaseOutcome, type FromWorker, PROTOCOL_PREFIX } from "./protocol.ts";
import type { FuzzTarget } from "./targets.ts";

/** The module whose `FUZZ_TARGETS` the harness runs by default: the project's parsers. */
export const PARSER_TARGETS_MODULE = new URL("./targets.ts", import.meta.url).href;

/** The `FUZZ_TARGETS` a module (given by URL) exports. */
export async function loadTargets(moduleUrl: string): Promise<readonly FuzzTarget[]> {
  const { FUZZ_TARGETS: targets } = await import(moduleUrl);
  if (!Array.isArray(targets)) throw new Error(`${moduleUrl} exports no FUZZ_TARGETS list`);
  return targets;
}

/** A case that crashed or hung: enough to reproduce it (`--target T --seed S --case N`). */
export interface FuzzFailure {
  index: number;
  outcome: "crash" | "hang";
  /** The mutations that made the case. */
  description: string;
  /** The error and where it was thrown, or what the limit was. */
  detail: string;
}

/** One target's counts. */
export interface FuzzReport {
  target: string;
  cases: number;
  /** Cases every read accepted. */
  accepted: number;
  /** Cases a read refused with the project's own error. */
  rejected: number;
  crashes: number;
  hangs: number;
  /** The slowest case's time (the time limit for a hang), and its number. */
  slowestMs: number;
  slowestCase: number;
  /** Crashes and hangs, the first {@link MAX_FAILURES_KEPT} of them. */
  failures: FuzzFailure[];
  /** An example message of a clean rejection, to see that it names the file. */
  exampleRejection?: string;
  /**
   * How many different messages the clean rejections had (numbers aside): a measure of how deep
   * the mutations reach, since a parser that stops every case at its first check has one.
   */
  distinctRejections: number;
}

/** Options of {@link fuzzTarget}. */
export interface FuzzOptions {
  /** How many cases. */
  cases: number;
  /** The run's seed; case `i` of a target depends only on it, the target and `i`. */
  seed: number;
  /** The first case number (default 0), to replay one case. */
  firstCase?: number;
  /** A case whose reads take longer is a hang (default 5 s). */
  timeoutMs?: number;
  /** A case growing memory by more is a crash (default 1 GiB). */
  memoryLimitBytes?: number;
  /** Called after each case with the number done so far. */
  onProgress?: (done: number) => void;
  /**
   * The module (URL) exporting the `FUZZ_TARGETS` to pick the target from; default
   * {@link PARSER_TARGETS_MODULE}. The harness's own tests give targets that hang and crash.
   */
  targetsModule?: string;
}

/** How many failures a report keeps in full. */
export const MAX_FAILURES_KEPT = 20;

/** Building a seed imports a third-party decoder and writes files: allow for a slow start. */
const WORKER_START_TIMEOUT_MS = 120_000;

/** How many times a case must run over the time limit to count as a hang. */
const HANG_ATTEMPTS = 2;

/** Making and writing one case takes milliseconds; this long means a harness bug. */
const CASE_PREPARATION_TIMEOUT_MS = 60_000;

/** What a worker process is started with (its command-line arguments, in this order). */
interface WorkerSettings {
  targetsModule: string;
  target: string;
  seed: number;
  memoryLimitBytes: number;
  /** An empty folder the worker writes its cases' files into. */
  directory: string;
}

/** What the worker said, or that its process ended. */
type WorkerEvent = FromWorker | { type: "exit"; detail: string };

/** A worker process running one target's cases, one at a time. */
class CaseWorker {
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #events: WorkerEvent[] = [];
  #wake: (() => void) | undefined;
  /** The end of the worker's error output, to say why it died. */
  #stderrTail = "";
  #stray: string | undefined;
  #reading: Promise<unknown>;

  constructor(settings: WorkerSettings) {
    const script = new URL("./worker.ts", import.meta.url).href;
    const { targetsModule, target, seed, memoryLimitBytes, directory } = settings;
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        script,
        targetsModule,
        target,
        String(seed),
        String(memoryLimitBytes),
        directory,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.#reading = Promise.all([this.#readMessages(), this.#readErrors()]).then(async () => {
      const status = await this.#child.status;
      const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
      const lines = this.#stderrTail.split("\n").filter((line) => line.trim() !== "");
      this.#push({
        type: "exit",
        detail: `the worker process ended (${how}): ${lines.slice(-3).join(" | ")}`,
      });
    });
  }

  async #readMessages(): Promise<void> {
    let pending = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let newline;
      while ((newline = pending.indexOf("\n")) !== -1) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        const at = line.indexOf(PROTOCOL_PREFIX);
        if (at === -1) continue; // a parser's own output
        let message: FromWorker;
        try {
          message = JSON.parse(line.slice(at + PROTOCOL_PREFIX.length));
        } catch {
          continue; // the prefix in a parser's own output, not a message
        }
        if (message.type === "stray") this.#stray ??= message.detail;
        else this.#push(message);
      }
    }
  }

  async #readErrors(): Promise<void> {
    for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) {
      this.#stderrTail = (this.#stderrTail + chunk).slice(-4000);
    }
  }

  #push(event: WorkerEvent): void {
    this.#events.push(event);
    this.#wake?.();
  }

  /** The next event, or "timeout" after `milliseconds`. */
  async next(milliseconds: number): Promise<WorkerEvent | "timeout"> {
    const deadline = performance.now() + milliseconds;
    while (this.#events.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) return "timeout";
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#wake = undefined;
    }
    return this.#events.shift()!;
  }

  /** Asks for case `index`. */
  async run(index: number): Promise<void> {
    // A worker that has died cannot take it; its exit event says why.
    await this.#stdin.write(new TextEncoder().encode(`${index}\n`)).catch(() => {});
  }

  /** An error a parser's left-over promise raised since the last call, if any. */
  takeStray(): string | undefined {
    const stray = this.#stray;
    this.#stray = undefined;
    return stray;
  }

  /** Kills the process and waits until it and its pipes are done. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // It had ended already.
    }
    await this.#stdin.close().catch(() => {});
    await this.#reading;
  }
}

/** Starts a worker and waits until its seed is built. */
async function startWorker(settings: WorkerSettings): Promise<CaseWorker> {
  const worker = new CaseWorker(settings);
  const event = await worker.next(WORKER_START_TIMEOUT_MS);
  if (event !== "timeout" && event.type === "ready") return worker;
  await worker.stop();
  throw new Error(`Cannot start fuzz target "${settings.target}": ${harnessProblem(event)}`);
}

/** What went wrong in the harness, from an event that should not have come. */
function harnessProblem(event: WorkerEvent | "timeout"): string {
  if (event === "timeout") return "the worker did not answer";
  if (event.type === "failed") return event.message;
  if (event.type === "exit") return event.detail;
  return `unexpected message "${event.type}"`;
}

/**
 * Runs `options.cases` cases of the target called `name`.
 *
 * @throws Error when there is no such target or the harness fails (its worker cannot start, or a
 *   case cannot be made): a harness failure, not a finding
 */
export async function fuzzTarget(name: string, options: FuzzOptions): Promise<FuzzReport> {
  const targetsModule = options.targetsModule ?? PARSER_TARGETS_MODULE;
  const targets = await loadTargets(targetsModule);
  if (!targets.some((target) => target.name === name)) {
    throw new Error(`No fuzz target "${name}" in ${targetsModule}`);
  }
  const timeoutMs = options.timeoutMs ?? 5000;
  const memoryLimitBytes = options.memoryLimitBytes ?? 2 ** 30;
  const firstCase = options.firstCase ?? 0;
  const report: FuzzReport = {
    target: name,
    cases: 0,
    accepted: 0,
    rejected: 0,
    crashes: 0,
    hangs: 0,
    slowestMs: 0,
    slowestCase: firstCase,
    failures: [],
    distinctRejections: 0,
  };
  const rejectionKinds = new Set<string>();
  const record = (
    index: number,
    outcome: CaseOutcome,
    milliseconds: number,
    description: string,
    detail = "",
  ) => {
    report.cases++;
    if (outcome === "accepted") report.accepted++;
    else if (outcome === "rejected") {
      report.rejected++;
      report.exampleRejection ??= detail;
      rejectionKinds.add(detail.replace(/ \(at [^)]*\)$/, "").replace(/\d+/g, "N"));
      report.distinctRejections = rejectionKinds.size;
    } else {
      if (outcome === "crash") report.crashes++;
      else report.hangs++;
      if (report.failures.length < MAX_FAILURES_KEPT) {
        report.failures.push({ index, outcome, description, detail });
      }
    }
    if (milliseconds > report.slowestMs) {
      report.slowestMs = milliseconds;
      report.slowestCase = index;
    }
    options.onProgress?.(report.cases);
  };
  // The workers write each case's files here; a killed worker's leftovers go with it at the end.
  const directory = await Deno.makeTempDir({ prefix: `anodet-fuzz-${name}-` });
  let worker: CaseWorker | undefined;
  try {
    for (let index = firstCase; index < firstCase + options.cases; index++) {
      // A case over the time limit runs once more, in a fresh worker: on a machine busy with
      // other work, a stalled process can pass for a hang, and a real hang hangs again.
      for (let attempt = 1;; attempt++) {
        worker ??= await startWorker({
          targetsModule,
          target: name,
          seed: options.seed,
          memoryLimitBytes,
          directory,
        });
        await worker.run(index);
        const started = await worker.next(CASE_PREPARATION_TIMEOUT_MS);
        if (started === "timeout" || started.type !== "started") {
          throw new Error(`Fuzz target "${name}", case ${index}: ${harnessProblem(started)}`);
        }
        const { description } = started;
        const event = await worker.next(timeoutMs);
        if (event === "timeout" || event.type === "exit") {
          // Stuck or dead: replace the worker.
          await worker.stop();
          worker = undefined;
          if (event !== "timeout") record(index, "crash", 0, description, event.detail);
          else if (attempt < HANG_ATTEMPTS) continue;
          else {
            const detail = `over ${timeoutMs / 1000} s, ${HANG_ATTEMPTS} times`;
            record(index, "hang", timeoutMs, description, detail);
          }
          break;
        }
        if (event.type !== "done") {
          throw new Error(`Fuzz target "${name}", case ${index}: ${harnessProblem(event)}`);
        }
        const stray = worker.takeStray();
        if (stray) record(index, "crash", event.milliseconds, description, stray);
        else record(index, event.outcome, event.milliseconds, description, event.detail);
        break;
      }
    }
  } finally {
    await worker?.stop();
    await Deno.remove(directory, { recursive: true }).catch(() => {});
  }
  return report;
}

/** The reports as a Markdown table, one row per target. */
export function formatReports(reports: readonly FuzzReport[]): string {
  const header = [
    "target",
    "cases",
    "rejected",
    "accepted",
    "crashes",
    "hangs",
    "slowest ms",
    "distinct errors",
  ];
  const rows = reports.map((r) => [
    r.target,
    String(r.cases),
    String(r.rejected),
    String(r.accepted),
    String(r.crashes),
    String(r.hangs),
    r.slowestMs.toFixed(1),
    String(r.distinctRejections),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  // Names left-aligned, numbers right-aligned.
  const cell = (text: string, i: number) =>
    i === 0 ? text.padEnd(widths[i]) : text.padStart(widths[i]);
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  const rule = `| ${
    widths.map((w, i) => (i === 0 ? "-".repeat(w) : `${"-".repeat(w - 1)}:`))
      .join(" | ")
  } |`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}
