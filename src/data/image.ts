/**
 * Images: decoding (PNG, JPEG), channel conversion, resizing and PNG encoding.
 *
 * Images are held as {@link FloatImage}: values in [0, 1], channel-planar (CHW) layout, which is
 * what the GPU engine consumes, so a batch is just the concatenation of images. Pictures for
 * people (charts, heat maps) are {@link RgbaImage}s: 8-bit RGBA, as a PNG stores them.
 *
 * This module holds the one resampler ({@link resize}, {@link resizePlane}) and the one PNG
 * encoder ({@link encodePng}) of the package. Decoding uses imagescript, loaded on the first
 * decode: its codec is native, and importing it would ask every user of the package for
 * `--allow-ffi`, also those that never read an image.
 *
 * @module
 */

import { writeFileAtomic } from "../util/fs.ts";
import { deflateSync } from "node:zlib";

/** Number of colour channels: 1 (grayscale) or 3 (RGB). Alpha is always dropped. */
export type Channels = 1 | 3;

/** File extensions of the images this module decodes (PNG and JPEG), lower case. */
export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg"];

/** A float image in channel-planar (CHW) layout with values in [0, 1]. */
export interface FloatImage {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** 1 for grayscale, 3 for RGB. */
  readonly channels: Channels;
  /** `channels * height * width` values; channel c, row y, column x is at `(c * height + y) * width + x`. */
  readonly data: Float32Array;
}

/**
 * An 8-bit picture: `width * height` pixels, row-major, 4 interleaved bytes R, G, B, A each.
 * Charts and heat maps are drawn into it and {@link encodePng} stores it.
 */
export interface RgbaImage {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** `width * height * 4` bytes; pixel (x, y) starts at `(y * width + x) * 4`. */
  readonly data: Uint8Array;
}

/** What the header of an encoded image says, read without decoding pixels. */
export interface ImageHeader {
  /** Container format. */
  readonly format: "png" | "jpeg";
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** 1 when the file stores grayscale (with or without alpha), 3 otherwise. */
  readonly channels: Channels;
}

/** Resampling method for {@link resize}. */
export type ResizeMethod = "auto" | "bilinear" | "area" | "bicubic";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * Allocates a black image.
 *
 * @param width width in pixels (positive integer)
 * @param height height in pixels (positive integer)
 * @param channels 1 or 3
 * @returns a zero-filled image
 */
export function createImage(width: number, height: number, channels: Channels): FloatImage {
  assertSize(width, height, "createImage");
  return { width, height, channels, data: new Float32Array(channels * width * height) };
}

/**
 * Copies an image.
 *
 * @param image source
 * @returns a deep copy of `image`
 */
export function cloneImage(image: FloatImage): FloatImage {
  return { ...image, data: image.data.slice() };
}

/**
 * Allocates a picture filled with one colour.
 *
 * @param width width in pixels (positive integer)
 * @param height height in pixels (positive integer)
 * @param color fill colour as `0xRRGGBBAA`; default opaque black
 * @returns the picture
 */
export function createRgbaImage(width: number, height: number, color = 0x000000ff): RgbaImage {
  assertSize(width, height, "createRgbaImage");
  const data = new Uint8Array(width * height * 4);
  const rgba = [color >>> 24, (color >>> 16) & 0xff, (color >>> 8) & 0xff, color & 0xff];
  for (let i = 0; i < data.length; i++) data[i] = rgba[i & 3];
  return { width, height, data };
}

/**
 * Converts an interleaved RGBA byte bitmap (as {@link decodeRgba} returns) to a planar float image.
 *
 * @param rgba `width * height * 4` bytes, row-major, interleaved RGBA
 * @param width width in pixels
 * @param height height in pixels
 * @param channels 1 to convert to luma, 3 to keep RGB
 * @returns the planar float image
 */
export function imageFromRgba(
  rgba: ArrayLike<number>,
  width: number,
  height: number,
  channels: Channels,
): FloatImage {
  const pixels = width * height;
  if (rgba.length !== pixels * 4) {
    throw new RangeError(`imageFromRgba: expected ${pixels * 4} bytes, got ${rgba.length}`);
  }
  const image = createImage(width, height, channels);
  const out = image.data;
  if (channels === 3) {
    for (let p = 0; p < pixels; p++) {
      out[p] = rgba[4 * p] / 255;
      out[pixels + p] = rgba[4 * p + 1] / 255;
      out[2 * pixels + p] = rgba[4 * p + 2] / 255;
    }
  } else {
    for (let p = 0; p < pixels; p++) {
      out[p] = (LUMA_R * rgba[4 * p] + LUMA_G * rgba[4 * p + 1] + LUMA_B * rgba[4 * p + 2]) / 255;
    }
  }
  return image;
}

// ITU-R BT.601 luma weights: the convention of PIL's convert("L") and OpenCV's RGB2GRAY, which the
// MVTec AD baselines used, so grayscale numbers stay comparable.
const LUMA_R = 0.299;
const LUMA_G = 0.587;
const LUMA_B = 0.114;

/**
 * Converts to single-channel luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B).
 *
 * @param image grayscale or RGB image
 * @returns a 1-channel image (a copy when the input already is grayscale)
 */
export function toGrayscale(image: FloatImage): FloatImage {
  if (image.channels === 1) return cloneImage(image);
  const pixels = image.width * image.height;
  const out = createImage(image.width, image.height, 1);
  const src = image.data;
  for (let p = 0; p < pixels; p++) {
    out.data[p] = LUMA_R * src[p] + LUMA_G * src[pixels + p] + LUMA_B * src[2 * pixels + p];
  }
  return out;
}

/**
 * Converts to RGB by replicating a grayscale plane.
 *
 * @param image grayscale or RGB image
 * @returns a 3-channel image (a copy when the input already is RGB)
 */
export function toRgb(image: FloatImage): FloatImage {
  if (image.channels === 3) return cloneImage(image);
  const pixels = image.width * image.height;
  const out = createImage(image.width, image.height, 3);
  for (let c = 0; c < 3; c++) out.data.set(image.data, c * pixels);
  return out;
}

/**
 * Converts to the wanted number of channels.
 *
 * @param image source
 * @param channels wanted channel count
 * @returns the image with `channels` channels (always a new image)
 */
export function convertChannels(image: FloatImage, channels: Channels): FloatImage {
  return channels === 1 ? toGrayscale(image) : toRgb(image);
}

/**
 * Reads width, height and stored channel count from a PNG or JPEG header without decoding.
 *
 * @param bytes the file contents (for PNG the first 33 bytes suffice; for JPEG the part up to the
 *   frame header)
 * @param name file name used in error messages
 * @returns the header facts
 * @throws Error naming `name` when the bytes are neither a PNG nor a JPEG, or the header is cut
 */
export function parseImageHeader(bytes: Uint8Array, name = "<bytes>"): ImageHeader {
  if (isPng(bytes)) {
    if (bytes.length < 33 || ascii(bytes, 12, 4) !== "IHDR") {
      throw new Error(`Corrupt PNG "${name}": missing or truncated IHDR header`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const width = view.getUint32(16);
    const height = view.getUint32(20);
    const colorType = bytes[25];
    if (width === 0 || height === 0) throw new Error(`Corrupt PNG "${name}": zero size`);
    // Colour types 0 (gray) and 4 (gray + alpha) are grayscale; 2, 3 and 6 carry colour.
    const channels: Channels = colorType === 0 || colorType === 4 ? 1 : 3;
    return { format: "png", width, height, channels };
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return parseJpegHeader(bytes, name);
  }
  throw new Error(`Unsupported or corrupt image "${name}": not a PNG or JPEG file`);
}

function parseJpegHeader(bytes: Uint8Array, name: string): ImageHeader {
  let offset = 2;
  while (offset + 4 <= bytes.length) {
    if (bytes[offset] !== 0xff) throw new Error(`Corrupt JPEG "${name}": bad marker at ${offset}`);
    const marker = bytes[offset + 1];
    if (marker === 0xff) { // fill byte
      offset++;
      continue;
    }
    const length = (bytes[offset + 2] << 8) | bytes[offset + 3];
    const isStartOfFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 &&
      marker !== 0xc8 && marker !== 0xcc;
    if (isStartOfFrame) {
      if (offset + 10 > bytes.length) break;
      const height = (bytes[offset + 5] << 8) | bytes[offset + 6];
      const width = (bytes[offset + 7] << 8) | bytes[offset + 8];
      const components = bytes[offset + 9];
      return { format: "jpeg", width, height, channels: components === 1 ? 1 : 3 };
    }
    offset += 2 + length;
  }
  throw new Error(`Corrupt JPEG "${name}": no frame header found (truncated file?)`);
}

/**
 * Reads the header of an image file, reading only as much of the file as needed.
 *
 * @param path file path
 * @returns the header facts
 * @throws Error naming the file when it is missing, unreadable or not a valid PNG/JPEG header
 */
export async function readImageHeader(path: string): Promise<ImageHeader> {
  // A PNG header fits in 33 bytes and a JPEG frame header usually in the first few KiB; only a
  // JPEG with a large EXIF block needs more, so read a small prefix first.
  const prefixSize = 4096;
  let prefix: Uint8Array;
  const file = await openForRead(path);
  try {
    const buffer = new Uint8Array(prefixSize);
    let filled = 0;
    while (filled < buffer.length) {
      const read = await file.read(buffer.subarray(filled));
      if (read === null) break;
      filled += read;
    }
    prefix = buffer.subarray(0, filled);
  } finally {
    file.close();
  }
  try {
    return parseImageHeader(prefix, path);
  } catch (error) {
    if (prefix.length === prefixSize && prefix[0] === 0xff) {
      return parseImageHeader(await Deno.readFile(path), path);
    }
    throw error;
  }
}

async function openForRead(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (error) {
    throw new Error(`Cannot read image "${path}": ${errorMessage(error)}`, { cause: error });
  }
}

/**
 * Checks the chunk structure of a PNG so that truncated files fail loudly: some decoders return a
 * partially black image for a PNG cut inside its last IDAT chunk.
 */
function validatePngStructure(bytes: Uint8Array, name: string): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 8;
  let sawImageData = false;
  while (offset + 12 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = ascii(bytes, offset + 4, 4);
    const end = offset + 12 + length;
    if (end > bytes.length) {
      throw new Error(`Corrupt PNG "${name}": truncated inside chunk ${type} at byte ${offset}`);
    }
    if (type === "IDAT") sawImageData = true;
    if (type === "IEND") {
      if (!sawImageData) throw new Error(`Corrupt PNG "${name}": no image data`);
      return;
    }
    offset = end;
  }
  throw new Error(`Corrupt PNG "${name}": truncated (no IEND chunk)`);
}

type Codec = typeof import("imagescript");
let codec: Promise<Codec> | undefined;

/** imagescript, imported on first use (see the module documentation for why). */
function loadCodec(): Promise<Codec> {
  codec ??= import("imagescript");
  return codec;
}

/**
 * Decodes PNG or JPEG bytes to an 8-bit RGBA picture (grayscale is replicated, alpha is 255 where
 * the file has none).
 *
 * @param bytes encoded file contents
 * @param name file name used in error messages
 * @returns the picture
 * @throws Error naming `name` for corrupt, truncated or unsupported data
 */
export async function decodeRgba(bytes: Uint8Array, name = "<bytes>"): Promise<RgbaImage> {
  const header = parseImageHeader(bytes, name);
  if (header.format === "png") validatePngStructure(bytes, name);
  const { decode, Image } = await loadCodec();
  try {
    const decoded = await decode(bytes);
    if (!(decoded instanceof Image)) throw new Error("animated images are not supported");
    const { bitmap } = decoded;
    const data = new Uint8Array(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength);
    return { width: decoded.width, height: decoded.height, data };
  } catch (error) {
    throw new Error(`Corrupt ${header.format.toUpperCase()} "${name}": ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

/**
 * Decodes PNG or JPEG bytes to a float image.
 *
 * @param bytes encoded file contents
 * @param name file name used in error messages
 * @param channels wanted channels; by default those stored in the file (grayscale files give 1)
 * @returns the decoded image
 * @throws Error naming `name` for corrupt, truncated or unsupported data
 */
export async function decodeImage(
  bytes: Uint8Array,
  name = "<bytes>",
  channels?: Channels,
): Promise<FloatImage> {
  const decoded = await decodeRgba(bytes, name);
  const stored = parseImageHeader(bytes, name).channels;
  return imageFromRgba(decoded.data, decoded.width, decoded.height, channels ?? stored);
}

/**
 * Reads and decodes a PNG or JPEG file.
 *
 * @param path file path
 * @param channels wanted channels; by default those stored in the file
 * @returns the decoded image
 * @throws Error naming the file when it is missing, corrupt or truncated
 */
export async function readImage(path: string, channels?: Channels): Promise<FloatImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    throw new Error(`Cannot read image "${path}": ${errorMessage(error)}`, { cause: error });
  }
  return await decodeImage(bytes, path, channels);
}

/** One-dimensional resampling as a sparse matrix: output i = sum of weight[k] * input[index[k]]. */
interface AxisKernel {
  /** Output i uses taps start[i] .. start[i + 1] - 1. */
  readonly start: Int32Array;
  readonly index: Int32Array;
  /** Double precision, so that a resized map is rounded to float32 once, at the end. */
  readonly weight: Float64Array;
}

/**
 * Bilinear taps with align_corners=false (PyTorch / OpenCV convention: pixel centres at +0.5):
 * output o samples the input at `(o + 0.5) * inSize / outSize - 0.5`, clamped to the edge pixels.
 */
function bilinearKernel(inSize: number, outSize: number): AxisKernel {
  const scale = inSize / outSize;
  const start = new Int32Array(outSize + 1);
  const index = new Int32Array(outSize * 2);
  const weight = new Float64Array(outSize * 2);
  for (let o = 0; o < outSize; o++) {
    const source = Math.min(Math.max((o + 0.5) * scale - 0.5, 0), inSize - 1);
    const i0 = Math.floor(source);
    const t = source - i0;
    start[o] = 2 * o;
    index[2 * o] = i0;
    weight[2 * o] = 1 - t;
    index[2 * o + 1] = Math.min(i0 + 1, inSize - 1);
    weight[2 * o + 1] = t;
  }
  start[outSize] = 2 * outSize;
  return { start, index, weight };
}

/** Area-average taps: each output pixel is the coverage-weighted mean of the inputs it covers. */
function areaKernel(inSize: number, outSize: number): AxisKernel {
  const scale = inSize / outSize;
  const start = new Int32Array(outSize + 1);
  const index: number[] = [];
  const weight: number[] = [];
  for (let o = 0; o < outSize; o++) {
    start[o] = index.length;
    const low = o * scale;
    const high = Math.min((o + 1) * scale, inSize);
    for (let i = Math.floor(low); i < Math.ceil(high); i++) {
      const overlap = Math.min(high, i + 1) - Math.max(low, i);
      if (overlap > 1e-9) {
        index.push(i);
        weight.push(overlap / (high - low));
      }
    }
  }
  start[outSize] = index.length;
  return { start, index: Int32Array.from(index), weight: Float64Array.from(weight) };
}

/** Keys' cubic convolution with a = −0.5, the cubic of Pillow and OpenCV. */
function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

/**
 * Antialiased bicubic taps, as Pillow's `Image.resize` (its default filter) computes them: the
 * cubic is stretched by the scale when shrinking, so that every input pixel contributes, and the
 * taps of each output pixel are normalised to sum to 1.
 */
function bicubicKernel(inSize: number, outSize: number): AxisKernel {
  const scale = inSize / outSize;
  const stretch = Math.max(scale, 1);
  const support = 2 * stretch;
  const start = new Int32Array(outSize + 1);
  const index: number[] = [];
  const weight: number[] = [];
  for (let o = 0; o < outSize; o++) {
    start[o] = index.length;
    const centre = (o + 0.5) * scale;
    const first = Math.max(Math.floor(centre - support), 0);
    const last = Math.min(Math.ceil(centre + support), inSize);
    const taps: number[] = [];
    for (let i = first; i < last; i++) taps.push(cubic((i + 0.5 - centre) / stretch));
    const total = taps.reduce((a, b) => a + b, 0);
    taps.forEach((w, k) => {
      if (w === 0) return;
      index.push(first + k);
      weight.push(w / total);
    });
  }
  start[outSize] = index.length;
  return { start, index: Int32Array.from(index), weight: Float64Array.from(weight) };
}

function kernelFor(inSize: number, outSize: number, method: ResizeMethod): AxisKernel {
  if (method === "bicubic") return bicubicKernel(inSize, outSize);
  // Bilinear reads only 2 taps per output, so shrinking more than 2x skips input pixels and
  // aliases (fine textures such as grid or carpet turn into moiré). Area averaging is a box
  // prefilter matched to the scale, as OpenCV's INTER_AREA.
  const useArea = method === "area" || (method === "auto" && inSize > 2 * outSize);
  return useArea ? areaKernel(inSize, outSize) : bilinearKernel(inSize, outSize);
}

/**
 * Resizes an image to any size.
 *
 * `"bilinear"` uses align_corners=false (pixel centres at half-integers, edges clamped), matching
 * PyTorch's `interpolate(mode="bilinear", align_corners=False)` without antialiasing and OpenCV's
 * `INTER_LINEAR`. `"area"` averages the input pixels under each output pixel's footprint.
 * `"bicubic"` is Pillow's default `Image.resize` filter (antialiased cubic, a = −0.5), the one
 * pretrained models' reference pipelines usually resize with.
 * `"auto"` (default) picks, per axis, area averaging when that axis shrinks by more than 2x and
 * bilinear otherwise. Sums are taken in double precision and rounded to float32 once.
 *
 * @param image source image
 * @param width output width
 * @param height output height
 * @param method resampling method
 * @returns a new image of the requested size (a copy when the size is unchanged)
 */
export function resize(
  image: FloatImage,
  width: number,
  height: number,
  method: ResizeMethod = "auto",
): FloatImage {
  assertSize(width, height, "resize");
  if (width === image.width && height === image.height) return cloneImage(image);
  const horizontal = kernelFor(image.width, width, method);
  const vertical = kernelFor(image.height, height, method);
  const { channels } = image;
  // Horizontal pass: [C, inH, inW] -> [C, inH, outW].
  const rows = channels * image.height;
  const temp = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const inRow = r * image.width;
    const outRow = r * width;
    for (let x = 0; x < width; x++) {
      let sum = 0;
      for (let k = horizontal.start[x]; k < horizontal.start[x + 1]; k++) {
        sum += horizontal.weight[k] * image.data[inRow + horizontal.index[k]];
      }
      temp[outRow + x] = sum;
    }
  }
  // Vertical pass: [C, inH, outW] -> [C, outH, outW], accumulating whole rows for cache locality.
  const out = createImage(width, height, channels);
  const sums = new Float64Array(width);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      sums.fill(0);
      for (let k = vertical.start[y]; k < vertical.start[y + 1]; k++) {
        const w = vertical.weight[k];
        const inRow = (c * image.height + vertical.index[k]) * width;
        for (let x = 0; x < width; x++) sums[x] += w * temp[inRow + x];
      }
      out.data.set(sums, (c * height + y) * width);
    }
  }
  return out;
}

/**
 * {@link resize} for one row-major plane of values, such as an anomaly map. Bilinear by default:
 * the evaluation protocol brings maps to ground-truth size with bilinear resizing.
 *
 * @param plane `width * height` values, row-major
 * @param width plane width
 * @param height plane height
 * @param outWidth output width
 * @param outHeight output height
 * @param method resampling method
 * @returns a new plane of `outWidth * outHeight` values (a copy when the size is unchanged)
 * @throws RangeError when a size is not a positive integer or `plane` does not hold
 *   `width * height` values
 */
export function resizePlane(
  plane: Float32Array,
  width: number,
  height: number,
  outWidth: number,
  outHeight: number,
  method: ResizeMethod = "bilinear",
): Float32Array {
  assertSize(width, height, "resizePlane");
  if (plane.length !== width * height) {
    throw new RangeError(
      `resizePlane: ${plane.length} values, expected ${width}x${height} = ${width * height}`,
    );
  }
  return resize({ width, height, channels: 1, data: plane }, outWidth, outHeight, method).data;
}

/**
 * Encodes an image as an 8-bit PNG. A float image is stored as grayscale (1 channel) or RGB
 * (3 channels), its values clamped to [0, 1] and rounded; grayscale stays grayscale on disk (a
 * third of the size), as MVTec AD stores grid, screw and zipper. A picture ({@link RgbaImage}) is
 * stored as RGBA.
 *
 * @param image image to encode
 * @param compressionLevel zlib level 0–9
 * @returns PNG file bytes
 */
export function encodePng(image: FloatImage | RgbaImage, compressionLevel = 6): Uint8Array {
  const { width, height } = image;
  if (isFloatImage(image)) {
    return encodePngBytes(quantize(image), width, height, image.channels, compressionLevel);
  }
  if (image.data.length !== width * height * 4) {
    throw new RangeError(
      `encodePng: ${image.data.length} bytes, expected ${width}x${height}x4 (RGBA)`,
    );
  }
  return encodePngBytes(image.data, width, height, 4, compressionLevel);
}

function isFloatImage(image: FloatImage | RgbaImage): image is FloatImage {
  return image.data instanceof Float32Array;
}

/** Interleaves a planar float image into bytes, clamping to [0, 1] and rounding. */
function quantize(image: FloatImage): Uint8Array {
  const { channels } = image;
  const pixels = image.width * image.height;
  const bytes = new Uint8Array(pixels * channels);
  for (let c = 0; c < channels; c++) {
    const plane = c * pixels;
    for (let p = 0; p < pixels; p++) {
      const v = image.data[plane + p];
      bytes[p * channels + c] = v <= 0 ? 0 : v >= 1 ? 255 : Math.round(v * 255);
    }
  }
  return bytes;
}

/** PNG colour type of each number of interleaved 8-bit channels. */
const PNG_COLOR_TYPE = { 1: 0, 3: 2, 4: 6 } as const; // gray, RGB, RGBA

/** Writes interleaved 8-bit pixels as a PNG file. */
function encodePngBytes(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3 | 4,
  compressionLevel: number,
): Uint8Array {
  const filtered = filterScanlines(pixels, height, width * channels, channels);
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  ihdr[8] = 8; // bit depth
  ihdr[9] = PNG_COLOR_TYPE[channels];
  const idat = deflateSync(filtered, { level: compressionLevel });
  const parts = [
    Uint8Array.from(PNG_SIGNATURE),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", new Uint8Array(idat.buffer, idat.byteOffset, idat.byteLength)),
    pngChunk("IEND", new Uint8Array(0)),
  ];
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Applies a PNG filter per scanline, choosing the one with the smallest sum of absolute residuals
 * (the libpng heuristic); this roughly halves file size for smooth synthetic images.
 */
function filterScanlines(
  raw: Uint8Array,
  height: number,
  stride: number,
  bytesPerPixel: number,
): Uint8Array {
  const out = new Uint8Array(height * (stride + 1));
  const candidates = Array.from({ length: 5 }, () => new Uint8Array(stride));
  const zeroRow = new Uint8Array(stride);
  const bpp = bytesPerPixel;
  for (let y = 0; y < height; y++) {
    const row = raw.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? raw.subarray((y - 1) * stride, y * stride) : zeroRow;
    const [none, sub, upFilter, average, paethFilter] = candidates;
    // One tight loop per filter type (branch-free inner loops are several times faster).
    none.set(row);
    for (let i = 0; i < stride; i++) {
      const left = i >= bpp ? row[i - bpp] : 0;
      const upLeft = i >= bpp ? up[i - bpp] : 0;
      sub[i] = row[i] - left;
      upFilter[i] = row[i] - up[i];
      average[i] = row[i] - ((left + up[i]) >> 1);
      paethFilter[i] = row[i] - paeth(left, up[i], upLeft);
    }
    let bestFilter = 0;
    let bestCost = Infinity;
    for (let filter = 0; filter < 5; filter++) {
      const residuals = candidates[filter];
      let cost = 0;
      for (let i = 0; i < stride; i++) {
        const value = residuals[i];
        cost += value < 128 ? value : 256 - value;
      }
      if (cost < bestCost) {
        bestCost = cost;
        bestFilter = filter;
      }
    }
    out[y * (stride + 1)] = bestFilter;
    out.set(candidates[bestFilter], y * (stride + 1) + 1);
  }
  return out;
}

function paeth(left: number, up: number, upLeft: number): number {
  const estimate = left + up - upLeft;
  const dLeft = Math.abs(estimate - left);
  const dUp = Math.abs(estimate - up);
  const dUpLeft = Math.abs(estimate - upLeft);
  if (dLeft <= dUp && dLeft <= dUpLeft) return left;
  return dUp <= dUpLeft ? up : upLeft;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  let crc = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) crc = CRC_TABLE[(crc ^ chunk[i]) & 0xff] ^ (crc >>> 8);
  view.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return chunk;
}

/**
 * Encodes an image or picture as PNG (see {@link encodePng}) and writes it atomically, creating
 * the folder when missing.
 *
 * @param path target path
 * @param image image or picture to write
 */
export async function writePng(path: string, image: FloatImage | RgbaImage): Promise<void> {
  await writeFileAtomic(path, encodePng(image));
}

function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && PNG_SIGNATURE.every((value, i) => bytes[i] === value);
}

function ascii(bytes: Uint8Array, offset: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(offset, offset + length));
}

function assertSize(width: number, height: number, where: string): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`${where}: size must be positive integers, got ${width}x${height}`);
  }
}

/**
 * Extracts a readable message from anything thrown.
 *
 * @param error anything thrown
 * @returns its message
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
