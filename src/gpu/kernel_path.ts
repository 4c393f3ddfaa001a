/**
 * Which matrix-product engine the ops use on a device. The texture-fed engine (gemm.ts) is tuned
 * for lavapipe, where texture reads are cheap and workgroup memory buys nothing; the tiled
 * storage-buffer engine (gemm_tiled.ts) is what discrete GPUs want (on an H100 the texture engine
 * reached about 3% of the chip), and on lavapipe it is the slower one: on 2 cores, a 1024³ matmul
 * took 106 ms by textures and 248 ms tiled, a 3×3 32→32 convolution of 8×64×64 images 24 ms and
 * 161 ms. So: software adapters take "texture", others "tiled", unless the environment variable
 * `ANODET_KERNELS=texture|tiled` says otherwise.
 */

import { optionalEnv } from "./env.ts";
import type { Gpu } from "./device.ts";

/** The two matrix-product engines. */
export type KernelPath = "texture" | "tiled";

/** The part of a {@link Gpu} the choice depends on (tests pass a stand-in). */
export type KernelPathDevice = Pick<Gpu, "adapter">;

/** The environment variable that overrides the adapter rule. */
export const kernelPathVariable = "ANODET_KERNELS";

const chosen = new WeakMap<KernelPathDevice, KernelPath>();
const forced = new WeakMap<KernelPathDevice, KernelPath>();

/**
 * The engine for this device: set by {@link setKernelPath}, else `ANODET_KERNELS` when the
 * process may read it, else "texture" for software adapters and "tiled" for the rest. Decided
 * once per device (ops call this on every product).
 */
export function kernelPath(gpu: KernelPathDevice): KernelPath {
  const override = forced.get(gpu);
  if (override) return override;
  let path = chosen.get(gpu);
  if (path === undefined) {
    path = environmentPath() ?? (gpu.adapter.isSoftware ? "texture" : "tiled");
    chosen.set(gpu, path);
  }
  return path;
}

/** Forces the engine for this device (tests, benchmarks); `null` returns to the automatic rule. */
export function setKernelPath(gpu: KernelPathDevice, path: KernelPath | null): void {
  if (path === null) forced.delete(gpu);
  else forced.set(gpu, checkPath(path, "setKernelPath"));
}

/** `ANODET_KERNELS`, or undefined when it is unset or may not be read (see optionalEnv). */
function environmentPath(): KernelPath | undefined {
  const value = optionalEnv(kernelPathVariable);
  return value === undefined ? undefined : checkPath(value, kernelPathVariable);
}

function checkPath(value: string, source: string): KernelPath {
  if (value !== "texture" && value !== "tiled") {
    throw new Error(`${source} is "${value}"; it takes "texture" or "tiled"`);
  }
  return value;
}
