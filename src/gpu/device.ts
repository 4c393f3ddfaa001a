/**
 * Acquiring the WebGPU device once per process, with the adapter's own limits.
 *
 * Everything on the GPU goes through the {@link Gpu} object returned by {@link getGpu}: it owns
 * the device, the pipeline cache, the buffer pool and the recorder, so that tensors created by
 * different parts of a program share one command stream.
 */

import { ResourceCache } from "./cache.ts";
import { BindGroupCache } from "./kernel.ts";
import { BufferPool } from "./pool.ts";
import { PipelineCache } from "./pipelines.ts";
import { Recorder } from "./recorder.ts";
import { TexturePool } from "./textures.ts";
import { GpuDeviceLostError } from "./lost.ts";

export { GpuDeviceLostError };

/** Thrown when no WebGPU adapter is available; its message names the fix. */
export class NoGpuAdapterError extends Error {
  /** Creates the error with a message telling the user what to install. */
  constructor(detail = "") {
    super(
      "No WebGPU adapter was found" + (detail ? ` (${detail})` : "") + ". " +
        "Install a GPU driver with Vulkan support, or on a machine without a GPU install " +
        "Mesa's software Vulkan driver: `sudo apt-get install -y mesa-vulkan-drivers`.",
    );
    this.name = "NoGpuAdapterError";
  }
}

/** What the adapter says about itself, for logs and for choosing presets. */
export interface AdapterDescription {
  /** Human-readable adapter name, for example "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** Vendor identifier as reported by the driver. */
  vendor: string;
  /** True for CPU implementations such as Mesa's lavapipe (llvmpipe). */
  isSoftware: boolean;
}

/** The process-wide GPU context: device, caches, pool and command recorder. */
export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** The adapter's description. */
  readonly adapter: AdapterDescription;
  /** Shader-module and pipeline cache keyed by shader, constants and entry point. */
  readonly pipelines: PipelineCache;
  /** Bind groups by the pipeline and resources they bind (see kernel.ts). */
  readonly bindGroups: BindGroupCache;
  /** Buffer pool with size buckets. */
  readonly pool: BufferPool;
  /** Records dispatches into one command encoder until data must come back. */
  readonly recorder: Recorder;
  /** Textures for packed GEMM operands. */
  readonly textures: TexturePool;
  /**
   * Tensors that ops derive once and keep (filter border weights, placeholders), freed with the
   * device; `cache.clear()` frees them earlier.
   */
  readonly cache: ResourceCache;
  /**
   * Validation and out-of-memory errors the device reported (the recorder also throws them from
   * the next readback); tests assert that none occur.
   */
  readonly errors: string[] = [];
  /** The largest byte size one storage binding may have on this device. */
  readonly maxBindingBytes: number;
  /** The most workgroups one dimension of a dispatch may have on this device. */
  readonly maxWorkgroupsPerDimension: number;
  /** Whether {@link destroy} ran: the unload handler may call it again. */
  private destroyed = false;

  /** Wraps an acquired device; use {@link getGpu} instead of calling this. */
  constructor(device: GPUDevice, adapter: AdapterDescription) {
    this.device = device;
    this.adapter = adapter;
    this.pipelines = new PipelineCache(device);
    this.bindGroups = new BindGroupCache(device);
    this.recorder = new Recorder(device, this.errors);
    this.pool = new BufferPool(device, this.recorder);
    this.textures = new TexturePool(device);
    this.cache = new ResourceCache();
    // Read once: every dispatch checks against them.
    this.maxBindingBytes = device.limits.maxStorageBufferBindingSize;
    this.maxWorkgroupsPerDimension = device.limits.maxComputeWorkgroupsPerDimension;
  }

  /** The error every GPU operation throws once the device is lost, or null while it works. */
  get lostError(): GpuDeviceLostError | null {
    return this.recorder.loss.error;
  }

  /**
   * Submits what is recorded, waits until WebGPU has checked it, and throws the first validation
   * or out-of-memory error since the last check, naming the kernels of the batch it happened in.
   * Readbacks check the same way, so this is needed only where nothing is read back.
   */
  checkErrors(): Promise<void> {
    return this.recorder.checkErrors();
  }

  /**
   * Frees cached tensors and pooled buffers and destroys the device. The next {@link getGpu}
   * makes a new one. Safe on a lost device (what was recorded is dropped) and when called twice.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.cache.clear();
    this.recorder.flush();
    this.pool.releaseAll();
    this.textures.destroyAll();
    this.recorder.destroyUniforms();
    this.bindGroups.clear();
    this.device.destroy();
    if (current === this) current = null;
  }
}

let current: Gpu | null = null;
let pending: Promise<Gpu> | null = null;

/** A source of adapters; tests pass a fake one to check the no-adapter message. */
export interface AdapterSource {
  /** Same contract as `navigator.gpu.requestAdapter`. */
  requestAdapter(options?: GPURequestAdapterOptions): Promise<GPUAdapter | null>;
}

/**
 * Requests an adapter and a device with the adapter's maximum limits. WebGPU's default limits
 * are far lower (128 MiB buffers, 16 KiB workgroup memory), so asking for the adapter's own
 * limits is what lets large tensors and big tiles work.
 */
export async function createGpu(source?: AdapterSource): Promise<Gpu> {
  const adapters = source ?? (globalThis.navigator as { gpu?: AdapterSource }).gpu;
  if (!adapters) throw new NoGpuAdapterError("navigator.gpu is missing in this runtime");
  const adapter = await adapters.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoGpuAdapterError();
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  const device = await adapter.requestDevice({ requiredLimits });
  const info = adapter.info;
  const description = info.description || info.device || "unknown adapter";
  const isSoftware = Boolean(
    (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ||
      /llvmpipe|lavapipe|swiftshader|software|warp/i.test(description),
  );
  const gpu = new Gpu(device, { description, vendor: info.vendor, isSoftware });
  // Errors outside the recorder's scopes (buffer creation, queue writes) are thrown from the next
  // readback or checkErrors() like the others.
  device.addEventListener("uncapturederror", (event) => {
    gpu.recorder.reportError((event as GPUUncapturedErrorEvent).error);
  });
  return gpu;
}

/**
 * The shared GPU context, created on first use. Once its device is lost this rejects with the
 * loss's error (GpuDeviceLostError) rather than start a new device beside tensors that live on
 * the lost one; `destroy()` the lost context to start anew.
 */
export function getGpu(): Promise<Gpu> {
  if (current) {
    const lost = current.lostError;
    return lost ? Promise.reject(lost) : Promise.resolve(current);
  }
  if (!pending) {
    pending = createGpu().then((gpu) => {
      current = gpu;
      // A device still alive when the process exits can crash it ("double free or corruption"
      // from lavapipe's threads racing the exit), after all the work was done: end it first.
      globalThis.addEventListener("unload", () => {
        if (current === gpu) gpu.destroy();
      });
      return gpu;
    }).finally(() => {
      pending = null;
    });
  }
  return pending;
}

/** The shared context if it already exists; ops use this synchronously after {@link getGpu}. */
export function currentGpu(): Gpu {
  if (!current) {
    throw new Error("The GPU is not initialised yet: `await getGpu()` (or `await init()`) first.");
  }
  return current;
}
