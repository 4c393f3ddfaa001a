/**
 * `deno task bench`: milliseconds and GFLOP/s of the engine's heavy kernels; one training step and
 * one forward pass of the SSIM autoencoder (128×128×1) against PyTorch on the CPU (bench/
 * torch_peer.py, given as many threads as lavapipe uses); where a training step's GPU time goes,
 * by kernel family; and the JavaScript time that recording one dispatch costs.
 *
 * Kernels are timed in batches ending in one wait for the GPU, so the round trip of a software
 * adapter is spread over many runs. Run with --help for the flags.
 */

import { init, noGrad, type Tensor, tidy } from "../src/tensor/tensor.ts";
import * as op from "../src/tensor/ops.ts";
import { gemmFlopsRecorded } from "../src/tensor/ops/gemm.ts";
import { buildAutoencoder } from "../src/methods/ae/model.ts";
import { Adam } from "../src/nn/optim.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { parseCommandLine, UsageError } from "../src/util/cli.ts";
import { writeJsonAtomic } from "../src/util/fs.ts";
import { capture, type CapturedItem, families, type ReplayReport, timeGroups } from "./families.ts";

const USAGE = `deno task bench [flags]

Times the engine's convolutions and matmuls, an SSIM-autoencoder training step and forward pass
(128×128×1) against PyTorch on the CPU, the GPU time of a training step per kernel family, and the
JavaScript time per recorded dispatch.

Flags:
  --batch N          batch of the training step, the forward pass and the conv rows (default 8)
  --min-ms MS        time each measurement over batches of runs of about MS ms (default 300;
                     training steps at least 2000, as training reads the loss back every 2 s)
  --no-torch         skip the PyTorch peer
  --torch-threads N  threads for PyTorch (default: the threads lavapipe uses, i.e. $LP_NUM_THREADS
                     if set, else the number of CPU cores)
  --detail           also time the training step per phase (forward, loss, backward, optimizer),
                     per kernel (shader:entry) and per matrix product (shape, path, blocks),
                     not only per family
  --json FILE        also write every row, ratio and thread count to FILE (atomically)
  --help             show this text

On a hardware adapter it also times a 4096³ matmul and a batch-128 training step.`;

interface Row {
  name: string;
  shape: string;
  ms: number;
  /** GEMM FLOPs of one run (0 where not counted). */
  flops: number;
  /** Training patches per second (training-step rows). */
  patchesPerSecond?: number;
  /** PyTorch's time for the same work, where the peer ran it. */
  peerMs?: number;
}

interface Options {
  batch: number;
  minimumMs: number;
  torch: boolean;
  torchThreads: number | null;
  detail: boolean;
  json: string | null;
}

function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1) {
    throw new UsageError(`${flag} must be a positive integer, got "${text}"`);
  }
  return value;
}

/** The options, "help", or a {@link UsageError}. */
function parseOptions(args: string[]): Options | "help" {
  const { values } = parseCommandLine({
    args,
    options: {
      batch: { type: "string", default: "8" },
      "min-ms": { type: "string", default: "300" },
      "no-torch": { type: "boolean", default: false },
      "torch-threads": { type: "string" },
      detail: { type: "boolean", default: false },
      json: { type: "string" },
      help: { type: "boolean", default: false },
    },
    allowPositionals: false,
    strict: true,
  });
  if (values.help) return "help";
  if (values.json === "") throw new UsageError("--json needs a file name");
  return {
    batch: positiveInteger("--batch", values.batch),
    minimumMs: positiveInteger("--min-ms", values["min-ms"]),
    torch: !values["no-torch"],
    torchThreads: values["torch-threads"] === undefined
      ? null
      : positiveInteger("--torch-threads", values["torch-threads"]),
    detail: values.detail,
    json: values.json ?? null,
  };
}

/**
 * The threads lavapipe runs compute on: $LP_NUM_THREADS if set, else the CPU count (llvmpipe
 * also caps it at its LP_MAX_THREADS, 16 or 32 depending on the Mesa version).
 */
function lavapipeThreads(): { threads: number; source: string } {
  const env = Deno.env.get("LP_NUM_THREADS");
  if (env !== undefined && /^\d+$/.test(env.trim())) {
    return { threads: Number(env.trim()), source: "LP_NUM_THREADS" };
  }
  return { threads: navigator.hardwareConcurrency, source: "CPU cores" };
}

/** How often fit (src/nn/fit.ts) reads the loss back by default, ms. */
const trainingReadbackMs = 2000;

/** Runs in one batch at most. */
const maxRunsPerBatch = 1000;

/**
 * The wait for the GPU when it has nothing to do (an empty command buffer, then the same wait as
 * {@link measure}'s), median of five: ~11 ms on lavapipe, which every wait costs on top of the work.
 */
async function emptyWaitMs(gpu: Gpu): Promise<number> {
  await gpu.recorder.sync();
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    gpu.device.queue.submit([gpu.device.createCommandEncoder().finish()]);
    await gpu.recorder.sync();
    samples.push(performance.now() - start);
  }
  samples.sort((a, b) => a - b);
  return samples[2];
}

/**
 * Median milliseconds of `fn` over batches of runs, and the GEMM FLOPs of one run. A batch is
 * as many runs as take about `minimumMs` of work, then one wait for the GPU (`waitMs`, which is
 * not the work's: an empty submit costs it too), so that the wait weighs on each run by at most
 * waitMs / minimumMs of its time. A run's work is estimated as one run and its wait, less waitMs.
 */
async function measure(
  gpu: Gpu,
  fn: () => void,
  minimumMs: number,
  waitMs: number,
): Promise<{ ms: number; flops: number }> {
  const flopsBefore = gemmFlopsRecorded();
  tidy(fn); // compile pipelines and fill the pools
  await gpu.recorder.sync();
  const flops = gemmFlopsRecorded() - flopsBefore;
  const single = performance.now();
  tidy(fn);
  await gpu.recorder.sync();
  const work = Math.max(performance.now() - single - waitMs, 0.05);
  const reps = Math.max(1, Math.min(maxRunsPerBatch, Math.ceil(minimumMs / work)));
  const samples: number[] = [];
  for (let round = 0; round < 3; round++) {
    const start = performance.now();
    for (let i = 0; i < reps; i++) tidy(fn);
    await gpu.recorder.sync();
    samples.push((performance.now() - start) / reps);
  }
  samples.sort((a, b) => a - b);
  return { ms: samples[1], flops };
}

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

function gflops(row: Row): number | null {
  return row.flops > 0 ? row.flops / row.ms / 1e6 : null;
}

function printTable(rows: Row[]): void {
  const header = `${pad("benchmark", 40)} ${pad("shape", 34)} ${pad("ms", 10, true)} ${
    pad("GFLOP/s", 9, true)
  } ${pad("FLOP", 10, true)}`;
  console.log(header);
  console.log("-".repeat(header.length));
  for (const row of rows) {
    const rate = gflops(row);
    console.log(
      `${pad(row.name, 40)} ${pad(row.shape, 34)} ${pad(row.ms.toFixed(2), 10, true)} ${
        pad(rate === null ? "-" : rate.toFixed(2), 9, true)
      } ${pad(row.flops > 0 ? row.flops.toExponential(2) : "-", 10, true)}${
        row.patchesPerSecond ? `  ${row.patchesPerSecond.toFixed(1)} patches/s` : ""
      }`,
    );
  }
}

interface PeerResult {
  torch: string;
  threads: number;
  interop_threads: number;
  batch: number;
  step_ms: number;
  infer_batch: number;
  infer_ms: number;
}

/** PyTorch's step and forward times, or the reason there are none. */
async function torchPeer(
  batch: number,
  threads: number,
): Promise<{ result: PeerResult; detail: string } | { result: null; detail: string }> {
  const script = new URL("./torch_peer.py", import.meta.url).pathname;
  const args = [script, "--threads", String(threads), "--batch", String(batch)];
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      const { code, stdout, stderr } = await new Deno.Command(python, {
        args: [...args, "--infer-batch", String(batch)],
        env: { OPENBLAS_NUM_THREADS: "1" },
      }).output();
      if (code !== 0) {
        const message = new TextDecoder().decode(stderr).trim().split("\n").pop();
        if (message?.includes("No module named 'torch'")) continue;
        return { result: null, detail: `${python} failed: ${message}` };
      }
      const result = JSON.parse(
        new TextDecoder().decode(stdout).trim().split("\n").pop()!,
      ) as PeerResult;
      return { result, detail: `PyTorch ${result.torch} on the CPU` };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      return { result: null, detail: `${python} failed: ${(error as Error).message}` };
    }
  }
  return {
    result: null,
    detail: "PyTorch not found (apt-get install python3-torch libopenblas0-pthread)",
  };
}

/** A training step of the SSIM autoencoder at `batch` (Adam as in training). */
function trainingStep(
  batch: number,
  seed: number,
): { step: (phase?: (name: string) => void) => void; dispose: () => void } {
  const model = buildAutoencoder({ inputSize: 128 });
  const optimizer = new Adam(model.parameters(), { lr: 2e-4, weightDecay: 1e-5 });
  const images = op.rand([batch, 1, 128, 128], 0, 1, { seed });
  return {
    step: (phase) => {
      phase?.("zero grad");
      optimizer.zeroGrad();
      phase?.("forward");
      const output = model.forward(images);
      phase?.("loss");
      const loss = op.affine(op.ssim(output, images).mean, -1, 1);
      phase?.("backward");
      loss.backward();
      phase?.("optimizer");
      optimizer.step();
    },
    dispose: () => images.dispose(),
  };
}

interface CpuRow {
  name: string;
  dispatches: number;
  ms: number;
  usPerDispatch: number;
}

/** Runs before a recording is timed, so that V8 has compiled the code as a long loop would. */
const recordingWarmups = 5;

/** JavaScript milliseconds of recording `fn` (no GPU wait inside), median of three. */
async function recordingTime(gpu: Gpu, fn: () => void): Promise<CpuRow> {
  for (let i = 0; i < recordingWarmups; i++) {
    tidy(fn);
    await gpu.recorder.sync();
  }
  const samples: { ms: number; dispatches: number }[] = [];
  for (let round = 0; round < 3; round++) {
    const before = gpu.recorder.stats.dispatches;
    const start = performance.now();
    tidy(fn);
    const ms = performance.now() - start;
    samples.push({ ms, dispatches: gpu.recorder.stats.dispatches - before });
    await gpu.recorder.sync();
  }
  samples.sort((a, b) => a.ms - b.ms);
  const { ms, dispatches } = samples[1];
  return { name: "", dispatches, ms, usPerDispatch: (ms * 1000) / Math.max(dispatches, 1) };
}

async function main(options: Options): Promise<void> {
  const { batch, minimumMs } = options;
  const gpu = await init();
  const software = gpu.adapter.isSoftware;
  const lavapipe = lavapipeThreads();
  const torchThreads = options.torchThreads ?? lavapipe.threads;
  console.log(`adapter: ${gpu.adapter.description}${software ? " (software)" : ""}`);
  console.log(
    `threads: engine (lavapipe) ${
      software ? `${lavapipe.threads} (${lavapipe.source})` : "n/a (hardware adapter)"
    }, PyTorch ${options.torch ? torchThreads : "not run"}`,
  );
  // Timings taken while other processes use the CPUs mean little on a software adapter, and
  // PyTorch's thread pool suffers most (its step was seen 13× slower at a load of 5 on 2 cores).
  const load = Deno.loadavg();
  const cores = navigator.hardwareConcurrency;
  console.log(`load average before the run: ${load.map((l) => l.toFixed(2)).join(" ")}`);
  if (load[0] > 0.5 * cores) {
    console.log(
      `warning: other processes keep ${load[0].toFixed(1)} of ${cores} cores busy; ` +
        `the timings below, PyTorch's most, are unreliable`,
    );
  }
  const rows: Row[] = [];
  const waitMs = await emptyWaitMs(gpu);
  // JavaScript time per recorded dispatch (printed after the GPU rows), first for small
  // elementwise ops recorded without a submit. Measured first, while the heap is young: after the
  // long batches of runs below, V8's collections of their garbage land in these few milliseconds
  // and took the same-buffers row from 2–4 to 5–10 µs.
  // Two kinds of small elementwise op: the same buffers every time (the pools hand the result's
  // buffer back, so the uniform and bind-group caches hit, as in a training loop's steady state),
  // and a chain of new tensors (every dispatch binds a buffer it has not bound before).
  const small = op.rand([1024]);
  const repeated = await recordingTime(gpu, () =>
    noGrad(() => {
      for (let i = 0; i < 2000; i++) op.addScalar(small, 1).dispose();
    }));
  repeated.name = "2000 × addScalar, same buffers";
  const chain = await recordingTime(gpu, () =>
    noGrad(() => {
      let x: Tensor = small;
      for (let i = 0; i < 2000; i++) x = op.addScalar(x, 1);
    }));
  chain.name = "2000 × addScalar, chained new tensors";
  small.dispose();
  console.log(
    `each row is timed over batches of runs of at least ${minimumMs} ms of work (training ` +
      `steps ${Math.max(minimumMs, trainingReadbackMs)} ms), each batch followed by one wait ` +
      `for the GPU (${waitMs.toFixed(1)} ms with nothing to wait for)`,
  );
  console.log();

  // The SSIM autoencoder's encoder convolutions at batch `batch`, 128×128 input.
  const layers: [number, number, number, number, number][] = [
    [1, 32, 4, 2, 128],
    [32, 32, 4, 2, 64],
    [32, 32, 3, 1, 32],
    [32, 64, 4, 2, 32],
    [64, 64, 3, 1, 16],
    [64, 128, 4, 2, 16],
    [128, 64, 3, 1, 8],
    [64, 32, 3, 1, 8],
  ];
  for (const [cin, cout, k, stride, size] of layers) {
    const x = op.rand([batch, cin, size, size]);
    const w = op.rand([cout, cin, k, k], -0.1, 0.1);
    const conv = { stride, padding: "same" as const };
    const shape = `${batch}×${cin}×${size}² → ${cout}, ${k}×${k}/${stride}`;
    const forward = await measure(
      gpu,
      () => void op.conv2d(x, w, undefined, conv),
      minimumMs,
      waitMs,
    );
    rows.push({ name: "conv2d forward", shape, ...forward });
    x.requiresGrad = true;
    w.requiresGrad = true;
    const both = await measure(
      gpu,
      () => {
        const y = op.conv2d(x, w, undefined, conv);
        y.backward(op.ones(y.shape));
        x.grad = null;
        w.grad = null;
      },
      minimumMs,
      waitMs,
    );
    rows.push({
      name: "conv2d backward (dx + dw)",
      shape,
      ms: Math.max(both.ms - forward.ms, 0),
      flops: both.flops - forward.flops,
    });
    for (const t of [x, w]) t.dispose();
  }

  for (const n of software ? [1024] : [1024, 4096]) {
    const a = op.rand([n, n]);
    const b = op.rand([n, n]);
    rows.push({
      name: "matmul",
      shape: `${n}×${n} · ${n}×${n}`,
      ...(await measure(gpu, () => void op.matmul(a, b), minimumMs, waitMs)),
    });
    a.dispose();
    b.dispose();
  }

  // Training reads the loss back about every 2 s (fit's reportEveryMs), not after every few
  // steps: the step is timed over at least that long a run of steps per wait for the GPU, so that
  // the wait (~11 ms on lavapipe) weighs on it as in training.
  const trainingWindowMs = Math.max(minimumMs, trainingReadbackMs);
  const training = trainingStep(batch, 1);
  const trainingRow: Row = {
    name: "SSIM-AE training step (fwd+bwd+Adam)",
    shape: `${batch}×1×128×128`,
    ...(await measure(gpu, training.step, trainingWindowMs, waitMs)),
  };
  trainingRow.patchesPerSecond = batch / (trainingRow.ms / 1000);
  rows.push(trainingRow);

  const inferenceModel = buildAutoencoder({ inputSize: 128 }).eval();
  const inferenceImages = op.rand([batch, 1, 128, 128], 0, 1, { seed: 2 });
  const inferenceRow: Row = {
    name: "SSIM-AE inference (forward, noGrad)",
    shape: `${batch}×1×128×128`,
    ...(await measure(
      gpu,
      () => noGrad(() => void inferenceModel.forward(inferenceImages)),
      minimumMs,
      waitMs,
    )),
  };
  rows.push(inferenceRow);

  if (!software) {
    const large = trainingStep(128, 3);
    const row: Row = {
      name: "SSIM-AE training step (fwd+bwd+Adam)",
      shape: "128×1×128×128",
      ...(await measure(gpu, large.step, trainingWindowMs, waitMs)),
    };
    row.patchesPerSecond = 128 / (row.ms / 1000);
    rows.push(row);
    large.dispose();
  }
  printTable(rows);

  // The training step's recording, by contrast, once its code has run many times (in a young
  // heap it took 14–21 µs a dispatch instead of 11–14).
  const stepRecording = await recordingTime(gpu, training.step);
  stepRecording.name = `training step (batch ${batch})`;
  const cpuRows = [repeated, chain, stepRecording];
  console.log(`\nJavaScript time per recorded dispatch (target ≤ 5 µs):`);
  const cpuHeader = `${pad("recording", 40)} ${pad("dispatches", 10, true)} ${
    pad("ms", 10, true)
  } ${pad("µs/dispatch", 12, true)}`;
  console.log(cpuHeader);
  console.log("-".repeat(cpuHeader.length));
  for (const row of cpuRows) {
    console.log(
      `${pad(row.name, 40)} ${pad(String(row.dispatches), 10, true)} ${
        pad(row.ms.toFixed(2), 10, true)
      } ${pad(row.usPerDispatch.toFixed(2), 12, true)}`,
    );
  }

  // Where the training step's GPU time goes. Last on the engine's side: replaying a family alone
  // overwrites the model's parameters and gradients.
  let captured: CapturedItem[] = [];
  let byFamily: ReplayReport | null = null;
  for (let attempt = 0; byFamily === null; attempt++) {
    captured = capture(gpu, (phase) => tidy(() => training.step(phase)));
    await gpu.recorder.sync();
    try {
      byFamily = await timeGroups(
        gpu,
        captured,
        (item) => item.family,
        families,
        minimumMs,
      );
    } catch (error) {
      // A captured bind group may name a uniform buffer that the recorder's cache retired and
      // destroyed since; a fresh capture has live ones.
      if (attempt > 0) throw error;
    }
  }
  const familySum = byFamily.groups.reduce((sum, g) => sum + g.ms, 0);
  console.log(
    `\nTraining step (batch ${batch}) by kernel family: each family's ${captured.length} ` +
      `captured dispatches replayed alone (empty-submit wait of ${
        byFamily.emptySubmitMs.toFixed(2)
      } ms subtracted):`,
  );
  const familyHeader = `${pad("family", 22)} ${pad("dispatches", 10, true)} ${
    pad("ms", 10, true)
  } ${pad("% families", 10, true)} ${pad("% step", 8, true)}  kernels (dispatches)`;
  console.log(familyHeader);
  console.log("-".repeat(familyHeader.length + 30));
  const share = (ms: number, total: number) => `${((100 * ms) / total).toFixed(1)}%`;
  const groupLine = (name: string, dispatches: number, ms: number, kernels: string) =>
    console.log(
      `${pad(name, 22)} ${pad(String(dispatches), 10, true)} ${pad(ms.toFixed(2), 10, true)} ${
        pad(share(ms, familySum), 10, true)
      } ${pad(share(ms, trainingRow.ms), 8, true)}  ${kernels}`,
    );
  const kernelList = (kernels: [string, number][], limit = 4) =>
    kernels.slice(0, limit).map(([k, n]) => `${k} (${n})`).join(", ") +
    (kernels.length > limit ? `, … ${kernels.length - limit} more` : "");
  for (const g of byFamily.groups) {
    const rate = g.name === "GEMM" && trainingRow.flops > 0
      ? `  [${(trainingRow.flops / g.ms / 1e6).toFixed(2)} GFLOP/s]`
      : "";
    groupLine(g.name, g.dispatches, g.ms, kernelList(g.kernels) + rate);
  }
  console.log("-".repeat(familyHeader.length + 30));
  groupLine("sum", captured.length, familySum, "");
  groupLine("replayed step", captured.length, byFamily.all.ms, "all families together, in order");
  groupLine(
    "measured step",
    captured.length,
    trainingRow.ms,
    `JS recording ${stepRecording.ms.toFixed(1)} ms + GPU + wait`,
  );

  let byPhase: ReplayReport | null = null;
  let byKernel: ReplayReport | null = null;
  let byProduct: ReplayReport | null = null;
  if (options.detail) {
    byPhase = await timeGroups(
      gpu,
      captured,
      (item) => item.phase,
      ["zero grad", "forward", "loss", "backward", "optimizer"],
      minimumMs,
    );
    console.log(`\nTraining step by phase (each phase's commands replayed alone):`);
    console.log(familyHeader.replace("family        ", "phase         "));
    for (const g of byPhase.groups) groupLine(g.name, g.dispatches, g.ms, kernelList(g.kernels));
    byKernel = await timeGroups(gpu, captured, (item) => item.label, [], minimumMs);
    const sorted = [...byKernel.groups].sort((a, b) => b.ms - a.ms);
    console.log(`\nTraining step by kernel (each kernel's dispatches replayed alone):`);
    console.log(familyHeader.replace("family        ", "kernel        "));
    for (const g of sorted) groupLine(g.name, g.dispatches, g.ms, "");
    byProduct = await timeGroups(
      gpu,
      captured.filter((item) => item.kind === "dispatch" && item.detail),
      (item) => (item.kind === "dispatch" && item.detail?.what) || "",
      [],
      minimumMs,
    );
    const flopsOf = new Map<string, number>();
    for (const item of captured) {
      if (item.kind !== "dispatch" || !item.detail) continue;
      flopsOf.set(item.detail.what, (flopsOf.get(item.detail.what) ?? 0) + item.detail.flops);
    }
    console.log(
      `\nTraining step by product (the GEMM's dispatches grouped by what they compute, each ` +
        `group replayed alone; M×N×K per group, GFLOP/s where it has FLOPs):`,
    );
    console.log(familyHeader.replace("family        ", "rank          "));
    [...byProduct.groups].sort((a, b) => b.ms - a.ms).forEach((g, i) => {
      const flops = flopsOf.get(g.name) ?? 0;
      const rate = flops > 0 ? `  [${(flops / g.ms / 1e6).toFixed(1)} GFLOP/s]` : "";
      groupLine(`#${i + 1}`, g.dispatches, g.ms, g.name + rate);
    });
  }
  training.dispose();
  inferenceImages.dispose();

  let peer: Awaited<ReturnType<typeof torchPeer>> | null = null;
  if (options.torch) {
    peer = await torchPeer(batch, torchThreads);
    console.log();
    if (peer.result === null) console.log(`peer: ${peer.detail}`);
    else {
      const r = peer.result;
      trainingRow.peerMs = r.step_ms;
      inferenceRow.peerMs = r.infer_ms;
      console.log(
        `peer: ${peer.detail}, torch.set_num_threads(${r.threads}) ` +
          `(interop ${r.interop_threads}); engine: lavapipe ${
            software ? `${lavapipe.threads} threads` : "not used"
          }`,
      );
      console.log(
        `training step (batch ${batch}): engine ${trainingRow.ms.toFixed(1)} ms, PyTorch ${
          r.step_ms.toFixed(1)
        } ms, ratio ${(trainingRow.ms / r.step_ms).toFixed(2)}×`,
      );
      console.log(
        `inference (batch ${batch}):     engine ${inferenceRow.ms.toFixed(1)} ms, PyTorch ${
          r.infer_ms.toFixed(1)
        } ms, ratio ${(inferenceRow.ms / r.infer_ms).toFixed(2)}×`,
      );
    }
  }

  if (options.json) {
    const rowJson = (row: Row) => ({
      name: row.name,
      shape: row.shape,
      ms: row.ms,
      flops: row.flops,
      gflops: gflops(row),
      ...(row.patchesPerSecond ? { patchesPerSecond: row.patchesPerSecond } : {}),
      ...(row.peerMs ? { peerMs: row.peerMs, ratio: row.ms / row.peerMs } : {}),
    });
    const groupJson = (g: (typeof byFamily.groups)[number]) => ({
      name: g.name,
      dispatches: g.dispatches,
      ms: g.ms,
      shareOfFamilies: g.ms / familySum,
      shareOfStep: g.ms / trainingRow.ms,
      replays: g.reps,
      kernels: Object.fromEntries(g.kernels),
    });
    const result = peer?.result ?? null;
    await writeJsonAtomic(options.json, {
      date: new Date().toISOString(),
      adapter: { description: gpu.adapter.description, software },
      threads: {
        lavapipe: software ? lavapipe.threads : null,
        lavapipeSource: software ? lavapipe.source : null,
        torch: result?.threads ?? null,
        torchInterop: result?.interop_threads ?? null,
      },
      batch,
      loadAverage: load,
      rows: rows.map(rowJson),
      recording: cpuRows,
      families: {
        emptySubmitMs: byFamily.emptySubmitMs,
        sumMs: familySum,
        replayedStepMs: byFamily.all.ms,
        measuredStepMs: trainingRow.ms,
        groups: byFamily.groups.map(groupJson),
      },
      ...(byPhase ? { phases: byPhase.groups.map(groupJson) } : {}),
      ...(byKernel ? { kernels: byKernel.groups.map(groupJson) } : {}),
      ...(byProduct ? { products: byProduct.groups.map(groupJson) } : {}),
      torch: result
        ? { version: result.torch, stepMs: result.step_ms, inferenceMs: result.infer_ms }
        : { skipped: peer?.detail ?? "--no-torch" },
      ratios: result
        ? {
          trainingStep: trainingRow.ms / result.step_ms,
          inference: inferenceRow.ms / result.infer_ms,
        }
        : null,
    });
    console.log(`\nwrote ${options.json}`);
  }
}

if (import.meta.main) {
  let options: Options | "help";
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(2);
  }
  if (options === "help") console.log(USAGE);
  else await main(options);
}
