/**
 * A small TFLite FlatBuffer writer and a tiny valid model written with it: the fuzzing harness
 * mutates that model (knowing where its tables, offsets and lengths are), and the TFLite reader's
 * tests build broken variants of it.
 *
 * @module
 */

import type { BinaryLayout, IntegerField } from "./mutators.ts";

/** A FlatBuffer field for {@link buildFlatBuffer}; absent fields keep their defaults. */
export type Field = { i8: number } | { i32: number } | { f32: number } | Child;
/** A field stored out of line: a vector, a string or a table. */
export type Child =
  | { ints: number[] }
  | { floats: number[] }
  | { longs: number[] }
  | { bytes: number[] }
  | { str: string }
  | { table: Fields }
  | { tables: Fields[] };
/** A table's fields in id order (`undefined`: absent). */
export type Fields = (Field | undefined)[];

/** TFLite `TensorType` codes used by the model. */
export const TensorType = { FLOAT32: 0, INT32: 2, UINT8: 3, INT8: 9 } as const;

/** The largest file the writer makes; the models here are a few hundred bytes. */
const CAPACITY = 1 << 16;

/**
 * Writes a FlatBuffer front to back (children after parents, so offsets point forward), with the
 * "TFL3" file identifier, and records where its tables, vectors, offsets and lengths are.
 */
export function buildFlatBufferWithLayout(
  root: Fields,
): { bytes: Uint8Array; layout: BinaryLayout } {
  const out = new Uint8Array(CAPACITY);
  const view = new DataView(out.buffer);
  const boundaries: number[] = [];
  const fields: IntegerField[] = [];
  const field = (at: number, bytes: 2 | 4, what: string) =>
    fields.push({ at, bytes, littleEndian: true, what: `${what} at ${at}` });
  let end = 8;
  const alloc = (size: number, align: number) => {
    end = Math.ceil(end / align) * align;
    boundaries.push(end);
    end += size;
    return end - size;
  };
  const link = (at: number, target: number) => {
    view.setUint32(at, target - at, true);
    field(at, 4, "offset");
  };
  const vector = (elementSize: number, length: number) => {
    // The elements (after the length word) aligned to their size.
    end = Math.ceil((end + 4) / Math.max(elementSize, 4)) * Math.max(elementSize, 4) - 4;
    const at = alloc(4 + elementSize * length, 4);
    view.setUint32(at, length, true);
    field(at, 4, "vector length");
    return at + 4;
  };
  const table = (tableFields: Fields): number => {
    const vtable = alloc(4 + 2 * tableFields.length, 2);
    const start = alloc(4 + 4 * tableFields.length, 4); // each field in its own 4-byte slot
    view.setUint16(vtable, 4 + 2 * tableFields.length, true);
    view.setUint16(vtable + 2, 4 + 4 * tableFields.length, true);
    field(vtable, 2, "vtable size");
    field(vtable + 2, 2, "table size");
    view.setInt32(start, start - vtable, true);
    field(start, 4, "vtable offset");
    tableFields.forEach((f, id) => {
      if (!f) return;
      const at = start + 4 + 4 * id;
      view.setUint16(vtable + 4 + 2 * id, at - start, true);
      field(vtable + 4 + 2 * id, 2, "field slot");
      if ("i8" in f) view.setInt8(at, f.i8);
      else if ("i32" in f) {
        view.setInt32(at, f.i32, true);
        field(at, 4, "int field");
      } else if ("f32" in f) view.setFloat32(at, f.f32, true);
      else link(at, child(f));
    });
    return start;
  };
  const child = (f: Child): number => {
    if ("table" in f) return table(f.table);
    if ("ints" in f || "floats" in f) {
      const values = "ints" in f ? f.ints : f.floats;
      const at = vector(4, values.length);
      values.forEach((v, i) => {
        if ("ints" in f) {
          view.setInt32(at + 4 * i, v, true);
          field(at + 4 * i, 4, "int vector element");
        } else view.setFloat32(at + 4 * i, v, true);
      });
      return at - 4;
    }
    if ("longs" in f) {
      const at = vector(8, f.longs.length);
      f.longs.forEach((v, i) => view.setBigInt64(at + 8 * i, BigInt(v), true));
      return at - 4;
    }
    if ("tables" in f) {
      const at = vector(4, f.tables.length);
      f.tables.forEach((t, i) => link(at + 4 * i, table(t)));
      return at - 4;
    }
    const data = "str" in f ? [...new TextEncoder().encode(f.str), 0] : f.bytes;
    const at = vector(1, data.length - ("str" in f ? 1 : 0));
    out.set(data, at);
    end = Math.max(end, at + data.length);
    return at - 4;
  };
  out.set(new TextEncoder().encode("TFL3"), 4);
  link(0, table(root));
  boundaries.push(end);
  return { bytes: out.slice(0, end), layout: { boundaries, fields, magic: { at: 4, length: 4 } } };
}

/** Writes a FlatBuffer (see {@link buildFlatBufferWithLayout}). */
export function buildFlatBuffer(root: Fields): Uint8Array {
  return buildFlatBufferWithLayout(root).bytes;
}

/** A `Tensor` table: shape, type, buffer index, name and optional quantization. */
export function tensorTable(
  name: string,
  shape: number[],
  type: number,
  buffer = 0,
  q?: { scale: number[]; zeroPoint: number[]; dimension?: number },
): Fields {
  const quantization: Fields | undefined = q && [
    undefined,
    undefined,
    { floats: q.scale },
    { longs: q.zeroPoint },
    undefined,
    undefined,
    { i32: q.dimension ?? 0 },
  ];
  return [
    { ints: shape },
    { i8: type },
    { i32: buffer },
    { str: name },
    quantization && { table: quantization },
  ];
}

/** An `Operator` table: operator code index, input and output tensors, options. */
export function operatorTable(
  opcode: number,
  inputs: number[],
  outputs: number[],
  options?: [number, Fields],
): Fields {
  return [
    { i32: opcode },
    { ints: inputs },
    { ints: outputs },
    options && { i8: options[0] },
    options && { table: options[1] },
  ];
}

/** The parts of {@link smallTfliteModel} that a caller may change before they are written. */
export interface SmallModelParts {
  codes: Fields[];
  operators: Fields[];
  tensors: Fields[];
  /** The buffers' bytes (buffer 0, empty, is for tensors computed at run time). */
  buffers: number[][];
}

/**
 * The root table of a small float model with an int8 input: DEQUANTIZE → CONV_2D (per-channel
 * int8 weights, stride 4) → QUANTIZE → DEQUANTIZE → AVERAGE_POOL_2D → RESHAPE → SOFTMAX.
 * `change` edits the parts before they are written, to make broken variants.
 */
function smallModelRoot(change: (parts: SmallModelParts) => void): Fields {
  const { FLOAT32, INT32, INT8 } = TensorType;
  const int8 = (values: number[]) => values.map((v) => v & 0xff);
  const int32 = (values: number[]) => [...new Uint8Array(Int32Array.from(values).buffer)];
  const parts: SmallModelParts = {
    codes: [
      [{ i8: 6 }], // DEQUANTIZE
      [undefined, undefined, undefined, { i32: 3 }], // CONV_2D, in the int32 field only
      [{ i8: 114 }, undefined, undefined, { i32: 114 }], // QUANTIZE
      [{ i8: 1 }], // AVERAGE_POOL_2D
      [{ i8: 22 }], // RESHAPE
      [{ i8: 25 }], // SOFTMAX
    ],
    tensors: [
      tensorTable("image", [1, 16, 16, 3], INT8, 0, { scale: [0.5], zeroPoint: [-1] }),
      tensorTable("image_float", [1, 16, 16, 3], FLOAT32),
      tensorTable("w", [2, 1, 1, 3], INT8, 1, { scale: [0.5, 0.25], zeroPoint: [0, 1] }),
      tensorTable("b", [2], INT32, 2, { scale: [0.1, 0.2], zeroPoint: [0, 0] }),
      tensorTable("conv", [1, 4, 4, 2], FLOAT32),
      tensorTable("conv_q", [1, 4, 4, 2], INT8, 0, { scale: [0.1], zeroPoint: [0] }),
      tensorTable("conv_dq", [1, 4, 4, 2], FLOAT32),
      tensorTable("pool", [1, 1, 1, 2], FLOAT32),
      tensorTable("flat", [1, 2], FLOAT32),
      tensorTable("probs", [1, 2], FLOAT32),
    ],
    operators: [
      operatorTable(0, [0], [1]),
      // Conv2DOptions: VALID, stride 4×4, RELU.
      operatorTable(1, [1, 2, 3], [4], [1, [{ i8: 1 }, { i32: 4 }, { i32: 4 }, { i8: 1 }]]),
      operatorTable(2, [4], [5]),
      operatorTable(0, [5], [6]),
      // Pool2DOptions: VALID, stride 1, a 4×4 window.
      operatorTable(3, [6], [7], [5, [{ i8: 1 }, { i32: 1 }, { i32: 1 }, { i32: 4 }, { i32: 4 }]]),
      operatorTable(4, [7], [8]),
      operatorTable(5, [8], [9], [9, [{ f32: 1 }]]),
    ],
    buffers: [[], int8([1, 2, 3, -4, 5, 6]), int32([10, -20])],
  };
  change(parts);
  return [
    { i32: 3 },
    { tables: parts.codes },
    {
      tables: [[
        { tables: parts.tensors },
        { ints: [0] },
        { ints: [9] },
        { tables: parts.operators },
      ]],
    },
    undefined,
    { tables: parts.buffers.map((bytes) => (bytes.length > 0 ? [{ bytes }] : [])) },
  ];
}

/** The small model's file (see {@link smallModelRoot}), optionally changed first. */
export function smallTfliteModel(change: (parts: SmallModelParts) => void = () => {}): Uint8Array {
  return buildFlatBuffer(smallModelRoot(change));
}

/** The small model's file and its layout, for mutation. */
export function smallTfliteModelWithLayout(): { bytes: Uint8Array; layout: BinaryLayout } {
  return buildFlatBufferWithLayout(smallModelRoot(() => {}));
}
