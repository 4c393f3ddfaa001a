/**
 * The matrix-product engine behind matmul and the convolutions. Each product packs its operands
 * into rgba32float textures (shaders/pack.wgsl, which also does the im2col gathering of a
 * convolution) and multiplies them (shaders/gemm.wgsl). The right operand is packed in chunks of
 * columns, which bounds the texture memory a large image needs. An implicit convolution instead
 * stores its zero-padded input once as a texture, four channels to a texel, and the product reads
 * the windows from it: no column matrix, which for a k×k kernel is k²/stride² times the input.
 * Forward products, weight gradients and (as convolutions of dy, see conv.ts) input gradients
 * and transposed convolutions all have an implicit form.
 *
 * Products also fuse what comes around a convolution layer: the epilogue adds a bias and applies
 * an activation as the result is stored, and in the backward pass an operand that is the gradient
 * of such an activation is multiplied by the activation's derivative while it is packed.
 */

import { empty, type Tensor } from "../tensor.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import {
  type OperandTexture,
  operandTextureDeclaration,
  operandTextureWidth,
  type TexturePool,
} from "../../gpu/textures.ts";
import { bind, elementGrid, run } from "./launch.ts";
import { type DispatchDetail, grid2d, type StorageBinding } from "../../gpu/kernel.ts";
import { CONVOLUTION_FIELD_TYPES, convolutionFields } from "./geometry.ts";
import { sumInto } from "./reduce.ts";
import { sameNumbers } from "../../gpu/hash.ts";

/** How the operands are gathered and the result scattered (see shaders/gemm.wgsl). */
export const GemmMode = { matmul: 0, convForward: 1, convInputGrad: 2, convWeightGrad: 3 } as const;

/** Activation codes of the shaders' epilogues (ACT_* in WGSL). */
const ActivationCode = { none: 0, relu: 1, leakyRelu: 2 } as const;

/** An activation that a product applies as it stores its result (see {@link GemmSpec}). */
export type FusedActivation = { kind: "relu" } | { kind: "leakyRelu"; slope: number };

/**
 * Marks an operand as the gradient of a fused activation's output `activated`: each value is
 * multiplied by the activation's derivative as the operand is packed.
 */
export interface ThroughActivation {
  /** The activation. */
  activation: FusedActivation;
  /** Its output (same shape as the gradient). */
  activated: Tensor;
}

/**
 * The uniform block of pack.wgsl, gemm.wgsl and col2im.wgsl: the sizes of one product and, for a
 * convolution, its geometry (`in_*` is the convolution's input side).
 */
const GemmParams = uniformStruct("GemmParams", {
  M: "u32",
  N: "u32",
  K: "u32",
  K_padded: "u32", // K rounded up to whole texels
  batch: "u32", // groups of a convolution, or the batch of a matmul
  a_batch_stride: "u32",
  b_batch_stride: "u32",
  n_offset: "u32", // first column of B in this chunk
  n_count: "u32", // columns in this chunk
  ...CONVOLUTION_FIELD_TYPES,
  image_c4: "u32", // texels per pixel of an implicit convolution's input image (channels / 4)
  image_h: "u32", // rows of that image, padding included
  image_w: "u32", // columns of that image, padding included
  phase_pad_h: "u32", // padding of the strided convolution that a PHASES product is the adjoint of
  phase_pad_w: "u32",
  slope: "f32", // of a fused leaky ReLU
});

/** The uniform block of bias_grad.wgsl. */
const BiasGradParams = uniformStruct("BiasGradParams", {
  images: "u32",
  channels: "u32",
  pixels: "u32",
  slope: "f32",
});

const gemmModes = wgslConstants(GemmMode, "MODE_");
export const activationCodes = wgslConstants(ActivationCode, "ACT_");
export const textureWidth = wgslConstants({ textureWidth: operandTextureWidth });
declareShader("pack", GemmParams, gemmModes, activationCodes, textureWidth);
declareShader(
  "gemm",
  GemmParams,
  gemmModes,
  activationCodes,
  textureWidth,
  operandTextureDeclaration(),
);
declareShader("col2im", GemmParams, activationCodes);
declareShader("bias_grad", BiasGradParams, activationCodes);

/** Convolution geometry in the kernel's terms: `in` is the convolution's input side. */
export interface ConvGeometry {
  images: number;
  cin: number;
  cout: number;
  groups: number;
  inH: number;
  inW: number;
  outH: number;
  outW: number;
  kernelH: number;
  kernelW: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  dilationH: number;
  dilationW: number;
}

/** One product: sizes, batch (or groups), batch strides for matmul, geometry for convolutions. */
export interface GemmSpec {
  mode: number;
  M: number;
  N: number;
  K: number;
  batch: number;
  transA?: boolean;
  transB?: boolean;
  aBatchStride?: number;
  bBatchStride?: number;
  conv?: ConvGeometry;
  /**
   * For `convForward` and `convWeightGrad` (groups = 1): read the input's windows from an image
   * texture instead of a packed column matrix. See {@link implicitConvFits} and conv.ts for when
   * it pays. A weight gradient then has N = taps · channels rounded up to 4, tap-major.
   */
  implicit?: boolean;
  /**
   * With `implicit`: A is the weight [K-side channels, M, kh, kw] of the convolution this product
   * is the adjoint of, read with the kernel rotated by 180° (a stride-1 input gradient or
   * transposed convolution computed as a convolution).
   */
  flipWeights?: boolean;
  /**
   * With `implicit`: the adjoint of a stride-s convolution (padding given here) split into its s²
   * output phases, one per group; see gemm.wgsl and conv.ts.
   */
  phases?: { padH: number; padW: number };
  /**
   * With `implicit`: B already packed by {@link packConvImage}, for products that read the same
   * image (the caller releases it). It must be this product's B, packed for this geometry.
   */
  image?: ConvImage;
  /**
   * With `implicit` and no `image`: receives B's sum over images and pixels per channel (through
   * `throughB`), summed while B is packed. When B is a layer's output gradient, that is the
   * gradient of the layer's bias.
   */
  biasGradient?: Tensor;
  /** Added to row m of every group's result (g·M + m) as it is stored. */
  bias?: Tensor;
  /** Applied to the result (after the bias) as it is stored. */
  activation?: FusedActivation;
  /** The left operand is the gradient of a fused activation. */
  throughA?: ThroughActivation;
  /** The right operand is the gradient of a fused activation. */
  throughB?: ThroughActivation;
}

/** Threads a product should keep at least, for the cores of a CPU driver to share. */
const minThreads = 256;

/** Threads of a product with blocks of `rows` × `columns` of C. */
function threadsOf(spec: GemmSpec, rows: number, columns: number): number {
  return Math.ceil(spec.N / columns) * Math.ceil(spec.M / rows) * spec.batch;
}

/** Whether a product is the weight gradient that reads its input as an image (see gemm.wgsl). */
function isImplicitWeightGrad(spec: GemmSpec): boolean {
  return spec.implicit === true && spec.mode === GemmMode.convWeightGrad;
}

/**
 * Whether a product is a convolution that reads its input as an image, with M in blocks of 16
 * and a k of 64 or more (shorter products are bound by their stores; see columnsPerThread).
 */
function isImplicitForward16(spec: GemmSpec): boolean {
  const implicitForward = spec.implicit === true && spec.mode === GemmMode.convForward;
  return implicitForward && spec.M % 16 === 0 && spec.K >= 64;
}

/**
 * Rows of C per thread: more rows reuse each loaded texel of B more often (on lavapipe 8 rows
 * instead of 4 made the AE's 32-channel layers 15–30% faster, and 16 instead of 8 another
 * 10–15%), but rows past M are wasted work, and convolutions often have few output channels.
 * Products that split their k loop take big blocks however few threads they leave (see
 * {@link kSplits}); so do the implicit weight gradient and the implicit convolutions whose M is a
 * multiple of 16 (see columnsPerThread).
 */
function rowsPerThread(spec: GemmSpec): number {
  const { M } = spec;
  const bigBlocks = splitsK(spec) || isImplicitWeightGrad(spec) || isImplicitForward16(spec);
  if (bigBlocks && M % 16 === 0) return 16;
  // Short products: see columnsPerThread.
  if (spec.K < 64 && M >= 4) return 4;
  const threads = (rows: number) => threadsOf(spec, rows, 4);
  if (M % 16 === 0 && threads(16) >= minThreads) return 16;
  if ((M >= 32 || M % 8 === 0) && threads(8) >= minThreads) return 8;
  if (M >= 4) return 4;
  return M >= 2 ? 2 : 1;
}

/**
 * Columns of C per thread: 16 for blocks of 8 or more rows over a k of 64 or more, so that each
 * texel of A serves four texels of B; otherwise 8, or 4 when that leaves too few threads. On
 * lavapipe wider blocks pay although the accumulators then cannot stay in the 16 ymm registers (a
 * thread is one SIMD lane, so each f32 of its block takes a register): texel loads, not FMAs or
 * spills, bound the loop. 8 columns instead of 4 made the AE's layers 1.1–1.15× faster, and 16
 * instead of 8 its training step's products ~14% faster; smaller blocks (8×8 down to 2×4) were all
 * slower. Short products (k < 64: the AE's first layer and the input gradient of its last before
 * they took conv_thin.ts, a dense layer's weight gradient) are bound by what each output costs
 * beyond its dot product, and take 4 rows and 16 columns: on lavapipe the AE's three k ≤ 32
 * products of 1M outputs took 2.1, 1.7 and 1.9 ms so, against 3.1, 2.4 and 2.7 ms with 16 × 8
 * blocks (8 × 16: 2.6, 2.2, 1.8).
 *
 * Where a few long dot products make few threads, big blocks still pay: the implicit weight
 * gradient always takes 16 columns (four texel columns of taps and channels), and 16 rows where M
 * allows, and its k loop over every output pixel keeps the cores busy (on lavapipe 16×16 made the
 * AE encoder's weight gradients 1.6× faster than 16×4: 35.8 → 22.0 ms for the seven 32–128-channel
 * layers at batch 8; 8×16 and 16×8 were 1.2×). A product that splits its k loop takes 16 × 16 too
 * where N allows: the one-channel layers' weight gradients (32 × 16 outputs, k = 32768; now in
 * conv_thin.ts) took 0.9 ms so, against 1.8 ms with 4 × 4 blocks and 1.2–1.4 ms with 16 × 8 or
 * 8 × 8. So does an implicit convolution with M a multiple of 16, however few threads that leaves:
 * the AE's 8×8 layers (64 × 512 × 1152, 32 × 512 × 576 and 64 × 512 × 288, forward and as input
 * gradients) took 2.1–2.2, 0.5–0.7 and 0.5 ms so, against 3.1–3.3, 0.9–1.0 and 0.7–0.8 ms with the
 * 16 × 8 and 16 × 4 blocks that kept 256 threads: each thread's k loop (288 or more there) is long
 * enough to keep both cores busy.
 */
function columnsPerThread(spec: GemmSpec, rows: number): number {
  if (isImplicitWeightGrad(spec) || (isImplicitForward16(spec) && rows === 16)) return 16;
  if (splitsK(spec) && rows >= 8) return spec.N >= 16 ? 16 : spec.N > 4 ? 8 : 4;
  const threads = (columns: number) => threadsOf(spec, rows, columns);
  if ((rows >= 8 || spec.K < 64) && threads(16) >= minThreads) return 16;
  return threads(8) >= minThreads ? 8 : 4;
}

/**
 * Threads of a workgroup along the columns and the rows of C: 64, shaped to the product, and one
 * SIMD row of 8 for a product with fewer threads than {@link minThreads}. A CPU driver runs a
 * workgroup on one core, 8 lanes at a time, masking the threads past the product's edge.
 *
 * - Where C has fewer than 8 threads' rows, the workgroup is as many rows high (a power of two)
 *   and correspondingly wider, so that none of its rows lies past C. An 8 × 8 workgroup over the
 *   2 rows of threads of a 32-row product had three quarters of its threads with nothing to do:
 *   on lavapipe 32 × 2 workgroups made the AE's training step's products 6–7 ms faster (its
 *   32-channel transposed convolution by phases 9.8 → 7.5 ms).
 * - The weight gradients of the AE's one-channel layers (32 × 16 outputs, k = 32768; now in
 *   conv_thin.ts) had 32 threads, which made one 8 × 8 workgroup with half its lanes idle, on one
 *   of two cores. With 8-thread workgroups they took 28–29 ms instead of 30.5–32 ms (lavapipe on
 *   2 busy cores).
 */
function workgroupShape(
  columnThreads: number,
  rowThreads: number,
  batch: number,
): [number, number] {
  if (columnThreads * rowThreads * batch >= minThreads) {
    const y = Math.min(8, 2 ** Math.ceil(Math.log2(rowThreads)));
    return [64 / y, y];
  }
  const x = Math.min(8, 2 ** Math.ceil(Math.log2(columnThreads)));
  return [x, 8 / x];
}

/**
 * Whether a product splits its k loop into parts (SPLIT_K in gemm.wgsl) whose sums are added
 * afterwards: a packed product whose C is rows of N floats (not a convolution's output image),
 * with no epilogue (the parts' sums are added afterwards), whose threads with 4 × 4 blocks fall
 * short of {@link minThreads}, over a k of at least two parts of 256 texel steps.
 */
function splitsK(spec: GemmSpec): boolean {
  const packed = !spec.implicit && spec.mode !== GemmMode.convForward;
  return packed && !spec.bias && !spec.activation && threadsOf(spec, 4, 4) < minThreads &&
    paddedK(spec) / 4 >= 512;
}

/**
 * Whether an implicit forward product (not by phases, one group) splits its kernel's rows into
 * parts (SPLIT_K), whose sums add_parts in gemm.wgsl adds before the bias and the activation:
 * where it has fewer than a quarter of {@link minThreads} over a kernel of at least 2 rows and
 * 256 texel steps. On lavapipe the AE's latent layer (an 8 × 8 kernel over 8 × 8 images, 100
 * outputs per image: 50 threads of 512 steps) went from 0.80 to 0.23 ms, plus 0.07 ms adding the
 * parts; its 128-thread 3 × 3 layer at 8 × 8 went from 1.3 to 1.7 ms plus 0.3 in two parts.
 */
function splitsImplicitForward(spec: GemmSpec, rows: number, columns: number): boolean {
  const g = spec.conv;
  if (!spec.implicit || spec.mode !== GemmMode.convForward || spec.phases || !g) return false;
  const kernelSteps = g.kernelH * g.kernelW * Math.ceil(g.cin / 4);
  return spec.batch === 1 && g.kernelH >= 2 && kernelSteps >= 256 &&
    threadsOf(spec, rows, columns) < minThreads / 4;
}

/**
 * Parts of a product's k loop: enough to bring its threads up to {@link minThreads}, each at least
 * 256 texel steps long; 1 unless {@link splitsK}. On lavapipe the weight gradients of the AE's
 * one-channel layers (32 × 16 outputs, k = 32768; now in conv_thin.ts) took 3.4 ms each as 32
 * threads of 4 × 4, and 0.9 ms as 32 parts of one 16 × 16 block.
 */
function kSplits(spec: GemmSpec, rows: number, columns: number): number {
  if (splitsImplicitForward(spec, rows, columns)) {
    // Whole kernel rows a part, as evenly as they go: 8 rows in 6 wanted parts make 4 of 2 rows.
    const wanted = Math.ceil(minThreads / threadsOf(spec, rows, columns));
    const kernelRows = spec.conv!.kernelH;
    return Math.ceil(kernelRows / Math.ceil(kernelRows / Math.min(wanted, kernelRows)));
  }
  if (!splitsK(spec)) return 1;
  const threads = threadsOf(spec, rows, columns);
  const k4 = paddedK(spec) / 4;
  return Math.max(1, Math.min(Math.ceil(minThreads / threads), Math.floor(k4 / 256)));
}

/**
 * Whether a product (or one chunk of its columns, `nCount` of them) has RM×CN blocks that lie
 * wholly inside C, and blocks that reach past its edge: gemm.wgsl computes each kind in a
 * dispatch of its own (BLOCKS_INSIDE), the first without bounds checks. The implicit weight
 * gradient stores its blocks its own way, in one dispatch.
 */
function blockCoverage(
  spec: GemmSpec,
  rows: number,
  columns: number,
  nCount: number,
): { inside: boolean; edges: boolean } {
  if (isImplicitWeightGrad(spec)) return { inside: false, edges: true };
  // Columns per group: a phase product's groups are the output phases, each its own size.
  const counts: number[] = [nCount];
  if (spec.phases) {
    const g = spec.conv!;
    counts.length = 0;
    for (let ry = 0; ry < g.strideH; ry++) {
      for (let rx = 0; rx < g.strideW; rx++) {
        const pixels = phaseExtent(g.outH, g.strideH, ry) * phaseExtent(g.outW, g.strideW, rx);
        counts.push(Math.min(g.images * pixels, nCount));
      }
    }
  }
  const inside = spec.M >= rows && counts.some((count) => count >= columns);
  const edges = spec.M % rows !== 0 || counts.some((count) => count % columns !== 0);
  return { inside, edges };
}

const modeNames = ["matmul", "conv forward", "conv input-gradient columns", "conv weight gradient"];

/** What one dispatch of a product computes, for profiles (see DispatchDetail). */
function describeProduct(
  spec: GemmSpec,
  rows: number,
  columns: number,
  splits: number,
  blocksInside: boolean,
  hasInside: boolean,
): DispatchDetail {
  const batch = spec.batch > 1
    ? ` ×${spec.batch} ${
      spec.phases ? "phases" : spec.mode === GemmMode.matmul ? "batch" : "groups"
    }`
    : "";
  const how = [
    spec.implicit ? (spec.flipWeights ? "implicit, flipped kernel" : "implicit") : "packed",
    `${rows}×${columns} blocks`,
    ...(splits > 1 ? [`k in ${splits} parts`] : []),
    ...(!blocksInside && hasInside ? ["edge blocks"] : []),
  ];
  return {
    what: `${modeNames[spec.mode]} ${spec.M}×${spec.N}×${spec.K}${batch}, ${how.join(", ")}`,
    // A product's FLOPs count once, with its inside blocks where it has both kinds.
    flops: blocksInside || !hasInside ? gemmFlops(spec) : 0,
  };
}

/** Texels of one packed right-operand chunk at most (64 MiB). */
const maxChunkTexels = 1 << 22;

let flopCounter = 0;

/** Floating-point operations recorded by products so far (multiply and add count as two). */
export function gemmFlopsRecorded(): number {
  return flopCounter;
}

/** Counts the operations of a convolution computed outside {@link gemm} (conv_thin.ts). */
export function recordProductFlops(flops: number): void {
  flopCounter += flops;
}

function productParams(
  spec: GemmSpec,
  kPadded: number,
  nOffset: number,
  nCount: number,
  image?: ImplicitImage,
  slope?: number,
): ArrayBuffer {
  const g = spec.conv;
  return GemmParams.pack({
    M: spec.M,
    N: spec.N,
    K: spec.K,
    K_padded: kPadded,
    batch: spec.batch,
    a_batch_stride: spec.aBatchStride ?? 0,
    b_batch_stride: spec.bBatchStride ?? 0,
    n_offset: nOffset,
    n_count: nCount,
    ...convolutionFields(g),
    image_c4: image?.c4 ?? 0,
    image_h: image?.height ?? 0,
    image_w: image?.width ?? 0,
    phase_pad_h: spec.phases?.padH ?? 0,
    phase_pad_w: spec.phases?.padW ?? 0,
    slope: slope ?? 0,
  });
}

/** The zero-padded input image of an implicit convolution (see pack_image in pack.wgsl). */
interface ImplicitImage {
  /** Texels per pixel: the channels in fours. */
  c4: number;
  /** Rows, from the top padding to the last row a window reaches. */
  height: number;
  /** Columns, likewise. */
  width: number;
  /** Texel planes, one per image and texel of channels: z of pack_image's grid. */
  planes: number;
  /** Texels of the whole image (all images of the batch). */
  texels: number;
}

function implicitImage(g: ConvGeometry, phases?: GemmSpec["phases"]): ImplicitImage {
  const c4 = Math.ceil(g.cin / 4);
  let height = (g.outH - 1) * g.strideH + g.dilationH * (g.kernelH - 1) + 1;
  let width = (g.outW - 1) * g.strideW + g.dilationW * (g.kernelW - 1) + 1;
  if (phases) {
    height = phaseImageExtent(g.outH, g.strideH, g.kernelH, phases.padH);
    width = phaseImageExtent(g.outW, g.strideW, g.kernelW, phases.padW);
  }
  const planes = g.images * c4;
  return { c4, height, width, planes, texels: planes * height * width };
}

/**
 * Whether the padded image of an implicit product of `g` holds every pixel of g's input: not
 * where a negative padding crops it (the adjoint of a convolution padded by more than its
 * kernel's reach), so that summing the image is summing the input.
 */
export function implicitImageHoldsInput(g: ConvGeometry, phases?: GemmSpec["phases"]): boolean {
  const image = implicitImage(g, phases);
  return g.padH >= 0 && g.padW >= 0 && image.height >= g.padH + g.inH &&
    image.width >= g.padW + g.inW;
}

/** Output rows (or columns) of phase r of an output `size` long split into `stride` phases. */
export function phaseExtent(size: number, stride: number, r: number): number {
  return Math.max(0, Math.ceil((size - r) / stride));
}

/**
 * Rows of a phase product's image: phase r's windows start floor((r + pad) / stride) rows in and
 * span `taps` rows (see window_origin in gemm.wgsl).
 */
function phaseImageExtent(size: number, stride: number, taps: number, pad: number): number {
  let extent = 1;
  for (let r = 0; r < stride; r++) {
    const first = Math.floor((r + pad) / stride);
    extent = Math.max(extent, phaseExtent(size, stride, r) + first + taps - 1);
  }
  return extent;
}

/** Whether every group's output rows are a multiple of `columns` pixels long. */
function alignedPixelRows(spec: GemmSpec, columns: number): boolean {
  const g = spec.conv!;
  if (!spec.phases) return g.outW % columns === 0;
  return g.outW % g.strideW === 0 && (g.outW / g.strideW) % columns === 0;
}

/** Whether an implicit product of this convolution (or of its phases) fits this device. */
export function implicitConvFits(
  gpu: Tensor["gpu"],
  g: ConvGeometry,
  phases?: GemmSpec["phases"],
): boolean {
  // The implicit product runs all columns in one dispatch (32 per workgroup along x), and
  // pack_image one texel plane (four channels of one image) per workgroup along z.
  const workgroups = Math.ceil((g.images * g.outH * g.outW) / 32);
  const image = implicitImage(g, phases);
  const maxWorkgroups = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  return g.groups === 1 && image.texels <= gpu.textures.maxTexels &&
    workgroups <= maxWorkgroups && image.planes <= maxWorkgroups;
}

export function activationCode(activation: FusedActivation | undefined): number {
  return activation ? ActivationCode[activation.kind] : ActivationCode.none;
}

export function activationSlope(activation: FusedActivation | undefined): number {
  return activation?.kind === "leakyRelu" ? activation.slope : 0;
}

/**
 * A tensor packed as the zero-padded image texture that implicit products read (pack_image in
 * pack.wgsl): made once by {@link packConvImage} where two products read the same image, as the
 * input gradient and the weight gradient of a transposed convolution both read dy.
 */
export interface ConvImage {
  /** The packed tensor. */
  readonly source: Tensor;
  /** The convolution it was packed for. */
  readonly geometry: ConvGeometry;
  /** The activation whose derivative multiplied it, when it is that activation's gradient. */
  readonly through: ThroughActivation | undefined;
  /** Its extent in the texture. */
  readonly layout: ImplicitImage;
  /** The texture. */
  readonly texture: OperandTexture;
  /** The pool the texture goes back to (kept here: `source` may be disposed first). */
  readonly pool: TexturePool;
}

/**
 * Packs `source` as the input image of implicit products of convolution `g`, and with
 * `channelSums` also stores there its sum over images and pixels per channel.
 */
function packImage(
  source: Tensor,
  g: ConvGeometry,
  phases: GemmSpec["phases"],
  through: ThroughActivation | undefined,
  channelSums?: Tensor,
): ConvImage {
  const layout = implicitImage(g, phases);
  const texture = source.gpu.textures.acquire(layout.texels);
  // Packing reads the geometry and the image's extent only; the product's sizes do not matter,
  // and of the constants only the activation does: one pipeline serves every product.
  const sizes = { mode: GemmMode.convForward, M: 0, N: 0, K: 0, batch: 1, conv: g };
  const constants = packConstants({ ...sizes, implicit: true }, through);
  const params = productParams(sizes, 0, 0, 0, layout, activationSlope(through?.activation));
  const buffers = [bind(source), { view: texture.view }, bindActivated(source, through)];
  const image = { source, geometry: g, through, layout, texture, pool: source.gpu.textures };
  // Rows of whole vectors are read four pixels of a channel at a time (pack_image4 and
  // pack_image_rows4), in blocks: those over a row's left padding, then four input pixels each.
  const vectorRows = g.inW % 4 === 0;
  const left = Math.max(0, Math.ceil(g.padW / 4));
  const blocksPerRow = Math.ceil((layout.width + 4 * left - g.padW) / 4);
  const blocks = layout.planes * layout.height * blocksPerRow;
  const vectorBuffers = [
    null,
    { view: texture.view },
    null,
    null,
    bind(source),
    bindActivated(source, through),
  ];
  if (!channelSums) {
    run(source, {
      shader: "pack",
      entryPoint: vectorRows ? "pack_image4" : "pack_image",
      constants,
      params,
      buffers: vectorRows ? vectorBuffers : buffers,
      workgroups: vectorRows
        ? elementGrid(blocks)
        : [...elementGrid(layout.height * layout.width), layout.planes],
    });
    return image;
  }
  const rows = layout.planes * layout.height;
  const rowSums = empty([rows * 4]);
  const sumBuffers = vectorRows ? [...vectorBuffers] : [...buffers, null];
  sumBuffers[3] = bind(rowSums); // binding 4
  run(source, {
    shader: "pack",
    entryPoint: vectorRows ? "pack_image_rows4" : "pack_image_rows",
    constants,
    params,
    buffers: sumBuffers,
    workgroups: grid2d(Math.ceil(rows / 64)),
  });
  run(source, {
    shader: "bias_grad",
    entryPoint: "from_row_sums",
    constants: { ACTIVATION: ActivationCode.none, THREADS: 64 },
    params: BiasGradParams.pack({
      images: g.images,
      channels: g.cin,
      pixels: layout.height,
      slope: 0,
    }),
    buffers: [null, null, bind(channelSums), bind(rowSums)],
    workgroups: [Math.ceil(g.cin / 64)],
  });
  rowSums.dispose();
  return image;
}

/**
 * Packs `source` (through the derivative of `through`'s activation, if given) as the input image
 * of implicit products of convolution `g`, for {@link GemmSpec.image}; `biasGradient` receives
 * the sums as in {@link GemmSpec.biasGradient}. Release it with {@link releaseConvImage} once the
 * products are recorded.
 */
export function packConvImage(
  source: Tensor,
  g: ConvGeometry,
  through?: ThroughActivation,
  biasGradient?: Tensor,
): ConvImage {
  return packImage(source, g, undefined, through, biasGradient);
}

/** Returns a packed image's texture to the pool (later dispatches run after its readers). */
export function releaseConvImage(image: ConvImage): void {
  image.pool.release(image.texture);
}

/** Throws unless `image` holds B of an implicit product `spec` of `b`, laid out as `layout`. */
function checkSharedImage(image: ConvImage, b: Tensor, spec: GemmSpec, layout: ImplicitImage) {
  const g = spec.conv!;
  const packed = image.geometry;
  const sameGeometry = packed.images === g.images && packed.cin === g.cin &&
    packed.inH === g.inH && packed.inW === g.inW && packed.padH === g.padH &&
    packed.padW === g.padW;
  const sameLayout = image.layout.c4 === layout.c4 && image.layout.height === layout.height &&
    image.layout.width === layout.width && image.layout.planes === layout.planes;
  const through = spec.throughB;
  const sameThrough = image.through === through ||
    (image.through?.activated === through?.activated &&
      activationCode(image.through?.activation) === activationCode(through?.activation) &&
      activationSlope(image.through?.activation) === activationSlope(through?.activation));
  if (image.source !== b || !sameGeometry || !sameLayout || !sameThrough) {
    throw new Error("A packed convolution image was given to a product it was not packed for");
  }
}

/**
 * Constants of pack.wgsl for packing an operand that may be the gradient of an activation;
 * `vec4Source` when each texel of it is four aligned neighbours in memory (see alignedPixels).
 */
function packConstants(spec: GemmSpec, through: ThroughActivation | undefined, vec4Source = false) {
  return {
    VEC4_SOURCE: vec4Source,
    MODE: spec.mode,
    TRANS_A: spec.transA ?? false,
    TRANS_B: spec.transB ?? false,
    IMPLICIT: spec.implicit ?? false,
    FLIP_WEIGHTS: spec.flipWeights ?? false,
    PHASES: spec.phases !== undefined,
    ACTIVATION: activationCode(through?.activation),
  };
}

/** Records C = A·B as described by `spec` into `c`. */
export function gemm(a: Tensor, b: Tensor, c: Tensor, spec: GemmSpec): void {
  const gpu = a.gpu;
  const image = spec.implicit ? implicitImage(spec.conv!, spec.phases) : undefined;
  if (spec.image) {
    if (!image) throw new Error("Only an implicit product reads a packed image");
    checkSharedImage(spec.image, b, spec, image);
  }
  if (spec.biasGradient && (!image || spec.image)) {
    throw new Error("A product sums B per channel only where it packs B as an image itself");
  }
  if (spec.biasGradient && !implicitImageHoldsInput(spec.conv!, spec.phases)) {
    throw new Error("A product sums B per channel only where its image holds all of B");
  }
  // An implicit forward product's k runs over (tap, channel), the channels padded to texels.
  const kPadded = image && spec.mode === GemmMode.convForward
    ? spec.conv!.kernelH * spec.conv!.kernelW * image.c4 * 4
    : paddedK(spec);
  const packedA = packA(a, spec, kPadded, image);
  const rows = rowsPerThread(spec);
  const columns = columnsPerThread(spec, rows);
  const splits = kSplits(spec, rows, columns);
  // A split product stores each part's partial sums as a group of its own, summed into c last.
  // A split convolution's parts are the channels of groups of its output images, and add_parts
  // applies the epilogue they skip.
  const splitImage = splits > 1 && image !== undefined;
  const target = splits > 1 ? empty([spec.batch, splits, spec.M, spec.N]) : c;
  const productSpec: GemmSpec = splitImage
    ? { ...spec, conv: { ...spec.conv!, cout: splits * spec.M } }
    : spec;
  const [groupX, groupY] = workgroupShape(
    Math.ceil(spec.N / columns) * splits,
    Math.ceil(spec.M / rows),
    spec.batch,
  );
  // Four consecutive columns are consecutive floats when rows (or images) start 4-aligned.
  const rowLength = spec.mode === GemmMode.convForward ? spec.conv!.outH * spec.conv!.outW : spec.N;
  const productConstants = {
    MODE: spec.mode,
    RM: rows,
    CN: columns,
    GROUP_X: groupX,
    GROUP_Y: groupY,
    IMPLICIT: spec.implicit ?? false,
    CONTIGUOUS_ROWS: rowLength % 4 === 0 && !spec.phases,
    // An implicit product's four columns are then four neighbours in one row of the output.
    ALIGNED_PIXEL_ROWS: image !== undefined && alignedPixelRows(spec, columns),
    PHASES: spec.phases !== undefined,
    SPLIT_K: splits,
    HAS_BIAS: spec.bias !== undefined && !splitImage,
    ACTIVATION: activationCode(splitImage ? undefined : spec.activation),
  };
  // Without a bias the kernel still needs a buffer there; A's is bound to nothing else.
  const biasBinding = spec.bias ? bind(spec.bias) : bind(a);
  const multiply = (packedB: OperandTexture, nOffset: number, nCount: number): void => {
    const params = productParams(
      productSpec,
      kPadded,
      nOffset,
      nCount,
      image,
      activationSlope(spec.activation),
    );
    const workgroups: [number, number, number] = [
      Math.ceil((Math.ceil(nCount / columns) * splits) / groupX),
      Math.ceil(Math.ceil(spec.M / rows) / groupY),
      spec.batch,
    ];
    // C is bound twice: as floats, and as vectors for the blocks inside it (see gemm.wgsl).
    const buffers = [
      { view: packedA.texture.view },
      { view: packedB.view },
      bind(target),
      biasBinding,
      bind(target),
    ];
    const blocks = blockCoverage(spec, rows, columns, nCount);
    for (const blocksInside of [true, false]) {
      if (blocksInside ? !blocks.inside : !blocks.edges) continue;
      run(a, {
        describe: () => describeProduct(spec, rows, columns, splits, blocksInside, blocks.inside),
        shader: "gemm",
        constants: { ...productConstants, BLOCKS_INSIDE: blocksInside },
        params,
        buffers,
        workgroups,
      });
    }
  };
  if (image) {
    const packed = spec.image ??
      packImage(b, spec.conv!, spec.phases, spec.throughB, spec.biasGradient);
    multiply(packed.texture, 0, spec.N);
    if (!spec.image) releaseConvImage(packed);
  } else {
    const rowsOfB = spec.batch * kPadded;
    const chunkLimit = Math.min(maxChunkTexels, gpu.textures.maxTexels);
    const columnsPerChunk = Math.max(4, Math.floor(chunkLimit / rowsOfB) * 4);
    for (let nOffset = 0; nOffset < spec.N; nOffset += columnsPerChunk) {
      const nCount = Math.min(columnsPerChunk, spec.N - nOffset);
      const bTexels = rowsOfB * Math.ceil(nCount / 4);
      const packedB = gpu.textures.acquire(bTexels);
      run(b, {
        shader: "pack",
        entryPoint: "pack_b",
        constants: packConstants(
          spec,
          spec.throughB,
          alignedPixels(spec, GemmMode.convInputGrad),
        ),
        params: productParams(
          spec,
          kPadded,
          nOffset,
          nCount,
          undefined,
          activationSlope(spec.throughB?.activation),
        ),
        buffers: packBuffers(b, packedB, spec.throughB),
        workgroups: elementGrid(bTexels),
      });
      multiply(packedB, nOffset, nCount);
      gpu.textures.release(packedB);
    }
  }
  if (!packedA.kept) gpu.textures.release(packedA.texture);
  if (splitImage) {
    run(c, {
      shader: "gemm",
      entryPoint: "add_parts",
      constants: {
        ...productConstants,
        BLOCKS_INSIDE: false,
        HAS_BIAS: spec.bias !== undefined,
        ACTIVATION: activationCode(spec.activation),
      },
      params: productParams(spec, kPadded, 0, spec.N, image, activationSlope(spec.activation)),
      buffers: [null, null, bind(c), biasBinding, null, bind(target)],
      workgroups: elementGrid(c.size),
    });
    target.dispose();
  } else if (target !== c) {
    sumInto(target, [1], c);
    target.dispose();
  }
  flopCounter += gemmFlops(spec);
}

/** A parameter packed as the A operand of products described by `params` and `constants`. */
interface PackedParameter {
  readonly params: Uint32Array;
  readonly constants: readonly number[];
  /** The version of the parameter's buffer it was packed from (see WriteLog). */
  readonly version: number;
  readonly texture: OperandTexture;
}

/**
 * Parameters' packings, kept until the parameter is written or disposed: between two optimizer
 * steps, or over all the batches of an evaluation, a weight is packed once per kind of product
 * (on lavapipe the SSIM autoencoder's forward pass spent 2.9 of its ~53 ms packing weights).
 */
const packedParameters = new WeakMap<Tensor, PackedParameter[]>();

/**
 * `a` packed as the left operand of `spec` (pack_a in pack.wgsl). A parameter (a leaf that
 * requires a gradient) keeps its packing for the next product of the same kind (`kept`: not to be
 * released); any other operand is packed into a texture that the caller releases.
 */
function packA(
  a: Tensor,
  spec: GemmSpec,
  kPadded: number,
  image: ImplicitImage | undefined,
): { texture: OperandTexture; kept: boolean } {
  const gpu = a.gpu;
  const aTexels = spec.batch * spec.M * (kPadded / 4);
  const constants = packConstants(
    spec,
    spec.throughA,
    alignedPixels(spec, GemmMode.convWeightGrad),
  );
  const slope = activationSlope(spec.throughA?.activation);
  const params = productParams(spec, kPadded, 0, spec.N, image, slope);
  const pack = (texture: OperandTexture) =>
    run(a, {
      shader: "pack",
      entryPoint: "pack_a",
      constants,
      params,
      buffers: packBuffers(a, texture, spec.throughA),
      workgroups: elementGrid(aTexels),
    });
  const isParameter = a.requiresGrad && a.backwardFn === null && !spec.throughA;
  if (!isParameter) {
    const texture = gpu.textures.acquire(aTexels);
    pack(texture);
    return { texture, kept: false };
  }
  const words = new Uint32Array(params);
  const constantValues = Object.values(constants).map(Number);
  const version = gpu.recorder.writes.version(a.buffer);
  let packings = packedParameters.get(a);
  if (!packings) {
    const kept: PackedParameter[] = packings = [];
    packedParameters.set(a, kept);
    a.onDispose(() => {
      for (const packing of kept) gpu.textures.release(packing.texture);
      packedParameters.delete(a);
    });
  }
  const index = packings.findIndex((packing) =>
    sameNumbers(packing.params, words) && sameNumbers(packing.constants, constantValues)
  );
  const found = packings[index];
  if (found?.version === version) return { texture: found.texture, kept: true };
  // Repacking into the same texture is safe: dispatches run in the order they were recorded.
  const texture = found?.texture ?? gpu.textures.acquire(aTexels);
  pack(texture);
  const packing = { params: words, constants: constantValues, version, texture };
  if (found) {
    packings[index] = packing;
  } else {
    // The key holds the product's sizes too (a batch of another size is another kind of
    // product), so a parameter keeps only its most recent few.
    if (packings.length >= maxPackingsPerParameter) {
      gpu.textures.release(packings.shift()!.texture);
    }
    packings.push(packing);
  }
  return { texture, kept: true };
}

/** Packings a parameter keeps at most (a layer's forward pass and two adjoints, and one more). */
const maxPackingsPerParameter = 4;

/**
 * Whether `spec` is a product of `mode` whose packed operand (A of a weight gradient, B of an
 * input gradient's column matrix) is dy read along its pixels, with a whole number of texels per
 * image: each texel is then four aligned neighbours in memory (VEC4_SOURCE in pack.wgsl).
 */
function alignedPixels(spec: GemmSpec, mode: number): boolean {
  return spec.mode === mode && (spec.conv!.outH * spec.conv!.outW) % 4 === 0;
}

/**
 * Bindings of pack_a and pack_b: the operand, the texture, the activated output, then both again
 * as vec4 arrays (bindings 5 and 6; 4 is pack_image_rows' row sums).
 */
function packBuffers(operand: Tensor, packed: OperandTexture, through?: ThroughActivation) {
  const activated = bindActivated(operand, through);
  return [bind(operand), { view: packed.view }, activated, null, bind(operand), activated];
}

/** The activated output an operand is the gradient of, or the operand itself as a placeholder. */
function bindActivated(operand: Tensor, through: ThroughActivation | undefined): StorageBinding {
  return bind(through ? through.activated : operand);
}

/**
 * Folds the column matrix of a `convInputGrad` product (computed by {@link gemm} with the same
 * `spec`) into the NCHW image it is the gradient of: col2im.wgsl, one thread per pixel. As the
 * output of a transposed convolution, the image gets `spec.bias` and `spec.activation` here.
 */
export function foldColumns(columns: Tensor, image: Tensor, spec: GemmSpec): void {
  run(image, {
    shader: "col2im",
    constants: {
      HAS_BIAS: spec.bias !== undefined,
      ACTIVATION: activationCode(spec.activation),
    },
    params: productParams(
      spec,
      paddedK(spec),
      0,
      spec.N,
      undefined,
      activationSlope(spec.activation),
    ),
    buffers: [bind(columns), bind(image), spec.bias ? bind(spec.bias) : bind(columns)],
    workgroups: elementGrid(image.size),
  });
}

/**
 * The bias gradient of a convolution layer: db[c] = Σ dy[n, c, y, x] · act′, where dy is the
 * gradient of the layer's NCHW output `activated` and act′ the derivative of `activation` (none:
 * a plain sum over images and pixels).
 */
export function biasGrad(
  dy: Tensor,
  activated: Tensor,
  db: Tensor,
  activation: FusedActivation | undefined,
): void {
  const [images, channels, height, width] = dy.shape;
  run(dy, {
    shader: "bias_grad",
    constants: {
      ACTIVATION: activationCode(activation),
      THREADS: biasGradThreads(images * height * width),
    },
    params: BiasGradParams.pack({
      images,
      channels,
      pixels: height * width,
      slope: activationSlope(activation),
    }),
    buffers: [bind(dy), bind(activated), bind(db)],
    workgroups: [channels],
  });
}

/**
 * Threads that sum one channel of a bias gradient. On lavapipe 64 made the AE's small layers
 * (8×8 and 16×16 pixels) 2–4× faster than 256, whose threads mostly idle there, but its 64×64
 * layers slower: there each thread's loop is long and more threads share it.
 */
function biasGradThreads(valuesPerChannel: number): number {
  return valuesPerChannel >= 64 * 256 ? 256 : 64;
}

function paddedK(spec: GemmSpec): number {
  return Math.ceil(spec.K / 4) * 4;
}

/** Floating-point operations of a product (multiply and add count as two). */
export function gemmFlops(spec: Pick<GemmSpec, "M" | "N" | "K" | "batch">): number {
  return 2 * spec.M * spec.N * spec.K * spec.batch;
}
