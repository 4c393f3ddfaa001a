/**
 * The recorder puts every dispatch into one command encoder and submits only when it must: when
 * data has to come back to the CPU, or before the CPU writes into a buffer that recorded work may
 * still read. A whole training step therefore becomes one submit and at most one readback.
 *
 * Each batch (the work between two submits) runs inside WebGPU error scopes. A validation or
 * out-of-memory error in it is thrown, naming the batch's kernels, from the next readback or
 * {@link Recorder.checkErrors}: an exception where the caller is, not a line on the console.
 * Errors that no scope caught (buffer creation, queue writes) are thrown the same way, naming the
 * kernels recorded around them.
 *
 * Every wait on the GPU is raced against the device's loss, and nothing new is recorded on a lost
 * device: both throw {@link GpuDeviceLostError} (see lost.ts).
 */

import { hashNumbers, sameNumbers } from "./hash.ts";
import { DeviceLossWatch } from "./lost.ts";
import { WriteLog } from "./writes.ts";
import type { DispatchDetail } from "./kernel.ts";

/** Kernels named in an error message at most (a batch may run thousands). */
const maxNamedKernels = 20;

/** How a batch's error message names the CPU writes among its kernels. */
const bufferWriteLabel = "a buffer write";

/** Counters that tests and benchmarks read to prove how much the CPU waits on the GPU. */
export interface RecorderStats {
  /** GPU→CPU reads (each costs a full round trip, about 11 ms on lavapipe). */
  readbacks: number;
  /** Command buffers submitted. */
  submits: number;
  /** Compute dispatches recorded. */
  dispatches: number;
}

/**
 * Encodes a copy of the first `texels` vec4s of `source` into operand texture `target`, texel t at
 * (t mod width, t div width) as the kernels address it: the whole rows, then the rest of the last.
 */
export function encodeCopyToTexture(
  encoder: GPUCommandEncoder,
  source: GPUBuffer,
  target: GPUTexture,
  texels: number,
): void {
  const width = target.width;
  const bytesPerRow = width * 16;
  const rows = Math.floor(texels / width);
  if (rows > 0) {
    encoder.copyBufferToTexture({ buffer: source, bytesPerRow }, { texture: target }, [
      width,
      rows,
    ]);
  }
  const rest = texels - rows * width;
  if (rest > 0) {
    encoder.copyBufferToTexture(
      { buffer: source, offset: rows * bytesPerRow, bytesPerRow },
      { texture: target, origin: [0, rows] },
      [rest, 1],
    );
  }
}

/** Records compute dispatches into a shared encoder and owns the uniform-buffer cache. */
export class Recorder {
  /** Running counters; reset them freely. */
  readonly stats: RecorderStats = { readbacks: 0, submits: 0, dispatches: 0 };
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  /** Uniform buffers by a hash of their contents; entries with the same hash are chained. */
  private readonly uniforms = new Map<number, CachedUniform>();
  private uniformCount = 0;
  private transientBuffers: GPUBuffer[] = [];
  private static readonly maxCachedUniforms = 4096;
  /** The pipeline last set in the open pass, so that a run of the same kernel sets it once. */
  private passPipeline: GPUComputePipeline | null = null;
  /** Kernels ("shader:entry") recorded since the batch's error scopes were opened, or null. */
  private batchKernels: Set<string> | null = null;
  /** Error messages of submitted batches, resolved once WebGPU has checked them. */
  private pendingErrors: Promise<string | null>[] = [];
  /** The kernel recorded last, named by errors that no batch's scope caught. */
  private lastKernel: string | null = null;
  /** The device's loss, raced by every wait. */
  readonly loss: DeviceLossWatch;
  /** Buffers written by what was recorded (see writes.ts). */
  readonly writes: WriteLog = new WriteLog();

  /**
   * Wraps a device. `errors` receives every error message (uncaught ones too, through
   * {@link reportError}); it is the list that `Gpu.errors` shows.
   */
  constructor(private readonly device: GPUDevice, readonly errors: string[] = []) {
    this.loss = new DeviceLossWatch(device);
  }

  /** Opens the error scopes of a batch if none is open (cheap when one is). */
  beginBatch(): void {
    this.openBatch();
  }

  private openBatch(): Set<string> {
    if (this.batchKernels) return this.batchKernels;
    // Every kernel launch and encoder passes here: work recorded on a lost device never runs.
    this.loss.throwIfLost();
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    return this.batchKernels = new Set();
  }

  /** Closes the batch's error scopes; what they caught is thrown by the next check. */
  private closeBatch(): void {
    const kernels = this.batchKernels;
    if (!kernels) return;
    this.batchKernels = null;
    const validation = this.device.popErrorScope();
    const outOfMemory = this.device.popErrorScope();
    this.pendingErrors.push(
      Promise.all([validation, outOfMemory]).then(
        ([a, b]) => {
          const error = a ?? b;
          return error ? this.record(describeBatchError(error, kernels)) : null;
        },
        (reason) => this.record(`WebGPU error scopes could not be read: ${reason}`),
      ),
    );
  }

  private record(message: string): string {
    // Bounded: a broken kernel in a loop would otherwise fill memory.
    if (this.errors.length < 100) this.errors.push(message);
    return message;
  }

  /**
   * Notes that the batch runs kernel `label` ("shader:entry"), for its error message. Call
   * {@link beginBatch} before making the kernel's pipeline and bind group, so that errors in
   * making them are caught with the batch's. `_describe` says what the dispatch computes, for
   * profiles that hook this method (bench/families.ts); the recorder itself never calls it.
   */
  beginKernel(label: string, _describe?: () => DispatchDetail): void {
    const kernels = this.openBatch();
    if (kernels.size < maxNamedKernels) kernels.add(label);
    this.lastKernel = label;
  }

  /**
   * Records an error that no scope caught (from the device's `uncapturederror` event): a buffer
   * creation or queue write between batches. WebGPU reports it later, so the message names the
   * kernels being recorded when it arrived, else the kernel recorded last.
   */
  reportError(error: GPUError): void {
    const recording = this.batchKernels && this.batchKernels.size > 0
      ? `while recording ${[...this.batchKernels].join(", ")}`
      : this.lastKernel
      ? `after kernel ${this.lastKernel}`
      : "before any kernel";
    this.pendingErrors.push(
      Promise.resolve(
        this.record(
          `WebGPU ${errorKind(error)} error ${recording}, outside the kernels' error scopes ` +
            `(a buffer creation or write): ${error.message.trim()}`,
        ),
      ),
    );
  }

  /**
   * Submits what is recorded, waits until WebGPU has checked it, and throws the first error of
   * any batch since the last check.
   */
  async checkErrors(): Promise<void> {
    this.flush();
    const checked = await this.loss.race(Promise.all(this.pendingErrors.splice(0)));
    const messages = checked.filter((m) => m !== null);
    if (messages.length === 0) return;
    const more = messages.length > 1 ? ` (and ${messages.length - 1} more errors)` : "";
    throw new Error(messages[0] + more);
  }

  private currentPass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.createEncoder();
    if (!this.pass) {
      this.pass = this.encoder.beginComputePass();
      this.passPipeline = null;
    }
    return this.pass;
  }

  private currentEncoderWithoutPass(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.createEncoder();
    return this.encoder;
  }

  private createEncoder(): GPUCommandEncoder {
    this.openBatch();
    return this.device.createCommandEncoder();
  }

  /** Records one compute dispatch. Dispatches inside a pass are ordered, so no barriers are needed. */
  dispatch(
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    workgroups: readonly [number, number?, number?],
  ): void {
    const pass = this.currentPass();
    if (pipeline !== this.passPipeline) {
      pass.setPipeline(pipeline);
      this.passPipeline = pipeline;
    }
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1);
    this.stats.dispatches++;
  }

  /** Records a buffer-to-buffer copy in order with the dispatches. */
  copy(
    source: GPUBuffer,
    sourceOffset: number,
    target: GPUBuffer,
    targetOffset: number,
    bytes: number,
  ): void {
    this.writes.wrote(target);
    this.currentEncoderWithoutPass().copyBufferToBuffer(
      source,
      sourceOffset,
      target,
      targetOffset,
      bytes,
    );
  }

  /**
   * Records a copy of the first `texels` vec4s of `source` into operand texture `target` (see
   * {@link encodeCopyToTexture}), in order with the dispatches like {@link copy}.
   */
  copyToTexture(source: GPUBuffer, target: GPUTexture, texels: number): void {
    encodeCopyToTexture(this.currentEncoderWithoutPass(), source, target, texels);
  }

  /** Submits everything recorded so far. It does not wait for the GPU. */
  flush(): void {
    if (!this.encoder) {
      this.closeBatch();
      return;
    }
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.stats.submits++;
    this.closeBatch();
    // Destroying after submit is safe: WebGPU keeps a buffer alive until submitted work is done.
    for (const buffer of this.transientBuffers) buffer.destroy();
    this.transientBuffers = [];
  }

  /**
   * Writes CPU data into a buffer. Queue writes run before any unsubmitted commands, so recorded
   * work that still reads this buffer is submitted first: otherwise a pooled buffer could be
   * overwritten before an earlier dispatch had read it.
   */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.loss.throwIfLost();
    this.flush();
    // The write joins the next batch's error scopes, so that its errors are thrown by the next
    // readback with the kernels that follow it, not reported later without them.
    this.openBatch().add(bufferWriteLabel);
    this.writes.wrote(buffer);
    this.device.queue.writeBuffer(
      buffer,
      offset,
      data.buffer as ArrayBuffer,
      data.byteOffset,
      data.byteLength,
    );
  }

  /** Reads bytes back to the CPU: the only place where the CPU waits for the GPU. */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.loss.throwIfLost();
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
    this.copy(buffer, offset, staging, 0, size);
    this.stats.readbacks++;
    try {
      await this.checkErrors();
      await this.loss.race(staging.mapAsync(GPUMapMode.READ));
      return staging.getMappedRange().slice(0, bytes);
    } finally {
      staging.destroy();
    }
  }

  /** Reads several buffers back with one round trip (for checkpoints and batched metrics). */
  async readMany(parts: readonly { buffer: GPUBuffer; bytes: number }[]): Promise<ArrayBuffer[]> {
    this.loss.throwIfLost();
    const offsets: number[] = [];
    let total = 0;
    for (const part of parts) {
      offsets.push(total);
      total += Math.ceil(part.bytes / 4) * 4;
    }
    const staging = this.device.createBuffer({
      size: Math.max(total, 4),
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
    parts.forEach((part, i) => {
      const size = Math.ceil(part.bytes / 4) * 4;
      if (size > 0) this.copy(part.buffer, 0, staging, offsets[i], size);
    });
    this.stats.readbacks++;
    try {
      await this.checkErrors();
      await this.loss.race(staging.mapAsync(GPUMapMode.READ));
      const mapped = staging.getMappedRange();
      return parts.map((part, i) => mapped.slice(offsets[i], offsets[i] + part.bytes));
    } finally {
      staging.destroy();
    }
  }

  /** Waits until the GPU has finished all submitted work (counts as a readback). */
  async sync(): Promise<void> {
    this.stats.readbacks++;
    await this.checkErrors();
    await this.loss.race(this.device.queue.onSubmittedWorkDone());
  }

  /**
   * A uniform buffer holding these bytes. Buffers are immutable once created, so one with the
   * same contents can be shared by every dispatch that needs it: a training loop repeats the same
   * shapes every step and stops creating new ones after the first.
   */
  uniform(data: ArrayBuffer): GPUBuffer {
    const words = new Uint32Array(data, 0, data.byteLength >> 2);
    const hash = hashNumbers(words);
    for (let entry = this.uniforms.get(hash) ?? null; entry; entry = entry.next) {
      if (sameNumbers(entry.words, words)) return entry.buffer;
    }
    if (this.uniformCount >= Recorder.maxCachedUniforms) {
      // Retire the whole cache; buffers still referenced by recorded work die after the submit.
      for (const chain of this.uniforms.values()) {
        for (let entry: CachedUniform | null = chain; entry; entry = entry.next) {
          this.transientBuffers.push(entry.buffer);
        }
      }
      this.uniforms.clear();
      this.uniformCount = 0;
    }
    const buffer = this.device.createBuffer({
      size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
      usage: GPUBufferUsage.UNIFORM,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data));
    buffer.unmap();
    const next = this.uniforms.get(hash) ?? null;
    this.uniforms.set(hash, { words: words.slice(), buffer, next });
    this.uniformCount++;
    return buffer;
  }

  /** Destroys cached uniform buffers (on device teardown). */
  destroyUniforms(): void {
    for (const chain of this.uniforms.values()) {
      for (let entry: CachedUniform | null = chain; entry; entry = entry.next) {
        entry.buffer.destroy();
      }
    }
    this.uniforms.clear();
    this.uniformCount = 0;
  }
}

/** A cached uniform buffer, its contents, and the next entry whose contents hash alike. */
interface CachedUniform {
  readonly words: Uint32Array;
  readonly buffer: GPUBuffer;
  readonly next: CachedUniform | null;
}

function errorKind(error: GPUError): string {
  return error instanceof GPUOutOfMemoryError
    ? "out-of-memory"
    : error instanceof GPUInternalError
    ? "internal"
    : "validation";
}

function describeBatchError(error: GPUError, kernels: ReadonlySet<string>): string {
  const kind = errorKind(error);
  const names = kernels.size > 0 ? [...kernels].join(", ") : "no kernels (copies only)";
  const more = kernels.size >= maxNamedKernels ? ", …" : "";
  return `WebGPU ${kind} error in a batch running ${names}${more}: ${error.message.trim()}`;
}
