/**
 * Convolutions with one input channel, computed directly by shaders/conv_thin.wgsl instead of as
 * matrix products over a packed column matrix (see the shader for why): the forward pass where
 * {@link thinConvFits}, the weight gradient where {@link thinWeightGradFits} and the input
 * gradient where {@link thinInputGradFits}. In a network on grey images that is the first layer,
 * and all three products of a transposed convolution that ends in one channel (its forward pass
 * is the input gradient, its input gradient the forward pass of a convolution of its one-channel
 * dy). On lavapipe the SSIM autoencoder's five such products took 3.9–7.5 ms each as packed
 * products (with col2im for the transposed convolution's output), and 1.3–3.8 ms so (replays of
 * its training step).
 */

import type { Tensor } from "../tensor.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import type { Gpu } from "../../gpu/device.ts";
import { empty } from "../tensor.ts";
import { bind, elementGrid, run } from "./launch.ts";
import { sumInto } from "./reduce.ts";
import { grid2d } from "../../gpu/kernel.ts";
import type { ShaderConstants } from "../../gpu/pipelines.ts";
import { type OperandTexture, operandTextureDeclaration } from "../../gpu/textures.ts";
import {
  activationCode,
  activationCodes,
  activationSlope,
  type ConvGeometry,
  type FusedActivation,
  recordProductFlops,
  textureWidth,
  type ThroughActivation,
} from "./gemm.ts";

const ThinConvParams = uniformStruct("ThinConvParams", {
  images: "u32",
  cout: "u32",
  in_h: "u32",
  in_w: "u32",
  out_h: "u32",
  out_w: "u32",
  kernel_h: "u32",
  stride_h: "u32",
  pad_h: "i32",
  pad_w: "i32",
  dilation_h: "u32",
  row_texels: "u32", // texels per packed input row (see pack_rows)
  groups_per_row: "u32", // groups of 8 output pixels per output row
  cout_texels: "u32", // cout rounded up to 16, over 4 (the forward pass's blocks of channels)
  parts: "u32", // parts of a weight gradient's sum over the output's rows
  groups_per_part: "u32", // groups of 8 output pixels per part
  slope: "f32", // of the leaky ReLU that pack_rows reads through, or that forward applies
});

declareShader(
  "conv_thin",
  ThinConvParams,
  activationCodes,
  textureWidth,
  operandTextureDeclaration(),
);

/** Output pixels per thread along a row, and output channels per thread. */
const pixelsPerThread = 8;
const channelsPerThread = 16;

/** Texels of the input row stretch that one thread's windows cover. */
function segmentTexels(g: ConvGeometry): number {
  const reach = (pixelsPerThread - 1) * g.strideW + (g.kernelW - 1) * g.dilationW + 1;
  return Math.ceil(reach / 4);
}

/** The longest stretch a thread keeps (32 input pixels: a 4×4 kernel at stride 4 reaches 32). */
const maxSegmentTexels = 8;
/** The widest kernel (the shader's taps of a row are written out for kx = 0 … 7). */
const maxKernelWidth = 8;

/**
 * Whether convolution `g` takes the direct one-channel kernel: one input channel, no groups,
 * kernels up to {@link maxKernelWidth} wide, a row stretch of at most {@link maxSegmentTexels} per
 * thread, and textures that fit.
 */
export function thinConvFits(gpu: Gpu, g: ConvGeometry): boolean {
  const fitsThread = g.kernelW <= maxKernelWidth && segmentTexels(g) <= maxSegmentTexels;
  if (g.cin !== 1 || g.groups !== 1 || g.padW < 0 || !fitsThread) {
    return false;
  }
  const layout = thinLayout(g);
  return g.images * g.inH * layout.rowTexels <= gpu.textures.maxTexels;
}

function thinLayout(g: ConvGeometry) {
  const groupsPerRow = Math.ceil(g.outW / pixelsPerThread);
  const segment = segmentTexels(g);
  return {
    groupsPerRow,
    segment,
    // The last group's stretch starts at texel 2 · group · stride (see conv_thin.wgsl).
    rowTexels: 2 * (groupsPerRow - 1) * g.strideW + segment,
    coutTexels: Math.ceil(g.cout / channelsPerThread) * (channelsPerThread / 4),
  };
}

/**
 * The constants of conv_thin.wgsl for convolution `g`: one module serves all the entry points of
 * a product. PAD_W and ADJOINT_FIRST are the input gradient's (0 for the other products).
 */
function thinConstants(
  g: ConvGeometry,
  activation: FusedActivation | undefined,
  packActivation: FusedActivation | undefined,
  hasBias: boolean,
  adjoint?: AdjointLayout,
  biasGradient = false,
  sharedWeightTexels = 0,
) {
  return {
    KERNEL_W: g.kernelW,
    STRIDE_W: g.strideW,
    DILATION_W: g.dilationW,
    SEGMENT_TEXELS: adjoint ? adjoint.segment : segmentTexels(g),
    PACK_ACTIVATION: activationCode(packActivation),
    ACTIVATION: activationCode(activation),
    HAS_BIAS: hasBias,
    WHOLE_ROWS: (adjoint ? g.inW : g.outW) % pixelsPerThread === 0,
    BIAS_GRAD: biasGradient,
    PAD_W: adjoint ? g.padW : 0,
    ADJOINT_FIRST: adjoint ? adjoint.first : 0,
    SHARED_WEIGHT_TEXELS: sharedWeightTexels,
    DY_IN_MEMORY_ORDER: adjoint?.memoryOrder ?? false,
  };
}

function thinParams(
  g: ConvGeometry,
  slope: number,
  parts = 0,
  groupsPerPart = 0,
  layout = thinLayout(g),
): ArrayBuffer {
  return ThinConvParams.pack({
    images: g.images,
    cout: g.cout,
    in_h: g.inH,
    in_w: g.inW,
    out_h: g.outH,
    out_w: g.outW,
    kernel_h: g.kernelH,
    stride_h: g.strideH,
    pad_h: g.padH,
    pad_w: g.padW,
    dilation_h: g.dilationH,
    row_texels: layout.rowTexels,
    groups_per_row: layout.groupsPerRow,
    cout_texels: layout.coutTexels,
    parts,
    groups_per_part: groupsPerPart,
    slope,
  });
}

/**
 * Packs one-channel `x` (through the derivative of `through`'s activation) as rows of texels
 * (pack_rows); the caller releases the texture to the pool once its readers are recorded.
 */
function packRows(
  x: Tensor,
  g: ConvGeometry,
  constants: ShaderConstants,
  through: ThroughActivation | undefined,
  layout = thinLayout(g),
): OperandTexture {
  const texels = g.images * g.inH * layout.rowTexels;
  const rows = x.gpu.textures.acquire(texels);
  const activated = through ? bind(through.activated) : bind(x);
  // Rows of whole vectors are read a vector at a time (pack_rows4).
  const vectorRows = g.inW % 4 === 0;
  // pack_rows4 binds the texture at 2 and x and `activated` as vectors at 15 and 16.
  const vectorBuffers = [
    null,
    { view: rows.view },
    ...new Array(12).fill(null),
    bind(x),
    activated,
  ];
  run(x, {
    shader: "conv_thin",
    entryPoint: vectorRows ? "pack_rows4" : "pack_rows",
    constants,
    params: thinParams(g, activationSlope(through?.activation), 0, 0, layout),
    buffers: vectorRows ? vectorBuffers : [bind(x), { view: rows.view }, activated],
    workgroups: elementGrid(texels),
  });
  return rows;
}

/**
 * Bindings of the forward and input-gradient kernels: the packed input and weight, the output
 * (as floats and as vectors) and the bias, or a placeholder where there is none.
 */
function convolutionBuffers(
  rows: OperandTexture,
  weights: OperandTexture,
  out: Tensor,
  biasOrPlaceholder: Tensor,
) {
  return [
    null,
    null,
    null,
    { view: rows.view },
    { view: weights.view },
    bind(out),
    bind(biasOrPlaceholder),
    bind(out),
  ];
}

/** Rows of dx per thread of the input gradient (ROWS_PER_THREAD in conv_thin.wgsl). */
const adjointRowsPerThread = 4;

/**
 * Packs w [cout, 1, kh, kw] for the thin kernels by kernel rows, up to four taps to a texel, with
 * zero rows for the channels past cout up to a multiple of 16 (see pack_kernel_rows).
 */
function packWeight(w: Tensor, g: ConvGeometry, constants: ShaderConstants): OperandTexture {
  const texels = weightTexels(g);
  const weights = w.gpu.textures.acquire(texels);
  run(w, {
    shader: "conv_thin",
    entryPoint: "pack_kernel_rows",
    constants,
    params: thinParams(g, 0),
    buffers: [bind(w), { view: weights.view }],
    workgroups: [Math.ceil(texels / 64)],
  });
  return weights;
}

/** Texels of the weight as {@link packWeight} packs it. */
function weightTexels(g: ConvGeometry): number {
  return 4 * thinLayout(g).coutTexels * g.kernelH * Math.ceil(g.kernelW / 4);
}

/**
 * The packed weight's texels where the input gradient can keep it in workgroup memory, else 0
 * (SHARED_WEIGHT_TEXELS in conv_thin.wgsl).
 */
function sharedWeightTexels(gpu: Gpu, g: ConvGeometry): number {
  const texels = weightTexels(g);
  return texels * 16 <= gpu.device.limits.maxComputeWorkgroupStorageSize ? texels : 0;
}

function thinFlops(g: ConvGeometry): number {
  return 2 * g.cout * g.images * g.outH * g.outW * g.kernelH * g.kernelW;
}

/** What the forward kernel fuses: the output's bias and activation, and the input's activation. */
export interface ThinConvFusion {
  bias?: Tensor;
  activation?: FusedActivation;
  /** x is the gradient of a fused activation's output (a transposed convolution's dx). */
  throughB?: ThroughActivation;
}

/**
 * y = conv(x, w) (+ bias, activation) for one-channel x [images, 1, inH, inW] and w [cout, 1, kh,
 * kw] (or a transposed convolution's weight [cout, 1, kh, kw] read the same way), into y.
 */
export function thinConvForward(
  x: Tensor,
  w: Tensor,
  y: Tensor,
  g: ConvGeometry,
  fusion: ThinConvFusion,
): void {
  const gpu = x.gpu;
  const layout = thinLayout(g);
  const constants = thinConstants(
    g,
    fusion.activation,
    fusion.throughB?.activation,
    fusion.bias !== undefined,
  );
  const rows = packRows(x, g, constants, fusion.throughB);

  const weights = packWeight(w, g, constants);

  const threads = g.images * g.outH * layout.groupsPerRow;
  const flops = thinFlops(g);
  run(y, {
    describe: () => ({
      what: `conv forward ${g.cout}×${g.images * g.outH * g.outW}×${
        g.kernelH * g.kernelW
      }, one input channel, direct`,
      flops,
    }),
    shader: "conv_thin",
    entryPoint: "forward",
    constants,
    params: thinParams(g, activationSlope(fusion.activation)),
    buffers: convolutionBuffers(rows, weights, y, fusion.bias ?? w),
    workgroups: [...grid2d(Math.ceil(threads / 64)), layout.coutTexels / 4],
  });
  gpu.textures.release(rows);
  gpu.textures.release(weights);
  recordProductFlops(flops);
}

/** The widest kernel of the direct weight gradient (a thread sums kx = 0 … 3 in one vector). */
const maxWeightGradKernelWidth = 4;
/** Threads a weight gradient keeps at least, for the cores of a CPU driver to share. */
const minWeightGradThreads = 256;

/** Whether the weight gradient of convolution `g` takes the direct kernel. */
export function thinWeightGradFits(gpu: Gpu, g: ConvGeometry): boolean {
  return g.kernelW <= maxWeightGradKernelWidth && thinConvFits(gpu, g);
}

/** What the weight gradient reads through: dy's activation (A) and x's (B). */
export interface ThinWeightGradFusion {
  throughA?: ThroughActivation;
  throughB?: ThroughActivation;
}

/**
 * dw [cout, 1, kh, kw] of y = conv(x, w) for one-channel x, from dy [images, cout, outH, outW]:
 * parts of the sum over dy's rows (weight_grad in conv_thin.wgsl), added up by sumInto. Given
 * `db`, it also receives dy's sum per channel (through `fusion.throughA`): the layer's bias
 * gradient (on lavapipe the AE's first layer's took 1.3 ms as a pass of its own).
 */
export function thinConvWeightGrad(
  dy: Tensor,
  x: Tensor,
  dw: Tensor,
  g: ConvGeometry,
  fusion: ThinWeightGradFusion,
  db?: Tensor,
): void {
  const layout = thinLayout(g);
  const constants = thinConstants(
    g,
    fusion.throughA?.activation,
    fusion.throughB?.activation,
    false,
    undefined,
    db !== undefined,
  );
  const rows = packRows(x, g, constants, fusion.throughB);
  // Each thread sums 8 channels × 4 kernel rows; the parts split the output's rows among enough
  // threads to fill the cores.
  const blocks = Math.ceil(g.cout / 8) * Math.ceil(g.kernelH / 4);
  const groups = g.images * g.outH * layout.groupsPerRow;
  const parts = Math.min(groups, Math.ceil(minWeightGradThreads / blocks));
  const groupsPerPart = Math.ceil(groups / parts);
  const usedParts = Math.ceil(groups / groupsPerPart);
  const partial = empty([usedParts, g.cout * g.kernelH * g.kernelW]);
  const partialBias = db ? empty([usedParts, g.cout]) : undefined;
  const activated = fusion.throughA ? bind(fusion.throughA.activated) : bind(dy);
  const flops = thinFlops(g);
  run(dy, {
    describe: () => ({
      what: `conv weight gradient ${g.cout}×${g.kernelH * g.kernelW}×${
        g.images * g.outH * g.outW
      }, one input channel, direct, ${usedParts} parts`,
      flops,
    }),
    shader: "conv_thin",
    entryPoint: "weight_grad",
    constants,
    params: thinParams(g, activationSlope(fusion.throughA?.activation), usedParts, groupsPerPart),
    buffers: [
      null,
      null,
      null,
      { view: rows.view },
      null,
      null,
      null,
      null,
      bind(dy),
      activated,
      bind(dy),
      activated,
      bind(partial),
      // Without a bias gradient the kernel still needs a buffer there; it writes nothing to it.
      bind(partialBias ?? partial),
    ],
    workgroups: [Math.ceil(usedParts / 64), 1, blocks],
  });
  dy.gpu.textures.release(rows);
  sumInto(partial, [0], dw);
  partial.dispose();
  if (partialBias) {
    sumInto(partialBias, [0], db!);
    partialBias.dispose();
  }
  recordProductFlops(flops);
}

/**
 * How the input gradient reads dy: the stretch of dy pixels that reaches a thread's 8 pixels of dx
 * starts `first` pixels from 8 · group / stride (negative: before it) and spans `segment` texels;
 * dy is packed with rows of `rowTexels` texels that start `first` pixels into the row.
 */
interface AdjointLayout {
  first: number;
  segment: number;
  rowTexels: number;
  groupsPerRow: number;
  /**
   * dy is copied into the texture as it lies in memory (DY_IN_MEMORY_ORDER in conv_thin.wgsl):
   * rows of whole texels, `rowTexels` = outW / 4, and the stretch `segment` texels from
   * the texel holding its first pixel.
   */
  memoryOrder: boolean;
}

/**
 * How the input gradient reads dy: copied as it lies in memory where `copyable` (dy is not read
 * through an activation's derivative, which pack_rows applies) and its rows are whole texels, else
 * packed by pack_rows.
 */
function adjointLayout(g: ConvGeometry, copyable: boolean): AdjointLayout {
  // dx pixel j (0–7) meets dy pixel (j + padW − kx · dilationW) / strideW, where that divides.
  const first = Math.floor((g.padW - (g.kernelW - 1) * g.dilationW) / g.strideW);
  const last = Math.floor((pixelsPerThread - 1 + g.padW) / g.strideW);
  const groupsPerRow = Math.ceil(g.inW / pixelsPerThread);
  // The stretch starts `shift` pixels into a texel of the row as it lies in memory.
  const shift = ((first % 4) + 4) % 4;
  const memorySegment = Math.ceil((shift + last - first + 1) / 4);
  if (copyable && g.outW % 4 === 0 && memorySegment <= maxSegmentTexels) {
    return {
      first,
      segment: memorySegment,
      rowTexels: g.outW / 4,
      groupsPerRow,
      memoryOrder: true,
    };
  }
  const segment = Math.ceil((last - first + 1) / 4);
  // A group's stretch starts at texel 2 · group / stride (stride 1 or 2).
  return {
    first,
    segment,
    rowTexels: (2 * (groupsPerRow - 1)) / g.strideW + segment,
    groupsPerRow,
    memoryOrder: false,
  };
}

/**
 * Whether the input gradient of convolution `g` (equally: a transposed convolution to one
 * channel) takes the direct kernel: one input channel, no groups, stride 1 or 2 along rows, and
 * the limits of {@link thinConvFits} on the stretch of dy a thread reads.
 */
export function thinInputGradFits(gpu: Gpu, g: ConvGeometry): boolean {
  if (g.cin !== 1 || g.groups !== 1 || (g.strideW !== 1 && g.strideW !== 2)) return false;
  if (g.kernelW > maxKernelWidth) return false;
  // The packed layout, which every input gradient can fall back to.
  const layout = adjointLayout(g, false);
  if (layout.segment > maxSegmentTexels) return false;
  return g.images * g.cout * g.outH * layout.rowTexels <= gpu.textures.maxTexels;
}

/**
 * dx [images, 1, inH, inW] of convolution `g` from dy [images, cout, outH, outW] (through
 * `fusion.throughB`) and w [cout, 1, kh, kw], then `fusion.bias` and `fusion.activation`: also
 * the forward pass of a transposed convolution to one channel (dy its input, dx its output).
 */
export function thinConvInputGrad(
  dy: Tensor,
  w: Tensor,
  dx: Tensor,
  g: ConvGeometry,
  fusion: ThinConvFusion,
): void {
  const gpu = dy.gpu;
  const layout = thinLayout(g);
  const adjoint = adjointLayout(g, fusion.throughB === undefined);
  const constants = thinConstants(
    g,
    fusion.activation,
    fusion.throughB?.activation,
    fusion.bias !== undefined,
    adjoint,
    false,
    sharedWeightTexels(gpu, g),
  );
  let rows: OperandTexture;
  if (adjoint.memoryOrder) {
    rows = gpu.textures.acquire(dy.size / 4);
    gpu.recorder.copyToTexture(dy.buffer, rows.texture, dy.size / 4);
  } else {
    // dy as images · cout one-channel images of outH × outW, whose rows start `first` pixels in.
    const dyImages: ConvGeometry = {
      ...g,
      images: g.images * g.cout,
      inH: g.outH,
      inW: g.outW,
      padW: -adjoint.first,
    };
    rows = packRows(dy, dyImages, constants, fusion.throughB, {
      ...layout,
      rowTexels: adjoint.rowTexels,
    });
  }
  const weights = packWeight(w, g, constants);
  const threads = g.images * Math.ceil(g.inH / adjointRowsPerThread) * adjoint.groupsPerRow;
  const flops = thinFlops(g);
  run(dx, {
    describe: () => ({
      what: `conv input gradient ${g.images * g.inH * g.inW}×${g.cout}×${
        g.kernelH * g.kernelW
      }, one channel, direct`,
      flops,
    }),
    shader: "conv_thin",
    entryPoint: "input_grad",
    constants,
    params: thinParams(g, activationSlope(fusion.activation), 0, 0, {
      ...layout,
      rowTexels: adjoint.rowTexels,
      groupsPerRow: adjoint.groupsPerRow,
    }),
    buffers: convolutionBuffers(rows, weights, dx, fusion.bias ?? w),
    workgroups: grid2d(Math.ceil(threads / 64)),
  });
  gpu.textures.release(rows);
  gpu.textures.release(weights);
  recordProductFlops(flops);
}
