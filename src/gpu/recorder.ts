/**
 * The recorder puts every dispatch into one command encoder and submits only when it must: when
 * data has to come back to the CPU, or before the CPU writes into a buffer that recorded work may
 * still read. A whole training step therefore becomes one submit and at most one readback.
 */

/** Counters that tests and benchmarks read to prove how much the CPU waits on the GPU. */
export interface RecorderStats {
  /** GPU→CPU reads (each costs a full round trip, about 11 ms on lavapipe). */
  readbacks: number;
  /** Command buffers submitted. */
  submits: number;
  /** Compute dispatches recorded. */
  dispatches: number;
}

/** Records compute dispatches into a shared encoder and owns the uniform-buffer cache. */
export class Recorder {
  /** Running counters; reset them freely. */
  readonly stats: RecorderStats = { readbacks: 0, submits: 0, dispatches: 0 };
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly uniforms = new Map<string, GPUBuffer>();
  private transientBuffers: GPUBuffer[] = [];
  private static readonly maxCachedUniforms = 4096;

  /** Wraps a device. */
  constructor(private readonly device: GPUDevice) {}

  private currentPass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    return this.pass;
  }

  private currentEncoderWithoutPass(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  /** Records one compute dispatch. Dispatches inside a pass are ordered, so no barriers are needed. */
  dispatch(
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    workgroups: readonly [number, number?, number?],
  ): void {
    const pass = this.currentPass();
    pass.setPipeline(pipeline);
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
    this.currentEncoderWithoutPass().copyBufferToBuffer(
      source,
      sourceOffset,
      target,
      targetOffset,
      bytes,
    );
  }

  /** Submits everything recorded so far. It does not wait for the GPU. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.stats.submits++;
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
    this.flush();
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
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
    this.copy(buffer, offset, staging, 0, size);
    this.flush();
    this.stats.readbacks++;
    await staging.mapAsync(GPUMapMode.READ);
    const result = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return result;
  }

  /** Reads several buffers back with one round trip (for checkpoints and batched metrics). */
  async readMany(parts: readonly { buffer: GPUBuffer; bytes: number }[]): Promise<ArrayBuffer[]> {
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
    this.flush();
    this.stats.readbacks++;
    await staging.mapAsync(GPUMapMode.READ);
    const mapped = staging.getMappedRange();
    const results = parts.map((part, i) => mapped.slice(offsets[i], offsets[i] + part.bytes));
    staging.unmap();
    staging.destroy();
    return results;
  }

  /** Waits until the GPU has finished all submitted work (counts as a readback). */
  async sync(): Promise<void> {
    this.flush();
    this.stats.readbacks++;
    await this.device.queue.onSubmittedWorkDone();
  }

  /**
   * A uniform buffer holding these bytes. Buffers are immutable once created, so one with the
   * same contents can be shared by every dispatch that needs it: a training loop repeats the same
   * shapes every step and stops creating new ones after the first.
   */
  uniform(data: ArrayBuffer): GPUBuffer {
    const key = bytesKey(data);
    const cached = this.uniforms.get(key);
    if (cached) return cached;
    if (this.uniforms.size >= Recorder.maxCachedUniforms) {
      // Retire the whole cache; buffers still referenced by recorded work die after the submit.
      this.transientBuffers.push(...this.uniforms.values());
      this.uniforms.clear();
    }
    const buffer = this.device.createBuffer({
      size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
      usage: GPUBufferUsage.UNIFORM,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data));
    buffer.unmap();
    this.uniforms.set(key, buffer);
    return buffer;
  }

  /** Destroys cached uniform buffers (on device teardown). */
  destroyUniforms(): void {
    for (const buffer of this.uniforms.values()) buffer.destroy();
    this.uniforms.clear();
  }
}

function bytesKey(data: ArrayBuffer): string {
  const words = new Uint32Array(data, 0, data.byteLength >> 2);
  let key = "";
  for (let i = 0; i < words.length; i++) key += words[i].toString(36) + ",";
  return key;
}
