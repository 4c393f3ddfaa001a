/**
 * Running one kernel: bind a uniform block and storage buffers in a fixed order, pick the cached
 * pipeline, and record the dispatch. Every op in src/tensor goes through {@link launch}.
 */

import type { Gpu } from "./device.ts";
import type { ShaderConstants } from "./pipelines.ts";
import type { ShaderName } from "./shaders.ts";

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
  buffers: (StorageBinding | TextureBinding | null)[];
  /** Workgroup counts. */
  workgroups: readonly [number, number?, number?];
}

/** Records one dispatch. */
export function launch(gpu: Gpu, spec: LaunchSpec): void {
  const [x, y = 1, z = 1] = spec.workgroups;
  if (x === 0 || y === 0 || z === 0) return;
  const limit = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  if (x > limit || y > limit || z > limit) {
    throw new Error(
      `Kernel ${spec.shader} needs ${x}×${y}×${z} workgroups, over this device's limit of ` +
        `${limit} per dimension; split the input into smaller batches.`,
    );
  }
  const entryPoint = spec.entryPoint ?? "main";
  const label = `${spec.shader}:${entryPoint}`;
  gpu.recorder.beginKernel(label);
  const pipeline = gpu.pipelines.get(spec.shader, spec.constants, entryPoint);
  const entries: GPUBindGroupEntry[] = [
    { binding: 0, resource: { buffer: gpu.recorder.uniform(spec.params) } },
  ];
  spec.buffers.forEach((binding, i) => {
    if (!binding) return;
    if ("view" in binding) {
      entries.push({ binding: i + 1, resource: binding.view });
      return;
    }
    if (binding.bytes > gpu.maxBindingBytes) {
      throw new Error(
        `Kernel ${spec.shader} would bind ${binding.bytes} bytes, over this device's ` +
          `maxStorageBufferBindingSize of ${gpu.maxBindingBytes} bytes.`,
      );
    }
    entries.push({
      binding: i + 1,
      // Rounded up to 16 bytes so kernels may view any tensor as vec4s; pool buffers have room.
      resource: { buffer: binding.buffer, offset: 0, size: Math.max(16, alignTo16(binding.bytes)) },
    });
  });
  const bindGroup = gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries,
  });
  gpu.recorder.dispatch(pipeline, bindGroup, [x, y, z]);
}

function alignTo16(bytes: number): number {
  return Math.ceil(bytes / 16) * 16;
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
