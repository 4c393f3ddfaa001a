/**
 * Pooled rgba32float textures for packed GEMM operands. A packed matrix is a run of vec4 texels
 * laid out row by row in a texture 2048 texels wide (see shaders/pack.wgsl); heights come in
 * power-of-two buckets so that the same textures serve every training step.
 */

import { optionalEnv } from "./env.ts";
import type { WgslDeclaration } from "./layout.ts";

/** Width of every operand texture, in texels. Shaders use the same constant. */
export const operandTextureWidth = 2048;

/** How kernels bind the operand textures they read (see {@link operandTextureDeclaration}). */
export type OperandBinding = "storage" | "sampled";

/**
 * Read-only storage textures where WGSL has them (the readonly_and_readwrite_storage_textures
 * language feature), else sampled textures; `ANODET_OPERAND_TEXTURES=sampled` forces the latter.
 * On lavapipe a sampled texture's textureLoad calls a generic fetch function that works out the
 * mip level's size and bounds for every lane, and a read-only storage texture's load does not:
 * the AE's conv products took 18.3–21.6 ms instead of 26.8–29.1 ms (five layers, A/B in one
 * process), and a micro-benchmark's loads 0.47–0.90 ns instead of 0.91–1.53 ns a lane.
 */
export function operandBinding(): OperandBinding {
  const forced = optionalEnv("ANODET_OPERAND_TEXTURES");
  if (forced === "storage" || forced === "sampled") return forced;
  if (forced !== undefined) {
    throw new Error(
      `ANODET_OPERAND_TEXTURES must be "storage" or "sampled", not "${forced}"`,
    );
  }
  // Deno's types lack the attribute, which its WebGPU has.
  const gpu = navigator.gpu as (GPU & { wgslLanguageFeatures?: ReadonlySet<string> }) | undefined;
  const features = gpu?.wgslLanguageFeatures;
  return features?.has("readonly_and_readwrite_storage_textures") ? "storage" : "sampled";
}

/**
 * The WGSL that kernels read operand textures through: the type `OperandTexture` of their
 * bindings and `load_operand(texture, coords)`, for the binding {@link operandBinding} picks.
 */
export function operandTextureDeclaration(binding = operandBinding()): WgslDeclaration {
  // A sampled texture's textureLoad takes a mip level; a storage texture's has none.
  const [type, level] = binding === "storage"
    ? ["texture_storage_2d<rgba32float, read>", ""]
    : ["texture_2d<f32>", ", 0"];
  const wgsl = `alias OperandTexture = ${type};\n` +
    "fn load_operand(operand: OperandTexture, coords: vec2u) -> vec4f {\n" +
    `  return textureLoad(operand, coords${level});\n}\n`;
  return { wgsl };
}

/** A pooled texture and its cached view. */
export interface OperandTexture {
  /** The texture. */
  texture: GPUTexture;
  /** A view of the whole texture, for bind groups. */
  view: GPUTextureView;
  /** Texels it holds. */
  texels: number;
}

/** Textures by height bucket. */
export class TexturePool {
  private readonly free = new Map<number, OperandTexture[]>();
  private readonly all = new Set<OperandTexture>();
  /** Bytes of all pooled textures. */
  allocatedBytes = 0;

  /** Wraps a device. */
  constructor(private readonly device: GPUDevice) {}

  /** The most texels one operand texture can hold on this device. */
  get maxTexels(): number {
    return operandTextureWidth * this.device.limits.maxTextureDimension2D;
  }

  /** A texture with room for `texels` vec4 texels. */
  acquire(texels: number): OperandTexture {
    const rows = Math.max(1, Math.ceil(texels / operandTextureWidth));
    const height = Math.min(
      2 ** Math.ceil(Math.log2(rows)),
      this.device.limits.maxTextureDimension2D,
    );
    if (rows > height) {
      throw new Error(`A packed operand of ${texels} texels exceeds the device's texture limits`);
    }
    const reusable = this.free.get(height)?.pop();
    if (reusable) return reusable;
    const texture = this.device.createTexture({
      size: [operandTextureWidth, height],
      format: "rgba32float",
      // COPY_DST: operands that already lie in the texture's order are copied in (copyToTexture).
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.TEXTURE_BINDING |
        GPUTextureUsage.COPY_DST,
    });
    const operand = { texture, view: texture.createView(), texels: operandTextureWidth * height };
    this.all.add(operand);
    this.allocatedBytes += operand.texels * 16;
    return operand;
  }

  /** Returns a texture for reuse; later dispatches that reuse it run after earlier readers. */
  release(operand: OperandTexture): void {
    const height = operand.texels / operandTextureWidth;
    let list = this.free.get(height);
    if (!list) this.free.set(height, list = []);
    list.push(operand);
  }

  /** Destroys every texture (device teardown). */
  destroyAll(): void {
    for (const operand of this.all) operand.texture.destroy();
    this.all.clear();
    this.free.clear();
    this.allocatedBytes = 0;
  }
}
