/**
 * Convolutions with one input channel, computed directly by shaders/conv_thin.wgsl instead of as
 * a matrix product over a packed column matrix (see the shader for why). conv.ts sends them here
 * where {@link thinConvFits}: the first layer of a network on grey images, and the input gradient
 * of a transposed convolution that ends in one channel.
 */

import type { Tensor } from "../tensor.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import type { Gpu } from "../../gpu/device.ts";
import { bind, elementGrid, run } from "./launch.ts";
import { grid2d } from "../../gpu/kernel.ts";
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
  cout_texels: "u32", // texels per tap of the packed weight: cout rounded up to 16, over 4
  slope: "f32", // of the leaky ReLU that pack_rows reads through, or that forward applies
});

declareShader("conv_thin", ThinConvParams, activationCodes, textureWidth);

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
  const constants = {
    KERNEL_W: g.kernelW,
    STRIDE_W: g.strideW,
    DILATION_W: g.dilationW,
    SEGMENT_TEXELS: layout.segment,
    PACK_ACTIVATION: activationCode(fusion.throughB?.activation),
    ACTIVATION: activationCode(fusion.activation),
    HAS_BIAS: fusion.bias !== undefined,
    WHOLE_ROWS: g.outW % pixelsPerThread === 0,
  };
  const paramsWith = (slope: number) =>
    ThinConvParams.pack({
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
      slope,
    });

  const rowCount = g.images * g.inH * layout.rowTexels;
  const rows = gpu.textures.acquire(rowCount);
  const activated = fusion.throughB ? bind(fusion.throughB.activated) : bind(x);
  run(x, {
    shader: "conv_thin",
    entryPoint: "pack_rows",
    constants,
    params: paramsWith(activationSlope(fusion.throughB?.activation)),
    buffers: [bind(x), { view: rows.view }, activated],
    workgroups: elementGrid(rowCount),
  });

  const tapTexels = g.kernelH * g.kernelW * layout.coutTexels;
  const weights = gpu.textures.acquire(tapTexels);
  run(w, {
    shader: "conv_thin",
    entryPoint: "pack_taps",
    constants,
    params: paramsWith(0),
    buffers: [bind(w), { view: weights.view }],
    workgroups: [Math.ceil(tapTexels / 64)],
  });

  const threads = g.images * g.outH * layout.groupsPerRow;
  const flops = 2 * g.cout * g.images * g.outH * g.outW * g.kernelH * g.kernelW;
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
    params: paramsWith(activationSlope(fusion.activation)),
    buffers: [
      null,
      null,
      null,
      { view: rows.view },
      { view: weights.view },
      bind(y),
      fusion.bias ? bind(fusion.bias) : bind(w),
      bind(y),
    ],
    workgroups: [...grid2d(Math.ceil(threads / 64)), layout.coutTexels / 4],
  });
  gpu.textures.release(rows);
  gpu.textures.release(weights);
  recordProductFlops(flops);
}
