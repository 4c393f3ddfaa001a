/**
 * The matrix-product engine behind matmul and the convolutions. Each product packs its operands
 * into rgba32float textures (shaders/pack.wgsl, which also does the im2col gathering of a
 * convolution) and multiplies them (shaders/gemm.wgsl). The right operand is packed in chunks of
 * columns, which bounds the texture memory a large image needs.
 */

import type { Tensor } from "../tensor.ts";
import { bind, elementGrid, Params, run } from "./launch.ts";

/** How the operands are gathered and the result scattered (see shaders/gemm.wgsl). */
export const GemmMode = { matmul: 0, convForward: 1, convInputGrad: 2, convWeightGrad: 3 } as const;

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
  return new Params()
    .u32(spec.M).u32(spec.N).u32(spec.K).u32(kPadded).u32(spec.batch)
    .u32(spec.aBatchStride ?? 0).u32(spec.bBatchStride ?? 0).u32(nOffset).u32(nCount)
    .u32(g?.images ?? 0).u32(g?.cin ?? 0).u32(g?.cout ?? 0).u32(g?.groups ?? 1)
    .u32(g?.inH ?? 0).u32(g?.inW ?? 0).u32(g?.outH ?? 0).u32(g?.outW ?? 0)
    .u32(g?.kernelH ?? 1).u32(g?.kernelW ?? 1).u32(g?.strideH ?? 1).u32(g?.strideW ?? 1)
    .i32(g?.padH ?? 0).i32(g?.padW ?? 0).u32(g?.dilationH ?? 1).u32(g?.dilationW ?? 1)
    .bytes();
}

/** Records C = A·B as described by `spec` into `c`. */
export function gemm(a: Tensor, b: Tensor, c: Tensor, spec: GemmSpec): void {
  const gpu = a.gpu;
  const constants = {
    MODE: spec.mode,
    TRANS_A: spec.transA ?? false,
    TRANS_B: spec.transB ?? false,
  };
  const kPadded = Math.ceil(spec.K / 4) * 4;
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

/** Floating-point operations of a product (multiply and add count as two). */
export function gemmFlops(spec: Pick<GemmSpec, "M" | "N" | "K" | "batch">): number {
  return 2 * spec.M * spec.N * spec.K * spec.batch;
}
