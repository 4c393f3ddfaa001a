/**
 * Single-channel TIFF reading and writing for anomaly maps, in the layout of
 * MVTec's official evaluation code (`MAPS/<category>/test/<defect>/<id>.tiff`,
 * 32-bit float, one channel).
 *
 * Writer: baseline little-endian TIFF, uncompressed, 32-bit IEEE float
 * (SampleFormat 3), strips. Reader: little- and big-endian, strips or tiles,
 * uncompressed only, one sample per pixel, unsigned/signed integers of 8, 16
 * or 32 bits and floats of 32 or 64 bits. Integer samples are returned as
 * their raw values (not normalised); float64 samples are rounded to float32.
 *
 * @module
 */

import { InputError } from "../util/errors.ts";
import { writeFileAtomic } from "../util/fs.ts";

/** A decoded single-channel image. */
export interface TiffImage {
  /** Row-major samples, `width * height` values. */
  map: Float32Array;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

/** Any TIFF that cannot be read or written; the message names the file. */
export class TiffError extends InputError {
  /** The file (or `"<memory>"`) the error is about. */
  readonly source: string;

  /**
   * Creates the error.
   *
   * @param source file path or description of the data
   * @param reason what is wrong
   */
  constructor(source: string, reason: string) {
    super(`${source}: ${reason}`);
    this.name = "TiffError";
    this.source = source;
  }
}

const TAG = {
  imageWidth: 256,
  imageLength: 257,
  bitsPerSample: 258,
  compression: 259,
  photometric: 262,
  stripOffsets: 273,
  samplesPerPixel: 277,
  rowsPerStrip: 278,
  stripByteCounts: 279,
  planarConfiguration: 284,
  predictor: 317,
  tileWidth: 322,
  tileLength: 323,
  tileOffsets: 324,
  tileByteCounts: 325,
  sampleFormat: 339,
} as const;

const TYPE_SHORT = 3;
const TYPE_LONG = 4;

/** Byte size of one value of each TIFF field type. */
const TYPE_SIZES: Record<number, number> = {
  1: 1, // BYTE
  2: 1, // ASCII
  3: 2, // SHORT
  4: 4, // LONG
  5: 8, // RATIONAL
  6: 1, // SBYTE
  7: 1, // UNDEFINED
  8: 2, // SSHORT
  9: 4, // SLONG
  10: 8, // SRATIONAL
  11: 4, // FLOAT
  12: 8, // DOUBLE
};

const SAMPLE_FORMAT_UINT = 1;
const SAMPLE_FORMAT_INT = 2;
const SAMPLE_FORMAT_FLOAT = 3;

/** Options of {@link encodeTiff}. */
export interface TiffWriteOptions {
  /** Rows per strip; default: the whole image in one strip. */
  rowsPerStrip?: number;
}

/**
 * Encodes a single-channel float map as an uncompressed little-endian 32-bit
 * float TIFF.
 *
 * @param map row-major values, `width * height` of them
 * @param width width in pixels
 * @param height height in pixels
 * @param options strip layout
 * @returns the TIFF file bytes
 */
export function encodeTiff(
  map: Float32Array,
  width: number,
  height: number,
  options: TiffWriteOptions = {},
): Uint8Array {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new TiffError("<memory>", `cannot encode a ${width}x${height} image`);
  }
  if (map.length !== width * height) {
    throw new TiffError("<memory>", `map has ${map.length} values, expected ${width}x${height}`);
  }
  const rowsPerStrip = Math.min(options.rowsPerStrip ?? height, height);
  if (!Number.isInteger(rowsPerStrip) || rowsPerStrip < 1) {
    throw new TiffError("<memory>", `invalid rowsPerStrip ${options.rowsPerStrip}`);
  }
  const stripCount = Math.ceil(height / rowsPerStrip);
  const stripByteCounts = Array.from(
    { length: stripCount },
    (_, s) => (Math.min(height, (s + 1) * rowsPerStrip) - s * rowsPerStrip) * width * 4,
  );
  const headerSize = 8;
  const pixelBytes = map.length * 4;
  // Strip offset/count arrays live outside the IFD when they do not fit in 4 bytes.
  const stripArraysOffset = headerSize + pixelBytes;
  const stripArraysSize = stripCount > 1 ? 2 * 4 * stripCount : 0;
  const ifdOffset = stripArraysOffset + stripArraysSize;
  const entryCount = 11;
  const totalSize = ifdOffset + 2 + entryCount * 12 + 4;

  const bytes = new Uint8Array(totalSize);
  const view = new DataView(bytes.buffer);
  bytes[0] = 0x49; // "II": little endian
  bytes[1] = 0x49;
  view.setUint16(2, 42, true);
  view.setUint32(4, ifdOffset, true);
  for (let i = 0; i < map.length; i++) view.setFloat32(headerSize + i * 4, map[i], true);

  const stripOffsets = stripByteCounts.map((_, s) => headerSize + s * rowsPerStrip * width * 4);
  const offsetsArrayAt = stripArraysOffset;
  const countsArrayAt = stripArraysOffset + 4 * stripCount;
  if (stripCount > 1) {
    stripOffsets.forEach((value, s) => view.setUint32(offsetsArrayAt + 4 * s, value, true));
    stripByteCounts.forEach((value, s) => view.setUint32(countsArrayAt + 4 * s, value, true));
  }

  let entryAt = ifdOffset + 2;
  view.setUint16(ifdOffset, entryCount, true);
  const writeEntry = (tag: number, type: number, count: number, value: number) => {
    view.setUint16(entryAt, tag, true);
    view.setUint16(entryAt + 2, type, true);
    view.setUint32(entryAt + 4, count, true);
    // SHORT values are left-justified in the 4-byte value field.
    if (type === TYPE_SHORT && count === 1) view.setUint16(entryAt + 8, value, true);
    else view.setUint32(entryAt + 8, value, true);
    entryAt += 12;
  };
  // Entries must be sorted by tag.
  writeEntry(TAG.imageWidth, TYPE_LONG, 1, width);
  writeEntry(TAG.imageLength, TYPE_LONG, 1, height);
  writeEntry(TAG.bitsPerSample, TYPE_SHORT, 1, 32);
  writeEntry(TAG.compression, TYPE_SHORT, 1, 1);
  writeEntry(TAG.photometric, TYPE_SHORT, 1, 1); // BlackIsZero
  writeEntry(
    TAG.stripOffsets,
    TYPE_LONG,
    stripCount,
    stripCount > 1 ? offsetsArrayAt : stripOffsets[0],
  );
  writeEntry(TAG.samplesPerPixel, TYPE_SHORT, 1, 1);
  writeEntry(TAG.rowsPerStrip, TYPE_LONG, 1, rowsPerStrip);
  writeEntry(
    TAG.stripByteCounts,
    TYPE_LONG,
    stripCount,
    stripCount > 1 ? countsArrayAt : stripByteCounts[0],
  );
  writeEntry(TAG.planarConfiguration, TYPE_SHORT, 1, 1);
  writeEntry(TAG.sampleFormat, TYPE_SHORT, 1, SAMPLE_FORMAT_FLOAT);
  view.setUint32(entryAt, 0, true); // no further IFD
  return bytes;
}

/** Reads bounds-checked values from a TIFF buffer, reporting errors against `source`. */
class TiffCursor {
  readonly view: DataView;
  readonly littleEndian: boolean;

  constructor(readonly bytes: Uint8Array, readonly source: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length < 8) this.fail(`file is truncated (${bytes.length} bytes, not even a header)`);
    const order = String.fromCharCode(bytes[0], bytes[1]);
    if (order !== "II" && order !== "MM") {
      this.fail(
        `not a TIFF file (byte-order mark ${JSON.stringify(order)}, expected "II" or "MM")`,
      );
    }
    this.littleEndian = order === "II";
  }

  fail(reason: string): never {
    throw new TiffError(this.source, reason);
  }

  check(offset: number, length: number, what: string): void {
    if (offset < 0 || offset + length > this.bytes.length) {
      this.fail(
        `file is truncated: ${what} needs bytes ${offset}..${
          offset + length
        } but the file has ${this.bytes.length}`,
      );
    }
  }

  u16(offset: number, what: string): number {
    this.check(offset, 2, what);
    return this.view.getUint16(offset, this.littleEndian);
  }

  u32(offset: number, what: string): number {
    this.check(offset, 4, what);
    return this.view.getUint32(offset, this.littleEndian);
  }
}

/** Reads the integer values of one IFD entry (BYTE, SHORT, LONG and signed variants). */
function readEntryValues(cursor: TiffCursor, entryAt: number, tag: number): number[] {
  const type = cursor.u16(entryAt + 2, `tag ${tag}`);
  const count = cursor.u32(entryAt + 4, `tag ${tag}`);
  const size = TYPE_SIZES[type];
  if (size === undefined) cursor.fail(`tag ${tag} has unknown field type ${type}`);
  const totalSize = size * count;
  const valuesAt = totalSize <= 4 ? entryAt + 8 : cursor.u32(entryAt + 8, `tag ${tag}`);
  cursor.check(valuesAt, totalSize, `values of tag ${tag}`);
  const { view, littleEndian } = cursor;
  const values: number[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const at = valuesAt + i * size;
    switch (type) {
      case 1:
      case 7:
        values[i] = view.getUint8(at);
        break;
      case 6:
        values[i] = view.getInt8(at);
        break;
      case 3:
        values[i] = view.getUint16(at, littleEndian);
        break;
      case 8:
        values[i] = view.getInt16(at, littleEndian);
        break;
      case 4:
        values[i] = view.getUint32(at, littleEndian);
        break;
      case 9:
        values[i] = view.getInt32(at, littleEndian);
        break;
      default:
        cursor.fail(`tag ${tag} has field type ${type}, expected an integer type`);
    }
  }
  return values;
}

/** The tags of the first IFD that the reader needs, by tag number. */
function readFirstIfd(cursor: TiffCursor): Map<number, number[]> {
  const magic = cursor.u16(2, "header");
  if (magic === 43) cursor.fail("BigTIFF files are not supported");
  if (magic !== 42) cursor.fail(`not a TIFF file (magic number ${magic}, expected 42)`);
  const ifdOffset = cursor.u32(4, "header");
  const entryCount = cursor.u16(ifdOffset, "image file directory");
  cursor.check(ifdOffset + 2, entryCount * 12, "image file directory");
  const wanted = new Set<number>(Object.values(TAG));
  const tags = new Map<number, number[]>();
  for (let i = 0; i < entryCount; i++) {
    const entryAt = ifdOffset + 2 + i * 12;
    const tag = cursor.u16(entryAt, "image file directory");
    if (wanted.has(tag)) tags.set(tag, readEntryValues(cursor, entryAt, tag));
  }
  return tags;
}

/** Returns a function reading sample `i` of a block starting at `blockAt`. */
function sampleReader(
  cursor: TiffCursor,
  bitsPerSample: number,
  sampleFormat: number,
): (byteOffset: number) => number {
  const { view, littleEndian } = cursor;
  const kind = `${sampleFormat}:${bitsPerSample}`;
  switch (kind) {
    case "1:8":
      return (at) => view.getUint8(at);
    case "1:16":
      return (at) => view.getUint16(at, littleEndian);
    case "1:32":
      return (at) => view.getUint32(at, littleEndian);
    case "2:8":
      return (at) => view.getInt8(at);
    case "2:16":
      return (at) => view.getInt16(at, littleEndian);
    case "2:32":
      return (at) => view.getInt32(at, littleEndian);
    case "3:32":
      return (at) => view.getFloat32(at, littleEndian);
    case "3:64":
      return (at) => view.getFloat64(at, littleEndian);
  }
  const formatName = {
    [SAMPLE_FORMAT_UINT]: "unsigned integer",
    [SAMPLE_FORMAT_INT]: "signed integer",
    [SAMPLE_FORMAT_FLOAT]: "float",
  }[sampleFormat] ?? `SampleFormat ${sampleFormat}`;
  return cursor.fail(`unsupported sample type: ${bitsPerSample}-bit ${formatName}`);
}

/**
 * The most pixels a map may have (2^28, a 16384×16384 image, 1 GiB of float32). Larger sizes are
 * refused before anything is allocated, whatever the file holds.
 */
export const TIFF_MAX_PIXELS = 2 ** 28;

/** A block of samples (strip or tile) of the map, checked to lie inside the file. */
interface Block {
  at: number;
  width: number;
  rows: number;
  columns: number;
  left: number;
  top: number;
}

/**
 * Decodes a single-channel uncompressed TIFF (first image of the file).
 *
 * Sizes come from the header, so they are checked before the map is allocated: the sides must be
 * positive, their product at most {@link TIFF_MAX_PIXELS}, and the strips or tiles the map needs
 * must lie inside the file, together no larger than it (so the map is never more than 4 bytes per
 * byte of the file).
 *
 * @param bytes the file contents
 * @param source file name used in error messages
 * @returns the image as float32 values
 * @throws {TiffError} for anything truncated, malformed, too large or unsupported
 */
export function decodeTiff(bytes: Uint8Array, source: string = "<memory>"): TiffImage {
  const cursor: TiffCursor = new TiffCursor(bytes, source);
  const tags = readFirstIfd(cursor);
  const single = (tag: number, name: string, fallback?: number): number => {
    const values = tags.get(tag);
    if (values === undefined || values.length === 0) {
      if (fallback === undefined) cursor.fail(`required tag ${name} (${tag}) is missing`);
      return fallback;
    }
    // Per-sample tags repeat the value per channel; one channel is enforced below.
    return values[0];
  };
  /** A size tag's value, which must be a positive integer. */
  const size = (tag: number, name: string, fallback?: number): number => {
    const value = single(tag, name, fallback);
    if (!(value >= 1)) cursor.fail(`${name} is ${value}; expected a positive size`);
    return value;
  };
  const width = size(TAG.imageWidth, "ImageWidth");
  const height = size(TAG.imageLength, "ImageLength");
  if (width * height > TIFF_MAX_PIXELS) {
    cursor.fail(
      `image is ${width}x${height} (${width * height} pixels); the reader takes at most ` +
        `${TIFF_MAX_PIXELS} pixels (2^28, e.g. 16384x16384)`,
    );
  }
  const samplesPerPixel = single(TAG.samplesPerPixel, "SamplesPerPixel", 1);
  const bitsPerSample = single(TAG.bitsPerSample, "BitsPerSample", 1);
  const compression = single(TAG.compression, "Compression", 1);
  const predictor = single(TAG.predictor, "Predictor", 1);
  const sampleFormat = single(TAG.sampleFormat, "SampleFormat", SAMPLE_FORMAT_UINT);
  if (samplesPerPixel !== 1) {
    cursor.fail(`has ${samplesPerPixel} samples per pixel; only single-channel maps are supported`);
  }
  if (compression !== 1) {
    cursor.fail(`compression ${compression} is not supported (only uncompressed, compression 1)`);
  }
  if (predictor !== 1) cursor.fail(`predictor ${predictor} is not supported`);
  const readSample = sampleReader(cursor, bitsPerSample, sampleFormat);
  const bytesPerSample = bitsPerSample / 8;

  /** A block of `blockWidth` x `blockHeight` samples at (left, top), checked against the file. */
  const block = (
    at: number,
    byteCount: number | undefined,
    blockWidth: number,
    blockHeight: number,
    left: number,
    top: number,
    what: string,
  ): Block => {
    const rows = Math.min(blockHeight, height - top);
    const columns = Math.min(blockWidth, width - left);
    // The last strip may hold fewer rows; tiles are always full blocks.
    const neededBytes = ((rows - 1) * blockWidth + columns) * bytesPerSample;
    if (byteCount !== undefined && byteCount < neededBytes) {
      cursor.fail(`${what} holds ${byteCount} bytes but ${neededBytes} are needed`);
    }
    cursor.check(at, neededBytes, what);
    return { at, width: blockWidth, rows, columns, left, top };
  };

  const blocks: Block[] = [];
  const tileOffsets = tags.get(TAG.tileOffsets);
  if (tileOffsets !== undefined) {
    const tileWidth = size(TAG.tileWidth, "TileWidth");
    const tileHeight = size(TAG.tileLength, "TileLength");
    const tileByteCounts = tags.get(TAG.tileByteCounts);
    const tilesAcross = Math.ceil(width / tileWidth);
    const tilesDown = Math.ceil(height / tileHeight);
    if (tileOffsets.length < tilesAcross * tilesDown) {
      cursor.fail(`has ${tileOffsets.length} tiles, expected ${tilesAcross * tilesDown}`);
    }
    for (let tile = 0; tile < tilesAcross * tilesDown; tile++) {
      const left = (tile % tilesAcross) * tileWidth;
      const top = Math.floor(tile / tilesAcross) * tileHeight;
      const what = `tile ${tile}`;
      blocks.push(
        block(tileOffsets[tile], tileByteCounts?.[tile], tileWidth, tileHeight, left, top, what),
      );
    }
  } else {
    const stripOffsets = tags.get(TAG.stripOffsets);
    if (stripOffsets === undefined) cursor.fail("has neither StripOffsets nor TileOffsets");
    const rowsPerStrip = Math.min(size(TAG.rowsPerStrip, "RowsPerStrip", height), height);
    const stripByteCounts = tags.get(TAG.stripByteCounts);
    const stripCount = Math.ceil(height / rowsPerStrip);
    if (stripOffsets.length < stripCount) {
      cursor.fail(`has ${stripOffsets.length} strips, expected ${stripCount}`);
    }
    for (let strip = 0; strip < stripCount; strip++) {
      const top = strip * rowsPerStrip;
      const what = `strip ${strip}`;
      blocks.push(
        block(stripOffsets[strip], stripByteCounts?.[strip], width, rowsPerStrip, 0, top, what),
      );
    }
  }

  // Blocks of a valid file hold distinct bytes; ones that share them (every strip at one offset)
  // would let a small file make a map of gigabytes.
  const blockBytes = blocks.reduce((sum, b) => sum + ((b.rows - 1) * b.width + b.columns), 0) *
    bytesPerSample;
  if (blockBytes > bytes.length) {
    cursor.fail(
      `its ${blocks.length} strips or tiles claim ${blockBytes} bytes in all, more than the ` +
        `file's ${bytes.length}; expected each to hold bytes of its own`,
    );
  }
  // Only now, with every block inside the file, is the map allocated.
  const map = new Float32Array(width * height);
  for (const { at, width: blockWidth, rows, columns, left, top } of blocks) {
    for (let row = 0; row < rows; row++) {
      const rowAt = at + row * blockWidth * bytesPerSample;
      const mapRow = (top + row) * width + left;
      for (let column = 0; column < columns; column++) {
        map[mapRow + column] = readSample(rowAt + column * bytesPerSample);
      }
    }
  }
  return { map, width, height };
}

/**
 * Reads a single-channel TIFF file.
 *
 * @param path file to read
 * @returns the decoded image
 * @throws {TiffError} naming the file when it is missing, unreadable or unsupported
 */
export async function readTiffFile(path: string): Promise<TiffImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "file not found"
      : `cannot read file (${error instanceof Error ? error.message : String(error)})`;
    throw new TiffError(path, reason);
  }
  return decodeTiff(bytes, path);
}

/**
 * Writes a map as a 32-bit float TIFF, atomically (temporary file + rename),
 * creating parent directories.
 *
 * @param path destination file
 * @param map row-major values
 * @param width width in pixels
 * @param height height in pixels
 * @param options strip layout
 * @returns a promise resolved once the file is in place
 */
export async function writeTiffFile(
  path: string,
  map: Float32Array,
  width: number,
  height: number,
  options: TiffWriteOptions = {},
): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = encodeTiff(map, width, height, options);
  } catch (error) {
    if (error instanceof TiffError) {
      throw new TiffError(path, error.message.replace(/^<memory>: /, ""));
    }
    throw error;
  }
  await writeFileAtomic(path, bytes);
}
