/**
 * Layers: Conv2d, ConvTranspose2d, Linear, BatchNorm2d, Sequential and activations. A Sequential
 * runs a convolution followed by a ReLU or leaky ReLU as one fused op (the activation applied as
 * the convolution stores its output), with the same parameters and results as two steps.
 */

import { Module } from "./module.ts";
import type { Tensor } from "../tensor/tensor.ts";
import * as op from "../tensor/ops.ts";
import { glorotUniform, heNormal } from "./init.ts";

/** How a layer's weight is initialised. */
export type Initializer = "he" | "glorot" | ((shape: number[], transposed: boolean) => Tensor);

function initialize(
  init: Initializer,
  shape: number[],
  transposed: boolean,
  slope: number,
): Tensor {
  if (init === "he") return heNormal(shape, slope, { transposed });
  if (init === "glorot") return glorotUniform(shape, { transposed });
  return init(shape, transposed);
}

/** Options shared by the weighted layers. */
export interface WeightOptions {
  /** Whether the layer adds a bias (default true). */
  bias?: boolean;
  /** Weight initialiser (default "he"). */
  init?: Initializer;
  /** Negative slope of the activation that follows, for He initialisation (default 0). */
  slope?: number;
}

/** A layer with a weight and an optional bias: the common part of the layers below. */
abstract class WeightedLayer extends Module {
  /** The weight. */
  readonly weight: Tensor;
  /** The bias, if any. */
  readonly bias: Tensor | null;

  /** Creates the weight (shape and fan layout given) and a zero bias of `biasSize`. */
  constructor(
    weightShape: number[],
    transposed: boolean,
    biasSize: number,
    options: WeightOptions,
    defaultInit: Initializer,
  ) {
    super();
    const init = options.init ?? defaultInit;
    this.weight = this.addParameter(
      "weight",
      initialize(init, weightShape, transposed, options.slope ?? 0),
    );
    this.bias = options.bias === false ? null : this.addParameter("bias", op.zeros([biasSize]));
  }
}

/** 2-D convolution layer; weight [out, in/groups, k, k]. */
export class Conv2d extends WeightedLayer {
  /** A convolution from `inChannels` to `outChannels` with a square `kernel`. */
  constructor(
    inChannels: number,
    outChannels: number,
    kernel: number,
    readonly options: op.Conv2dOptions & WeightOptions = {},
  ) {
    const groups = options.groups ?? 1;
    super([outChannels, inChannels / groups, kernel, kernel], false, outChannels, options, "he");
  }

  /** y = conv2d(x, weight) + bias, then `activation` if given (fused into the convolution). */
  forward(x: Tensor, activation?: op.FusedActivation): Tensor {
    const options = activation ? { ...this.options, activation } : this.options;
    return op.conv2d(x, this.weight, this.bias ?? undefined, options);
  }
}

/** 2-D transposed convolution layer; weight [in, out/groups, k, k] as PyTorch stores it. */
export class ConvTranspose2d extends WeightedLayer {
  /** A transposed convolution from `inChannels` to `outChannels` with a square `kernel`. */
  constructor(
    inChannels: number,
    outChannels: number,
    kernel: number,
    readonly options: op.ConvTranspose2dOptions & WeightOptions = {},
  ) {
    const groups = options.groups ?? 1;
    super([inChannels, outChannels / groups, kernel, kernel], true, outChannels, options, "he");
  }

  /** y = convTranspose2d(x, weight) + bias, then `activation` if given (fused). */
  forward(x: Tensor, activation?: op.FusedActivation): Tensor {
    const options = activation ? { ...this.options, activation } : this.options;
    return op.convTranspose2d(x, this.weight, this.bias ?? undefined, options);
  }
}

/** Fully connected layer on [batch, features]; weight [out, in]. */
export class Linear extends WeightedLayer {
  /** A layer from `inFeatures` to `outFeatures`. */
  constructor(inFeatures: number, outFeatures: number, options: WeightOptions = {}) {
    super([outFeatures, inFeatures], false, outFeatures, options, "glorot");
  }

  /** y = x·Wᵀ + b. */
  forward(x: Tensor): Tensor {
    if (x.shape.length !== 2) throw new Error(`Linear expects [batch, features], got [${x.shape}]`);
    const y = op.matmul(x, op.transpose(this.weight));
    return this.bias ? op.add(y, this.bias) : y;
  }
}

/** Batch normalisation over the channels of NCHW tensors. */
export class BatchNorm2d extends Module {
  /** Scale γ. */
  readonly weight: Tensor;
  /** Shift β. */
  readonly bias: Tensor;
  /** Running mean. */
  readonly runningMean: Tensor;
  /** Running variance. */
  readonly runningVar: Tensor;

  /** Normalises `channels` channels. */
  constructor(channels: number, readonly options: { momentum?: number; eps?: number } = {}) {
    super();
    this.weight = this.addParameter("weight", op.ones([channels]));
    this.bias = this.addParameter("bias", op.zeros([channels]));
    this.runningMean = this.addBuffer("running_mean", op.zeros([channels]));
    this.runningVar = this.addBuffer("running_var", op.ones([channels]));
  }

  /** Batch statistics in training mode, running statistics in evaluation mode. */
  forward(x: Tensor): Tensor {
    return op.batchNorm2d(x, this.weight, this.bias, {
      runningMean: this.runningMean,
      runningVar: this.runningVar,
      training: this.training,
      momentum: this.options.momentum,
      eps: this.options.eps,
    });
  }
}

/** Applies its modules in order. */
export class Sequential extends Module {
  /** The modules. */
  readonly layers: Module[];

  /** A chain of modules, registered as "0", "1", …. */
  constructor(...layers: Module[]) {
    super();
    this.layers = layers.map((m, i) => this.addModule(String(i), m));
  }

  /**
   * x through every layer. A convolution directly followed by an activation that convolutions
   * can fuse runs as one op: the same result, without a pass over the output and its gradient.
   */
  forward(x: Tensor): Tensor {
    let t = x;
    for (let i = 0; i < this.layers.length; i++) {
      const layer = this.layers[i];
      const next = this.layers[i + 1];
      if (
        (layer instanceof Conv2d || layer instanceof ConvTranspose2d) &&
        next instanceof Activation && next.fusable
      ) {
        t = layer.forward(t, next.fusable);
        i++;
      } else {
        t = layer.forward(t);
      }
    }
    return t;
  }
}

/** A parameter-free module wrapping an elementwise function. */
export class Activation extends Module {
  /**
   * Wraps `fn`. `fusable` describes `fn` when a convolution can apply it itself (ReLU, leaky
   * ReLU): a {@link Sequential} then fuses the two.
   */
  constructor(
    readonly name: string,
    private readonly fn: (x: Tensor) => Tensor,
    readonly fusable?: op.FusedActivation,
  ) {
    super();
  }

  /** fn(x). */
  forward(x: Tensor): Tensor {
    return this.fn(x);
  }
}

/** ReLU module. */
export function ReLU(): Activation {
  return new Activation("relu", op.relu, { kind: "relu" });
}

/** Leaky ReLU module. */
export function LeakyReLU(slope = 0.01): Activation {
  return new Activation("leaky_relu", (x) => op.leakyRelu(x, slope), { kind: "leakyRelu", slope });
}

/** Sigmoid module. */
export function Sigmoid(): Activation {
  return new Activation("sigmoid", op.sigmoid);
}

/** Tanh module. */
export function Tanh(): Activation {
  return new Activation("tanh", op.tanh);
}
