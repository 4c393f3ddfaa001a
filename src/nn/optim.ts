/**
 * Optimizers: Adam, AdamW and SGD with momentum. Each parameter tensor is updated in place by one
 * WGSL dispatch (shaders/optim.wgsl); the step itself reads nothing back.
 */

import { empty, keep, noGrad, type Tensor } from "../tensor/tensor.ts";
import { fillInto } from "../tensor/ops.ts";
import { bind, elementGrid, run } from "../tensor/ops/launch.ts";
import { uniformStruct } from "../gpu/layout.ts";
import { declareShader } from "../gpu/shaders.ts";

/** Settings of one update of `n` parameters; SGD passes its momentum as beta1. */
const OptimParams = uniformStruct("OptimParams", {
  n: "u32",
  lr: "f32",
  beta1: "f32", // Adam β1, or the momentum μ
  beta2: "f32",
  eps: "f32",
  weight_decay: "f32",
  bias_correction1: "f32", // 1 − β1^t
  bias_correction2: "f32", // 1 − β2^t
});

declareShader("optim", OptimParams);

/** Common optimizer interface. */
export interface Optimizer {
  /** Applies one update from the parameters' current gradients. */
  step(): void;
  /** Clears the gradients. */
  zeroGrad(): void;
  /** Frees the optimizer's state. */
  dispose(): void;
}

function zeroStateLike(t: Tensor): Tensor {
  const state = keep(empty(t.shape));
  fillInto(state, 0);
  return state;
}

function clearGrads(parameters: readonly Tensor[]): void {
  for (const p of parameters) {
    p.grad?.dispose();
    p.grad = null;
  }
}

/** Options of {@link Adam}. */
export interface AdamOptions {
  /** Learning rate (default 1e-3). */
  lr?: number;
  /** β1 (default 0.9). */
  beta1?: number;
  /** β2 (default 0.999). */
  beta2?: number;
  /** ε (default 1e-8). */
  eps?: number;
  /** Weight decay (default 0): added to the gradient (Adam) or applied to the weights (AdamW). */
  weightDecay?: number;
  /** Decoupled weight decay, i.e. AdamW (default false). */
  decoupled?: boolean;
}

/** Adam (Kingma & Ba 2015); with `decoupled` it is AdamW (Loshchilov & Hutter 2019). */
export class Adam implements Optimizer {
  /** Steps taken so far. */
  stepCount = 0;
  private readonly moments: [Tensor, Tensor][];
  private readonly settings: Required<AdamOptions>;

  /** An optimizer over `parameters`. */
  constructor(readonly parameters: readonly Tensor[], options: AdamOptions = {}) {
    this.settings = {
      lr: options.lr ?? 1e-3,
      beta1: options.beta1 ?? 0.9,
      beta2: options.beta2 ?? 0.999,
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0,
      decoupled: options.decoupled ?? false,
    };
    this.moments = parameters.map((p) => [zeroStateLike(p), zeroStateLike(p)]);
  }

  /** The current learning rate; it may be changed between steps. */
  get lr(): number {
    return this.settings.lr;
  }

  set lr(value: number) {
    this.settings.lr = value;
  }

  /** One Adam update of every parameter that has a gradient. */
  step(): void {
    this.stepCount++;
    const s = this.settings;
    const t = this.stepCount;
    noGrad(() => {
      this.parameters.forEach((p, i) => {
        if (!p.grad) return;
        const [m, v] = this.moments[i];
        run(p, {
          shader: "optim",
          entryPoint: "adam",
          constants: { DECOUPLED: s.decoupled },
          params: OptimParams.pack({
            n: p.size,
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            weight_decay: s.weightDecay,
            bias_correction1: 1 - s.beta1 ** t,
            bias_correction2: 1 - s.beta2 ** t,
          }),
          buffers: [bind(p), bind(p.grad), bind(m), bind(v)],
          workgroups: elementGrid(p.size),
        });
      });
    });
  }

  /** Clears the gradients. */
  zeroGrad(): void {
    clearGrads(this.parameters);
  }

  /** The moment estimates, for checkpoints (m then v per parameter). */
  state(): Tensor[] {
    return this.moments.flat();
  }

  /** Frees the moment estimates. */
  dispose(): void {
    for (const [m, v] of this.moments) {
      m.dispose();
      v.dispose();
    }
  }
}

/** Options of {@link SGD}. */
export interface SgdOptions {
  /** Learning rate (default 1e-2). */
  lr?: number;
  /** Momentum μ (default 0). */
  momentum?: number;
  /** L2 weight decay added to the gradient (default 0). */
  weightDecay?: number;
}

/** Stochastic gradient descent with momentum (PyTorch's formulation). */
export class SGD implements Optimizer {
  private readonly velocities: Tensor[];
  private readonly settings: Required<SgdOptions>;

  /** An optimizer over `parameters`. */
  constructor(readonly parameters: readonly Tensor[], options: SgdOptions = {}) {
    this.settings = {
      lr: options.lr ?? 1e-2,
      momentum: options.momentum ?? 0,
      weightDecay: options.weightDecay ?? 0,
    };
    this.velocities = parameters.map(zeroStateLike);
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    const s = this.settings;
    noGrad(() => {
      this.parameters.forEach((p, i) => {
        if (!p.grad) return;
        run(p, {
          shader: "optim",
          entryPoint: "sgd",
          constants: { DECOUPLED: false },
          params: OptimParams.pack({
            n: p.size,
            lr: s.lr,
            beta1: s.momentum,
            beta2: 0,
            eps: 0,
            weight_decay: s.weightDecay,
            bias_correction1: 1,
            bias_correction2: 1,
          }),
          buffers: [bind(p), bind(p.grad), bind(this.velocities[i]), null],
          workgroups: elementGrid(p.size),
        });
      });
    });
  }

  /** Clears the gradients. */
  zeroGrad(): void {
    clearGrads(this.parameters);
  }

  /** Frees the velocities. */
  dispose(): void {
    this.velocities.forEach((v) => v.dispose());
  }
}
