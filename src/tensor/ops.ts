/** Every tensor op, and the registration of the few the tape itself needs. */

import { registerTapeOps } from "./tensor.ts";
import { add, copy, fill } from "./ops/elementwise.ts";

export * from "./ops/elementwise.ts";
export * from "./ops/reduce.ts";
export * from "./ops/shape.ts";
export * from "./ops/linalg.ts";
export * from "./ops/conv.ts";
export * from "./ops/pool.ts";
export * from "./ops/filter.ts";
export * from "./ops/norm.ts";
export * from "./ops/losses.ts";
export * from "./ops/random.ts";
export { gemmFlops } from "./ops/gemm.ts";

registerTapeOps({ add, copy, fill });
