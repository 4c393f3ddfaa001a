/** Batched matrix multiplication. */

import { addGrad, empty, opResult, type Tensor } from "../tensor.ts";
import { gemm, GemmMode, type GemmSpec } from "./gemm.ts";
import { sumToShape } from "./reduce.ts";

interface Product {
  shape: number[];
  spec: GemmSpec;
}

/**
 * The product `op(a[i]) · op(b[i])` where op transposes when asked. Operands are 2-D (shared by
 * every batch entry) or 3-D with the batch first.
 */
function planProduct(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Product {
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
    spec: {
      mode: GemmMode.matmul,
      M,
      N,
      K: Ka,
      batch,
      transA,
      transB,
      aBatchStride: batchA === 1 ? 0 : M * Ka,
      bBatchStride: batchB === 1 ? 0 : Ka * N,
    },
  };
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
  const plan = planProduct(a, b, false, false);
  const out = opResult(plan.shape, [a, b], (grad) => {
    // dA = G·Bᵀ and dB = Aᵀ·G; a shared 2-D operand sums its gradient over the batch.
    if (a.requiresGrad) addGrad(a, sumToShape(product(grad, b, false, true), a.shape));
    if (b.requiresGrad) addGrad(b, sumToShape(product(a, grad, true, false), b.shape));
  });
  gemm(a, b, out, plan.spec);
  return out;
}
