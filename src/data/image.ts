/**
 * Images: decoding (PNG, JPEG), channel conversion, resizing and PNG encoding.
 *
 * Images are held as {@link FloatImage}: values in [0, 1], channel-planar (CHW) layout, which is
 * what the GPU engine consumes, so a batch is just the concatenation of images. Pictures for
 * people (charts, heat maps) are {@link RgbaImage}s: 8-bit RGBA, as a PNG stores them.
 *
 * **PNG** is decoded by this module, every format the specification defines: grayscale at 1, 2,
 * 4, 8 and 16 bits, RGB and RGBA at 8 and 16 bits, grayscale with alpha, palettes of 1 to 8 bits
 * (with or without tRNS transparency), and Adam7 interlacing. A sample maps to [0, 1] by its full
 * range (s / 65535 at 16 bits, so 16-bit precision is kept). **Alpha is ignored** by
 * {@link decodeImage}: the colour channels are used as stored, never blended onto a background,
 * because they are what the camera measured; a transparent region keeps its stored colour (for
 * tRNS files, the colour it names). {@link decodeRgba}, which is for pictures, keeps alpha.
 * **JPEG** is decoded by imagescript, loaded on the first JPEG: its codec is native, and
 * importing it would ask every user of the package for `--allow-ffi`, also those that never read
 * a JPEG.
 *
 * Files are hostile until checked: a header claiming more than {@link MAX_IMAGE_SIDE} pixels a
 * side or {@link MAX_IMAGE_PIXELS} in all is refused before anything is allocated for it, every
 * PNG chunk's CRC is checked, and the pixel data must inflate to exactly the length its header
 * implies. Every failure to read or decode an image is an {@link ImageFormatError} (an
 * {@link InputError}) naming the file and what was expected; a missing file is an InputError.
 *
 * This module holds the one resampler ({@link resize}, {@link resizePlane}) and the one PNG
 * encoder ({@link encodePng}) of the package.
 *
 * @module
 */

import { writeFileAtomic } from "../util/fs.ts";
import { InputError } from "../util/errors.ts";
import { deflateSync } from "node:zlib";

/** Number of colour channels: 1 (grayscale) or 3 (RGB). Alpha is always dropped. */
export type Channels = 1 | 3;

/** File extensions of the images this module decodes (PNG and JPEG), lower case. */
export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg"];

/**
 * The longest side of an image that is decoded: 131,072 pixels, room for line-scan strips.
 * A longer side in a header is refused before decoding.
 */
export const MAX_IMAGE_SIDE = 2 ** 17;

/**
 * The most pixels an image may have to be decoded: 2^28 (268 million, 16384 x 16384; 3 GiB as a
 * 3-channel float image). A header claiming more is refused before anything is allocated.
 */
export const MAX_IMAGE_PIXELS = 2 ** 28;

/**
 * An image file that cannot be decoded: not a PNG or JPEG, truncated, damaged (CRC, zlib data,
 * structure), of a form the format forbids, or larger than {@link MAX_IMAGE_PIXELS}. Its message
 * names the file and what was expected.
 */
export class ImageFormatError extends InputError {
  /** An error saying `message`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ImageFormatError";
  }
}

/** A float image in channel-planar (CHW) layout with values in [0, 1]. */
export interface FloatImage {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** 1 for grayscale, 3 for RGB. */
  readonly channels: Channels;
  /**
   * `channels * height * width` values; channel c, row y, column x is at
   * `(c * height + y) * width + x`.
   */
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

/** What the header of an encoded image says, read without decoding pixels. */
export interface ImageHeader {
  /** Container format. */
  readonly format: "png" | "jpeg";
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /**
   * 1 when the file stores grayscale (with or without alpha), 3 otherwise: RGB, RGBA and every
   * palette PNG, also one whose palette holds only grays (the header alone says so, without
   * reading the palette). {@link decodeImage} gives this many channels unless told otherwise.
   */
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
      out[p] = luma(rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2]) / 255;
    }
  }
  return image;
}

// ITU-R BT.601 luma weights: the convention of PIL's convert("L") and OpenCV's RGB2GRAY, which the
// MVTec AD baselines used, so grayscale numbers stay comparable.
const LUMA_R = 0.299;
const LUMA_G = 0.587;
const LUMA_B = 0.114;

/** Luma of a colour, in the units of its samples. */
function luma(red: number, green: number, blue: number): number {
  return LUMA_R * red + LUMA_G * green + LUMA_B * blue;
}

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
 * Reads width, height and stored channel count from a PNG or JPEG header without decoding, and
 * checks them: a PNG's IHDR chunk (its CRC, bit depth and colour type), and for both formats the
 * size against {@link MAX_IMAGE_SIDE} and {@link MAX_IMAGE_PIXELS}, so that a hostile header is
 * refused before anything is allocated for its pixels.
 *
 * @param bytes the file contents (for PNG the first 33 bytes suffice; for JPEG the part up to the
 *   frame header)
 * @param name file name used in error messages
 * @returns the header facts
 * @throws ImageFormatError naming `name` when the bytes are neither a PNG nor a JPEG, the header is
 *   cut or invalid, or the image is larger than the limits
 */
export function parseImageHeader(bytes: Uint8Array, name = "<bytes>"): ImageHeader {
  if (isPng(bytes)) {
    const { width, height, colorType } = parsePngHeader(bytes, name);
    const channels: Channels = colorType === PNG_GRAY || colorType === PNG_GRAY_ALPHA ? 1 : 3;
    return { format: "png", width, height, channels };
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return parseJpegHeader(bytes, name);
  }
  throw new ImageFormatError(
    `Unsupported or corrupt image "${name}": not a PNG or JPEG file (expected the PNG signature ` +
      `or the JPEG start-of-image marker FF D8 FF at byte 0)`,
  );
}

/** Throws when a claimed size is zero or over the limits. */
function checkImageSize(width: number, height: number, format: string, name: string): void {
  if (width === 0 || height === 0) {
    throw new ImageFormatError(
      `Corrupt ${format} "${name}": its header claims a size of ${width}x${height} (zero)`,
    );
  }
  if (width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || width * height > MAX_IMAGE_PIXELS) {
    throw new ImageFormatError(
      `${format} "${name}" claims to be ${width}x${height} pixels, over the limit of ` +
        `${MAX_IMAGE_SIDE} pixels per side and ${MAX_IMAGE_PIXELS} pixels in all`,
    );
  }
}

function parseJpegHeader(bytes: Uint8Array, name: string): ImageHeader {
  let offset = 2;
  while (offset + 4 <= bytes.length) {
    if (bytes[offset] !== 0xff) {
      throw new ImageFormatError(
        `Corrupt JPEG "${name}": expected a marker (FF) at byte ${offset}, found ${bytes[offset]}`,
      );
    }
    const marker = bytes[offset + 1];
    if (marker === 0xff) { // fill byte
      offset++;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) {
      throw new ImageFormatError(
        `Corrupt JPEG "${name}": ${marker === 0xda ? "scan data" : "end of image"} at byte ` +
          `${offset} before any frame header (SOF marker)`,
      );
    }
    // Markers without a length field: TEM and the restart markers RST0-RST7.
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      offset += 2;
      continue;
    }
    const length = (bytes[offset + 2] << 8) | bytes[offset + 3];
    if (length < 2) {
      throw new ImageFormatError(
        `Corrupt JPEG "${name}": segment at byte ${offset} has length ${length} ` +
          `(at least 2 expected)`,
      );
    }
    const isStartOfFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 &&
      marker !== 0xc8 && marker !== 0xcc;
    if (isStartOfFrame) {
      if (offset + 10 > bytes.length) break;
      const height = (bytes[offset + 5] << 8) | bytes[offset + 6];
      const width = (bytes[offset + 7] << 8) | bytes[offset + 8];
      const components = bytes[offset + 9];
      checkImageSize(width, height, "JPEG", name);
      return { format: "jpeg", width, height, channels: components === 1 ? 1 : 3 };
    }
    offset += 2 + length;
  }
  throw new ImageFormatError(
    `Corrupt JPEG "${name}": no frame header (SOF marker) in its ${bytes.length} bytes ` +
      `(truncated file?)`,
  );
}

/**
 * Reads the header of an image file, reading only as much of the file as needed.
 *
 * @param path file path
 * @returns the header facts
 * @throws InputError naming the file when it is missing or unreadable; ImageFormatError when it is
 *   not a valid PNG/JPEG header or claims a size over the limits
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
  } catch (error) {
    throw new InputError(`Cannot read image "${path}": ${errorMessage(error)}`, { cause: error });
  } finally {
    file.close();
  }
  try {
    return parseImageHeader(prefix, path);
  } catch (error) {
    if (prefix.length === prefixSize && prefix[0] === 0xff) {
      return parseImageHeader(await readImageFile(path), path);
    }
    throw error;
  }
}

async function openForRead(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (error) {
    throw new InputError(`Cannot read image "${path}": ${errorMessage(error)}`, { cause: error });
  }
}

async function readImageFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new InputError(`Cannot read image "${path}": ${errorMessage(error)}`, { cause: error });
  }
}

// ---- PNG decoding -------------------------------------------------------------------------------

// PNG colour types (IHDR byte 9).
const PNG_GRAY = 0;
const PNG_RGB = 2;
const PNG_PALETTE = 3;
const PNG_GRAY_ALPHA = 4;
const PNG_RGBA = 6;

/** Per colour type: its name in messages, samples per pixel and the bit depths PNG allows. */
const PNG_COLOR_TYPES: Record<number, { name: string; samples: number; depths: number[] }> = {
  [PNG_GRAY]: { name: "grayscale", samples: 1, depths: [1, 2, 4, 8, 16] },
  [PNG_RGB]: { name: "RGB", samples: 3, depths: [8, 16] },
  [PNG_PALETTE]: { name: "palette", samples: 1, depths: [1, 2, 4, 8] },
  [PNG_GRAY_ALPHA]: { name: "grayscale with alpha", samples: 2, depths: [8, 16] },
  [PNG_RGBA]: { name: "RGBA", samples: 4, depths: [8, 16] },
};

/** The facts of a PNG's IHDR chunk. */
interface PngHeader {
  readonly width: number;
  readonly height: number;
  readonly bitDepth: number;
  readonly colorType: number;
  readonly interlaced: boolean;
}

/** A PNG's chunks, checked: the header, the palette and transparency, and the compressed data. */
interface PngChunks {
  readonly header: PngHeader;
  /** PLTE of a palette image: 3 bytes (R, G, B) per entry; null for the other colour types. */
  readonly palette: Uint8Array | null;
  /** tRNS of a palette image: alpha of the first entries (the others are opaque). */
  readonly paletteAlpha: Uint8Array | null;
  /** tRNS of a grayscale or RGB image: the samples of the one fully transparent colour. */
  readonly transparentColor: readonly number[] | null;
  /** The IDAT chunks' contents, in order: together, one zlib stream. */
  readonly imageData: Uint8Array[];
}

/** The passes of Adam7 interlacing: first column and row, and the steps between them. */
const ADAM7_PASSES = [
  { x0: 0, y0: 0, dx: 8, dy: 8 },
  { x0: 4, y0: 0, dx: 8, dy: 8 },
  { x0: 0, y0: 4, dx: 4, dy: 8 },
  { x0: 2, y0: 0, dx: 4, dy: 4 },
  { x0: 0, y0: 2, dx: 2, dy: 4 },
  { x0: 1, y0: 0, dx: 2, dy: 2 },
  { x0: 0, y0: 1, dx: 1, dy: 2 },
] as const;
const NO_INTERLACE_PASSES = [{ x0: 0, y0: 0, dx: 1, dy: 1 }] as const;

/** One pass of a PNG's pixels (the whole image unless interlaced): its sub-image size. */
interface PngPass {
  readonly x0: number;
  readonly y0: number;
  readonly dx: number;
  readonly dy: number;
  readonly columns: number;
  readonly rows: number;
  /** Bytes of one scanline, without its filter-type byte. */
  readonly stride: number;
}

function pngPasses(header: PngHeader): PngPass[] {
  const bitsPerPixel = PNG_COLOR_TYPES[header.colorType].samples * header.bitDepth;
  const passes = header.interlaced ? ADAM7_PASSES : NO_INTERLACE_PASSES;
  return passes.map(({ x0, y0, dx, dy }) => {
    const columns = Math.max(0, Math.ceil((header.width - x0) / dx));
    const rows = Math.max(0, Math.ceil((header.height - y0) / dy));
    return { x0, y0, dx, dy, columns, rows, stride: Math.ceil((columns * bitsPerPixel) / 8) };
  }).filter((pass) => pass.columns > 0 && pass.rows > 0);
}

function corruptPng(name: string, problem: string): ImageFormatError {
  return new ImageFormatError(`Corrupt PNG "${name}": ${problem}`);
}

function parsePngHeader(bytes: Uint8Array, name: string): PngHeader {
  if (bytes.length < 33) {
    throw corruptPng(
      name,
      `truncated at ${bytes.length} bytes, inside its IHDR header (33 needed)`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(8) !== 13 || ascii(bytes, 12, 4) !== "IHDR") {
    throw corruptPng(name, "the first chunk is not a 13-byte IHDR header");
  }
  if (crc32(bytes, 12, 29) !== view.getUint32(29)) {
    throw corruptPng(name, "CRC mismatch in chunk IHDR at byte 8 (damaged header)");
  }
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  checkImageSize(width, height, "PNG", name);
  const [bitDepth, colorType, compression, filter, interlace] = bytes.subarray(24, 29);
  const type = PNG_COLOR_TYPES[colorType];
  if (type === undefined) {
    throw corruptPng(name, `colour type ${colorType} does not exist (expected 0, 2, 3, 4 or 6)`);
  }
  if (!type.depths.includes(bitDepth)) {
    throw corruptPng(
      name,
      `bit depth ${bitDepth} is not allowed for colour type ${colorType} (${type.name}); ` +
        `expected ${type.depths.join(", ")}`,
    );
  }
  if (compression !== 0 || filter !== 0 || interlace > 1) {
    throw corruptPng(
      name,
      `IHDR gives compression method ${compression}, filter method ${filter} and interlace ` +
        `method ${interlace}; expected 0, 0 and 0 or 1`,
    );
  }
  return { width, height, bitDepth, colorType, interlaced: interlace === 1 };
}

/**
 * Walks a PNG's chunks, checking each one's bounds and CRC, and collects what decoding needs.
 * Ancillary chunks other than tRNS are skipped (after their CRC check); an unknown critical chunk
 * is an error, as the PNG specification demands.
 */
function readPngChunks(bytes: Uint8Array, name: string): PngChunks {
  const header = parsePngHeader(bytes, name);
  const samples = PNG_COLOR_TYPES[header.colorType].samples;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let palette: Uint8Array | null = null;
  let paletteAlpha: Uint8Array | null = null;
  let transparentColor: number[] | null = null;
  const imageData: Uint8Array[] = [];
  let offset = 33;
  for (;;) {
    if (offset + 8 > bytes.length) {
      throw corruptPng(name, `truncated at byte ${bytes.length} (no IEND chunk)`);
    }
    const length = view.getUint32(offset);
    const type = ascii(bytes, offset + 4, 4);
    if (!/^[A-Za-z]{4}$/.test(type) || length > 0x7fffffff) {
      throw corruptPng(name, `no valid chunk at byte ${offset} (type ${JSON.stringify(type)})`);
    }
    const data = offset + 8;
    const end = data + length;
    if (end + 4 > bytes.length) {
      throw corruptPng(name, `truncated inside chunk ${type} at byte ${offset}`);
    }
    if (crc32(bytes, offset + 4, end) !== view.getUint32(end)) {
      throw corruptPng(name, `CRC mismatch in chunk ${type} at byte ${offset} (damaged data)`);
    }
    const content = bytes.subarray(data, end);
    if (type === "IEND") break;
    if (type === "IDAT") {
      imageData.push(content);
    } else if (type === "PLTE") {
      if (header.colorType === PNG_PALETTE) palette = parsePalette(content, name);
    } else if (type === "tRNS") {
      if (header.colorType === PNG_PALETTE) {
        if (palette === null || content.length > palette.length / 3) {
          throw corruptPng(
            name,
            `tRNS gives ${content.length} alpha values for a palette of ` +
              `${palette === null ? "no" : palette.length / 3} entries (it must follow PLTE and ` +
              `not exceed it)`,
          );
        }
        paletteAlpha = content;
      } else if (header.colorType === PNG_GRAY || header.colorType === PNG_RGB) {
        if (content.length !== 2 * samples) {
          throw corruptPng(
            name,
            `tRNS of a ${PNG_COLOR_TYPES[header.colorType].name} image has ${content.length} ` +
              `bytes; expected ${2 * samples}`,
          );
        }
        transparentColor = Array.from({ length: samples }, (_, i) => view.getUint16(data + 2 * i));
      }
    } else if (type === "IHDR" || (bytes[offset + 4] & 0x20) === 0) {
      throw corruptPng(
        name,
        `${type === "IHDR" ? "second IHDR chunk" : `unknown critical chunk ${type}`} at byte ` +
          `${offset}`,
      );
    }
    offset = end + 4;
  }
  if (header.colorType === PNG_PALETTE && palette === null) {
    throw corruptPng(name, "a palette image without a PLTE chunk");
  }
  if (imageData.length === 0) throw corruptPng(name, "no image data (IDAT chunk)");
  return { header, palette, paletteAlpha, transparentColor, imageData };
}

function parsePalette(content: Uint8Array, name: string): Uint8Array {
  if (content.length === 0 || content.length % 3 !== 0 || content.length > 3 * 256) {
    throw corruptPng(
      name,
      `PLTE has ${content.length} bytes; expected 3 per entry, 1 to 256 entries`,
    );
  }
  return content;
}

/**
 * Inflates the zlib stream of the IDAT chunks, which must give exactly `expectedLength` bytes.
 * Inflating stops as soon as the output is longer, so a small file cannot make it allocate more
 * than its header promised.
 */
async function inflateImageData(
  parts: Uint8Array[],
  expectedLength: number,
  name: string,
): Promise<Uint8Array> {
  const stream = new DecompressionStream("deflate");
  const writer = stream.writable.getWriter();
  const writing = (async () => {
    for (const part of parts) await writer.write(part as Uint8Array<ArrayBuffer>);
    await writer.close();
  })();
  // A failure of the stream reaches the reader too; this only keeps it from being unhandled here.
  writing.catch(() => {});
  const reader = stream.readable.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > expectedLength) {
        await reader.cancel();
        throw corruptPng(
          name,
          `its image data inflates to more than the ${expectedLength} bytes that its size needs`,
        );
      }
      chunks.push(value);
    }
    await writing;
  } catch (error) {
    if (error instanceof ImageFormatError) throw error;
    throw corruptPng(name, `damaged image data (zlib: ${errorMessage(error)})`);
  }
  if (total !== expectedLength) {
    throw corruptPng(
      name,
      `its image data inflates to ${total} bytes, expected ${expectedLength} ` +
        `(truncated or damaged)`,
    );
  }
  if (chunks.length === 1) return chunks[0];
  const joined = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}

/**
 * Receives one decoded scanline of a pass: `columns` pixels of interleaved samples (palette
 * indices for a palette image), for image row `y` and columns `x0`, `x0 + dx`, ...
 */
type ScanlineVisitor = (
  samples: Uint8Array | Uint16Array,
  y: number,
  x0: number,
  dx: number,
  columns: number,
) => void;

/**
 * Undoes the PNG filters of the inflated scanlines in place, unpacks each row's samples (16-bit
 * big-endian pairs, 1/2/4-bit packed values) and hands it to `visit`, pass by pass.
 */
function visitScanlines(
  header: PngHeader,
  passes: PngPass[],
  raw: Uint8Array,
  name: string,
  visit: ScanlineVisitor,
): void {
  const { bitDepth, width } = header;
  const samplesPerPixel = PNG_COLOR_TYPES[header.colorType].samples;
  const bytesPerPixel = Math.max(1, (samplesPerPixel * bitDepth) >> 3);
  const wide = bitDepth === 16 ? new Uint16Array(width * samplesPerPixel) : null;
  const packed = bitDepth < 8 ? new Uint8Array(width) : null;
  let offset = 0;
  passes.forEach((pass, passIndex) => {
    let previous = -1;
    for (let row = 0; row < pass.rows; row++) {
      const start = offset + 1;
      const filter = raw[offset];
      if (filter > 4) {
        const where = header.interlaced
          ? `row ${row} of interlace pass ${passIndex + 1}`
          : `row ${row}`;
        throw corruptPng(name, `filter type ${filter} in ${where} (expected 0 to 4)`);
      }
      unfilterScanline(raw, filter, start, previous, pass.stride, bytesPerPixel);
      let samples: Uint8Array | Uint16Array;
      if (wide !== null) {
        const count = pass.columns * samplesPerPixel;
        for (let i = 0; i < count; i++) {
          wide[i] = (raw[start + 2 * i] << 8) | raw[start + 2 * i + 1];
        }
        samples = wide;
      } else if (packed !== null) {
        const perByte = 8 / bitDepth;
        const mask = (1 << bitDepth) - 1;
        for (let i = 0; i < pass.columns; i++) {
          const shift = 8 - bitDepth * ((i % perByte) + 1);
          packed[i] = (raw[start + Math.floor(i / perByte)] >> shift) & mask;
        }
        samples = packed;
      } else {
        samples = raw.subarray(start, start + pass.stride);
      }
      visit(samples, pass.y0 + row * pass.dy, pass.x0, pass.dx, pass.columns);
      previous = start;
      offset = start + pass.stride;
    }
  });
}

/**
 * Reverses one scanline's filter in place. `previous` is where the row above starts (already
 * unfiltered), or -1 for a pass's first row, whose row above counts as zeros.
 */
function unfilterScanline(
  data: Uint8Array,
  filter: number,
  start: number,
  previous: number,
  stride: number,
  bpp: number,
): void {
  const end = start + stride;
  if (filter === 1) { // Sub
    for (let i = start + bpp; i < end; i++) data[i] += data[i - bpp];
  } else if (previous < 0) {
    // With a zero row above, Up is None, Average adds half the left byte and Paeth the left one.
    if (filter === 3) {
      for (let i = start + bpp; i < end; i++) data[i] += data[i - bpp] >> 1;
    } else if (filter === 4) {
      for (let i = start + bpp; i < end; i++) data[i] += data[i - bpp];
    }
  } else if (filter === 2) { // Up
    for (let i = 0; i < stride; i++) data[start + i] += data[previous + i];
  } else if (filter === 3) { // Average
    for (let i = 0; i < bpp; i++) data[start + i] += data[previous + i] >> 1;
    for (let i = bpp; i < stride; i++) {
      data[start + i] += (data[start + i - bpp] + data[previous + i]) >> 1;
    }
  } else if (filter === 4) { // Paeth
    // One byte lane at a time, so that the left and upper-left bytes stay in locals, and without
    // branches (sign masks choose), as a mispredicted branch per byte would cost more than all
    // the arithmetic: this is most of a PNG's decoding time.
    for (let lane = 0; lane < bpp; lane++) {
      let left = (data[start + lane] + data[previous + lane]) & 255;
      data[start + lane] = left;
      let upLeft = data[previous + lane];
      for (let i = lane + bpp; i < stride; i += bpp) {
        const up = data[previous + i];
        // Distances of the estimate left + up - upLeft to left, up and upLeft.
        const toLeft = up - upLeft;
        const toUp = left - upLeft;
        const toUpLeft = toLeft + toUp;
        const signLeft = toLeft >> 31;
        const signUp = toUp >> 31;
        const signUpLeft = toUpLeft >> 31;
        const distanceLeft = (toLeft ^ signLeft) - signLeft;
        const distanceUp = (toUp ^ signUp) - signUp;
        const distanceUpLeft = (toUpLeft ^ signUpLeft) - signUpLeft;
        // Ties go to left, then up: the order the PNG specification prescribes.
        const upIsCloser = (distanceUp - distanceLeft) >> 31;
        const closest = distanceLeft ^ ((distanceLeft ^ distanceUp) & upIsCloser);
        let predicted = left ^ ((left ^ up) & upIsCloser);
        predicted ^= (predicted ^ upLeft) & ((distanceUpLeft - closest) >> 31);
        left = (data[start + i] + predicted) & 255;
        data[start + i] = left;
        upLeft = up;
      }
    }
  }
}

/** A PNG's chunks with its pixel data inflated and checked for length. */
interface InflatedPng extends PngChunks {
  readonly passes: PngPass[];
  readonly raw: Uint8Array;
}

async function inflatePng(bytes: Uint8Array, name: string): Promise<InflatedPng> {
  const chunks = readPngChunks(bytes, name);
  const passes = pngPasses(chunks.header);
  const expected = passes.reduce((sum, pass) => sum + pass.rows * (pass.stride + 1), 0);
  const raw = await inflateImageData(chunks.imageData, expected, name);
  return { ...chunks, passes, raw };
}

/** `table[s]` = sample s of a `bitDepth`-bit image scaled to [0, 1], as float32 rounds it. */
function sampleScale(bitDepth: number): Float32Array {
  let table = sampleScales.get(bitDepth);
  if (table === undefined) {
    const max = 2 ** bitDepth - 1;
    table = Float32Array.from({ length: max + 1 }, (_, s) => s / max);
    sampleScales.set(bitDepth, table);
  }
  return table;
}
const sampleScales = new Map<number, Float32Array>();

function paletteIndexError(name: string, index: number, entries: number, y: number): never {
  throw corruptPng(
    name,
    `palette index ${index} in row ${y}, but its palette has only ${entries} entries`,
  );
}

/** Decodes a PNG to a float image with `channels` channels, ignoring alpha. */
async function decodePngImage(
  bytes: Uint8Array,
  name: string,
  channels: Channels,
): Promise<FloatImage> {
  const png = await inflatePng(bytes, name);
  const { width, height, bitDepth, colorType } = png.header;
  const samplesPerPixel = PNG_COLOR_TYPES[colorType].samples;
  const image = createImage(width, height, channels);
  const out = image.data;
  const plane = width * height;
  const scale = sampleScale(bitDepth);
  const max = 2 ** bitDepth - 1;
  const isGray = colorType === PNG_GRAY || colorType === PNG_GRAY_ALPHA;
  let visit: ScanlineVisitor;
  if (isGray) {
    visit = (samples, y, x0, dx, columns) => {
      for (let i = 0, p = y * width + x0; i < columns; i++, p += dx) {
        out[p] = scale[samples[i * samplesPerPixel]];
      }
    };
  } else if (colorType === PNG_PALETTE) {
    // Each entry's planes (or luma) once, as 8-bit RGB samples would give them.
    const palette = png.palette!;
    const entries = palette.length / 3;
    const colors = paletteColors(palette, channels);
    visit = (samples, y, x0, dx, columns) => {
      for (let i = 0, p = y * width + x0; i < columns; i++, p += dx) {
        const index = samples[i];
        if (index >= entries) paletteIndexError(name, index, entries, y);
        for (let c = 0; c < channels; c++) out[c * plane + p] = colors[index * channels + c];
      }
    };
  } else if (channels === 3) {
    visit = (samples, y, x0, dx, columns) => {
      for (let i = 0, p = y * width + x0; i < columns; i++, p += dx) {
        const s = i * samplesPerPixel;
        out[p] = scale[samples[s]];
        out[plane + p] = scale[samples[s + 1]];
        out[2 * plane + p] = scale[samples[s + 2]];
      }
    };
  } else {
    visit = (samples, y, x0, dx, columns) => {
      for (let i = 0, p = y * width + x0; i < columns; i++, p += dx) {
        const s = i * samplesPerPixel;
        out[p] = luma(samples[s], samples[s + 1], samples[s + 2]) / max;
      }
    };
  }
  visitScanlines(png.header, png.passes, png.raw, name, visit);
  if (isGray && channels === 3) {
    out.copyWithin(plane, 0, plane);
    out.copyWithin(2 * plane, 0, plane);
  }
  return image;
}

/** A palette's entries as float planes (R, G, B per entry) or as luma (one value per entry). */
function paletteColors(palette: Uint8Array, channels: Channels): Float32Array {
  const entries = palette.length / 3;
  const colors = new Float32Array(entries * channels);
  for (let e = 0; e < entries; e++) {
    const [r, g, b] = palette.subarray(3 * e, 3 * e + 3);
    if (channels === 3) colors.set([r / 255, g / 255, b / 255], 3 * e);
    else colors[e] = luma(r, g, b) / 255;
  }
  return colors;
}

/** Decodes a PNG to 8-bit RGBA, with alpha from the file (its alpha channel or tRNS). */
async function decodePngRgba(bytes: Uint8Array, name: string): Promise<RgbaImage> {
  const png = await inflatePng(bytes, name);
  const { width, height, bitDepth, colorType } = png.header;
  const samplesPerPixel = PNG_COLOR_TYPES[colorType].samples;
  const max = 2 ** bitDepth - 1;
  const to8 = Uint8Array.from({ length: max + 1 }, (_, s) => Math.round((s * 255) / max));
  const out = new Uint8Array(width * height * 4);
  const key = png.transparentColor;
  let visit: ScanlineVisitor;
  if (colorType === PNG_PALETTE) {
    const palette = png.palette!;
    const entries = palette.length / 3;
    const alpha = new Uint8Array(entries).fill(255);
    alpha.set(png.paletteAlpha ?? []);
    visit = (samples, y, x0, dx, columns) => {
      for (let i = 0, p = 4 * (y * width + x0); i < columns; i++, p += 4 * dx) {
        const index = samples[i];
        if (index >= entries) paletteIndexError(name, index, entries, y);
        out[p] = palette[3 * index];
        out[p + 1] = palette[3 * index + 1];
        out[p + 2] = palette[3 * index + 2];
        out[p + 3] = alpha[index];
      }
    };
  } else {
    const colorSamples = colorType === PNG_GRAY || colorType === PNG_GRAY_ALPHA ? 1 : 3;
    const hasAlpha = colorType === PNG_GRAY_ALPHA || colorType === PNG_RGBA;
    visit = (samples, y, x0, dx, columns) => {
      for (let i = 0, p = 4 * (y * width + x0); i < columns; i++, p += 4 * dx) {
        const s = i * samplesPerPixel;
        for (let c = 0; c < 3; c++) out[p + c] = to8[samples[s + (colorSamples === 3 ? c : 0)]];
        if (hasAlpha) {
          out[p + 3] = to8[samples[s + colorSamples]];
        } else {
          let transparent = key !== null;
          for (let c = 0; transparent && c < colorSamples; c++) {
            transparent = samples[s + c] === key![c];
          }
          out[p + 3] = transparent ? 0 : 255;
        }
      }
    };
  }
  visitScanlines(png.header, png.passes, png.raw, name, visit);
  return { width, height, data: out };
}

// ---- decoding -----------------------------------------------------------------------------------

type Codec = typeof import("imagescript");
let codec: Promise<Codec> | undefined;

/** imagescript, imported on first use (see the module documentation for why). */
function loadCodec(): Promise<Codec> {
  codec ??= import("imagescript");
  return codec;
}

/** Decodes a JPEG with imagescript; its failures become ImageFormatErrors naming the file. */
async function decodeJpegRgba(
  bytes: Uint8Array,
  header: ImageHeader,
  name: string,
): Promise<RgbaImage> {
  // Even a flat image spends a bit per 8x8 block of luma in a Huffman-coded JPEG (the only kind
  // imagescript reads): its DC difference code. A file shorter than that lies about its size, and
  // the decoder would make up the pixels (allocating them all) instead of failing.
  const leastBytes = Math.ceil((header.width * header.height) / (64 * 8));
  if (bytes.length < leastBytes) {
    throw new ImageFormatError(
      `Corrupt JPEG "${name}": its frame header says ${header.width}x${header.height}, which ` +
        `needs at least ${leastBytes} bytes (a bit per 8x8 block); the file has ${bytes.length}`,
    );
  }
  const { decode, Image } = await loadCodec();
  let decoded: InstanceType<typeof Image>;
  try {
    const result = await decode(bytes);
    if (!(result instanceof Image)) throw new Error("not a still image");
    decoded = result;
  } catch (error) {
    throw new ImageFormatError(
      `Corrupt JPEG "${name}": its data cannot be decoded (${errorMessage(error)}); expected ` +
        `a complete baseline or progressive JPEG`,
      { cause: error },
    );
  }
  if (decoded.width !== header.width || decoded.height !== header.height) {
    throw new ImageFormatError(
      `Corrupt JPEG "${name}": its frame header says ${header.width}x${header.height} but it ` +
        `decodes to ${decoded.width}x${decoded.height}`,
    );
  }
  const { bitmap } = decoded;
  const data = new Uint8Array(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength);
  return { width: decoded.width, height: decoded.height, data };
}

/**
 * Decodes PNG or JPEG bytes to an 8-bit RGBA picture: grayscale is replicated, 16-bit samples are
 * rounded to 8 bits, and alpha is the file's (its alpha channel, or tRNS transparency), 255 where
 * the file has none.
 *
 * @param bytes encoded file contents
 * @param name file name used in error messages
 * @returns the picture
 * @throws ImageFormatError naming `name` for corrupt, truncated, oversized or unsupported data
 */
export async function decodeRgba(bytes: Uint8Array, name = "<bytes>"): Promise<RgbaImage> {
  const header = parseImageHeader(bytes, name);
  if (header.format === "png") return await decodePngRgba(bytes, name);
  return await decodeJpegRgba(bytes, header, name);
}

/**
 * Decodes PNG or JPEG bytes to a float image. Samples map to [0, 1] by their full range (a 16-bit
 * sample s to s / 65535, so 16-bit precision is kept); alpha is ignored (see the module doc).
 *
 * @param bytes encoded file contents
 * @param name file name used in error messages
 * @param channels wanted channels; by default those stored in the file ({@link ImageHeader})
 * @returns the decoded image
 * @throws ImageFormatError naming `name` for corrupt, truncated, oversized or unsupported data
 */
export async function decodeImage(
  bytes: Uint8Array,
  name = "<bytes>",
  channels?: Channels,
): Promise<FloatImage> {
  if (channels !== undefined && channels !== 1 && channels !== 3) {
    throw new RangeError(`decodeImage: channels must be 1 or 3, got ${channels}`);
  }
  const header = parseImageHeader(bytes, name);
  if (header.format === "png") {
    return await decodePngImage(bytes, name, channels ?? header.channels);
  }
  const decoded = await decodeJpegRgba(bytes, header, name);
  return imageFromRgba(decoded.data, decoded.width, decoded.height, channels ?? header.channels);
}

/**
 * Reads and decodes a PNG or JPEG file (see {@link decodeImage}).
 *
 * @param path file path
 * @param channels wanted channels; by default those stored in the file
 * @returns the decoded image
 * @throws InputError naming the file when it is missing or unreadable; ImageFormatError when it
 *   is corrupt, truncated or over the size limits
 */
export async function readImage(path: string, channels?: Channels): Promise<FloatImage> {
  return await decodeImage(await readImageFile(path), path, channels);
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

// ---- PNG encoding -------------------------------------------------------------------------------

/** How {@link encodePng} stores a float image's pixels. */
export type PngColorType = "gray" | "gray-alpha" | "rgb" | "rgba" | "palette";

/** Bits per sample of a PNG (per palette index for a palette PNG). */
export type PngBitDepth = 1 | 2 | 4 | 8 | 16;

/** Options of {@link encodePng}. */
export interface PngEncodeOptions {
  /**
   * What the file stores. Default: "gray" for a 1-channel image, "rgb" for a 3-channel one, or
   * "gray-alpha" / "rgba" when `alpha` is given. "gray" and "gray-alpha" need a 1-channel image,
   * "rgb" and "rgba" a 3-channel one; "palette" takes either and lists its distinct 8-bit
   * colours (at most 256, or 2^bitDepth).
   */
  readonly colorType?: PngColorType;
  /**
   * Bits per sample: 8 or 16 for every colour type; also 1, 2 and 4 for "gray"; 1, 2, 4 or 8 for
   * "palette". Default 8, and for "palette" the smallest depth that indexes all its colours.
   * Values in [0, 1] are clamped and rounded to the depth's levels (v · (2^bitDepth − 1)).
   */
  readonly bitDepth?: PngBitDepth;
  /** Alpha plane: `width * height` values in [0, 1], for "gray-alpha", "rgba" and "palette". */
  readonly alpha?: Float32Array;
  /** Adam7 interlacing (default false). */
  readonly interlaced?: boolean;
  /** zlib level 0–9 (default 6). */
  readonly compressionLevel?: number;
}

/**
 * Encodes an image as a PNG. By default a float image is stored with 8 bits per sample as
 * grayscale (1 channel) or RGB (3 channels), its values clamped to [0, 1] and rounded; grayscale
 * stays grayscale on disk (a third of the size), as MVTec AD stores grid, screw and zipper.
 * `options` choose other formats that cameras and tools write: 16-bit samples, 1/2/4-bit
 * grayscale, grayscale or RGB with an alpha plane, a palette, and Adam7 interlacing; each one
 * decodes back to the same values ({@link decodeImage}), exactly for 16 bits. A picture
 * ({@link RgbaImage}) is stored as 8-bit RGBA.
 *
 * @param image image to encode
 * @param options the format (see {@link PngEncodeOptions}), or just the zlib level 0–9
 * @returns PNG file bytes
 * @throws RangeError when the options do not fit the image (its channel count, a palette of more
 *   colours than the bit depth indexes, an alpha plane of the wrong size, a depth PNG does not
 *   allow for the colour type) or a picture's data is not `width * height * 4` bytes
 */
export function encodePng(
  image: FloatImage | RgbaImage,
  options: PngEncodeOptions | number = {},
): Uint8Array {
  const settings: PngEncodeOptions = typeof options === "number"
    ? { compressionLevel: options }
    : options;
  const { width, height } = image;
  const level = settings.compressionLevel ?? 6;
  const interlaced = settings.interlaced ?? false;
  if (!isFloatImage(image)) {
    if (image.data.length !== width * height * 4) {
      throw new RangeError(
        `encodePng: ${image.data.length} bytes, expected ${width}x${height}x4 (RGBA)`,
      );
    }
    const { colorType = "rgba", bitDepth = 8, alpha } = settings;
    if (colorType !== "rgba" || bitDepth !== 8 || alpha !== undefined) {
      throw new RangeError("encodePng: a picture (RgbaImage) is always stored as 8-bit RGBA");
    }
    const header = { width, height, bitDepth, colorType: PNG_RGBA, interlaced };
    return writePngFile(header, image.data, null, level);
  }
  const format = pngFormat(image, settings);
  const header = { width, height, bitDepth: format.bitDepth, colorType: format.code, interlaced };
  if (format.code === PNG_PALETTE) {
    const { indices, palette } = paletteOf(image, settings.alpha, format.bitDepth);
    return writePngFile(header, indices, palette, level);
  }
  const samples = quantize(image, settings.alpha, 2 ** format.bitDepth - 1);
  return writePngFile(header, samples, null, level);
}

/** Colour type code and bit depth for a float image, checked against the image and PNG's rules. */
function pngFormat(
  image: FloatImage,
  settings: PngEncodeOptions,
): { code: number; bitDepth: number } {
  const { alpha } = settings;
  const colorType = settings.colorType ??
    (image.channels === 1 ? (alpha ? "gray-alpha" : "gray") : (alpha ? "rgba" : "rgb"));
  const code = { gray: PNG_GRAY, "gray-alpha": PNG_GRAY_ALPHA, rgb: PNG_RGB, rgba: PNG_RGBA }[
    colorType as string
  ] ?? (colorType === "palette" ? PNG_PALETTE : undefined);
  if (code === undefined) {
    throw new RangeError(
      `encodePng: colorType ${JSON.stringify(colorType)} is not one of gray, gray-alpha, rgb, ` +
        `rgba, palette`,
    );
  }
  const needs = code === PNG_GRAY || code === PNG_GRAY_ALPHA ? 1 : code === PNG_PALETTE ? 0 : 3;
  if (needs !== 0 && image.channels !== needs) {
    throw new RangeError(
      `encodePng: colorType "${colorType}" needs a ${needs}-channel image, got ${image.channels}`,
    );
  }
  const takesAlpha = code === PNG_GRAY_ALPHA || code === PNG_RGBA || code === PNG_PALETTE;
  if (alpha !== undefined && !takesAlpha) {
    throw new RangeError(`encodePng: colorType "${colorType}" has no alpha to store`);
  }
  if (alpha !== undefined && alpha.length !== image.width * image.height) {
    throw new RangeError(
      `encodePng: alpha has ${alpha.length} values, expected ${image.width}x${image.height}`,
    );
  }
  const allowed = PNG_COLOR_TYPES[code].depths;
  const bitDepth = settings.bitDepth ?? (code === PNG_PALETTE ? 0 : 8);
  if (bitDepth !== 0 && !allowed.includes(bitDepth)) {
    throw new RangeError(
      `encodePng: bit depth ${bitDepth} is not allowed for colorType "${colorType}" ` +
        `(expected ${allowed.join(", ")})`,
    );
  }
  return { code, bitDepth };
}

/** Clamps a value in [0, 1] to an integer level 0..max. */
function level(value: number, max: number): number {
  return value <= 0 ? 0 : value >= 1 ? max : Math.round(value * max);
}

/**
 * Interleaves a planar float image (and its alpha plane, when given) into samples of 0..max:
 * bytes up to 8 bits, 16-bit words above.
 */
function quantize(
  image: FloatImage,
  alpha: Float32Array | undefined,
  max: number,
): Uint8Array | Uint16Array {
  const { channels } = image;
  const stored = channels + (alpha === undefined ? 0 : 1);
  const pixels = image.width * image.height;
  const samples = max > 255 ? new Uint16Array(pixels * stored) : new Uint8Array(pixels * stored);
  for (let c = 0; c < stored; c++) {
    const plane = c < channels ? image.data.subarray(c * pixels, (c + 1) * pixels) : alpha!;
    for (let p = 0; p < pixels; p++) samples[p * stored + c] = level(plane[p], max);
  }
  return samples;
}

/**
 * The palette of an image's distinct 8-bit colours (with alpha, when given), in order of first
 * appearance, and each pixel's index into it. The depth is `bitDepth`, or when that is 0 the
 * smallest that indexes every colour.
 */
function paletteOf(
  image: FloatImage,
  alpha: Float32Array | undefined,
  bitDepth: number,
): { indices: Uint8Array; palette: PngPalette } {
  const pixels = image.width * image.height;
  const plane = (c: number) => image.data.subarray(c * pixels, (c + 1) * pixels);
  const [red, green, blue] = (image.channels === 3 ? [0, 1, 2] : [0, 0, 0]).map(plane);
  const indexOf = new Map<number, number>();
  const colors: number[] = [];
  const indices = new Uint8Array(pixels);
  for (let p = 0; p < pixels; p++) {
    const a = alpha === undefined ? 255 : level(alpha[p], 255);
    const key = level(red[p], 255) * 2 ** 24 + level(green[p], 255) * 2 ** 16 +
      level(blue[p], 255) * 2 ** 8 + a;
    let index = indexOf.get(key);
    if (index === undefined) {
      index = colors.length;
      if (index === 256) {
        throw new RangeError(
          "encodePng: more than 256 colours do not fit a palette (reduce the colours first; " +
            "a 1-channel image without alpha always fits)",
        );
      }
      indexOf.set(key, index);
      colors.push(key);
    }
    indices[p] = index;
  }
  const depth = bitDepth !== 0 ? bitDepth : [1, 2, 4, 8].find((d) => colors.length <= 2 ** d)!;
  if (colors.length > 2 ** depth) {
    throw new RangeError(
      `encodePng: ${colors.length} colours do not fit a palette of bit depth ${depth}`,
    );
  }
  const rgb = new Uint8Array(colors.length * 3);
  const alphas = new Uint8Array(colors.length);
  colors.forEach((key, i) => {
    rgb.set([Math.floor(key / 2 ** 24), Math.floor(key / 2 ** 16) & 255, (key >>> 8) & 255], 3 * i);
    alphas[i] = key & 255;
  });
  // tRNS lists alpha up to the last entry that is not opaque; none at all when all are.
  let alphaCount = colors.length;
  while (alphaCount > 0 && alphas[alphaCount - 1] === 255) alphaCount--;
  return { indices, palette: { rgb, alpha: alphas.subarray(0, alphaCount), bitDepth: depth } };
}

/** A palette to write: PLTE entries, tRNS alphas (possibly none) and the index depth. */
interface PngPalette {
  readonly rgb: Uint8Array;
  readonly alpha: Uint8Array;
  readonly bitDepth: number;
}

/**
 * Writes interleaved samples (palette indices for a palette image) as a PNG file: scanlines
 * packed to the bit depth, filtered, per Adam7 pass when interlaced, and deflated.
 */
function writePngFile(
  header: PngHeader,
  samples: Uint8Array | Uint16Array,
  palette: PngPalette | null,
  compressionLevel: number,
): Uint8Array {
  const bitDepth = palette?.bitDepth ?? header.bitDepth;
  const full = { ...header, bitDepth };
  const samplesPerPixel = PNG_COLOR_TYPES[header.colorType].samples;
  const bytesPerPixel = Math.max(1, (samplesPerPixel * bitDepth) >> 3);
  const filtered = pngPasses(full).map((pass) => {
    const passSamples = header.interlaced
      ? passSamplesOf(samples, header.width, samplesPerPixel, pass)
      : samples;
    const packed = packScanlines(passSamples, pass, samplesPerPixel, bitDepth);
    return filterScanlines(packed, pass.rows, pass.stride, bytesPerPixel);
  });
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, header.width);
  view.setUint32(4, header.height);
  ihdr.set([bitDepth, header.colorType, 0, 0, header.interlaced ? 1 : 0], 8);
  const idat = deflateSync(concatBytes(filtered), { level: compressionLevel });
  return concatBytes([
    Uint8Array.from(PNG_SIGNATURE),
    pngChunk("IHDR", ihdr),
    ...(palette === null ? [] : [pngChunk("PLTE", palette.rgb)]),
    ...(palette === null || palette.alpha.length === 0 ? [] : [pngChunk("tRNS", palette.alpha)]),
    pngChunk("IDAT", new Uint8Array(idat.buffer, idat.byteOffset, idat.byteLength)),
    pngChunk("IEND", new Uint8Array(0)),
  ]);
}

/** The samples of one Adam7 pass's pixels, interleaved as the whole image's are. */
function passSamplesOf(
  samples: Uint8Array | Uint16Array,
  width: number,
  samplesPerPixel: number,
  pass: PngPass,
): Uint8Array | Uint16Array {
  const out = new (samples.constructor as Uint8ArrayConstructor | Uint16ArrayConstructor)(
    pass.columns * pass.rows * samplesPerPixel,
  );
  let o = 0;
  for (let row = 0; row < pass.rows; row++) {
    const y = pass.y0 + row * pass.dy;
    for (let column = 0; column < pass.columns; column++) {
      const p = (y * width + pass.x0 + column * pass.dx) * samplesPerPixel;
      for (let s = 0; s < samplesPerPixel; s++) out[o++] = samples[p + s];
    }
  }
  return out;
}

/** Packs a pass's samples into scanline bytes: 16-bit big-endian, 1/2/4 bits from the top bit. */
function packScanlines(
  samples: Uint8Array | Uint16Array,
  pass: PngPass,
  samplesPerPixel: number,
  bitDepth: number,
): Uint8Array {
  if (bitDepth === 8) return samples as Uint8Array;
  const out = new Uint8Array(pass.rows * pass.stride);
  const perRow = pass.columns * samplesPerPixel;
  for (let row = 0; row < pass.rows; row++) {
    for (let i = 0; i < perRow; i++) {
      const value = samples[row * perRow + i];
      if (bitDepth === 16) {
        out[row * pass.stride + 2 * i] = value >> 8;
        out[row * pass.stride + 2 * i + 1] = value & 255;
      } else {
        const bit = i * bitDepth;
        out[row * pass.stride + (bit >> 3)] |= value << (8 - bitDepth - (bit & 7));
      }
    }
  }
  return out;
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function isFloatImage(image: FloatImage | RgbaImage): image is FloatImage {
  return image.data instanceof Float32Array;
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

/** The CRC-32 of PNG chunks (and zlib's crc32) over `bytes[start..end)`. */
function crc32(bytes: Uint8Array, start: number, end: number): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk, 4, 8 + data.length));
  return chunk;
}

/**
 * Encodes an image or picture as PNG (see {@link encodePng}) and writes it atomically, creating
 * the folder when missing.
 *
 * @param path target path
 * @param image image or picture to write
 * @param options the PNG format (see {@link PngEncodeOptions}); default 8-bit
 */
export async function writePng(
  path: string,
  image: FloatImage | RgbaImage,
  options: PngEncodeOptions = {},
): Promise<void> {
  await writeFileAtomic(path, encodePng(image, options));
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
