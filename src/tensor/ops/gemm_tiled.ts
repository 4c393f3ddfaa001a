/**
 * Matrix products and convolutions for discrete GPUs: storage-buffer GEMMs with workgroup-shared
 * tiles and vec4 loads (shaders/gemm_tiled.wgsl), in the style of tfjs-backend-webgpu's
 * matmul_packed and conv2d_mm. The texture-fed engine of gemm.ts is tuned for lavapipe, where
 * texture reads are cheap and shared memory is not; on a real GPU it leaves most of the chip idle.
 * {@link kernelPath} (src/gpu/kernel_path.ts) chooses between the two.
 *
 * The convolutions are implicit GEMMs: the tile loads gather the im2col windows straight from the
 * NCHW buffers, so no column matrix is ever stored, for the forward product, the input gradient
 * (a GEMM over the windows that reach each input pixel, so no col2im either) and the weight
 * gradient. A transposed convolution is the same three products with the roles exchanged.
 */

import { addGrad, empty, opResult, type Tensor } from "../tensor.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import { bind, elementGrid, run } from "./launch.ts";
import { sumToShape } from "./reduce.ts";
import type { ConvGeometry, FusedActivation } from "./gemm.ts";
import {
  checkBias,
  conv2dGeometry,
  type Conv2dOptions,
  CONVOLUTION_FIELD_TYPES,
  convolutionFields,
  type ConvTranspose2dOptions,
  planMatmul,
  transposedConvGeometry,
} from "./geometry.ts";

/** How the tiled kernel gathers its operands and scatters its result (MODE_* in WGSL). */
export const TiledMode = {
  matmul: 0,
  convForward: 1,
  convInputGrad: 2,
  convWeightGrad: 3,
} as const;

/** Activation codes of the epilogue (ACT_* in WGSL). */
const ActivationCode = { none: 0, relu: 1, leakyRelu: 2 } as const;

/** The uniform block of gemm_tiled.wgsl: the product's sizes and a convolution's geometry. */
const TiledParams = uniformStruct("TiledParams", {
  M: "u32",
  N: "u32",
  K: "u32",
  batch: "u32", // batch entries of a matmul, or groups of a convolution
  a_batch_stride: "u32", // 0 for an operand shared by the batch
  b_batch_stride: "u32",
  ...CONVOLUTION_FIELD_TYPES,
  slope: "f32", // of a leaky ReLU
  n_split: "u32", // dispatches along z per batch entry, when the column tiles overflow x
});

declareShader(
  "gemm_tiled",
  TiledParams,
  wgslConstants(TiledMode, "MODE_"),
  wgslConstants(ActivationCode, "ACT_"),
);

/** One tiled product. */
interface TiledSpec {
  mode: number;
  M: number;
  N: number;
  K: number;
  /** Batch entries of a matmul, or groups of a convolution (the dispatch's z). */
  batch: number;
  transA?: boolean;
  transB?: boolean;
  aBatchStride?: number;
  bBatchStride?: number;
  conv?: ConvGeometry;
  /** Added per output channel (convolution modes). */
  bias?: Tensor;
  activation?: FusedActivation;
}

// ---- tile sizes ---------------------------------------------------------------------------------

/** The workgroup shape of one product: WG_X × WG_Y threads, each computing 4×4 outputs. */
export interface TileConfig {
  /** Threads along n: the tile is 4·wgX columns wide. */
  readonly wgX: number;
  /** Threads along m: the tile is 4·wgY rows high. */
  readonly wgY: number;
  /** Depth of the k-slices staged in workgroup memory. */
  readonly tileK: number;
}

/**
 * Workgroups below which 64×64 tiles would leave a large GPU partly idle (an H100 has 132 SMs,
 * each of which wants a few workgroups resident); smaller tiles then make more of them.
 */
const fewWorkgroups = 256;

const tileCache = new Map<string, TileConfig>();

/**
 * The tile sizes for an M×N×K product batched `batch` times, chosen once per shape and cached.
 * 64×64 tiles (16×16 threads) by default; a side of 32 or less gets a narrow tile on that side
 * (rows beyond M would be computed and discarded), widened on the other side so that a workgroup
 * keeps 128 threads; 32×32 tiles when 64×64 would make too few workgroups. TILE_K is 32 for deep
 * products (half the barriers per k) when the two tiles fit the device's workgroup memory.
 */
export function tileConfig(
  M: number,
  N: number,
  K: number,
  batch: number,
  maxWorkgroupBytes = 16384,
): TileConfig {
  const key = `${M},${N},${K},${batch},${maxWorkgroupBytes}`;
  const cached = tileCache.get(key);
  if (cached) return cached;
  let wgX = 16, wgY = 16;
  if (M <= 16 && N > 64) [wgX, wgY] = [32, 4];
  else if (N <= 16 && M > 64) [wgX, wgY] = [4, 32];
  else {
    if (M <= 16) wgY = 4;
    else if (M <= 32) wgY = 8;
    if (N <= 16) wgX = 4;
    else if (N <= 32) wgX = 8;
    const workgroups = Math.ceil(M / 64) * Math.ceil(N / 64) * batch;
    if (wgX === 16 && wgY === 16 && workgroups < fewWorkgroups) [wgX, wgY] = [8, 8];
  }
  const bytesPerK = 4 * 4 * (wgX + wgY); // one column of A's tile and one row of B's, as f32
  const tileK = K >= 256 && 32 * bytesPerK <= maxWorkgroupBytes ? 32 : 16;
  const config = { wgX, wgY, tileK };
  tileCache.set(key, config);
  return config;
}

// ---- launching ----------------------------------------------------------------------------------

function activationCode(activation: FusedActivation | undefined): number {
  return activation ? ActivationCode[activation.kind] : ActivationCode.none;
}

function activationSlope(activation: FusedActivation | undefined): number {
  return activation?.kind === "leakyRelu" ? activation.slope : 0;
}

function params(spec: TiledSpec, nSplit = 1): ArrayBuffer {
  const g = spec.conv;
  return TiledParams.pack({
    M: spec.M,
    N: spec.N,
    K: spec.K,
    batch: spec.batch,
    a_batch_stride: spec.aBatchStride ?? 0,
    b_batch_stride: spec.bBatchStride ?? 0,
    ...convolutionFields(g),
    slope: activationSlope(spec.activation),
    n_split: nSplit,
  });
}

/**
 * Whether A (B) can be staged with 16-byte loads: its contiguous dimension is a multiple of 4 long
 * (and so is every batch entry), so an aligned vector never straddles a row. Only plain matrices
 * qualify; the convolutions' gathered operands are read a component at a time.
 */
function vectorOperands(spec: TiledSpec): { a: boolean; b: boolean } {
  if (spec.mode === TiledMode.convForward) return { a: spec.K % 4 === 0, b: false };
  if (spec.mode !== TiledMode.matmul) return { a: false, b: false };
  const aRow = spec.transA ? spec.M : spec.K;
  const bRow = spec.transB ? spec.K : spec.N;
  return {
    a: aRow % 4 === 0 && (spec.aBatchStride ?? 0) % 4 === 0,
    b: bRow % 4 === 0 && (spec.bBatchStride ?? 0) % 4 === 0,
  };
}

/** Records C = A·B as described by `spec` into `c`. */
function tiledProduct(a: Tensor, b: Tensor, c: Tensor, spec: TiledSpec): void {
  const limits = a.gpu.device.limits;
  const tiles = tileConfig(
    spec.M,
    spec.N,
    spec.K,
    spec.batch,
    limits.maxComputeWorkgroupStorageSize,
  );
  const vector = vectorOperands(spec);
  // Column tiles beyond the per-dimension limit (65535 × 64 pixels: 16 images of 512×512) go
  // to z, so that a large batch of images needs no splitting by the caller.
  const columnTiles = Math.ceil(spec.N / (4 * tiles.wgX));
  const nSplit = Math.max(1, Math.ceil(columnTiles / a.gpu.maxWorkgroupsPerDimension));
  run(a, {
    shader: "gemm_tiled",
    constants: {
      MODE: spec.mode,
      WG_X: tiles.wgX,
      WG_Y: tiles.wgY,
      TILE_K: tiles.tileK,
      TRANS_A: spec.transA ?? false,
      TRANS_B: spec.transB ?? false,
      VEC_A: vector.a,
      VEC_B: vector.b,
      HAS_BIAS: spec.bias !== undefined,
      ACTIVATION: activationCode(spec.activation),
    },
    params: params(spec, nSplit),
    // Without a bias the kernel still needs a buffer there; A's is bound to nothing writable.
    buffers: [bind(a), bind(b), bind(c), spec.bias ? bind(spec.bias) : bind(a)],
    workgroups: [
      Math.ceil(columnTiles / nSplit),
      Math.ceil(spec.M / (4 * tiles.wgY)),
      spec.batch * nSplit,
    ],
  });
}

/** dz = dy · act′(y), the gradient before a fused activation (y: the activated output). */
function activationGrad(dy: Tensor, y: Tensor, activation: FusedActivation): Tensor {
  const dz = empty(dy.shape);
  run(dy, {
    shader: "gemm_tiled",
    entryPoint: "activation_grad",
    constants: helperConstants(activation),
    params: params({ mode: TiledMode.matmul, M: 1, N: dy.size, K: 1, batch: 1, activation }),
    buffers: [bind(dy), bind(y), bind(dz), null],
    workgroups: elementGrid(dy.size),
  });
  return dz;
}

/** db[c] = Σ dy · act′(y) over images and pixels of the NCHW output y. */
function biasGradient(dy: Tensor, y: Tensor, activation: FusedActivation | undefined): Tensor {
  const [images, channels, height, width] = dy.shape;
  const db = empty([channels]);
  run(dy, {
    shader: "gemm_tiled",
    entryPoint: "bias_grad",
    constants: helperConstants(activation),
    params: params({
      mode: TiledMode.matmul,
      M: 1,
      N: height * width,
      K: 1,
      batch: 1,
      activation,
      conv: { ...noGeometry, images, cout: channels },
    }),
    // Without an activation y is never read; dy stands in for it.
    buffers: [bind(dy), activation ? bind(y) : bind(dy), bind(db), null],
    workgroups: [channels],
  });
  return db;
}

/**
 * The constants of the helper entry points. The module is compiled with every constant the
 * product uses (one shader text), so they get harmless values here.
 */
function helperConstants(activation: FusedActivation | undefined) {
  return {
    MODE: TiledMode.matmul,
    WG_X: 4,
    WG_Y: 4,
    TILE_K: 4,
    TRANS_A: false,
    TRANS_B: false,
    VEC_A: false,
    VEC_B: false,
    HAS_BIAS: false,
    ACTIVATION: activationCode(activation),
  };
}

const noGeometry: ConvGeometry = {
  images: 0,
  cin: 0,
  cout: 0,
  groups: 1,
  inH: 0,
  inW: 0,
  outH: 0,
  outW: 0,
  kernelH: 1,
  kernelW: 1,
  strideH: 1,
  strideW: 1,
  padH: 0,
  padW: 0,
  dilationH: 1,
  dilationW: 1,
};

// ---- matmul -------------------------------------------------------------------------------------

interface Product {
  shape: number[];
  spec: TiledSpec;
}

function planProduct(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Product {
  const { shape, ...sizes } = planMatmul(a, b, transA, transB);
  return { shape, spec: { mode: TiledMode.matmul, ...sizes, transA, transB } };
}

function product(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const plan = planProduct(a, b, transA, transB);
  const out = empty(plan.shape);
  tiledProduct(a, b, out, plan.spec);
  return out;
}

/**
 * Matrix product of the last two axes with the tiled kernel, batched over a leading axis:
 * [M,K]·[K,N], [B,M,K]·[B,K,N], or one 2-D operand shared across the other's batch. The same
 * semantics and gradients as `matmul` in linalg.ts.
 */
export function matmulTiled(a: Tensor, b: Tensor): Tensor {
  const plan = planProduct(a, b, false, false);
  const out = opResult(plan.shape, [a, b], (grad) => {
    // dA = G·Bᵀ and dB = Aᵀ·G, read transposed by the kernel; a shared 2-D operand sums its
    // gradient over the batch.
    if (a.requiresGrad) addGrad(a, sumToShape(product(grad, b, false, true), a.shape));
    if (b.requiresGrad) addGrad(b, sumToShape(product(a, grad, true, false), b.shape));
  });
  tiledProduct(a, b, out, plan.spec);
  return out;
}

// ---- convolutions -------------------------------------------------------------------------------

/** y = conv(x, w) + bias, activated: M output channels per group, N output pixels, K taps. */
function forwardProduct(
  x: Tensor,
  w: Tensor,
  y: Tensor,
  g: ConvGeometry,
  bias?: Tensor,
  activation?: FusedActivation,
): void {
  tiledProduct(w, x, y, {
    mode: TiledMode.convForward,
    M: g.cout / g.groups,
    N: g.images * g.outH * g.outW,
    K: (g.cin / g.groups) * g.kernelH * g.kernelW,
    batch: g.groups,
    conv: g,
    bias,
    activation,
  });
}

/**
 * dx of conv(x, w) from dy, + bias, activated (the transposed convolution's forward pass): one
 * GEMM over the windows that reach each input pixel. With stride s only 1/s² of its taps meet an
 * output pixel; the others read zero. That costs work, but no column matrix and no col2im pass.
 */
function inputGradProduct(
  dy: Tensor,
  w: Tensor,
  dx: Tensor,
  g: ConvGeometry,
  bias?: Tensor,
  activation?: FusedActivation,
): void {
  tiledProduct(w, dy, dx, {
    mode: TiledMode.convInputGrad,
    M: g.cin / g.groups,
    N: g.images * g.inH * g.inW,
    K: (g.cout / g.groups) * g.kernelH * g.kernelW,
    batch: g.groups,
    conv: g,
    bias,
    activation,
  });
}

/** dw of conv(x, w) from dy: a GEMM over images and output pixels with x's windows. */
function weightGradProduct(dy: Tensor, x: Tensor, dw: Tensor, g: ConvGeometry): void {
  tiledProduct(dy, x, dw, {
    mode: TiledMode.convWeightGrad,
    M: g.cout / g.groups,
    N: (g.cin / g.groups) * g.kernelH * g.kernelW,
    K: g.images * g.outH * g.outW,
    batch: g.groups,
    conv: g,
  });
}

/**
 * The gradient of a fused layer's output before its activation (dy itself without one), and
 * the bias gradient reduced from it.
 */
function epilogueBackward(
  grad: Tensor,
  y: Tensor,
  bias: Tensor | undefined,
  activation: FusedActivation | undefined,
): Tensor {
  if (bias?.requiresGrad) addGrad(bias, biasGradient(grad, y, activation));
  return activation ? activationGrad(grad, y, activation) : grad;
}

/**
 * 2-D cross-correlation with the tiled implicit-GEMM kernel: x [N, Cin, H, W], w [Cout,
 * Cin/groups, kh, kw], then `+ bias` and `options.activation`, all in one op. The same options and
 * semantics as `conv2d` in conv.ts (stride, padding including "same", dilation, groups).
 */
export function conv2dTiled(
  x: Tensor,
  w: Tensor,
  bias?: Tensor,
  options: Conv2dOptions = {},
): Tensor {
  const g = conv2dGeometry(x.shape, w.shape, options);
  checkBias(bias, g.cout);
  const activation = options.activation;
  const inputs = bias ? [x, w, bias] : [x, w];
  const y: Tensor = opResult([g.images, g.cout, g.outH, g.outW], inputs, (grad) => {
    const dz = epilogueBackward(grad, y, bias, activation);
    if (x.requiresGrad) {
      const dx = empty(x.shape);
      inputGradProduct(dz, w, dx, g);
      addGrad(x, dx);
    }
    if (w.requiresGrad) {
      const dw = empty(w.shape);
      weightGradProduct(dz, x, dw, g);
      addGrad(w, dw);
    }
    if (dz !== grad) dz.dispose();
  });
  forwardProduct(x, w, y, g, bias, activation);
  return y;
}

/**
 * Transposed convolution with the tiled kernels: x [N, Cin, H, W], w [Cin, Cout/groups, kh, kw],
 * then `+ bias` and `options.activation`. The same options and semantics as `convTranspose2d` in
 * conv.ts. Its forward pass is a convolution's input-gradient product; its gradients are the
 * convolution's forward product (dx) and weight-gradient product with x and dy exchanged (dw).
 */
export function convTranspose2dTiled(
  x: Tensor,
  w: Tensor,
  bias?: Tensor,
  options: ConvTranspose2dOptions = {},
): Tensor {
  const g = transposedConvGeometry(x.shape, w.shape, options);
  checkBias(bias, g.cin);
  const activation = options.activation;
  const inputs = bias ? [x, w, bias] : [x, w];
  const y: Tensor = opResult([g.images, g.cin, g.inH, g.inW], inputs, (grad) => {
    const dz = epilogueBackward(grad, y, bias, activation);
    if (x.requiresGrad) {
      const dx = empty(x.shape);
      forwardProduct(dz, w, dx, g);
      addGrad(x, dx);
    }
    if (w.requiresGrad) {
      const dw = empty(w.shape);
      weightGradProduct(x, dz, dw, g);
      addGrad(w, dw);
    }
    if (dz !== grad) dz.dispose();
  });
  inputGradProduct(x, w, y, g, bias, activation);
  return y;
}
