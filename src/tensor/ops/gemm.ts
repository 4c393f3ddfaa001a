/**
 * The dispatcher of shaders/gemm.wgsl: one tiled matrix-product core for matmul and the three
 * convolution products. Tile shapes are chosen from the problem's M and N so that skinny products
 * (one output channel, or a handful of rows) do not waste most of a 64×64 tile.
 */

import type { Tensor } from "../tensor.ts";
import { bind, Params, run } from "./launch.ts";

/** How the kernel gathers its operands (see shaders/gemm.wgsl). */
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

/** One GEMM: sizes, batch (or groups), batch strides for matmul, geometry for convolutions. */
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

/** Tile shape: TM×TN per workgroup, RM×RN per thread, TK deep; (TM/RM)·(TN/RN) = 256 threads. */
interface Tile {
  TM: number;
  TN: number;
  TK: number;
  RM: number;
  RN: number;
}

/** The tile for a product of M rows and N columns. */
export function chooseTile(M: number, N: number): Tile {
  if (M <= 4) return { TM: 4, TN: 256, TK: 8, RM: 1, RN: 4 };
  if (M <= 16) return { TM: 16, TN: 256, TK: 8, RM: 4, RN: 4 };
  if (N <= 16) return { TM: 256, TN: 16, TK: 8, RM: 4, RN: 4 };
  return { TM: 64, TN: 64, TK: 16, RM: 4, RN: 4 };
}

/** Records C = A·B as described by `spec` into `c`. */
export function gemm(a: Tensor, b: Tensor, c: Tensor, spec: GemmSpec): void {
  const tile = chooseTile(spec.M, spec.N);
  const g = spec.conv;
  const params = new Params()
    .u32(spec.M).u32(spec.N).u32(spec.K).u32(0)
    .u32(spec.aBatchStride ?? 0).u32(spec.bBatchStride ?? 0).u32(spec.M * spec.N).u32(0)
    .u32(g?.images ?? 0).u32(g?.cin ?? 0).u32(g?.cout ?? 0).u32(g?.groups ?? 1)
    .u32(g?.inH ?? 0).u32(g?.inW ?? 0).u32(g?.outH ?? 0).u32(g?.outW ?? 0)
    .u32(g?.kernelH ?? 1).u32(g?.kernelW ?? 1).u32(g?.strideH ?? 1).u32(g?.strideW ?? 1)
    .i32(g?.padH ?? 0).i32(g?.padW ?? 0).u32(g?.dilationH ?? 1).u32(g?.dilationW ?? 1)
    .bytes();
  run(a, {
    shader: "gemm",
    constants: {
      MODE: spec.mode,
      TRANS_A: spec.transA ?? false,
      TRANS_B: spec.transB ?? false,
      ...tile,
    },
    params,
    buffers: [bind(a), bind(b), bind(c)],
    workgroups: [Math.ceil(spec.N / tile.TN), Math.ceil(spec.M / tile.TM), spec.batch],
  });
}

/** Floating-point operations of a GEMM (multiply and add count as two). */
export function gemmFlops(spec: Pick<GemmSpec, "M" | "N" | "K" | "batch">): number {
  return 2 * spec.M * spec.N * spec.K * spec.batch;
}
