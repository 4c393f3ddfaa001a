/**
 * Which GPU buffers changed, so that what an op derives from a buffer on the GPU (a weight
 * packed as a texture, see gemm.ts) can be kept until the buffer is written again. Every write
 * is recorded through the {@link Recorder}: queue writes, buffer copies, and dispatches, whose
 * pipelines list the bindings their shader declares `read_write` (see pipelines.ts).
 */
export class WriteLog {
  private readonly lastWrite = new WeakMap<GPUBuffer, number>();
  private writes = 0;

  /** Notes a write to `buffer`. */
  wrote(buffer: GPUBuffer): void {
    this.lastWrite.set(buffer, ++this.writes);
  }

  /** A number that changes whenever `buffer` is written (0 until it first is). */
  version(buffer: GPUBuffer): number {
    return this.lastWrite.get(buffer) ?? 0;
  }
}

/**
 * Binding numbers of group 0 that `wgsl` declares as read_write storage buffers: those a dispatch
 * may write.
 */
export function writableBindings(wgsl: string): number[] {
  const declaration = /@group\(0\)\s*@binding\((\d+)\)\s*var<storage,\s*read_write>/g;
  return [...wgsl.matchAll(declaration)].map((match) => Number(match[1]));
}
