/**
 * The matrix-product engine behind matmul and the convolutions. Each product packs its operands
 * into rgba32float textures (shaders/pack.wgsl, which also does the im2col gathering of a
 * convolution) and multiplies them (shaders/gemm.wgsl). The right operand is packed in chunks of
 * columns, which bounds the texture memory a large image needs.
 */

import type { Tensor } from "../tensor.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import { operandTextureWidth } from "../../gpu/textures.ts";
import { bind, elementGrid, run } from "./launch.ts";

/** How the operands are gathered and the result scattered (see shaders/gemm.wgsl). */
export const GemmMode = { matmul: 0, convForward: 1, convInputGrad: 2, convWeightGrad: 3 } as const;

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
  images: "u32",
  cin: "u32",
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
});

const gemmModes = wgslConstants(GemmMode, "MODE_");
const textureWidth = wgslConstants({ textureWidth: operandTextureWidth });
declareShader("pack", GemmParams, gemmModes, textureWidth);
declareShader("gemm", GemmParams, gemmModes, textureWidth);
declareShader("col2im", GemmParams);

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
}

/**
 * Rows of C per thread: more rows reuse each loaded texel of B more often, but rows past M are
 * wasted work, and convolutions often have few output channels.
 */
function rowsPerThread(M: number): number {
  if (M >= 64) return 8;
  if (M >= 4) return 4;
  return M >= 2 ? 2 : 1;
}
/** Texels of one packed right-operand chunk at most (64 MiB). */
const maxChunkTexels = 1 << 22;

let flopCounter = 0;

/** Floating-point operations recorded by products so far (multiply and add count as two). */
export function gemmFlopsRecorded(): number {
  return flopCounter;
}

function productParams(
  spec: GemmSpec,
  kPadded: number,
  nOffset: number,
  nCount: number,
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
  });
}

/** Records C = A·B as described by `spec` into `c`. */
export function gemm(a: Tensor, b: Tensor, c: Tensor, spec: GemmSpec): void {
  const gpu = a.gpu;
  const constants = {
    MODE: spec.mode,
    TRANS_A: spec.transA ?? false,
    TRANS_B: spec.transB ?? false,
  };
  const kPadded = paddedK(spec);
  const aTexels = spec.batch * spec.M * (kPadded / 4);
  const packedA = gpu.textures.acquire(aTexels);
  run(a, {
    shader: "pack",
    entryPoint: "pack_a",
    constants,
    params: productParams(spec, kPadded, 0, spec.N),
    buffers: [bind(a), { view: packedA.view }],
    workgroups: elementGrid(aTexels),
  });
  const rowsOfB = spec.batch * kPadded;
  const rows = rowsPerThread(spec.M);
  // Four consecutive columns are consecutive floats when rows (or images) start 4-aligned.
  const rowLength = spec.mode === GemmMode.convForward ? spec.conv!.outH * spec.conv!.outW : spec.N;
  const vectorStores = rowLength % 4 === 0;
  const chunkLimit = Math.min(maxChunkTexels, gpu.textures.maxTexels);
  const columnsPerChunk = Math.max(4, Math.floor(chunkLimit / rowsOfB) * 4);
  for (let nOffset = 0; nOffset < spec.N; nOffset += columnsPerChunk) {
    const nCount = Math.min(columnsPerChunk, spec.N - nOffset);
    const bTexels = rowsOfB * Math.ceil(nCount / 4);
    const packedB = gpu.textures.acquire(bTexels);
    const params = productParams(spec, kPadded, nOffset, nCount);
    run(b, {
      shader: "pack",
      entryPoint: "pack_b",
      constants,
      params,
      buffers: [bind(b), { view: packedB.view }],
      workgroups: elementGrid(bTexels),
    });
    run(a, {
      shader: "gemm",
      constants: { MODE: spec.mode, RM: rows, VEC4_STORE: vectorStores },
      params,
      buffers: [{ view: packedA.view }, { view: packedB.view }, bind(c)],
      workgroups: [
        Math.ceil(Math.ceil(nCount / 4) / 8),
        Math.ceil(Math.ceil(spec.M / rows) / 8),
        spec.batch,
      ],
    });
    gpu.textures.release(packedB);
  }
  gpu.textures.release(packedA);
  flopCounter += gemmFlops(spec);
}

/**
 * Folds the column matrix of a `convInputGrad` product (computed by {@link gemm} with the same
 * `spec`) into the NCHW image it is the gradient of: col2im.wgsl, one thread per pixel.
 */
export function foldColumns(columns: Tensor, image: Tensor, spec: GemmSpec): void {
  run(image, {
    shader: "col2im",
    params: productParams(spec, paddedK(spec), 0, spec.N),
    buffers: [bind(columns), bind(image)],
    workgroups: elementGrid(image.size),
  });
}

function paddedK(spec: GemmSpec): number {
  return Math.ceil(spec.K / 4) * 4;
}

/** Floating-point operations of a product (multiply and add count as two). */
export function gemmFlops(spec: Pick<GemmSpec, "M" | "N" | "K" | "batch">): number {
  return 2 * spec.M * spec.N * spec.K * spec.batch;
}
