/**
 * 2-D convolution and transposed convolution on NCHW tensors, as implicit GEMMs. The three
 * products of a convolution (forward, input gradient, weight gradient) are the same three kernels
 * for both ops, with the roles of input and output exchanged.
 */

import { addGrad, empty, opResult, type Tensor } from "../tensor.ts";
import { type ConvGeometry, foldColumns, gemm, GemmMode, type GemmSpec } from "./gemm.ts";
import { add } from "./elementwise.ts";
import { reshape } from "./shape.ts";

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
}

function pair(value: Pair | undefined, fallback: number): [number, number] {
  if (value === undefined) return [fallback, fallback];
  return typeof value === "number" ? [value, value] : [value[0], value[1]];
}

/** Total padding that makes a stride-s convolution output ceil(size / s). */
function samePadding(size: number, kernel: number, stride: number, dilation: number): number {
  const out = Math.ceil(size / stride);
  return Math.max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0);
}

function checkNCHW(x: Tensor, what: string): void {
  if (x.shape.length !== 4) throw new Error(`${what} expects NCHW input, got shape [${x.shape}]`);
}

/** Geometry of conv2d(x, w) with w of shape [cout, cin/groups, kh, kw]. */
export function conv2dGeometry(
  xShape: readonly number[],
  wShape: readonly number[],
  options: Conv2dOptions = {},
): ConvGeometry {
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

function forwardProduct(x: Tensor, w: Tensor, out: Tensor, g: ConvGeometry): void {
  const taps = g.kernelH * g.kernelW;
  gemm(w, x, out, {
    mode: GemmMode.convForward,
    M: g.cout / g.groups,
    N: g.images * g.outH * g.outW,
    K: (g.cin / g.groups) * taps,
    batch: g.groups,
    conv: g,
  });
}

/**
 * dx of a convolution (and the output of a transposed one): the column matrix Wᵀ·dy, then col2im
 * folds the columns into the image. Unlike gathering kernel taps per input pixel, this does no
 * work for the taps a stride skips.
 */
function inputGradProduct(dy: Tensor, w: Tensor, out: Tensor, g: ConvGeometry): void {
  const taps = g.kernelH * g.kernelW;
  const spec: GemmSpec = {
    mode: GemmMode.convInputGrad,
    M: (g.cin / g.groups) * taps,
    N: g.images * g.outH * g.outW,
    K: g.cout / g.groups,
    batch: g.groups,
    conv: g,
  };
  const columns = empty([g.groups, spec.M, spec.N]);
  gemm(w, dy, columns, spec);
  foldColumns(columns, out, spec);
  columns.dispose();
}

function weightGradProduct(dy: Tensor, x: Tensor, out: Tensor, g: ConvGeometry): void {
  const taps = g.kernelH * g.kernelW;
  gemm(dy, x, out, {
    mode: GemmMode.convWeightGrad,
    M: g.cout / g.groups,
    N: (g.cin / g.groups) * taps,
    K: g.images * g.outH * g.outW,
    batch: g.groups,
    conv: g,
  });
}

function addBias(y: Tensor, bias: Tensor | undefined, channels: number): Tensor {
  if (!bias) return y;
  if (bias.size !== channels) {
    throw new Error(`Bias of shape [${bias.shape}] does not match ${channels} output channels`);
  }
  return add(y, reshape(bias, [1, channels, 1, 1]));
}

/** 2-D cross-correlation (PyTorch's conv2d): x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw]. */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor, options: Conv2dOptions = {}): Tensor {
  checkNCHW(x, "conv2d");
  if (w.shape.length !== 4) throw new Error(`conv2d weight must be 4-D, got [${w.shape}]`);
  const g = conv2dGeometry(x.shape, w.shape, options);
  const y = opResult([g.images, g.cout, g.outH, g.outW], [x, w], (grad) => {
    if (x.requiresGrad) {
      const dx = empty(x.shape);
      inputGradProduct(grad, w, dx, g);
      addGrad(x, dx);
    }
    if (w.requiresGrad) {
      const dw = empty(w.shape);
      weightGradProduct(grad, x, dw, g);
      addGrad(w, dw);
    }
  });
  forwardProduct(x, w, y, g);
  return addBias(y, bias, g.cout);
}

/**
 * Transposed convolution (PyTorch's conv_transpose2d): x [N, Cin, H, W], w [Cin, Cout/groups,
 * kh, kw]; the output is (H − 1)·stride − 2·padding + dilation·(kh − 1) + outputPadding + 1 high.
 */
export function convTranspose2d(
  x: Tensor,
  w: Tensor,
  bias?: Tensor,
  options: ConvTranspose2dOptions = {},
): Tensor {
  checkNCHW(x, "convTranspose2d");
  if (w.shape.length !== 4) throw new Error(`convTranspose2d weight must be 4-D, got [${w.shape}]`);
  const [images, cin, inH, inW] = x.shape;
  const [wIn, coutPerGroup, kernelH, kernelW] = w.shape;
  const groups = options.groups ?? 1;
  if (wIn !== cin || cin % groups !== 0) {
    throw new Error(
      `convTranspose2d: input has ${cin} channels, weight [${w.shape}] expects ${wIn} (groups=${groups})`,
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
  // The convolution whose input gradient this op is: its input is our output and vice versa.
  const g: ConvGeometry = {
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
  const y = opResult([images, cout, outH, outW], [x, w], (grad) => {
    if (x.requiresGrad) {
      const dx = empty(x.shape);
      forwardProduct(grad, w, dx, g);
      addGrad(x, dx);
    }
    if (w.requiresGrad) {
      const dw = empty(w.shape);
      weightGradProduct(x, grad, dw, g);
      addGrad(w, dw);
    }
  });
  inputGradProduct(x, w, y, g);
  return addBias(y, bias, cout);
}
