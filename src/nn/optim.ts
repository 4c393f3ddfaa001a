/**
 * Optimizers: Adam, AdamW and SGD with momentum. One step updates every parameter with a single
 * WGSL dispatch (shaders/optim.wgsl) and reads nothing back.
 *
 * WGSL cannot bind a varying number of buffers, so the optimizer keeps the parameters, their
 * gradients and its own state end to end in flat buffers ({@link FlatParameters}): a step copies
 * each gradient and parameter in with `copyBufferToBuffer`, runs the one kernel over the flat
 * buffers and copies the parameters back. The copies are recorded in the same command encoder
 * and cost the GPU a memcpy each; they replace one dispatch, one uniform block and one bind group
 * per parameter tensor. The parameters stay the master copy: a parameter is copied in again
 * whenever something else wrote it since the last step copied it out (loading a checkpoint, say;
 * the recorder's write log tells, see src/gpu/writes.ts), so nothing has to tell the optimizer.
 *
 * Nothing is uploaded per step: the uniform block only changes with the learning rate, and
 * Adam's bias corrections, which change every step, are copied on the GPU from a table computed
 * once per {@link correctionWindow} steps.
 */

import { empty, keep, noGrad, type Tensor } from "../tensor/tensor.ts";
import { fillInto } from "../tensor/ops.ts";
import { bind } from "../tensor/ops/launch.ts";
import { grid2d, launch, type StorageBinding } from "../gpu/kernel.ts";
import { currentGpu, type Gpu } from "../gpu/device.ts";
import { uniformStruct } from "../gpu/layout.ts";
import { declareShader } from "../gpu/shaders.ts";

/** Settings of an update; SGD passes its momentum as beta1. */
const OptimParams = uniformStruct("OptimParams", {
  lr: "f32",
  beta1: "f32", // Adam β1, or the momentum μ
  beta2: "f32",
  eps: "f32",
  weight_decay: "f32",
});

declareShader("optim", OptimParams);

/** Elements per workgroup of shaders/optim.wgsl; every parameter starts at a multiple of it. */
const blockSize = 256;

/** Steps whose bias corrections one upload of the table covers. */
const correctionWindow = 4096;

/** Common optimizer interface. */
export interface Optimizer {
  /** Applies one update from the parameters' current gradients. */
  step(): void;
  /** Clears the gradients. */
  zeroGrad(): void;
  /** Frees the optimizer's state. */
  dispose(): void;
}

/** A storage buffer holding `data`, written at creation (so no queue write flushes the recorder). */
function storageBuffer(gpu: Gpu, data: Uint32Array | Float32Array): GPUBuffer {
  const buffer = gpu.device.createBuffer({
    // Bindings are rounded up to 16 bytes; the zeros after the data are part of it.
    size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  const mapped = data instanceof Uint32Array
    ? new Uint32Array(buffer.getMappedRange())
    : new Float32Array(buffer.getMappedRange());
  mapped.set(data);
  buffer.unmap();
  return buffer;
}

function zeroTensor(length: number): Tensor {
  const t = keep(empty([length]));
  fillInto(t, 0);
  return t;
}

/**
 * The parameters of one optimizer laid out end to end: parameter i occupies elements
 * [offsets[i], offsets[i] + size) of every flat buffer, and starts at a multiple of
 * {@link blockSize} so that each workgroup of the update works on one parameter only.
 */
class FlatParameters {
  /** Where each parameter starts, in elements. */
  readonly offsets: readonly number[];
  /** Elements of every flat buffer, padding included. */
  readonly length: number;
  /** The parameters, copied in before each update and out after it. */
  private readonly values: Tensor;
  /** The gradients, copied in before each update. */
  private readonly grads: Tensor;
  /**
   * Per set of parameters with gradients ("1" or "0" per parameter): the valid elements of each
   * block, 0 for blocks of parameters without one. Usually one entry, made on the first step.
   */
  private readonly limits = new Map<string, GPUBuffer>();
  /** The GPU the parameters live on. */
  readonly gpu: Gpu;
  /**
   * Per parameter, the version of its buffer (see WriteLog) right after the last step copied it
   * out, when the flat buffer still holds the same values; -1 before the first.
   */
  private readonly copiedOut: number[];

  constructor(readonly parameters: readonly Tensor[]) {
    const offsets: number[] = [];
    let length = 0;
    for (const p of parameters) {
      offsets.push(length);
      length += Math.ceil(p.size / blockSize) * blockSize;
    }
    this.offsets = offsets;
    this.length = Math.max(length, blockSize);
    this.gpu = parameters[0]?.gpu ?? currentGpu();
    this.values = zeroTensor(this.length);
    this.grads = zeroTensor(this.length);
    this.copiedOut = parameters.map(() => -1);
  }

  /** A zero-filled flat buffer for optimizer state. */
  zeroState(): Tensor {
    return zeroTensor(this.length);
  }

  /**
   * Copies the parameters that have a gradient, and their gradients, into the flat buffers.
   * Returns the bindings of the update (values, gradients, block limits), or null when no
   * parameter has a gradient.
   */
  gather(): { values: StorageBinding; grads: StorageBinding; limits: StorageBinding } | null {
    const recorder = this.gpu.recorder;
    let pattern = "";
    this.parameters.forEach((p, i) => {
      if (!p.grad || p.size === 0) {
        pattern += "0";
        return;
      }
      pattern += "1";
      const offset = this.offsets[i] * 4;
      recorder.copy(p.grad.buffer, 0, this.grads.buffer, offset, p.bytes);
      if (recorder.writes.version(p.buffer) !== this.copiedOut[i]) {
        recorder.copy(p.buffer, 0, this.values.buffer, offset, p.bytes);
      }
    });
    if (!pattern.includes("1")) return null;
    let limits = this.limits.get(pattern);
    if (!limits) this.limits.set(pattern, limits = this.makeLimits(pattern));
    return {
      values: bind(this.values),
      grads: bind(this.grads),
      limits: { buffer: limits, bytes: (this.length / blockSize) * 4 },
    };
  }

  /** Copies the updated parameters (those that had a gradient) back. */
  scatter(): void {
    const recorder = this.gpu.recorder;
    this.parameters.forEach((p, i) => {
      if (!p.grad || p.size === 0) return;
      recorder.copy(this.values.buffer, this.offsets[i] * 4, p.buffer, 0, p.bytes);
      this.copiedOut[i] = recorder.writes.version(p.buffer);
    });
  }

  /** Workgroups of an update (one per block). */
  get workgroups(): [number, number] {
    return grid2d(this.length / blockSize);
  }

  private makeLimits(pattern: string): GPUBuffer {
    const limits = new Uint32Array(this.length / blockSize);
    this.parameters.forEach((p, i) => {
      if (pattern[i] !== "1") return;
      const first = this.offsets[i] / blockSize;
      for (let start = 0; start < p.size; start += blockSize) {
        limits[first + start / blockSize] = Math.min(blockSize, p.size - start);
      }
    });
    return storageBuffer(this.gpu, limits);
  }

  /** Frees the flat buffers. */
  dispose(): void {
    // Recorded work may still bind the limits; destroying a buffer before its submit is an error.
    this.gpu.recorder.flush();
    for (const buffer of this.limits.values()) buffer.destroy();
    this.limits.clear();
    this.values.dispose();
    this.grads.dispose();
  }
}

function clearGrads(parameters: readonly Tensor[]): void {
  for (const p of parameters) {
    p.grad?.dispose();
    p.grad = null;
  }
}

/** Options of {@link Adam}. */
export interface AdamOptions {
  /** Learning rate (default 1e-3). */
  lr?: number;
  /** β1 (default 0.9). */
  beta1?: number;
  /** β2 (default 0.999). */
  beta2?: number;
  /** ε (default 1e-8). */
  eps?: number;
  /** Weight decay (default 0): added to the gradient (Adam) or applied to the weights (AdamW). */
  weightDecay?: number;
  /** Decoupled weight decay, i.e. AdamW (default false). */
  decoupled?: boolean;
}

/** Adam (Kingma & Ba 2015); with `decoupled` it is AdamW (Loshchilov & Hutter 2019). */
export class Adam implements Optimizer {
  /** Steps taken so far; a checkpoint restores it, and the next step continues from it. */
  stepCount = 0;
  private readonly flat: FlatParameters;
  private readonly moment1: Tensor;
  private readonly moment2: Tensor;
  private readonly settings: Required<AdamOptions>;
  /** Bias corrections of steps [windowStart, windowStart + correctionWindow), in pairs. */
  private correctionTable: GPUBuffer | null = null;
  private windowStart = 0;
  /** This step's pair, copied from the table; the kernel reads it. */
  private readonly corrections: GPUBuffer;

  /** An optimizer over `parameters`. */
  constructor(readonly parameters: readonly Tensor[], options: AdamOptions = {}) {
    this.settings = {
      lr: options.lr ?? 1e-3,
      beta1: options.beta1 ?? 0.9,
      beta2: options.beta2 ?? 0.999,
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0,
      decoupled: options.decoupled ?? false,
    };
    this.flat = new FlatParameters(parameters);
    this.moment1 = this.flat.zeroState();
    this.moment2 = this.flat.zeroState();
    this.corrections = storageBuffer(this.flat.gpu, new Float32Array(4));
  }

  /** The current learning rate; it may be changed between steps. */
  get lr(): number {
    return this.settings.lr;
  }

  set lr(value: number) {
    this.settings.lr = value;
  }

  /** One Adam update of every parameter that has a gradient. */
  step(): void {
    const gpu = this.flat.gpu;
    const s = this.settings;
    this.stepCount++;
    noGrad(() => {
      const bound = this.flat.gather();
      if (!bound) return;
      this.copyCorrections(gpu, this.stepCount);
      launch(gpu, {
        shader: "optim",
        entryPoint: "adam",
        constants: { DECOUPLED: s.decoupled },
        params: OptimParams.pack({
          lr: s.lr,
          beta1: s.beta1,
          beta2: s.beta2,
          eps: s.eps,
          weight_decay: s.weightDecay,
        }),
        buffers: [
          bound.values,
          bound.grads,
          bind(this.moment1),
          bind(this.moment2),
          bound.limits,
          { buffer: this.corrections, bytes: 8 },
        ],
        workgroups: this.flat.workgroups,
      });
      this.flat.scatter();
    });
  }

  /** Puts step t's bias corrections where the kernel reads them, refilling the table if needed. */
  private copyCorrections(gpu: Gpu, t: number): void {
    const start = Math.floor((t - 1) / correctionWindow) * correctionWindow + 1;
    if (!this.correctionTable || start !== this.windowStart) {
      const pairs = new Float32Array(2 * correctionWindow);
      for (let i = 0; i < correctionWindow; i++) {
        // Computed in float64 and rounded once, as a CPU-side update would.
        pairs[2 * i] = 1 - this.settings.beta1 ** (start + i);
        pairs[2 * i + 1] = 1 - this.settings.beta2 ** (start + i);
      }
      if (this.correctionTable) {
        // Recorded work may still copy from the old table (once per window, so cheap).
        gpu.recorder.flush();
        this.correctionTable.destroy();
      }
      this.correctionTable = storageBuffer(gpu, pairs);
      this.windowStart = start;
    }
    gpu.recorder.copy(this.correctionTable, (t - start) * 8, this.corrections, 0, 8);
  }

  /** Clears the gradients. */
  zeroGrad(): void {
    clearGrads(this.parameters);
  }

  /**
   * The state for checkpoints, restored by writing into these tensors: the first and second
   * moments, each a flat [length] tensor holding every parameter at its offset (zero padding
   * between parameters).
   */
  state(): Tensor[] {
    return [this.moment1, this.moment2];
  }

  /** Frees the moments and flat buffers. */
  dispose(): void {
    this.flat.dispose(); // flushes first
    this.correctionTable?.destroy();
    this.correctionTable = null;
    this.corrections.destroy();
    this.moment1.dispose();
    this.moment2.dispose();
  }
}

/** Options of {@link SGD}. */
export interface SgdOptions {
  /** Learning rate (default 1e-2). */
  lr?: number;
  /** Momentum μ (default 0). */
  momentum?: number;
  /** L2 weight decay added to the gradient (default 0). */
  weightDecay?: number;
}

/** Stochastic gradient descent with momentum (PyTorch's formulation). */
export class SGD implements Optimizer {
  private readonly flat: FlatParameters;
  private readonly velocity: Tensor;
  private readonly settings: Required<SgdOptions>;

  /** An optimizer over `parameters`. */
  constructor(readonly parameters: readonly Tensor[], options: SgdOptions = {}) {
    this.settings = {
      lr: options.lr ?? 1e-2,
      momentum: options.momentum ?? 0,
      weightDecay: options.weightDecay ?? 0,
    };
    this.flat = new FlatParameters(parameters);
    this.velocity = this.flat.zeroState();
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    const s = this.settings;
    noGrad(() => {
      const bound = this.flat.gather();
      if (!bound) return;
      launch(this.flat.gpu, {
        shader: "optim",
        entryPoint: "sgd",
        constants: { DECOUPLED: false },
        params: OptimParams.pack({
          lr: s.lr,
          beta1: s.momentum,
          beta2: 0,
          eps: 0,
          weight_decay: s.weightDecay,
        }),
        buffers: [bound.values, bound.grads, bind(this.velocity), null, bound.limits, null],
        workgroups: this.flat.workgroups,
      });
      this.flat.scatter();
    });
  }

  /** Clears the gradients. */
  zeroGrad(): void {
    clearGrads(this.parameters);
  }

  /** Frees the velocity and flat buffers. */
  dispose(): void {
    this.flat.dispose();
    this.velocity.dispose();
  }
}
