/**
 * A pool of storage buffers in power-of-two size buckets. Tensors come and go thousands of times
 * in a training run; reusing their buffers keeps GPU memory flat and avoids allocation stalls.
 */

import type { Recorder } from "./recorder.ts";

/** Memory figures of the pool, in bytes. */
export interface PoolStats {
  /** Bytes of all buffers the pool has created and not destroyed. */
  allocatedBytes: number;
  /** Bytes of buffers currently handed out. */
  inUseBytes: number;
  /** Number of buffers created so far (including destroyed ones). */
  created: number;
}

const minBucketBytes = 256;

/** The bucket size that a request of `bytes` is served from. */
export function bucketSize(bytes: number): number {
  return Math.max(minBucketBytes, 2 ** Math.ceil(Math.log2(Math.max(1, bytes))));
}

/**
 * Buffers for tensors: acquire by size, release for reuse.
 *
 * A bucket hands out its oldest free buffer, not the last one released. Which buffer a tensor
 * gets then depends only on which buffers are free, not on the order earlier tensors were
 * disposed in, so a training loop gets the same buffers for the same tensors every step, and the
 * bind groups cached for the previous step (see kernel.ts) are found again.
 */
export class BufferPool {
  /** Free buffers per bucket size, newest first, so that `pop()` gives the oldest. */
  private readonly free = new Map<number, GPUBuffer[]>();
  /** Every live buffer the pool made, with its age (creation number). */
  private readonly owned = new Map<GPUBuffer, number>();
  private nextAge = 0;
  /** Live figures. */
  readonly stats: PoolStats = { allocatedBytes: 0, inUseBytes: 0, created: 0 };

  /** Wraps a device; the recorder is flushed before buffers are destroyed. */
  constructor(private readonly device: GPUDevice, private readonly recorder: Recorder) {}

  /** A storage buffer with room for at least `bytes` bytes. */
  acquire(bytes: number): GPUBuffer {
    const size = bucketSize(bytes);
    const reusable = this.free.get(size)?.pop();
    this.stats.inUseBytes += size;
    if (reusable) return reusable;
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.owned.set(buffer, this.nextAge++);
    this.stats.allocatedBytes += size;
    this.stats.created++;
    return buffer;
  }

  /**
   * Returns a buffer for reuse. Work already recorded may still read it; that is safe because
   * later dispatches run after it, and CPU writes flush the recorder first.
   */
  release(buffer: GPUBuffer): void {
    const size = buffer.size;
    this.stats.inUseBytes -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, list = []);
    // Insert by age (binary search; lists hold a few dozen buffers at most in practice).
    const age = this.owned.get(buffer) ?? Infinity;
    let low = 0, high = list.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((this.owned.get(list[middle]) ?? Infinity) > age) low = middle + 1;
      else high = middle;
    }
    list.splice(low, 0, buffer);
  }

  /** Destroys the buffers waiting for reuse, for example after inference on large images. */
  trim(): void {
    this.recorder.flush();
    for (const list of this.free.values()) {
      for (const buffer of list) {
        this.stats.allocatedBytes -= buffer.size;
        this.owned.delete(buffer);
        buffer.destroy();
      }
    }
    this.free.clear();
  }

  /** Destroys every buffer the pool made, in use or not (device teardown). */
  releaseAll(): void {
    this.recorder.flush();
    for (const buffer of this.owned.keys()) buffer.destroy();
    this.owned.clear();
    this.free.clear();
    this.stats.allocatedBytes = 0;
    this.stats.inUseBytes = 0;
  }
}
