/**
 * The network of the self-supervised inpainting autoencoder (Bauer et al., 2022, Table 1):
 *
 * - encoder: 3×3 convolutions 64, 64, max-pool, 128, 128, max-pool, 256, 256, max-pool, so the
 *   bottleneck is 1/8 of the input's side;
 * - four stacked-dilated-convolution (SDC) blocks ({@link SdcBlock}): six parallel f×f
 *   convolutions with 64 filters each and dilations 1, 2, 4, 8, 16, 32, concatenated to 384
 *   channels, then a 3×3 convolution back to 256; together they see far across the image at the
 *   bottleneck's resolution, which is what lets the network fill a corrupted region from its
 *   surroundings;
 * - decoder: stride-2 transposed convolutions 256, 128, 64 (4×4 kernels, which cover every output
 *   pixel equally), each followed by two 3×3 convolutions, then a 1×1 convolution to the image's
 *   channels and a sigmoid.
 *
 * Batch norm and ReLU follow every layer but the last; the convolutions before a batch norm have
 * no bias, which the norm's shift would cancel. A width multiplier scales every channel count
 * (0.25 makes a network that trains on a CPU adapter), and the input size is fixed per network.
 *
 * @module
 */

import {
  BatchNorm2d,
  Conv2d,
  ConvTranspose2d,
  ReLU,
  Sequential,
  Sigmoid,
} from "../../nn/layers.ts";
import { Module } from "../../nn/module.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import * as op from "../../tensor/ops.ts";
import { InputError } from "../../util/errors.ts";

/** Dilations of an SDC block's parallel convolutions. */
export const SDC_DILATIONS: readonly number[] = [1, 2, 4, 8, 16, 32];

/** SDC blocks between the encoder and the decoder. */
export const SDC_BLOCKS = 4;

/** Settings of {@link InpaintingNetwork}. */
export interface InpaintingNetworkOptions {
  /** Image channels: 1 or 3 (default 3). */
  readonly channels?: number;
  /** Input height and width, a multiple of 8 (default 256). */
  readonly inputSize?: number;
  /** Multiplier of every channel count; each is rounded, at least 1 (default 1: the paper's). */
  readonly width?: number;
  /** Kernel width f of the SDC blocks' dilated convolutions: 3 or 5 (default 3). */
  readonly sdcKernel?: number;
}

/** A max-pool over k×k windows with stride k: halves the side for k = 2. */
export class MaxPool2d extends Module {
  /** Pools over `kernel`×`kernel` windows. */
  constructor(readonly kernel: number) {
    super();
  }

  /** The maximum of each window. */
  forward(x: Tensor): Tensor {
    return op.maxPool2d(x, this.kernel);
  }
}

/** A 3×3 (or `kernel`) convolution without bias, batch norm and ReLU. */
function convUnit(
  inChannels: number,
  outChannels: number,
  kernel = 3,
  dilation = 1,
): Sequential {
  return new Sequential(
    new Conv2d(inChannels, outChannels, kernel, { padding: "same", dilation, bias: false }),
    new BatchNorm2d(outChannels),
    ReLU(),
  );
}

/**
 * A stacked-dilated-convolution block: six parallel `kernel`×`kernel` convolutions with
 * `branchChannels` filters each and dilations {@link SDC_DILATIONS}, joined along the channels,
 * batch norm and ReLU, then a 3×3 convolution to `outChannels` with batch norm and ReLU. The
 * spatial size is kept ("same" padding, so a dilated tap beyond the border reads zeros).
 */
export class SdcBlock extends Module {
  /** The parallel dilated convolutions, in the order of {@link SDC_DILATIONS}. */
  readonly branches: readonly Conv2d[];
  /** Batch norm of the joined branches. */
  readonly joinedNorm: BatchNorm2d;
  /** The 3×3 convolution after the join, with its batch norm and ReLU. */
  readonly fuse: Sequential;

  /** A block from `inChannels` to `outChannels`. */
  constructor(
    inChannels: number,
    branchChannels: number,
    outChannels: number,
    readonly kernel = 3,
  ) {
    super();
    this.branches = SDC_DILATIONS.map((dilation, i) =>
      this.addModule(
        `branch${i}`,
        new Conv2d(inChannels, branchChannels, kernel, { padding: "same", dilation, bias: false }),
      )
    );
    const joined = branchChannels * SDC_DILATIONS.length;
    this.joinedNorm = this.addModule("joined_norm", new BatchNorm2d(joined));
    this.fuse = this.addModule("fuse", convUnit(joined, outChannels));
  }

  /** [N, in, H, W] → [N, out, H, W]. */
  forward(x: Tensor): Tensor {
    const joined = op.concat(this.branches.map((branch) => branch.forward(x)), 1);
    return this.fuse.forward(op.relu(this.joinedNorm.forward(joined)));
  }
}

/** The settings of a network with every default filled in. */
export type InpaintingNetworkConfig = Required<InpaintingNetworkOptions>;

/** Checks the settings and fills in the defaults. */
export function resolveNetworkOptions(
  options: InpaintingNetworkOptions = {},
): InpaintingNetworkConfig {
  const config = {
    channels: options.channels ?? 3,
    inputSize: options.inputSize ?? 256,
    width: options.width ?? 1,
    sdcKernel: options.sdcKernel ?? 3,
  };
  if (config.channels !== 1 && config.channels !== 3) {
    throw new InputError(
      `inpainting network option channels: expected 1 or 3, got ${config.channels}`,
    );
  }
  if (
    !(Number.isInteger(config.inputSize) && config.inputSize >= 8 && config.inputSize % 8 === 0)
  ) {
    throw new InputError(
      `inpainting network option inputSize: expected a positive multiple of 8, got ${config.inputSize}`,
    );
  }
  if (!(Number.isFinite(config.width) && config.width > 0 && config.width <= 4)) {
    throw new InputError(
      `inpainting network option width: expected a multiplier in (0, 4], got ${config.width}`,
    );
  }
  if (config.sdcKernel !== 3 && config.sdcKernel !== 5) {
    throw new InputError(
      `inpainting network option sdcKernel: expected 3 or 5, got ${config.sdcKernel}`,
    );
  }
  return config;
}

/** The inpainting autoencoder; see the module's description. */
export class InpaintingNetwork extends Module {
  /** The settings it was built with, defaults filled in. */
  readonly config: InpaintingNetworkConfig;
  /** Convolutions and pools down to 1/8 of the side. */
  readonly encoder: Sequential;
  /** The SDC blocks. */
  readonly bottleneck: Sequential;
  /** Transposed convolutions and convolutions back up, ending in the 1×1 convolution and sigmoid. */
  readonly decoder: Sequential;

  /** A network with the given settings; its weights are drawn from the current seed. */
  constructor(options: InpaintingNetworkOptions = {}) {
    super();
    this.config = resolveNetworkOptions(options);
    const scaled = (channels: number) => Math.max(1, Math.round(channels * this.config.width));
    const [c64, c128, c256] = [scaled(64), scaled(128), scaled(256)];
    this.encoder = this.addModule(
      "encoder",
      new Sequential(
        convUnit(this.config.channels, c64),
        convUnit(c64, c64),
        new MaxPool2d(2),
        convUnit(c64, c128),
        convUnit(c128, c128),
        new MaxPool2d(2),
        convUnit(c128, c256),
        convUnit(c256, c256),
        new MaxPool2d(2),
      ),
    );
    const branch = scaled(64);
    this.bottleneck = this.addModule(
      "bottleneck",
      new Sequential(
        ...Array.from(
          { length: SDC_BLOCKS },
          () => new SdcBlock(c256, branch, c256, this.config.sdcKernel),
        ),
      ),
    );
    const up = (inChannels: number, outChannels: number) =>
      new Sequential(
        new ConvTranspose2d(inChannels, outChannels, 4, {
          stride: 2,
          padding: "same",
          bias: false,
        }),
        new BatchNorm2d(outChannels),
        ReLU(),
        convUnit(outChannels, outChannels),
        convUnit(outChannels, outChannels),
      );
    this.decoder = this.addModule(
      "decoder",
      new Sequential(
        up(c256, c256),
        up(c256, c128),
        up(c128, c64),
        new Conv2d(c64, this.config.channels, 1, { init: "glorot" }),
        Sigmoid(),
      ),
    );
  }

  /** [N, channels, inputSize, inputSize] → the reconstruction, same shape, values in (0, 1). */
  forward(x: Tensor): Tensor {
    const { channels, inputSize } = this.config;
    const [, c, h, w] = x.shape;
    if (x.shape.length !== 4 || c !== channels || h !== inputSize || w !== inputSize) {
      throw new Error(
        `InpaintingNetwork expects [N, ${channels}, ${inputSize}, ${inputSize}], ` +
          `got [${x.shape.join(", ")}]`,
      );
    }
    return this.decoder.forward(this.bottleneck.forward(this.encoder.forward(x)));
  }
}
