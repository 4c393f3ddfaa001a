/**
 * `deno task bench`: milliseconds and GFLOP/s of the engine's heavy kernels, and of one training
 * step of the SSIM autoencoder (batch 8, 128×128×1), with PyTorch on the CPU as the peer when
 * `import torch` works. Kernels are timed in batches ending in one readback, so the ~11 ms GPU
 * round trip of a software adapter is spread over many runs.
 */

import { parseArgs } from "node:util";
import { init, type Tensor, tidy } from "../src/tensor/tensor.ts";
import * as op from "../src/tensor/ops.ts";
import { gemmFlopsRecorded } from "../src/tensor/ops/gemm.ts";
import { buildAutoencoder } from "../src/methods/ae/model.ts";
import { Adam } from "../src/nn/optim.ts";
import type { Gpu } from "../src/gpu/device.ts";

interface Row {
  name: string;
  shape: string;
  ms: number;
  flops: number;
}

/** Median milliseconds of `fn` over batches of runs, and the GEMM FLOPs of one run. */
async function measure(
  gpu: Gpu,
  fn: () => unknown,
  minimumMs: number,
): Promise<{ ms: number; flops: number }> {
  const flopsBefore = gemmFlopsRecorded();
  tidy(fn); // compile pipelines and fill the pools
  await gpu.recorder.sync();
  const flops = gemmFlopsRecorded() - flopsBefore;
  const single = performance.now();
  tidy(fn);
  await gpu.recorder.sync();
  const reps = Math.max(
    1,
    Math.min(50, Math.ceil(minimumMs / Math.max(performance.now() - single, 1))),
  );
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

function printTable(rows: Row[]): void {
  const header = `${pad("benchmark", 38)} ${pad("shape", 40)} ${pad("ms", 10, true)} ${
    pad("GFLOP/s", 9, true)
  } ${pad("FLOP", 10, true)}`;
  console.log(header);
  console.log("-".repeat(header.length));
  for (const row of rows) {
    const gflops = row.flops > 0 ? (row.flops / row.ms / 1e6).toFixed(2) : "-";
    const flops = row.flops > 0 ? row.flops.toExponential(2) : "-";
    console.log(
      `${pad(row.name, 38)} ${pad(row.shape, 40)} ${pad(row.ms.toFixed(2), 10, true)} ${
        pad(gflops, 9, true)
      } ${pad(flops, 10, true)}`,
    );
  }
}

/** The PyTorch step time in ms, or null with the reason. */
async function torchPeer(
  batch: number,
): Promise<{ ms: number; detail: string } | { ms: null; detail: string }> {
  const script = new URL("./torch_peer.py", import.meta.url).pathname;
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      const { code, stdout, stderr } = await new Deno.Command(python, {
        args: [script, String(batch)],
        env: { OPENBLAS_NUM_THREADS: "1" },
      }).output();
      if (code !== 0) {
        const message = new TextDecoder().decode(stderr).trim().split("\n").pop();
        if (message?.includes("No module named 'torch'")) continue;
        return { ms: null, detail: `${python} failed: ${message}` };
      }
      const result = JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").pop()!);
      return { ms: result.step_ms, detail: `PyTorch ${result.torch}, ${result.threads} thread(s)` };
    } catch {
      continue;
    }
  }
  return {
    ms: null,
    detail: "PyTorch not found (apt-get install python3-torch libopenblas0-pthread)",
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      batch: { type: "string", default: "8" },
      "min-ms": { type: "string", default: "300" },
      "no-torch": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log("deno task bench [--batch N] [--min-ms MS] [--no-torch]");
    return;
  }
  const batch = Number(values.batch);
  const minimumMs = Number(values["min-ms"]);
  const gpu = await init();
  console.log(
    `adapter: ${gpu.adapter.description}${gpu.adapter.isSoftware ? " (software)" : ""}\n`,
  );
  const rows: Row[] = [];

  // The SSIM autoencoder's convolutions at batch `batch`, 128×128 input.
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
    const options = { stride, padding: "same" as const };
    const shape = `${batch}×${cin}×${size}² → ${cout}, ${k}×${k}/${stride}`;
    const forward = await measure(gpu, () => op.conv2d(x, w, undefined, options), minimumMs);
    rows.push({ name: "conv2d forward", shape, ...forward });
    x.requiresGrad = true;
    w.requiresGrad = true;
    const both = await measure(gpu, () => {
      const y = op.conv2d(x, w, undefined, options);
      y.backward(op.ones(y.shape));
      x.grad = null;
      w.grad = null;
    }, minimumMs);
    rows.push({
      name: "conv2d backward (dx + dw)",
      shape,
      ms: Math.max(both.ms - forward.ms, 0),
      flops: both.flops - forward.flops,
    });
    for (const t of [x, w]) t.dispose();
  }

  const a = op.rand([1024, 1024]);
  const b = op.rand([1024, 1024]);
  rows.push({
    name: "matmul",
    shape: "1024×1024 · 1024×1024",
    ...(await measure(gpu, () => op.matmul(a, b), minimumMs)),
  });

  const model = buildAutoencoder({ inputSize: 128 });
  const optimizer = new Adam(model.parameters(), { lr: 2e-4, weightDecay: 1e-5 });
  const images = op.rand([batch, 1, 128, 128], 0, 1, { seed: 1 });
  const step = (): Tensor => {
    optimizer.zeroGrad();
    const loss = op.affine(op.ssim(model.forward(images), images).mean, -1, 1);
    loss.backward();
    optimizer.step();
    return loss;
  };
  const training = await measure(gpu, step, minimumMs);
  rows.push({
    name: "SSIM-AE training step (fwd+bwd+Adam)",
    shape: `${batch}×1×128×128`,
    ...training,
  });
  printTable(rows);

  if (!values["no-torch"]) {
    const peer = await torchPeer(batch);
    console.log();
    if (peer.ms === null) console.log(`peer: ${peer.detail}`);
    else {
      console.log(`peer: ${peer.detail}: ${peer.ms.toFixed(1)} ms per step`);
      console.log(
        `ratio: this engine takes ${(training.ms / peer.ms).toFixed(2)}× PyTorch's time per step`,
      );
    }
  }
}

await main();
