/**
 * The structure of the harness's binary seeds, found by walking the valid files: where PNG
 * chunks, JPEG segments, TIFF IFD entries and the safetensors header start and end, and which of
 * their integers are sizes, counts and offsets. The mutators cut files there and set those
 * integers to extreme values.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import type { BinaryLayout, IntegerField } from "./mutators.ts";

/** The chunks of a PNG file, as long as they lie inside it. */
function pngChunks(bytes: Uint8Array): { at: number; length: number; type: string }[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = [];
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = view.getUint32(at);
    if (at + 12 + length > bytes.length) break;
    chunks.push({ at, length, type: String.fromCharCode(...bytes.subarray(at + 4, at + 8)) });
    at += 12 + length;
  }
  return chunks;
}

/** A PNG's chunk boundaries, chunk lengths and the IHDR fields. */
export function pngLayout(bytes: Uint8Array): BinaryLayout {
  const boundaries = [8];
  const fields: IntegerField[] = [];
  for (const { at, length, type } of pngChunks(bytes)) {
    boundaries.push(at, at + 8, at + 8 + length, at + 12 + length);
    if (length > 2) boundaries.push(at + 8 + (length >> 1));
    fields.push({ at, bytes: 4, littleEndian: false, what: `${type} length` });
  }
  fields.push(
    { at: 16, bytes: 4, littleEndian: false, what: "IHDR width" },
    { at: 20, bytes: 4, littleEndian: false, what: "IHDR height" },
    { at: 24, bytes: 1, littleEndian: false, what: "IHDR bit depth" },
    { at: 25, bytes: 1, littleEndian: false, what: "IHDR colour type" },
    { at: 26, bytes: 1, littleEndian: false, what: "IHDR compression" },
    { at: 27, bytes: 1, littleEndian: false, what: "IHDR filter" },
    { at: 28, bytes: 1, littleEndian: false, what: "IHDR interlace" },
  );
  return { boundaries, fields, magic: { at: 0, length: 8 } };
}

/**
 * Recomputes the CRC of every complete chunk, so that a mutated length or dimension reaches the
 * decoder instead of stopping at the checksum.
 */
export function repairPngChecksums(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  for (const { at, length } of pngChunks(out)) {
    view.setUint32(at + 8 + length, crc32(out.subarray(at + 4, at + 8 + length)));
  }
  return out;
}

/** A JPEG's segment boundaries and lengths, the frame's sides and the entropy-coded data. */
export function jpegLayout(bytes: Uint8Array): BinaryLayout {
  const boundaries = [2];
  const fields: IntegerField[] = [];
  let at = 2;
  while (at + 4 <= bytes.length && bytes[at] === 0xff) {
    const marker = bytes[at + 1];
    const length = (bytes[at + 2] << 8) | bytes[at + 3];
    const name = `marker 0x${marker.toString(16)}`;
    boundaries.push(at, at + 2, at + 4);
    fields.push({ at: at + 2, bytes: 2, littleEndian: false, what: `${name} length` });
    if (marker >= 0xc0 && marker <= 0xc3) {
      fields.push(
        { at: at + 4, bytes: 1, littleEndian: false, what: "frame precision" },
        { at: at + 5, bytes: 2, littleEndian: false, what: "frame height" },
        { at: at + 7, bytes: 2, littleEndian: false, what: "frame width" },
        { at: at + 9, bytes: 1, littleEndian: false, what: "frame components" },
      );
    }
    at += 2 + length;
    if (marker === 0xda) {
      // Entropy-coded data runs from here to the end-of-image marker.
      const end = bytes.length - 2;
      boundaries.push(at, at + ((end - at) >> 2), at + ((end - at) >> 1), end, bytes.length);
      break;
    }
  }
  return { boundaries, fields, magic: { at: 0, length: 3 } };
}

/** TIFF field types whose values are unsigned 16-bit (SHORT) or 32-bit (LONG). */
const TIFF_SHORT = 3;
const TIFF_LONG = 4;

/**
 * A little-endian TIFF's header, IFD entries (tag, type, count, value), strip arrays and strip
 * data boundaries. Entry fields are named after their tags, so that the sides can be set
 * together.
 */
export function tiffLayout(bytes: Uint8Array): BinaryLayout {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (at: number, what: string): IntegerField => ({
    at,
    bytes: 4,
    littleEndian: true,
    what,
  });
  const tagNames: Record<number, string> = {
    256: "ImageWidth",
    257: "ImageLength",
    273: "StripOffsets",
    278: "RowsPerStrip",
    279: "StripByteCounts",
  };
  const ifd = view.getUint32(4, true);
  const entries = view.getUint16(ifd, true);
  const boundaries = [4, 8, ifd, ifd + 2, ifd + 2 + 12 * entries, bytes.length];
  const fields: IntegerField[] = [
    u32(4, "IFD offset"),
    { at: ifd, bytes: 2, littleEndian: true, what: "IFD entry count" },
  ];
  for (let i = 0; i < entries; i++) {
    const entry = ifd + 2 + 12 * i;
    const tag = view.getUint16(entry, true);
    const type = view.getUint16(entry + 2, true);
    const count = view.getUint32(entry + 4, true);
    const name = tagNames[tag] ?? `tag ${tag}`;
    boundaries.push(entry);
    fields.push(
      { at: entry, bytes: 2, littleEndian: true, what: `${name} tag` },
      { at: entry + 2, bytes: 2, littleEndian: true, what: `${name} type` },
      u32(entry + 4, `${name} count`),
    );
    const valueBytes = type === TIFF_SHORT ? 2 : 4;
    if (count * valueBytes <= 4) {
      fields.push(
        type === TIFF_SHORT
          ? { at: entry + 8, bytes: 2, littleEndian: true, what: `${name} value` }
          : u32(entry + 8, `${name} value`),
      );
    } else if (type === TIFF_LONG) {
      // An array elsewhere in the file: its offset, each value, and (for strip offsets) the data.
      const arrayAt = view.getUint32(entry + 8, true);
      fields.push(u32(entry + 8, `${name} array offset`));
      boundaries.push(arrayAt);
      for (let k = 0; k < count; k++) {
        fields.push(u32(arrayAt + 4 * k, `${name} value ${k}`));
        if (tag === 273) boundaries.push(view.getUint32(arrayAt + 4 * k, true));
      }
    }
  }
  return { boundaries, fields, magic: { at: 0, length: 4 } };
}

/** A safetensors file's header length, header end and each tensor's data boundaries. */
export function safetensorsLayout(bytes: Uint8Array): BinaryLayout {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  const dataStart = 8 + headerLength;
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, dataStart)));
  const boundaries = [0, 4, 8, 9, dataStart >> 1, dataStart - 1, dataStart, bytes.length];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [begin, end] = (entry as { data_offsets: [number, number] }).data_offsets;
    boundaries.push(dataStart + begin, dataStart + end);
  }
  return {
    boundaries,
    fields: [{ at: 0, bytes: 8, littleEndian: true, what: "header length" }],
    magic: { at: 0, length: 8 },
  };
}
