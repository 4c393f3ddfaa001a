/**
 * The convolutional autoencoder of Bergmann et al. (VISAPP 2019) used by the MVTec AD paper:
 * 4×4 stride-2 and 3×3 stride-1 convolutions going 32→32→32→64→64→128→64→32 channels, an 8×8
 * valid convolution to the latent code, and a decoder that mirrors it with transposed
 * convolutions. LeakyReLU(0.2) follows every layer but the last.
 */

import { Conv2d, ConvTranspose2d, LeakyReLU, Sequential } from "../../nn/layers.ts";
import type { Module } from "../../nn/module.ts";

/** Shape options of {@link buildAutoencoder}. */
export interface AutoencoderOptions {
  /** Input height and width (128 for texture patches, 256 for whole objects). */
  inputSize?: number;
  /** Image channels: 1 (grayscale, as in the paper) or 3. */
  channels?: number;
  /** Latent dimension (default 100). */
  latent?: number;
}

const slope = 0.2;

/** [outChannels, kernel, stride] of the encoder's convolutions after the input. */
const encoderPlan: [number, number, number][] = [
  [32, 4, 2],
  [32, 4, 2],
  [32, 3, 1],
  [64, 4, 2],
  [64, 3, 1],
  [128, 4, 2],
  [64, 3, 1],
  [32, 3, 1],
];

/**
 * Builds the autoencoder. For an input of 128 the encoder ends at 8×8 before the latent
 * convolution; larger inputs (256 for objects) get one more stride-2 stage per doubling, as the
 * paper does for whole objects.
 */
export function buildAutoencoder(options: AutoencoderOptions = {}): Sequential {
  const inputSize = options.inputSize ?? 128;
  const channels = options.channels ?? 1;
  const latent = options.latent ?? 100;
  const extraStages = Math.log2(inputSize / 128);
  if (!Number.isInteger(extraStages) || extraStages < 0) {
    throw new Error(`Autoencoder input size must be 128 times a power of two, got ${inputSize}`);
  }
  // Extra stride-2 stages come first, at 32 channels, so the rest of the network is unchanged.
  const plan: [number, number, number][] = [
    ...Array.from({ length: extraStages }, (): [number, number, number] => [32, 4, 2]),
    ...encoderPlan,
  ];
  const encoder: Module[] = [];
  let inChannels = channels;
  for (const [out, kernel, stride] of plan) {
    encoder.push(
      new Conv2d(inChannels, out, kernel, { stride, padding: "same", slope }),
      LeakyReLU(slope),
    );
    inChannels = out;
  }
  encoder.push(new Conv2d(inChannels, latent, 8, { padding: "valid", slope }), LeakyReLU(slope));

  const decoder: Module[] = [
    new ConvTranspose2d(latent, inChannels, 8, { padding: "valid", slope }),
    LeakyReLU(slope),
  ];
  // Mirror: walk the plan backwards; each layer maps back to the channels before it.
  for (let i = plan.length - 1; i >= 0; i--) {
    const [, kernel, stride] = plan[i];
    const out = i === 0 ? channels : plan[i - 1][0];
    const isLast = i === 0;
    decoder.push(new ConvTranspose2d(inChannels, out, kernel, { stride, padding: "same", slope }));
    if (!isLast) decoder.push(LeakyReLU(slope));
    inChannels = out;
  }
  return new Sequential(new Sequential(...encoder), new Sequential(...decoder));
}
