/** Batched matrix multiplication. */

import { addGrad, empty, opResult, type Tensor } from "../tensor.ts";
import { gemm, GemmMode, type GemmSpec } from "./gemm.ts";
import { sumToShape } from "./reduce.ts";
import { planMatmul } from "./geometry.ts";
import { kernelPath } from "../../gpu/kernel_path.ts";
import { matmulTiled } from "./gemm_tiled.ts";

interface Product {
  shape: number[];
  spec: GemmSpec;
}

function planProduct(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Product {
  const { shape, ...sizes } = planMatmul(a, b, transA, transB);
  return { shape, spec: { mode: GemmMode.matmul, ...sizes, transA, transB } };
}

function product(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const plan = planProduct(a, b, transA, transB);
  const out = empty(plan.shape);
  gemm(a, b, out, plan.spec);
  return out;
}

/**
 * Matrix product of the last two axes, batched over a leading axis: [M,K]·[K,N], [B,M,K]·[B,K,N],
 * or one 2-D operand shared across the other's batch.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  // Discrete GPUs get the storage-buffer tiled kernels; CPU drivers the texture-fed ones.
  if (kernelPath(a.gpu) === "tiled") return matmulTiled(a, b);
  const plan = planProduct(a, b, false, false);
  const out = opResult(plan.shape, [a, b], (grad) => {
    // dA = G·Bᵀ and dB = Aᵀ·G; a shared 2-D operand sums its gradient over the batch.
    if (a.requiresGrad) addGrad(a, sumToShape(product(grad, b, false, true), a.shape));
    if (b.requiresGrad) addGrad(b, sumToShape(product(a, grad, true, false), b.shape));
  });
  gemm(a, b, out, plan.spec);
  return out;
}
