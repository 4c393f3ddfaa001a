/**
 * The DCGAN of AnoGAN (Schlegl et al. 2017, as the MVTec AD paper trains it): a generator from a
 * latent vector to an image through transposed convolutions, batch norm and ReLU with a tanh
 * output, and a discriminator of strided convolutions, batch norm and LeakyReLU 0.2 whose last
 * hidden layer also gives the features of AnoGAN's discrimination loss.
 *
 * Both networks work at `imageSize` (a power of two ≥ 8: 128 in the paper) and scale their
 * channels with `width` (DCGAN's ngf = ndf: 64 in the paper), so a small network can be trained
 * in minutes on a software adapter.
 */

import {
  BatchNorm2d,
  Conv2d,
  ConvTranspose2d,
  type Initializer,
  LeakyReLU,
  ReLU,
  Sequential,
  Tanh,
} from "../../nn/layers.ts";
import { Module } from "../../nn/module.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import * as op from "../../tensor/ops.ts";

/** The shape of the two networks. */
export interface GanShape {
  /** Side of the square images (a power of two ≥ 8). */
  imageSize: number;
  /** Image channels. */
  channels: number;
  /** Latent dimension (64 in the paper). */
  latent: number;
  /** Channels of the generator's last hidden layer and the discriminator's first. */
  width: number;
}

/** Side of the smallest feature map, where the generator starts and the discriminator ends. */
const baseSide = 4;
const slope = 0.2;

/** DCGAN's initialisation of every convolution: N(0, 0.02). */
const dcganInit: Initializer = (shape) => op.randn(shape, 0, 0.02);

/** Number of stride-2 stages between the 4×4 base and the image. */
function stagesOf(imageSize: number): number {
  const stages = Math.log2(imageSize / baseSide);
  if (!Number.isInteger(stages) || stages < 1) {
    throw new RangeError(`AnoGAN image size must be a power of two ≥ 8, got ${imageSize}`);
  }
  return stages;
}

/**
 * The generator: z [n, latent, 1, 1] → 4×4 by a 4×4 transposed convolution, then one stride-2
 * stage per doubling, halving the channels each time, to `width` channels, and a last stride-2
 * transposed convolution to the image with tanh (values in [−1, 1]).
 */
export function buildGenerator(shape: GanShape): Sequential {
  const stages = stagesOf(shape.imageSize);
  let channels = shape.width * 2 ** (stages - 1);
  const layers: Module[] = [
    new ConvTranspose2d(shape.latent, channels, baseSide, {
      padding: "valid",
      bias: false,
      init: dcganInit,
    }),
    new BatchNorm2d(channels),
    ReLU(),
  ];
  for (let stage = 1; stage < stages; stage++) {
    const out = channels / 2;
    layers.push(
      new ConvTranspose2d(channels, out, 4, {
        stride: 2,
        padding: "same",
        bias: false,
        init: dcganInit,
      }),
      new BatchNorm2d(out),
      ReLU(),
    );
    channels = out;
  }
  layers.push(
    new ConvTranspose2d(channels, shape.channels, 4, {
      stride: 2,
      padding: "same",
      init: "glorot",
    }),
    Tanh(),
  );
  return new Sequential(...layers);
}

/**
 * The discriminator: stride-2 convolutions doubling the channels from `width` down to 4×4 (batch
 * norm on all but the first, LeakyReLU 0.2 on all) — its last hidden layer, whose output
 * {@link Discriminator.features} gives — and a 4×4 convolution to one logit per image.
 */
export class Discriminator extends Module {
  /** Input → last hidden layer [n, width·2^(stages−1), 4, 4]. */
  readonly body: Sequential;
  /** Last hidden layer → logit [n, 1, 1, 1]. */
  readonly head: Conv2d;

  /** Builds the discriminator of a shape. */
  constructor(shape: GanShape) {
    super();
    const stages = stagesOf(shape.imageSize);
    const layers: Module[] = [
      new Conv2d(shape.channels, shape.width, 4, { stride: 2, padding: "same", init: dcganInit }),
      LeakyReLU(slope),
    ];
    let channels = shape.width;
    for (let stage = 1; stage < stages; stage++) {
      const out = channels * 2;
      layers.push(
        new Conv2d(channels, out, 4, { stride: 2, padding: "same", bias: false, init: dcganInit }),
        new BatchNorm2d(out),
        LeakyReLU(slope),
      );
      channels = out;
    }
    this.body = this.addModule("body", new Sequential(...layers));
    this.head = this.addModule(
      "head",
      new Conv2d(channels, 1, baseSide, { padding: "valid", init: dcganInit }),
    );
  }

  /** The last hidden layer's activations, the features of AnoGAN's discrimination loss. */
  features(x: Tensor): Tensor {
    return this.body.forward(x);
  }

  /** One logit per image, [n] (real: large, generated: small). */
  forward(x: Tensor): Tensor {
    return this.logitsOf(this.features(x));
  }

  /** The logits from features already computed. */
  logitsOf(features: Tensor): Tensor {
    return op.reshape(this.head.forward(features), [features.shape[0]]);
  }
}

/** The two networks together, saved and loaded as one module. */
export class Dcgan extends Module {
  /** The generator. */
  readonly generator: Sequential;
  /** The discriminator. */
  readonly discriminator: Discriminator;

  /** Builds both networks of a shape. */
  constructor(readonly shape: GanShape) {
    super();
    this.generator = this.addModule("generator", buildGenerator(shape));
    this.discriminator = this.addModule("discriminator", new Discriminator(shape));
  }

  /** Generated images [n, channels, size, size] from latents [n, latent, 1, 1]. */
  forward(z: Tensor): Tensor {
    return this.generator.forward(z);
  }
}

/**
 * Runs `fn` with the module's parameters marked as not needing gradients, so that a backward pass
 * inside reaches only the other inputs (the latents of the search, the generator in its step),
 * and restores the marks after.
 */
export function withFrozen<T>(module: Module, fn: () => T): T {
  const parameters = module.parameters();
  for (const parameter of parameters) parameter.requiresGrad = false;
  try {
    return fn();
  } finally {
    for (const parameter of parameters) parameter.requiresGrad = true;
  }
}
