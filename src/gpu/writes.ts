/**
 * Which GPU buffers changed, so that what an op derives from a buffer on the GPU (a weight
 * packed as a texture, see gemm.ts) can be kept until the buffer is written again. Every write
 * is recorded through the {@link Recorder}: queue writes, buffer copies, and dispatches, whose
 * pipelines list the bindings their shader declares `read_write` (see pipelines.ts).
 */
export class WriteLog {
  private writes = 0;

  /** Notes a write to `buffer`. */
  wrote(buffer: GPUBuffer): void {
    // A property of the buffer object itself: every dispatch notes its outputs, and a property
    // store costs less JavaScript per dispatch than a WeakMap's.
    (buffer as VersionedBuffer)[lastWrite] = ++this.writes;
  }

  /** A number that changes whenever `buffer` is written (0 until it first is). */
  version(buffer: GPUBuffer): number {
    return (buffer as VersionedBuffer)[lastWrite] ?? 0;
  }
}

const lastWrite = Symbol("lastWrite");

type VersionedBuffer = GPUBuffer & { [lastWrite]?: number };

/**
 * Binding numbers of group 0 that `wgsl` declares as read_write storage buffers: those a dispatch
 * may write.
 */
export function writableBindings(wgsl: string): number[] {
  const declaration = /@group\(0\)\s*@binding\((\d+)\)\s*var<storage,\s*read_write>/g;
  return [...wgsl.matchAll(declaration)].map((match) => Number(match[1]));
}
