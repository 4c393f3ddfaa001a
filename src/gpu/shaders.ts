/**
 * The kernels' WGSL: the text of shaders/*.wgsl, bundled into src/gpu/shader_bundle.ts by
 * `deno task shaders` (so nothing is read from disk or the network), and the declarations each
 * shader is compiled with: uniform structs and constant tables written in TypeScript (layout.ts).
 */

import { shaderBundle, type ShaderName } from "./shader_bundle.ts";
import type { WgslDeclaration } from "./layout.ts";

export type { ShaderName };

/** Every bundled shader's name, sorted. */
export const shaderNames: readonly ShaderName[] = Object.keys(shaderBundle).sort() as ShaderName[];

function checkName(name: string): asserts name is ShaderName {
  if (!Object.hasOwn(shaderBundle, name)) {
    throw new Error(
      `Unknown shader "${name}": the bundle has ${shaderNames.join(", ")}. A new shaders/` +
        `${name}.wgsl needs \`deno task shaders\` to regenerate src/gpu/shader_bundle.ts.`,
    );
  }
}

/** The WGSL source of a bundled shader, as written in shaders/; throws for an unknown name. */
export function shaderSource(name: ShaderName): string {
  checkName(name);
  return shaderBundle[name];
}

const declarationsByShader = new Map<ShaderName, string>();

/**
 * Declares the structs and constants that shader `name` uses without defining them. The module
 * that launches the shader calls this once, next to the declarations, before the first dispatch.
 * Declaring the same text again is allowed; different text is an error.
 */
export function declareShader(name: ShaderName, ...declarations: WgslDeclaration[]): void {
  checkName(name);
  const wgsl = declarations.map((d) => d.wgsl).join("");
  const existing = declarationsByShader.get(name);
  if (existing !== undefined && existing !== wgsl) {
    throw new Error(`Shader "${name}" is declared twice with different structs or constants`);
  }
  declarationsByShader.set(name, wgsl);
}

/** The declarations a shader is compiled with; throws when it was never declared. */
export function shaderDeclarations(name: ShaderName): string {
  checkName(name);
  const wgsl = declarationsByShader.get(name);
  if (wgsl === undefined) {
    throw new Error(
      `Shader "${name}" has no declarations: the module that launches it must call ` +
        `declareShader("${name}", …) with its uniform structs before the first dispatch.`,
    );
  }
  return wgsl;
}
