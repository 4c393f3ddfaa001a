/**
 * Where a training step's GPU time goes, by kernel family, without timestamp queries (lavapipe has
 * none worth trusting): the dispatches (and buffer copies) of one step are captured through a hook
 * on the recorder, then each family's dispatches are replayed alone, in the captured order, in a
 * fresh command encoder, and timed with one wait for the queue; the wait for an empty submit is
 * subtracted.
 *
 * Replaying a family alone reads whatever its buffers hold by then, which costs the same as the
 * real data; it also writes them (parameters, gradients), so a model is not worth training after
 * a replay. The bench does it last.
 *
 * @module
 */

import type { Gpu } from "../src/gpu/device.ts";
import type { DispatchDetail } from "../src/gpu/kernel.ts";
import { encodeCopyToTexture } from "../src/gpu/recorder.ts";

/** The families of the per-family table, in the order printed. */
export const families = [
  "GEMM",
  "packing",
  "elementwise",
  "SSIM/filters",
  "reductions",
  "optimizer",
  "copies/other",
] as const;

/** One kernel family. */
export type Family = typeof families[number];

/**
 * Shader (a file in shaders/) → family. `pack` gathers GEMM operands into textures (im2col
 * included) and `col2im` folds the input-gradient columns back into an image: both are the
 * layout work around the products. A shader missing here counts as "copies/other".
 */
const familyOfShader: Readonly<Record<string, Family>> = {
  gemm: "GEMM",
  conv_thin: "GEMM",
  pack: "packing",
  col2im: "packing",
  unary: "elementwise",
  binary: "elementwise",
  filter: "SSIM/filters",
  ssim: "SSIM/filters",
  reduce: "reductions",
  optim: "optimizer",
  copy: "copies/other",
  bias_grad: "reductions",
};

/**
 * Entry points whose family is not their shader's: the direct one-channel convolution's packing
 * passes are layout work like pack.wgsl's.
 */
const familyOfEntry: Readonly<Record<string, Family>> = {
  "conv_thin:pack_rows": "packing",
  "conv_thin:pack_rows4": "packing",
  "conv_thin:pack_kernel_rows": "packing",
};

/** The family of kernel `label` ("shader:entry"). */
export function familyOf(label: string): Family {
  return familyOfEntry[label] ?? familyOfShader[label.split(":")[0]] ?? "copies/other";
}

/** A recorded compute dispatch. */
interface DispatchItem {
  kind: "dispatch";
  /** "shader:entry". */
  label: string;
  /** The family of the shader. */
  family: Family;
  /** The phase of the step it was recorded in (see {@link capture}). */
  phase: string;
  /** What it computes, where its kernel says (matrix products do). */
  detail?: DispatchDetail;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
}

/** A recorded buffer-to-buffer copy (readback staging copies are left out). */
interface CopyItem {
  kind: "copy";
  /** "buffer copy (phase)". */
  label: string;
  /** "optimizer" for copies made by the optimizer's step (packing parameters), else "copies/other". */
  family: Family;
  /** The phase of the step it was recorded in. */
  phase: string;
  source: GPUBuffer;
  sourceOffset: number;
  target: GPUBuffer;
  targetOffset: number;
  bytes: number;
}

/** A recorded copy of a buffer into an operand texture (counted with the packing). */
interface TextureCopyItem {
  kind: "texture copy";
  /** "texture copy (phase)". */
  label: string;
  family: Family;
  /** The phase of the step it was recorded in. */
  phase: string;
  source: GPUBuffer;
  target: GPUTexture;
  texels: number;
}

/** One captured command. */
export type CapturedItem = DispatchItem | CopyItem | TextureCopyItem;

/**
 * Runs `fn` with the recorder hooked and returns every dispatch and copy it recorded, in order.
 * `fn` may name the phase it is in (forward, backward, optimizer, …) through its argument; buffer
 * copies recorded in the phase "optimizer" count in the optimizer's family. The hooks are
 * instance properties that shadow the class's methods and are deleted afterwards.
 */
export function capture(gpu: Gpu, fn: (phase: (name: string) => void) => void): CapturedItem[] {
  const recorder = gpu.recorder;
  const items: CapturedItem[] = [];
  const beginKernel = recorder.beginKernel.bind(recorder);
  const dispatch = recorder.dispatch.bind(recorder);
  const copy = recorder.copy.bind(recorder);
  const copyToTexture = recorder.copyToTexture.bind(recorder);
  let label = "unknown:main";
  let detail: DispatchDetail | undefined;
  let phase = "step";
  const hooks: Partial<Record<"beginKernel" | "dispatch" | "copy" | "copyToTexture", unknown>> = {
    beginKernel: (kernel: string, describe?: () => DispatchDetail) => {
      label = kernel;
      detail = describe?.();
      beginKernel(kernel, describe);
    },
    dispatch: (
      pipeline: GPUComputePipeline,
      bindGroup: GPUBindGroup,
      workgroups: readonly [number, number?, number?],
    ) => {
      items.push({
        kind: "dispatch",
        label,
        family: familyOf(label),
        phase,
        detail,
        pipeline,
        bindGroup,
        workgroups: [workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1],
      });
      dispatch(pipeline, bindGroup, workgroups);
    },
    copy: (
      source: GPUBuffer,
      sourceOffset: number,
      target: GPUBuffer,
      targetOffset: number,
      bytes: number,
    ) => {
      if (!(target.usage & GPUBufferUsage.MAP_READ)) {
        items.push({
          kind: "copy",
          label: `buffer copy (${phase})`,
          family: phase === "optimizer" ? "optimizer" : "copies/other",
          phase,
          source,
          sourceOffset,
          target,
          targetOffset,
          bytes,
        });
      }
      copy(source, sourceOffset, target, targetOffset, bytes);
    },
    copyToTexture: (source: GPUBuffer, target: GPUTexture, texels: number) => {
      items.push({
        kind: "texture copy",
        label: `texture copy (${phase})`,
        family: "packing",
        phase,
        source,
        target,
        texels,
      });
      copyToTexture(source, target, texels);
    },
  };
  Object.assign(recorder, hooks);
  try {
    fn((name) => phase = name);
  } finally {
    for (const name of Object.keys(hooks)) {
      delete (recorder as unknown as Record<string, unknown>)[name];
    }
  }
  return items;
}

/** Encodes `items` `reps` times into one command buffer and submits it. */
function submitReplay(device: GPUDevice, items: readonly CapturedItem[], reps: number): void {
  const encoder = device.createCommandEncoder({ label: "bench replay" });
  for (let rep = 0; rep < reps; rep++) {
    let pass: GPUComputePassEncoder | null = null;
    for (const item of items) {
      if (item.kind === "dispatch") {
        pass ??= encoder.beginComputePass();
        pass.setPipeline(item.pipeline);
        pass.setBindGroup(0, item.bindGroup);
        pass.dispatchWorkgroups(...item.workgroups);
      } else {
        pass?.end();
        pass = null;
        if (item.kind === "texture copy") {
          encodeCopyToTexture(encoder, item.source, item.target, item.texels);
        } else {
          encoder.copyBufferToBuffer(
            item.source,
            item.sourceOffset,
            item.target,
            item.targetOffset,
            item.bytes,
          );
        }
      }
    }
    pass?.end();
  }
  device.queue.submit([encoder.finish()]);
}

/** Wall milliseconds of one replay of `items` × `reps`, submit to the queue's completion. */
async function timeReplay(
  gpu: Gpu,
  items: readonly CapturedItem[],
  reps: number,
): Promise<number> {
  const device = gpu.device;
  device.pushErrorScope("validation");
  const start = performance.now();
  submitReplay(device, items, reps);
  await device.queue.onSubmittedWorkDone();
  const ms = performance.now() - start;
  const error = await device.popErrorScope();
  if (error) throw new Error(`Replaying the captured step failed: ${error.message}`);
  return ms;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** The GPU time of one group of captured commands. */
export interface GroupTiming {
  /** The family or kernel label. */
  name: string;
  /** Dispatches (and copies) of the group in one step. */
  dispatches: number;
  /** Milliseconds per step, the empty-submit wait subtracted. */
  ms: number;
  /** Replays per timed submit. */
  reps: number;
  /** The kernels ("shader:entry") in the group with their dispatch counts, most first. */
  kernels: [string, number][];
}

/** Replay timings of captured commands grouped by `key`, and of all of them together. */
export interface ReplayReport {
  /** Per group, in the order of `order` (groups without commands are left out). */
  groups: GroupTiming[];
  /** All captured commands replayed together in order: the step's GPU time. */
  all: GroupTiming;
  /** Median wait for an empty submit, ms (subtracted from every timing). */
  emptySubmitMs: number;
}

/**
 * Times each group of `items` (grouped by `key`) replayed alone, and all of them together. Each
 * group is replayed often enough to take about `minimumMs` per submit (at most 50 times); the
 * median of three submits counts.
 */
export async function timeGroups(
  gpu: Gpu,
  items: readonly CapturedItem[],
  key: (item: CapturedItem) => string,
  order: readonly string[],
  minimumMs: number,
): Promise<ReplayReport> {
  await gpu.recorder.sync();
  const empties: number[] = [];
  for (let i = 0; i < 5; i++) empties.push(await timeReplay(gpu, [], 1));
  const emptySubmitMs = median(empties);

  const timeGroup = async (name: string, group: readonly CapturedItem[]): Promise<GroupTiming> => {
    const once = Math.max(await timeReplay(gpu, group, 1) - emptySubmitMs, 0.01);
    const reps = Math.max(1, Math.min(50, Math.ceil(minimumMs / once)));
    const samples: number[] = [];
    for (let round = 0; round < 3; round++) {
      samples.push(Math.max(await timeReplay(gpu, group, reps) - emptySubmitMs, 0) / reps);
    }
    const counts = new Map<string, number>();
    for (const item of group) counts.set(item.label, (counts.get(item.label) ?? 0) + 1);
    return {
      name,
      dispatches: group.length,
      ms: median(samples),
      reps,
      kernels: [...counts].sort((a, b) => b[1] - a[1]),
    };
  };

  const grouped = new Map<string, CapturedItem[]>();
  for (const item of items) {
    const name = key(item);
    if (!grouped.has(name)) grouped.set(name, []);
    grouped.get(name)!.push(item);
  }
  const names = [
    ...order.filter((name) => grouped.has(name)),
    ...[...grouped.keys()].filter((name) => !order.includes(name)).sort(),
  ];
  const groups: GroupTiming[] = [];
  for (const name of names) groups.push(await timeGroup(name, grouped.get(name)!));
  const all = await timeGroup("all", items);
  return { groups, all, emptySubmitMs };
}
