/**
 * Shader modules and compute pipelines, cached by shader source plus constants. Compiling a
 * pipeline costs 0.1–0.7 s on lavapipe, so each variant is built once per process.
 */

/** Compile-time constants prepended to a shader as `const NAME = value;`. */
export type ShaderConstants = Readonly<Record<string, number | boolean>>;

/** The WGSL text of constants: integers become u32, other numbers f32. */
export function constantsPrelude(constants: ShaderConstants): string {
  let text = "";
  for (const [name, value] of Object.entries(constants)) {
    if (typeof value === "boolean") text += `const ${name}: bool = ${value};\n`;
    else if (Number.isInteger(value) && value >= 0) text += `const ${name}: u32 = ${value}u;\n`;
    else text += `const ${name}: f32 = ${value};\n`;
  }
  return text;
}

/** Pipelines by (source, constants, entry point). */
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
  get(source: string, constants: ShaderConstants = {}, entryPoint = "main"): GPUComputePipeline {
    const code = constantsPrelude(constants) + source;
    const key = entryPoint + "\u0000" + code;
    let pipeline = this.pipelines.get(key);
    if (pipeline) return pipeline;
    let module = this.modules.get(code);
    if (!module) {
      module = this.device.createShaderModule({ code });
      this.modules.set(code, module);
    }
    pipeline = this.device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint },
    });
    this.pipelines.set(key, pipeline);
    return pipeline;
  }
}
