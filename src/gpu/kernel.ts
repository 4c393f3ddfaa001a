/**
 * Running one kernel: bind a uniform block and storage buffers in a fixed order, pick the cached
 * pipeline, and record the dispatch. Every op in src/tensor goes through {@link launch}.
 *
 * A dispatch costs a few microseconds of JavaScript, most of which used to be `createBindGroup`.
 * Pooled buffers and uniform blocks with the same contents are reused, so a training loop binds
 * the same resources to the same pipelines every step: bind groups are cached by the identities
 * of what they bind ({@link BindGroupCache}) and made only on a miss.
 */

import type { Gpu } from "./device.ts";
import type { PipelineVariant, ShaderConstants } from "./pipelines.ts";
import type { ShaderName } from "./shaders.ts";
import { hashNumbers, sameNumbers } from "./hash.ts";

/** A storage binding: a buffer and the bytes of it that the kernel may touch. */
export interface StorageBinding {
  /** The buffer. */
  buffer: GPUBuffer;
  /** Bytes bound, starting at offset 0. */
  bytes: number;
}

/** A texture binding (sampled or storage, as the entry point declares it). */
export interface TextureBinding {
  /** The view bound. */
  view: GPUTextureView;
}

/** Everything one dispatch needs. Binding 0 is the uniform block, then `buffers` in order. */
export interface LaunchSpec {
  /** Kernel family (a file in shaders/). */
  shader: ShaderName;
  /** Entry point; defaults to "main". */
  entryPoint?: string;
  /** Compile-time constants, part of the pipeline's cache key. */
  constants?: ShaderConstants;
  /** The uniform block's bytes, from `UniformStruct.pack` (see layout.ts). */
  params: ArrayBuffer;
  /** Resources bound at 1, 2, … in this order; `null` skips a binding the entry point does not use. */
  buffers: readonly (StorageBinding | TextureBinding | null)[];
  /** Workgroup counts. */
  workgroups: readonly [number, number?, number?];
  /**
   * What the dispatch computes, for profiles (the bench's table by product); called only while a
   * profile captures the dispatches, so that recording builds no strings.
   */
  describe?: () => DispatchDetail;
}

/** What one dispatch computes, for profiles. */
export interface DispatchDetail {
  /** E.g. "conv forward 32×8192×512, implicit, 16×16 blocks". */
  what: string;
  /** Floating-point operations (multiply and add count as two). */
  flops: number;
}

const noConstants: ShaderConstants = Object.freeze({});

/** Records one dispatch. */
export function launch(gpu: Gpu, spec: LaunchSpec): void {
  const workgroups = spec.workgroups;
  const x = workgroups[0], y = workgroups[1] ?? 1, z = workgroups[2] ?? 1;
  if (x === 0 || y === 0 || z === 0) return;
  const limit = gpu.maxWorkgroupsPerDimension;
  if (x > limit || y > limit || z > limit) {
    throw new Error(
      `Kernel ${spec.shader} needs ${x}×${y}×${z} workgroups, over this device's limit of ` +
        `${limit} per dimension; split the input into smaller batches.`,
    );
  }
  // The batch's error scopes must be open before a first use compiles the pipeline, so that a
  // compile error is reported with the batch.
  gpu.recorder.beginBatch();
  const variant = gpu.pipelines.variant(
    spec.shader,
    spec.constants ?? noConstants,
    spec.entryPoint ?? "main",
  );
  gpu.recorder.beginKernel(variant.label, spec.describe);
  const uniform = gpu.recorder.uniform(spec.params);
  const bindGroup = gpu.bindGroups.get(variant, uniform, spec.buffers, gpu.maxBindingBytes);
  gpu.recorder.dispatch(variant.pipeline, bindGroup, workgroups);
  for (const index of variant.writtenResources) {
    const resource = spec.buffers[index];
    if (resource && "buffer" in resource) gpu.recorder.writes.wrote(resource.buffer);
  }
}

/** Bytes bound for a storage binding of `bytes` bytes. */
function boundSize(bytes: number): number {
  // Rounded up to 16 bytes so kernels may view any tensor as vec4s; pool buffers have room.
  return Math.max(16, Math.ceil(bytes / 16) * 16);
}

/**
 * A small number per GPU object, for cache keys. Objects are never compared by anything else, so
 * a destroyed buffer's entries simply stop matching and age out.
 */
const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;

function idOf(object: object): number {
  let id = objectIds.get(object);
  if (id === undefined) objectIds.set(object, id = nextObjectId++);
  return id;
}

interface CachedBindGroup {
  /** The identities it was made from: pipeline, uniform, then (resource, size) per binding. */
  readonly key: readonly number[];
  readonly bindGroup: GPUBindGroup;
}

/**
 * Bind groups by what they bind, least recently used dropped first. The key is the pipeline
 * variant, the uniform buffer and every binding's resource and size, as small integers hashed to
 * one number; the stored key is compared on a hit, so a hash collision only costs a miss.
 */
export class BindGroupCache {
  private readonly entries = new Map<number, CachedBindGroup>();
  /** The key of the current lookup, reused so that a hit allocates nothing. */
  private readonly scratch: number[] = [];
  /** Lookups answered from the cache and bind groups made, for tests and benchmarks. */
  readonly stats = { hits: 0, misses: 0 };

  /** A cache for `device` holding at most `capacity` bind groups. */
  constructor(private readonly device: GPUDevice, private readonly capacity = 4096) {}

  /** Number of bind groups held. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The bind group of `variant`'s layout with `uniform` at binding 0 and `resources` at 1, 2, ….
   * Throws when a storage binding exceeds `maxBindingBytes`.
   */
  get(
    variant: PipelineVariant,
    uniform: GPUBuffer,
    resources: readonly (StorageBinding | TextureBinding | null)[],
    maxBindingBytes: number,
  ): GPUBindGroup {
    const key = this.scratch;
    key.length = 0;
    key.push(variant.id, idOf(uniform));
    for (let i = 0; i < resources.length; i++) {
      const resource = resources[i];
      if (!resource) key.push(0, 0);
      else if ("view" in resource) key.push(idOf(resource.view), -1);
      else {
        if (resource.bytes > maxBindingBytes) {
          throw new Error(
            `Kernel ${variant.label} would bind ${resource.bytes} bytes, over this device's ` +
              `maxStorageBufferBindingSize of ${maxBindingBytes} bytes.`,
          );
        }
        key.push(idOf(resource.buffer), boundSize(resource.bytes));
      }
    }
    const hash = hashNumbers(key);
    const cached = this.entries.get(hash);
    if (cached && sameNumbers(cached.key, key)) {
      // Re-inserting keeps the Map's order least recently used first.
      this.entries.delete(hash);
      this.entries.set(hash, cached);
      this.stats.hits++;
      return cached.bindGroup;
    }
    this.stats.misses++;
    const bindGroup = this.create(variant, uniform, resources);
    if (!cached && this.entries.size >= this.capacity) {
      this.entries.delete(this.entries.keys().next().value!);
    }
    this.entries.set(hash, { key: key.slice(), bindGroup });
    return bindGroup;
  }

  /** Forgets every bind group (device teardown). */
  clear(): void {
    this.entries.clear();
  }

  private create(
    variant: PipelineVariant,
    uniform: GPUBuffer,
    resources: readonly (StorageBinding | TextureBinding | null)[],
  ): GPUBindGroup {
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniform } }];
    resources.forEach((resource, i) => {
      if (!resource) return;
      entries.push({
        binding: i + 1,
        resource: "view" in resource
          ? resource.view
          : { buffer: resource.buffer, offset: 0, size: boundSize(resource.bytes) },
      });
    });
    return this.device.createBindGroup({ label: variant.label, layout: variant.layout, entries });
  }
}

/**
 * Workgroup counts for `count` workgroups laid out in 2-D, since one dimension holds at most
 * 65535. Shaders rebuild the linear index as `wid.x + wid.y * nwg.x`.
 */
export function grid2d(count: number): [number, number] {
  if (count <= 65535) return [count, 1];
  const y = Math.ceil(count / 65535);
  return [Math.ceil(count / y), y];
}
