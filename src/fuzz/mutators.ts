/**
 * The mutations of the fuzzing harness: byte-level ones (bit flips, bytes set to 0x00, 0xff or
 * random values, cuts at structural boundaries and at random points, wrong magic numbers, slices
 * removed or repeated), integer fields of a known layout set to zero, huge or out-of-file values,
 * and JSON ones (wrong types, missing and unknown keys, NaN- and Infinity-like numbers, huge
 * arrays and strings, deep nesting).
 *
 * Every mutation is a pure function of its input and a seeded {@link Random}, so a case is
 * reproduced from the seed and its number alone.
 *
 * @module
 */

import type { Random } from "../data/random.ts";

/** An unsigned integer field of a binary file: a size, count, offset or length. */
export interface IntegerField {
  /** Byte position. */
  at: number;
  /** Width in bytes. */
  bytes: 1 | 2 | 4 | 8;
  littleEndian: boolean;
  /** What the field is, for case descriptions ("IHDR width"). */
  what: string;
}

/** A run of bytes in a file. */
export interface Region {
  at: number;
  length: number;
}

/** What a target knows of a binary seed's structure, so that mutations hit it. */
export interface BinaryLayout {
  /** Offsets where a structure (chunk, table, IFD entry, header) starts or ends. */
  boundaries: number[];
  /** The integer fields worth setting to extreme values. */
  fields: IntegerField[];
  /** Where the magic number (or file identifier) lies. */
  magic: Region;
}

/** A mutated file and what was done to it. */
export interface Mutated {
  bytes: Uint8Array;
  description: string;
}

/** Magic numbers of the formats the project reads, to put one format's magic on another. */
const FOREIGN_MAGICS: readonly number[][] = [
  [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], // PNG
  [0xff, 0xd8, 0xff, 0xe0], // JPEG
  [0x49, 0x49, 0x2a, 0x00], // TIFF, little endian
  [0x4d, 0x4d, 0x00, 0x2a], // TIFF, big endian
  [0x49, 0x49, 0x2b, 0x00], // BigTIFF
  [0x00, 0x00, 0x00, 0x00, 0x54, 0x46, 0x4c, 0x33], // TFLite ("TFL3" at bytes 4–7)
  [0x7b, 0x7d], // "{}"
  [0x50, 0x4b, 0x03, 0x04], // zip
];

/** Integer values that break size arithmetic: zero, sign bits, all ones, huge image sides. */
function interestingIntegers(bytes: 1 | 2 | 4 | 8, fileLength: number): bigint[] {
  const max = (1n << BigInt(8 * bytes)) - 1n;
  const values = [
    0n,
    1n,
    2n,
    max,
    max >> 1n,
    (max >> 1n) + 1n,
    BigInt(fileLength),
    BigInt(fileLength + 1),
    BigInt(Math.max(0, fileLength - 1)),
    100000n,
    65535n,
    65536n,
    1n << 31n,
    (1n << 32n) - 1n,
    1n << 53n,
    (1n << 53n) + 1n,
    1n << 63n,
  ];
  return values.filter((value) => value <= max);
}

function writeInteger(bytes: Uint8Array, field: IntegerField, value: bigint): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (field.at + field.bytes > bytes.length) return;
  if (field.bytes === 1) view.setUint8(field.at, Number(value));
  else if (field.bytes === 2) view.setUint16(field.at, Number(value), field.littleEndian);
  else if (field.bytes === 4) view.setUint32(field.at, Number(value), field.littleEndian);
  else view.setBigUint64(field.at, value, field.littleEndian);
}

/** A random position in `bytes`, outside `spared` when the file has room beside it. */
function position(length: number, random: Random, spared?: Region): number {
  if (!spared || spared.at >= length) return random.int(0, length);
  const sparedLength = Math.min(spared.length, length - spared.at);
  const room = length - sparedLength;
  if (room === 0) return random.int(0, length);
  const at = random.int(0, room);
  return at < spared.at ? at : at + sparedLength;
}

/** Flips 1 to 8 random bits (outside `spared`, when given). */
function flipBits(bytes: Uint8Array, random: Random, spared?: Region): Mutated {
  const out = bytes.slice();
  if (out.length === 0) return { bytes: out, description: "bit flips in an empty file" };
  const count = random.int(1, 9);
  const positions: number[] = [];
  for (let i = 0; i < count; i++) {
    const at = position(out.length, random, spared);
    out[at] ^= 1 << random.int(0, 8);
    positions.push(at);
  }
  return { bytes: out, description: `bits flipped at bytes ${positions.join(", ")}` };
}

/** Sets 1 to 8 random bytes to 0x00, 0xff or a random value (outside `spared`, when given). */
function setBytes(bytes: Uint8Array, random: Random, spared?: Region): Mutated {
  const out = bytes.slice();
  if (out.length === 0) return { bytes: out, description: "bytes set in an empty file" };
  const count = random.int(1, 9);
  const changes: string[] = [];
  for (let i = 0; i < count; i++) {
    const at = position(out.length, random, spared);
    out[at] = random.pick([0x00, 0xff, random.int(0, 256)]);
    changes.push(`${at}=0x${out[at].toString(16)}`);
  }
  return { bytes: out, description: `bytes set: ${changes.join(", ")}` };
}

/** Cuts the file at a structural boundary, or one byte either side of it. */
export function truncateAtBoundary(
  bytes: Uint8Array,
  layout: BinaryLayout,
  random: Random,
): Mutated {
  const boundary = random.pick(layout.boundaries.length > 0 ? layout.boundaries : [0]);
  const length = Math.max(0, Math.min(bytes.length, boundary + random.pick([-1, 0, 0, 1])));
  return {
    bytes: bytes.slice(0, length),
    description: `cut to ${length} bytes (structural boundary ${boundary})`,
  };
}

/** Cuts the file at a random length. */
function truncateAtRandom(bytes: Uint8Array, random: Random): Mutated {
  const length = random.int(0, bytes.length);
  return { bytes: bytes.slice(0, length), description: `cut to ${length} bytes` };
}

/** Replaces the magic number with another format's, random bytes or zeros. */
function wrongMagic(bytes: Uint8Array, layout: BinaryLayout, random: Random): Mutated {
  const out = bytes.slice();
  const { at, length } = layout.magic;
  const choice = random.int(0, 3);
  const replacement = choice === 0
    ? random.pick(FOREIGN_MAGICS)
    : Array.from({ length }, () => (choice === 1 ? random.int(0, 256) : 0));
  // A foreign magic is written from the file start, where every format keeps its own.
  const start = choice === 0 ? 0 : at;
  replacement.forEach((value, i) => {
    if (start + i < out.length) out[start + i] = value;
  });
  const kind = ["another format's magic", "random magic bytes", "zeroed magic"][choice];
  return { bytes: out, description: kind };
}

/** Sets one or two integer fields (sizes, counts, offsets) to zero, huge or out-of-file values. */
function setIntegerFields(
  bytes: Uint8Array,
  layout: BinaryLayout,
  random: Random,
): Mutated {
  const out = bytes.slice();
  if (layout.fields.length === 0) return flipBits(bytes, random);
  const changes: string[] = [];
  const count = random.chance(0.3) ? 2 : 1;
  for (let i = 0; i < count; i++) {
    const field = random.pick(layout.fields);
    const candidates = interestingIntegers(field.bytes, bytes.length);
    const value = random.chance(0.85)
      ? random.pick(candidates)
      : BigInt(random.nextUint32()) & ((1n << BigInt(8 * field.bytes)) - 1n);
    writeInteger(out, field, value);
    changes.push(`${field.what} = ${value}`);
  }
  return { bytes: out, description: changes.join(", ") };
}

/**
 * Sets every field whose description contains one of `names` to the same huge value (both sides
 * of an image, every dimension of a shape), so that their product overflows.
 */
export function setDimensionsHuge(
  bytes: Uint8Array,
  layout: BinaryLayout,
  names: readonly string[],
  random: Random,
): Mutated {
  const out = bytes.slice();
  const value = random.pick([100000n, 65535n, 1n << 31n, (1n << 32n) - 1n, 0n]);
  const fields = layout.fields.filter((field) => names.some((name) => field.what.includes(name)));
  for (const field of fields) {
    const max = (1n << BigInt(8 * field.bytes)) - 1n;
    writeInteger(out, field, value > max ? max : value);
  }
  return { bytes: out, description: `${names.join(" and ")} all set to ${value}` };
}

/** Removes a slice, or repeats one in place. */
function spliceSlice(bytes: Uint8Array, random: Random): Mutated {
  if (bytes.length < 2) return truncateAtRandom(bytes, random);
  const start = random.int(0, bytes.length - 1);
  const length = random.int(1, Math.min(64, bytes.length - start) + 1);
  if (random.chance(0.5)) {
    const out = new Uint8Array(bytes.length - length);
    out.set(bytes.subarray(0, start));
    out.set(bytes.subarray(start + length), start);
    return { bytes: out, description: `${length} bytes removed at ${start}` };
  }
  const out = new Uint8Array(bytes.length + length);
  out.set(bytes.subarray(0, start + length));
  out.set(bytes.subarray(start), start + length);
  return { bytes: out, description: `${length} bytes at ${start} repeated` };
}

/** Any of the layout-free byte mutations; bit flips and bytes set spare `spared`, when given. */
export function mutateBytes(bytes: Uint8Array, random: Random, spared?: Region): Mutated {
  const mutation = random.int(0, 4);
  if (mutation === 0) return flipBits(bytes, random, spared);
  if (mutation === 1) return setBytes(bytes, random, spared);
  if (mutation === 2) return truncateAtRandom(bytes, random);
  return spliceSlice(bytes, random);
}

/**
 * A byte mutation aware of the file's layout: boundaries and integer fields are hit as often as
 * random bytes, since that is where parsers decide how much to read and allocate. Random bytes
 * spare the magic number, which has a mutation of its own: in a file of a hundred bytes they
 * would otherwise hit it so often that few cases got past the first check.
 */
export function mutateBinary(bytes: Uint8Array, layout: BinaryLayout, random: Random): Mutated {
  const mutation = random.int(0, 6);
  if (mutation === 0) return truncateAtBoundary(bytes, layout, random);
  if (mutation === 1) return wrongMagic(bytes, layout, random);
  if (mutation <= 3) return setIntegerFields(bytes, layout, random);
  return mutateBytes(bytes, random, layout.magic);
}

// ---------------------------------------------------------------------------------------------
// JSON

type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Where a value sits: the keys and indices from the root. */
type JsonPath = (string | number)[];

/** Every value of a document with its path (the root's path is empty). */
function jsonPaths(value: JsonValue, path: JsonPath = [], out: JsonPath[] = []): JsonPath[] {
  out.push(path);
  if (Array.isArray(value)) value.forEach((item, i) => jsonPaths(item, [...path, i], out));
  else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) jsonPaths(item, [...path, key], out);
  }
  return out;
}

function getAt(root: JsonValue, path: JsonPath): JsonValue {
  let value = root;
  for (const step of path) value = (value as Record<string | number, JsonValue>)[step];
  return value;
}

/** Text that JSON.stringify cannot produce (NaN, 1e999, deep nesting), spliced in afterwards. */
const RAW_MARKER = "\u0000raw:";

function rawText(text: string): string {
  return `${RAW_MARKER}${text}`;
}

/** Replaces the value at `path`; the root itself is replaced by returning the new value. */
function setAt(root: JsonValue, path: JsonPath, value: JsonValue | undefined): JsonValue {
  if (path.length === 0) return value ?? null;
  const parent = getAt(root, path.slice(0, -1)) as Record<string | number, JsonValue>;
  const key = path[path.length - 1];
  if (value === undefined) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key];
  } else parent[key] = value;
  return root;
}

/** Serialises a mutated document, splicing raw texts in place of their markers. */
function stringifyWithRaw(value: JsonValue): string {
  return JSON.stringify(value).replace(
    /"\\u0000raw:((?:[^"\\]|\\.)*)"/g,
    (_, raw: string) => JSON.parse(`"${raw}"`),
  );
}

const NUMBER_LIKE_TEXTS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0"];
const EXTREME_NUMBERS = [0, -1, 0.5, -0.5, 2 ** 31, 2 ** 32, 2 ** 53 + 2, 1e308, 100000, -100000];

/** A value of another type than `value`. */
function wrongType(value: JsonValue, random: Random): JsonValue {
  const options: JsonValue[] = [null, true, false, 0, -1, "", "x", [], {}, [null], { "": null }];
  const other = options.filter((option) => typeof option !== typeof value);
  return random.pick(other.length > 0 ? other : options);
}

function nested(depth: number, random: Random): string {
  return random.chance(0.5)
    ? "[".repeat(depth) + "]".repeat(depth)
    : '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
}

/**
 * Mutates a JSON document: one value removed, given a wrong type, a NaN- or Infinity-like number,
 * an extreme number, a huge array or string, or deep nesting; or a key added. Text that is not
 * JSON is mutated as bytes.
 */
export function mutateJson(bytes: Uint8Array, random: Random): Mutated {
  let root: JsonValue;
  try {
    root = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return mutateBytes(bytes, random);
  }
  try {
    return mutateJsonValue(root, random);
  } catch (error) {
    // A document nested deeper than the stack allows (an earlier mutation's deep nesting) cannot
    // be walked or serialised: mutate its text instead.
    if (error instanceof RangeError) return mutateBytes(bytes, random);
    throw error;
  }
}

function mutateJsonValue(root: JsonValue, random: Random): Mutated {
  const paths = jsonPaths(root);
  // Numbers (sizes, shapes, offsets) are where parsers allocate: pick them more often.
  const numbers = paths.filter((path) => typeof getAt(root, path) === "number");
  const path = numbers.length > 0 && random.chance(0.4) ? random.pick(numbers) : random.pick(paths);
  const where = path.length === 0 ? "the document" : `"${path.join(".")}"`;
  const value = getAt(root, path);
  let description: string;
  switch (random.int(0, 9)) {
    case 0:
      root = setAt(root, path, undefined);
      description = `${where} removed`;
      break;
    case 1: {
      const replacement = wrongType(value, random);
      root = setAt(root, path, replacement);
      description = `${where} = ${JSON.stringify(replacement)}`;
      break;
    }
    case 2: {
      const text = random.pick(NUMBER_LIKE_TEXTS);
      root = setAt(root, path, rawText(text));
      description = `${where} = ${text}`;
      break;
    }
    case 3: {
      const number = random.pick(EXTREME_NUMBERS);
      root = setAt(root, path, number);
      description = `${where} = ${number}`;
      break;
    }
    case 4: {
      const length = random.pick([1000, 100000]);
      // Copies of a short first element only: copies of a large one (itself perhaps a huge
      // array from an earlier mutation) would make a document of gigabytes.
      const first = Array.isArray(value) && value.length > 0 ? value[0] : 1;
      const item = (JSON.stringify(first)?.length ?? 0) <= 64 ? first : 1;
      root = setAt(root, path, Array.from({ length }, () => item));
      description = `${where} = an array of ${length} copies of ${JSON.stringify(item)}`;
      break;
    }
    case 5: {
      const depth = random.pick([100, 10000, 100000]);
      root = setAt(root, path, rawText(nested(depth, random)));
      description = `${where} = nesting ${depth} deep`;
      break;
    }
    case 6: {
      const containers = paths.filter((p) => {
        const v = getAt(root, p);
        return v !== null && typeof v === "object" && !Array.isArray(v);
      });
      const target = containers.length > 0 ? random.pick(containers) : [];
      const object = getAt(root, target);
      const key = random.pick(["__proto__", "constructor", "", "extra", "__metadata__"]);
      if (object !== null && typeof object === "object" && !Array.isArray(object)) {
        // defineProperty, so that "__proto__" becomes an own key as JSON.parse would make it.
        Object.defineProperty(object, key, {
          value: wrongType(null, random),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      description = `key "${key}" added to "${target.join(".")}"`;
      break;
    }
    case 7: {
      const length = random.pick([1 << 16, 1 << 20]);
      root = setAt(root, path, "x".repeat(length));
      description = `${where} = a string of ${length} characters`;
      break;
    }
    default: {
      // Every number of the document set to one extreme value: shapes whose product overflows.
      const number = random.pick([100000, 2 ** 31, 2 ** 32 - 1, -1, 0]);
      for (const numberPath of numbers) root = setAt(root, numberPath, number);
      description = `every number = ${number}`;
    }
  }
  return { bytes: new TextEncoder().encode(stringifyWithRaw(root)), description };
}

/** A JSON mutation most of the time, a byte mutation of the text otherwise. */
export function mutateJsonFile(bytes: Uint8Array, random: Random): Mutated {
  return random.chance(0.8) ? mutateJson(bytes, random) : mutateBytes(bytes, random);
}
