/**
 * Shader modules and compute pipelines, cached by shader, constants and entry point. Compiling a
 * pipeline costs 0.1–0.7 s on lavapipe, so each variant is built once per process; a dispatch only
 * builds a short key to find it.
 */

import { wgslConstant } from "./layout.ts";
import { shaderDeclarations, type ShaderName, shaderSource } from "./shaders.ts";

/** Compile-time constants prepended to a shader as `const NAME = value;`. */
export type ShaderConstants = Readonly<Record<string, number | boolean>>;

/** The WGSL text of constants: booleans become bool, non-negative integers u32, others f32. */
export function constantsPrelude(constants: ShaderConstants): string {
  let text = "";
  for (const [name, value] of Object.entries(constants)) text += wgslConstant(name, value);
  return text;
}

/**
 * The full WGSL a shader variant compiles: the text of shaders/<name>.wgsl, then its declarations
 * (structs, op codes) and constants. WGSL lets module-scope declarations come in any order, and
 * placing these after the file keeps the line numbers of compile errors the file's own.
 */
export function shaderCode(shader: ShaderName, constants: ShaderConstants = {}): string {
  return shaderSource(shader) + "\n// Declared in TypeScript:\n" + shaderDeclarations(shader) +
    constantsPrelude(constants);
}

/** Pipelines by (shader, constants, entry point). */
export class PipelineCache {
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  /** Wraps a device. */
  constructor(private readonly device: GPUDevice) {}

  /** Number of distinct pipelines built so far. */
  get size(): number {
    return this.pipelines.size;
  }

  /** The pipeline for this shader variant, compiled on first request. */
  get(
    shader: ShaderName,
    constants: ShaderConstants = {},
    entryPoint = "main",
  ): GPUComputePipeline {
    let variant: string = shader;
    for (const name in constants) variant += `,${name}=${constants[name]}`;
    const key = variant + ":" + entryPoint;
    let pipeline = this.pipelines.get(key);
    if (pipeline) return pipeline;
    let module = this.modules.get(variant);
    if (!module) {
      module = this.device.createShaderModule({
        label: variant,
        code: shaderCode(shader, constants),
      });
      this.modules.set(variant, module);
    }
    pipeline = this.device.createComputePipeline({
      label: `${shader}:${entryPoint}`,
      layout: "auto",
      compute: { module, entryPoint },
    });
    this.pipelines.set(key, pipeline);
    return pipeline;
  }
}
