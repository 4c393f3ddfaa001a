/** Seeded random tensors, generated on the GPU from a counter-based hash. */

import { empty, type Shape, type Tensor } from "../tensor.ts";
import { bind, elementGrid, run } from "./launch.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";

/** a, b: low and high of a uniform distribution, or mean and standard deviation of a normal. */
const RandomParams = uniformStruct("RandomParams", { n: "u32", seed: "u32", a: "f32", b: "f32" });

declareShader("random", RandomParams);

let state = 0x2545f491;

/** Sets the seed from which tensors made without an explicit seed draw theirs. */
export function manualSeed(seed: number): void {
  state = seed >>> 0;
}

/**
 * Runs `fn` with the global stream seeded by `seed`, then puts the caller's stream back as it was,
 * so a library call that needs reproducible random tensors does not reset the caller's seed.
 */
export function withSeed<T>(seed: number, fn: () => T): T {
  const saved = state;
  state = seed >>> 0;
  try {
    return fn();
  } finally {
    state = saved;
  }
}

/** The next seed of the global stream (splitmix32). */
export function nextSeed(): number {
  state = (state + 0x9e3779b9) >>> 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Options of the random constructors. */
export interface RandomOptions {
  /** Seed of this tensor; the same seed gives the same values. Default: the global stream. */
  seed?: number;
}

function generate(shape: Shape, normal: boolean, a: number, b: number, seed: number): Tensor {
  const out = empty(shape);
  run(out, {
    shader: "random",
    constants: { NORMAL: normal },
    params: RandomParams.pack({ n: out.size, seed: seed >>> 0, a, b }),
    buffers: [bind(out)],
    workgroups: elementGrid(out.size),
  });
  return out;
}

/** Uniform numbers in [low, high). */
export function rand(shape: Shape, low = 0, high = 1, options: RandomOptions = {}): Tensor {
  return generate(shape, false, low, high, options.seed ?? nextSeed());
}

/** Normally distributed numbers. */
export function randn(shape: Shape, mean = 0, std = 1, options: RandomOptions = {}): Tensor {
  return generate(shape, true, mean, std, options.seed ?? nextSeed());
}
