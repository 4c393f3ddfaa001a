/**
 * Shader modules and compute pipelines, cached by shader, constants and entry point. Compiling a
 * pipeline costs 0.1–0.7 s on lavapipe, so each variant is built once per process. Finding it
 * again happens on every dispatch, so the lookup walks a tree of maps keyed by the shader, the
 * entry point and each constant's name and value: no key string is built and nothing is
 * allocated once a variant exists.
 */

import { wgslConstant } from "./layout.ts";
import { writableBindings } from "./writes.ts";
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

/** A compiled pipeline with what every dispatch of it needs, made once. */
export interface PipelineVariant {
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Its bind group layout 0 (`getBindGroupLayout` makes a new object on every call). */
  readonly layout: GPUBindGroupLayout;
  /** "shader:entry", for error messages. */
  readonly label: string;
  /** A small number unique to this variant in its cache, for bind-group cache keys. */
  readonly id: number;
  /**
   * Indices into a dispatch's resources (binding − 1) that the shader declares read_write: the
   * buffers a dispatch may write (see writes.ts).
   */
  readonly writtenResources: readonly number[];
}

/** One level of the lookup tree: the variant whose constants end here, and deeper levels. */
interface Node {
  variant: PipelineVariant | null;
  /** Constant name → constant value → node. */
  readonly children: Map<string, Map<number | boolean, Node>>;
}

function newNode(): Node {
  return { variant: null, children: new Map() };
}

/** Pipelines by (shader, constants, entry point). */
export class PipelineCache {
  private readonly modules = new Map<string, GPUShaderModule>();
  /** "shader:entry" → the tree of its constants. */
  private readonly roots = new Map<string, Map<string, Node>>();
  private count = 0;

  /** Wraps a device. */
  constructor(private readonly device: GPUDevice) {}

  /** Number of distinct pipelines built so far. */
  get size(): number {
    return this.count;
  }

  /** The pipeline for this shader variant, compiled on first request. */
  get(
    shader: ShaderName,
    constants: ShaderConstants = {},
    entryPoint = "main",
  ): GPUComputePipeline {
    return this.variant(shader, constants, entryPoint).pipeline;
  }

  /**
   * The pipeline for this shader variant with its bind group layout and label, compiled on first
   * request. Constants given in another order are another variant (call sites always list them
   * in the same order, so this only costs a second compile if they do not).
   */
  variant(shader: ShaderName, constants: ShaderConstants, entryPoint: string): PipelineVariant {
    let entries = this.roots.get(shader);
    if (!entries) this.roots.set(shader, entries = new Map());
    let node: Node | undefined = entries.get(entryPoint);
    if (!node) entries.set(entryPoint, node = newNode());
    for (const name in constants) {
      const value = constants[name];
      let values: Map<number | boolean, Node> | undefined = node.children.get(name);
      if (!values) node.children.set(name, values = new Map());
      let next: Node | undefined = values.get(value);
      if (!next) values.set(value, next = newNode());
      node = next;
    }
    return node.variant ??= this.compile(shader, constants, entryPoint);
  }

  private compile(
    shader: ShaderName,
    constants: ShaderConstants,
    entryPoint: string,
  ): PipelineVariant {
    // One module serves every entry point of a (shader, constants) pair.
    let moduleKey: string = shader;
    for (const name in constants) moduleKey += `,${name}=${constants[name]}`;
    let module = this.modules.get(moduleKey);
    if (!module) {
      module = this.device.createShaderModule({
        label: moduleKey,
        code: shaderCode(shader, constants),
      });
      this.modules.set(moduleKey, module);
    }
    const label = `${shader}:${entryPoint}`;
    const pipeline = this.device.createComputePipeline({
      label,
      layout: "auto",
      compute: { module, entryPoint },
    });
    const writtenResources = writableBindings(shaderSource(shader)).map((binding) => binding - 1);
    return {
      pipeline,
      layout: pipeline.getBindGroupLayout(0),
      label,
      id: this.count++,
      writtenResources,
    };
  }
}
