/**
 * The shapes of the products: convolution geometry and options, and the plan of a batched matrix
 * product. Shared by the texture-fed kernels (conv.ts, linalg.ts) and the tiled ones
 * (gemm_tiled.ts), so both read the same options the same way.
 */

import type { Tensor } from "../tensor.ts";
import type { ConvGeometry, FusedActivation } from "./gemm.ts";

/** A size per spatial axis: one number for both, or [height, width]. */
export type Pair = number | readonly [number, number];

/** Options of {@link conv2d}. */
export interface Conv2dOptions {
  /** Step between windows (default 1). */
  stride?: Pair;
  /**
   * Zero padding: a size per side, "valid" (none) or "same" (output = ceil(input / stride),
   * padding split as TensorFlow does, the extra row at the bottom and right).
   */
  padding?: Pair | "same" | "valid";
  /** Spacing between kernel taps (default 1). */
  dilation?: Pair;
  /** Channel groups; groups = input channels gives a depthwise convolution (default 1). */
  groups?: number;
  /** Activation applied after the bias, fused into the convolution (default none). */
  activation?: FusedActivation;
}

/** Options of {@link convTranspose2d}. */
export interface ConvTranspose2dOptions {
  /** Upsampling step (default 1). */
  stride?: Pair;
  /** Rows and columns cropped from each side of the full output, or "same" (output = input · stride). */
  padding?: Pair | "same" | "valid";
  /** Extra rows and columns added at the bottom and right (default 0). */
  outputPadding?: Pair;
  /** Spacing between kernel taps (default 1). */
  dilation?: Pair;
  /** Channel groups (default 1). */
  groups?: number;
  /** Activation applied after the bias, fused into the convolution (default none). */
  activation?: FusedActivation;
}

function pair(value: Pair | undefined, fallback: number): [number, number] {
  if (value === undefined) return [fallback, fallback];
  return typeof value === "number" ? [value, value] : [value[0], value[1]];
}

/** Total padding that makes a stride-s convolution output ceil(size / s). */
export function samePadding(
  size: number,
  kernel: number,
  stride: number,
  dilation: number,
): number {
  const out = Math.ceil(size / stride);
  return Math.max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0);
}

/** Both convolutions take an NCHW input and a 4-D weight. */
function checkRanks(what: string, xShape: readonly number[], wShape: readonly number[]): void {
  if (xShape.length !== 4) throw new Error(`${what} expects NCHW input, got shape [${xShape}]`);
  if (wShape.length !== 4) throw new Error(`${what} weight must be 4-D, got [${wShape}]`);
}

/** Geometry of conv2d(x, w) with w of shape [cout, cin/groups, kh, kw]. */
export function conv2dGeometry(
  xShape: readonly number[],
  wShape: readonly number[],
  options: Conv2dOptions = {},
): ConvGeometry {
  checkRanks("conv2d", xShape, wShape);
  const [images, cin, inH, inW] = xShape;
  const [cout, cinPerGroup, kernelH, kernelW] = wShape;
  const groups = options.groups ?? 1;
  const [strideH, strideW] = pair(options.stride, 1);
  const [dilationH, dilationW] = pair(options.dilation, 1);
  if (cin % groups !== 0 || cout % groups !== 0 || cinPerGroup * groups !== cin) {
    throw new Error(
      `conv2d: input has ${cin} channels and weight [${wShape}] with groups=${groups}; ` +
        `expected weight [cout, ${cin / groups}, kh, kw] with cout divisible by ${groups}`,
    );
  }
  let padH: number, padW: number, outH: number, outW: number;
  if (options.padding === "same") {
    padH = Math.floor(samePadding(inH, kernelH, strideH, dilationH) / 2);
    padW = Math.floor(samePadding(inW, kernelW, strideW, dilationW) / 2);
    outH = Math.ceil(inH / strideH);
    outW = Math.ceil(inW / strideW);
  } else {
    [padH, padW] = options.padding === "valid" ? [0, 0] : pair(options.padding, 0);
    outH = Math.floor((inH + 2 * padH - dilationH * (kernelH - 1) - 1) / strideH) + 1;
    outW = Math.floor((inW + 2 * padW - dilationW * (kernelW - 1) - 1) / strideW) + 1;
  }
  if (outH <= 0 || outW <= 0) {
    throw new Error(`conv2d: a ${kernelH}×${kernelW} kernel does not fit a ${inH}×${inW} input`);
  }
  return {
    images,
    cin,
    cout,
    groups,
    inH,
    inW,
    outH,
    outW,
    kernelH,
    kernelW,
    strideH,
    strideW,
    padH,
    padW,
    dilationH,
    dilationW,
  };
}

/**
 * Geometry of convTranspose2d(x, w) with w of shape [cin, cout/groups, kh, kw], given as the
 * convolution whose input gradient the transposed convolution is: its input side is our output
 * and vice versa (so `cin` is our output's channels).
 */
export function transposedConvGeometry(
  xShape: readonly number[],
  wShape: readonly number[],
  options: ConvTranspose2dOptions = {},
): ConvGeometry {
  checkRanks("convTranspose2d", xShape, wShape);
  const [images, cin, inH, inW] = xShape;
  const [wIn, coutPerGroup, kernelH, kernelW] = wShape;
  const groups = options.groups ?? 1;
  if (wIn !== cin || cin % groups !== 0) {
    throw new Error(
      `convTranspose2d: input has ${cin} channels, weight [${wShape}] expects ${wIn} (groups=${groups})`,
    );
  }
  const [strideH, strideW] = pair(options.stride, 1);
  const [dilationH, dilationW] = pair(options.dilation, 1);
  let padH: number, padW: number, outH: number, outW: number;
  if (options.padding === "same") {
    // The adjoint of a "same" convolution: output = input · stride.
    outH = inH * strideH;
    outW = inW * strideW;
    padH = Math.floor(samePadding(outH, kernelH, strideH, dilationH) / 2);
    padW = Math.floor(samePadding(outW, kernelW, strideW, dilationW) / 2);
  } else {
    [padH, padW] = options.padding === "valid" ? [0, 0] : pair(options.padding, 0);
    const [extraH, extraW] = pair(options.outputPadding, 0);
    outH = (inH - 1) * strideH - 2 * padH + dilationH * (kernelH - 1) + extraH + 1;
    outW = (inW - 1) * strideW - 2 * padW + dilationW * (kernelW - 1) + extraW + 1;
  }
  if (outH <= 0 || outW <= 0) throw new Error(`convTranspose2d: output would be ${outH}×${outW}`);
  const cout = coutPerGroup * groups;
  return {
    images,
    cin: cout,
    cout: cin,
    groups,
    inH: outH,
    inW: outW,
    outH: inH,
    outW: inW,
    kernelH,
    kernelW,
    strideH,
    strideW,
    padH,
    padW,
    dilationH,
    dilationW,
  };
}

/** Throws unless `bias` has one value per output channel. */
export function checkBias(bias: Tensor | undefined, channels: number): void {
  if (bias && bias.size !== channels) {
    throw new Error(`Bias of shape [${bias.shape}] does not match ${channels} output channels`);
  }
}

/** The shape and sizes of `op(a[i]) · op(b[i])`, op transposing when asked. */
export interface MatmulPlan {
  /** Output shape: [M, N], or [batch, M, N] when an operand is 3-D. */
  shape: number[];
  /** Rows of the product. */
  M: number;
  /** Columns of the product. */
  N: number;
  /** The summed dimension. */
  K: number;
  /** Batch entries. */
  batch: number;
  /** Elements between batch entries of a (0: a 2-D operand shared by every entry). */
  aBatchStride: number;
  /** Elements between batch entries of b (0: shared). */
  bBatchStride: number;
}

/**
 * Plans `op(a[i]) · op(b[i])`. Operands are 2-D (shared by every batch entry) or 3-D with the
 * batch first.
 */
export function planMatmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): MatmulPlan {
  for (const t of [a, b]) {
    if (t.shape.length !== 2 && t.shape.length !== 3) {
      throw new Error(`matmul takes 2-D or 3-D tensors, got shape [${t.shape}]`);
    }
  }
  const batchA = a.shape.length === 3 ? a.shape[0] : 1;
  const batchB = b.shape.length === 3 ? b.shape[0] : 1;
  const batch = Math.max(batchA, batchB);
  const [ra, ca] = a.shape.slice(-2);
  const [rb, cb] = b.shape.slice(-2);
  const [M, Ka] = transA ? [ca, ra] : [ra, ca];
  const [Kb, N] = transB ? [cb, rb] : [rb, cb];
  if (Ka !== Kb || (batchA !== batchB && batchA !== 1 && batchB !== 1)) {
    throw new Error(`matmul: shapes [${a.shape}] and [${b.shape}] do not multiply`);
  }
  return {
    shape: a.shape.length === 3 || b.shape.length === 3 ? [batch, M, N] : [M, N],
    M,
    N,
    K: Ka,
    batch,
    aBatchStride: batchA === 1 ? 0 : M * Ka,
    bBatchStride: batchB === 1 ? 0 : Ka * N,
  };
}

/**
 * The uniform fields of a convolution's geometry in both GEMM engines' structs (snake_case, as in
 * WGSL): declared once here and spread into each `uniformStruct`, filled by
 * {@link convolutionFields}.
 */
export const CONVOLUTION_FIELD_TYPES = {
  images: "u32",
  cin: "u32", // the convolution's input side, all groups
  cout: "u32",
  groups: "u32",
  in_h: "u32",
  in_w: "u32",
  out_h: "u32",
  out_w: "u32",
  kernel_h: "u32",
  kernel_w: "u32",
  stride_h: "u32",
  stride_w: "u32",
  pad_h: "i32",
  pad_w: "i32",
  dilation_h: "u32",
  dilation_w: "u32",
} as const;

/**
 * A convolution's geometry as the GEMM kernels' uniform fields; the neutral values when the
 * product is a plain matrix product.
 */
export function convolutionFields(
  g: ConvGeometry | undefined,
): { [Field in keyof typeof CONVOLUTION_FIELD_TYPES]: number } {
  return {
    images: g?.images ?? 0,
    cin: g?.cin ?? 0,
    cout: g?.cout ?? 0,
    groups: g?.groups ?? 1,
    in_h: g?.inH ?? 0,
    in_w: g?.inW ?? 0,
    out_h: g?.outH ?? 0,
    out_w: g?.outW ?? 0,
    kernel_h: g?.kernelH ?? 1,
    kernel_w: g?.kernelW ?? 1,
    stride_h: g?.strideH ?? 1,
    stride_w: g?.strideW ?? 1,
    pad_h: g?.padH ?? 0,
    pad_w: g?.padW ?? 0,
    dilation_h: g?.dilationH ?? 1,
    dilation_w: g?.dilationW ?? 1,
  };
}
