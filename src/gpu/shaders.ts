/**
 * Loading the WGSL files in `shaders/`. They are resolved against this module's URL, so they load
 * from a local checkout (file:) and from a published copy imported over https (the JSR case).
 */

/** Every kernel family; one file each in `shaders/`. */
export const shaderNames = [
  "unary",
  "binary",
  "reduce",
  "gemm",
  "pack",
  "col2im",
  "copy",
  "pool",
  "resize",
  "filter",
  "random",
  "optim",
  "gmm",
  "align",
] as const;

/** Name of a kernel family. */
export type ShaderName = typeof shaderNames[number];

const sources = new Map<ShaderName, string>();

/** The URL of a shader file next to this module's package root. */
export function shaderUrl(name: ShaderName, base: string | URL = import.meta.url): URL {
  return new URL(`../../shaders/${name}.wgsl`, base);
}

/** Reads one shader's text from a file: or http(s): URL. */
export async function fetchShaderText(url: URL): Promise<string> {
  if (url.protocol === "file:") {
    try {
      return await Deno.readTextFile(url);
    } catch (error) {
      throw new Error(`Cannot read shader ${url.pathname}: ${(error as Error).message}`);
    }
  }
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`Cannot fetch shader ${url.href}: HTTP ${response.status}`);
  }
  return await response.text();
}

/** Loads every shader once; ops then look them up synchronously. */
export async function loadShaders(): Promise<void> {
  if (sources.size === shaderNames.length) return;
  const texts = await Promise.all(shaderNames.map((name) => fetchShaderText(shaderUrl(name))));
  shaderNames.forEach((name, i) => sources.set(name, texts[i]));
}

/** The source of a loaded shader. */
export function shaderSource(name: ShaderName): string {
  const source = sources.get(name);
  if (source === undefined) {
    throw new Error(`Shader "${name}" is not loaded: call \`await init()\` before running ops.`);
  }
  return source;
}
