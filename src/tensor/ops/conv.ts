/**
 * 2-D convolution and transposed convolution on NCHW tensors, as implicit GEMMs. The three
 * products of a convolution (forward, input gradient, weight gradient) are the same three kernels
 * for both ops, with the roles of input and output exchanged.
 *
 * Both ops take a bias and an activation that the products apply as they store the output, and
 * whose derivatives the backward products apply as they read the output's gradient: a layer
 * `leakyRelu(conv2d(x, w) + b)` is one op with no elementwise passes of its own.
 */

import { addGrad, empty, opResult, type Tensor } from "../tensor.ts";
import { kernelPath } from "../../gpu/kernel_path.ts";
import {
  checkBias,
  conv2dGeometry,
  type Conv2dOptions,
  type ConvTranspose2dOptions,
  transposedConvGeometry,
} from "./geometry.ts";
import { conv2dTiled, convTranspose2dTiled } from "./gemm_tiled.ts";
import {
  thinConvFits,
  thinConvForward,
  thinConvInputGrad,
  thinConvWeightGrad,
  thinInputGradFits,
  thinWeightGradFits,
} from "./conv_thin.ts";
import {
  biasGrad,
  type ConvGeometry,
  type ConvImage,
  foldColumns,
  type FusedActivation,
  gemm,
  GemmMode,
  type GemmSpec,
  implicitConvFits,
  implicitImageHoldsInput,
  packConvImage,
  phaseExtent,
  releaseConvImage,
  type ThroughActivation,
} from "./gemm.ts";

export type { FusedActivation };
export {
  conv2dGeometry,
  type Conv2dOptions,
  type ConvTranspose2dOptions,
  type Pair,
  transposedConvGeometry,
} from "./geometry.ts";

/** What a product adds around the bare convolution: see {@link GemmSpec}. */
type Fusion = Pick<GemmSpec, "bias" | "activation" | "throughA" | "throughB" | "image">;

/**
 * Whether the forward product reads its input's windows straight from an image texture rather
 * than from a packed column matrix. The image costs one texel per pixel and four channels, so
 * it pays when the channels fill whole texels; a one-channel input would multiply four times
 * the work (it takes conv_thin.ts where that fits), and elsewhere the column matrix (k² numbers
 * per output pixel, no padding) is cheaper.
 */
function useImplicit(x: Tensor, g: ConvGeometry): boolean {
  return g.cin % 4 === 0 && implicitConvFits(x.gpu, g);
}

function forwardProduct(x: Tensor, w: Tensor, out: Tensor, g: ConvGeometry, fusion: Fusion): void {
  if (!fusion.image && thinConvFits(x.gpu, g)) {
    thinConvForward(x, w, out, g, fusion);
    return;
  }
  const taps = g.kernelH * g.kernelW;
  gemm(w, x, out, {
    mode: GemmMode.convForward,
    M: g.cout / g.groups,
    N: g.images * g.outH * g.outW,
    K: (g.cin / g.groups) * taps,
    batch: g.groups,
    conv: g,
    implicit: useImplicit(x, g),
    ...fusion,
  });
}

/**
 * dx of a convolution (and the output of a transposed one), adding the bias and applying the
 * activation of `fusion` on the way. A one-channel dx takes the direct kernel of conv_thin.ts
 * where it fits. Otherwise, where dy's channels fill whole texels, it is computed as
 * implicit convolutions of dy: one with the kernel rotated (stride 1), or one per output phase
 * (stride s, kernels divisible by s). Otherwise it is the column matrix Wᵀ·dy, which col2im
 * folds into the image. Neither does work for the taps a stride skips. On lavapipe the phases
 * made the AE's stride-2 input gradients 1.2–1.6× and its transposed convolutions 1.3–2.5× faster.
 * Given `biasGradient`, the implicit products sum dy into it per channel as they pack it (see
 * {@link GemmSpec.biasGradient}); returns whether it was summed.
 */
function inputGradProduct(
  dy: Tensor,
  w: Tensor,
  out: Tensor,
  g: ConvGeometry,
  fusion: Fusion,
  biasGradient?: Tensor,
): boolean {
  if (thinInputGradFits(dy.gpu, g)) {
    thinConvInputGrad(dy, w, out, g, fusion);
    return false;
  }
  // Both adjoint products below run one thread per 4 pixels × up to 8 of the cin output rows;
  // with fewer than 4 rows each texel of dy is used too rarely, and the column matrix wins
  // (the decoder's last layer, 32 → 1 channel, before it took conv_thin.ts: 15 ms by phases,
  // 11 ms by columns).
  const fewRows = g.cin < 4;
  // The adjoint products compute every pixel of dx from all the taps that could reach it, reading
  // zeros where g's windows stop short of it. Where g covers only a few windows (a valid 8×8
  // convolution of an 8×8 image has one: the AE's latent layer, and the decoder's first
  // transposed convolution), that is mostly multiplying padding, and the column matrix, which does
  // only the real work, is faster (in the AE: 7.7 ms → under 1 ms on lavapipe).
  const mostlyPadding = g.inH * g.inW > 2 * g.outH * g.outW * g.strideH * g.strideW;
  const adjoint = adjointConvolution(g);
  const implicitAdjoint = !fewRows && !mostlyPadding;
  if (g.strideH === 1 && g.strideW === 1 && implicitAdjoint && useImplicit(dy, adjoint)) {
    // Padded by more than the kernel reaches, g's adjoint crops dy: its image misses pixels of
    // dy's sum, and the caller sums the bias gradient itself.
    const sumsBias = biasGradient !== undefined && implicitImageHoldsInput(adjoint);
    // With stride 1 the adjoint is itself a convolution: of dy, with the kernel rotated by 180°
    // and the channels exchanged. It reads dy as an image, with no column matrix or col2im.
    gemm(w, dy, out, {
      mode: GemmMode.convForward,
      M: adjoint.cout,
      N: adjoint.images * adjoint.outH * adjoint.outW,
      K: adjoint.cin * g.kernelH * g.kernelW,
      batch: 1,
      conv: adjoint,
      implicit: true,
      flipWeights: true,
      biasGradient: sumsBias ? biasGradient : undefined,
      ...fusion,
    });
    return sumsBias;
  }
  const phased = phaseGeometry(g);
  const phases = { padH: g.padH, padW: g.padW };
  if (
    phased && implicitAdjoint && phased.cin % 4 === 0 && implicitConvFits(dy.gpu, phased, phases)
  ) {
    // With stride s, output pixel (s·jy + ry, s·jx + rx) receives the taps ≡ (r + pad) mod s
    // only: s² small stride-1 convolutions of dy, one per phase (r), with no column matrix.
    const sumsBias = biasGradient !== undefined && implicitImageHoldsInput(phased, phases);
    gemm(w, dy, out, {
      mode: GemmMode.convForward,
      M: phased.cout,
      N: g.images * phaseExtent(g.inH, g.strideH, 0) * phaseExtent(g.inW, g.strideW, 0),
      K: phased.cin * phased.kernelH * phased.kernelW,
      batch: g.strideH * g.strideW,
      conv: phased,
      implicit: true,
      phases,
      biasGradient: sumsBias ? biasGradient : undefined,
      ...fusion,
    });
    return sumsBias;
  }
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
  gemm(w, dy, columns, { ...spec, throughB: fusion.throughB });
  foldColumns(columns, out, { ...spec, bias: fusion.bias, activation: fusion.activation });
  columns.dispose();
  return false;
}

/**
 * The convolution that maps the output side of stride-1 convolution `g` back to its input side:
 * input and output exchanged, padded so that every window that touched an input pixel reaches it.
 */
function adjointConvolution(g: ConvGeometry): ConvGeometry {
  return {
    ...g,
    cin: g.cout,
    cout: g.cin,
    inH: g.outH,
    inW: g.outW,
    outH: g.inH,
    outW: g.inW,
    padH: g.dilationH * (g.kernelH - 1) - g.padH,
    padW: g.dilationW * (g.kernelW - 1) - g.padW,
  };
}

/**
 * The geometry of one output phase of the adjoint of strided convolution `g` (see
 * inputGradProduct): input dy, output dx, a kernel of kh/s × kw/s taps, `stride` the number of
 * phases per axis and `pad` the image padding that the rotated taps need. Null when the kernel
 * does not split evenly into phases (or dilation or groups are involved).
 */
function phaseGeometry(g: ConvGeometry): ConvGeometry | null {
  const split = g.kernelH % g.strideH === 0 && g.kernelW % g.strideW === 0;
  if (!split || g.groups !== 1 || g.dilationH !== 1 || g.dilationW !== 1) return null;
  const kernelH = g.kernelH / g.strideH;
  const kernelW = g.kernelW / g.strideW;
  return {
    ...adjointConvolution(g),
    kernelH,
    kernelW,
    padH: kernelH - 1,
    padW: kernelW - 1,
  };
}

/** Whether the weight gradient of convolution `g` of `x` reads x as an image (see gemm.wgsl). */
function implicitWeightGrad(x: Tensor, g: ConvGeometry): boolean {
  // The implicit product walks 4 output pixels of one row per step.
  return g.outW % 4 === 0 && useImplicit(x, g);
}

/**
 * dw of convolution `g`. Given `biasGradient`, the direct one-channel kernel sums dy into it as
 * it reads dy; returns whether it was summed (the other products leave it to the caller).
 */
function weightGradProduct(
  dy: Tensor,
  x: Tensor,
  out: Tensor,
  g: ConvGeometry,
  fusion: Fusion,
  biasGradient?: Tensor,
): boolean {
  if (!fusion.image && thinWeightGradFits(x.gpu, g)) {
    thinConvWeightGrad(dy, x, out, g, fusion, biasGradient);
    return biasGradient !== undefined;
  }
  const taps = g.kernelH * g.kernelW;
  const implicit = implicitWeightGrad(x, g);
  gemm(dy, x, out, {
    mode: GemmMode.convWeightGrad,
    M: g.cout / g.groups,
    N: (g.cin / g.groups) * taps,
    K: g.images * g.outH * g.outW,
    batch: g.groups,
    conv: g,
    implicit,
    ...fusion,
  });
  return false;
}

/**
 * The backward pass of a layer's activation, shared by both ops: the products read the gradient
 * of the activated output `y` through the activation's derivative.
 */
function throughActivation(
  y: Tensor,
  activation: FusedActivation | undefined,
): ThroughActivation | undefined {
  return activation ? { activation, activated: y } : undefined;
}

/**
 * A layer's bias gradient `db`, the sum of its output's gradient `grad` (through the activation)
 * over images and pixels, or undefined when the bias needs none. The caller gives `db` to a
 * product that packs `grad` as an image, which sums it on the way, and then calls
 * `finish(summed)`: unless it was summed, a pass of its own reduces `grad` into it.
 */
function biasGradient(
  grad: Tensor,
  y: Tensor,
  bias: Tensor | undefined,
  activation: FusedActivation | undefined,
): { db: Tensor | undefined; finish: (summed: boolean) => void } {
  const db = bias?.requiresGrad ? empty(bias.shape) : undefined;
  const finish = (summed: boolean) => {
    if (!db) return;
    if (!summed) biasGrad(grad, y, db, activation);
    addGrad(bias!, db);
  };
  return { db, finish };
}

/**
 * 2-D cross-correlation (PyTorch's conv2d): x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw],
 * then `+ bias` and `options.activation`, all in one op.
 */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor, options: Conv2dOptions = {}): Tensor {
  // Discrete GPUs get the storage-buffer tiled kernels; CPU drivers the texture-fed ones.
  if (kernelPath(x.gpu) === "tiled") return conv2dTiled(x, w, bias, options);
  const g = conv2dGeometry(x.shape, w.shape, options);
  checkBias(bias, g.cout);
  const activation = options.activation;
  const inputs = bias ? [x, w, bias] : [x, w];
  // The forward product and the weight gradient both read x as an image of geometry g. The
  // forward pass's packing is kept for the backward pass, which releases it, or until y goes.
  let image: ConvImage | undefined;
  const releaseImage = () => {
    if (image) releaseConvImage(image);
    image = undefined;
  };
  const y: Tensor = opResult([g.images, g.cout, g.outH, g.outW], inputs, (grad) => {
    const through = throughActivation(y, activation);
    const biasBackward = biasGradient(grad, y, bias, activation);
    let summed = false;
    if (x.requiresGrad) {
      const dx = empty(x.shape);
      summed = inputGradProduct(grad, w, dx, g, { throughB: through }, biasBackward.db);
      addGrad(x, dx);
    }
    if (w.requiresGrad) {
      const dw = empty(w.shape);
      const db = summed ? undefined : biasBackward.db;
      summed = weightGradProduct(grad, x, dw, g, { throughA: through, image }, db) || summed;
      addGrad(w, dw);
    }
    biasBackward.finish(summed);
    releaseImage();
  });
  // The implicit weight gradient implies an implicit forward product.
  if (y.backwardFn && w.requiresGrad && implicitWeightGrad(x, g)) {
    image = packConvImage(x, g);
    y.onDispose(releaseImage);
  }
  forwardProduct(x, w, y, g, { bias, activation, image });
  return y;
}

/**
 * Transposed convolution (PyTorch's conv_transpose2d): x [N, Cin, H, W], w [Cin, Cout/groups,
 * kh, kw]; the output is (H − 1)·stride − 2·padding + dilation·(kh − 1) + outputPadding + 1 high.
 * Then `+ bias` and `options.activation`, all in one op.
 */
export function convTranspose2d(
  x: Tensor,
  w: Tensor,
  bias?: Tensor,
  options: ConvTranspose2dOptions = {},
): Tensor {
  if (kernelPath(x.gpu) === "tiled") return convTranspose2dTiled(x, w, bias, options);
  const g = transposedConvGeometry(x.shape, w.shape, options);
  const [images, cout, outH, outW] = [g.images, g.cin, g.inH, g.inW];
  checkBias(bias, cout);
  const activation = options.activation;
  const inputs = bias ? [x, w, bias] : [x, w];
  const y: Tensor = opResult([images, cout, outH, outW], inputs, (grad) => {
    const through = throughActivation(y, activation);
    const biasBackward = biasGradient(grad, y, bias, activation);
    // dx and dw are both products over dy read as an image of geometry g: one packing serves
    // both, and sums the bias gradient on the way.
    const implicitDx = x.requiresGrad && useImplicit(grad, g);
    const implicitDw = w.requiresGrad && implicitWeightGrad(grad, g);
    // The image misses dy's last rows where g's windows stop short of them (an output padding
    // larger than the padding): there dy's sum takes a pass of its own.
    const sumsBias = biasBackward.db !== undefined && implicitImageHoldsInput(g);
    const packOnce = (implicitDx && implicitDw) || ((implicitDx || implicitDw) && sumsBias);
    const image = packOnce
      ? packConvImage(grad, g, through, sumsBias ? biasBackward.db : undefined)
      : undefined;
    biasBackward.finish(image !== undefined && sumsBias);
    if (x.requiresGrad) {
      const dx = empty(x.shape);
      forwardProduct(grad, w, dx, g, { throughB: through, image: implicitDx ? image : undefined });
      addGrad(x, dx);
    }
    if (w.requiresGrad) {
      const dw = empty(w.shape);
      weightGradProduct(x, grad, dw, g, {
        throughB: through,
        image: implicitDw ? image : undefined,
      });
      addGrad(w, dw);
    }
    if (image) releaseConvImage(image);
  });
  inputGradProduct(x, w, y, g, { bias, activation });
  return y;
}
