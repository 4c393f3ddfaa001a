/**
 * Checkpoints in the safetensors format (an 8-byte little-endian header length, a JSON header,
 * then raw little-endian data), so that Python tools read them as they are. Files are written to
 * a temporary name and renamed, so a crash never leaves a half-written checkpoint.
 */

import { writeFileAtomic } from "../util/fs.ts";
import { type Tensor, tensor, toArrays } from "../tensor/tensor.ts";
import type { Module } from "./module.ts";

/** A tensor read from a checkpoint, on the CPU. */
export interface StoredTensor {
  /** Dimensions. */
  shape: number[];
  /** Values converted to f32. */
  data: Float32Array;
}

/** The contents of a safetensors file. */
export interface SafetensorsContents {
  /** Tensors by name. */
  tensors: Map<string, StoredTensor>;
  /** The free-form string metadata of the header. */
  metadata: Record<string, string>;
}

/** Thrown for files that are not valid safetensors; the message names the file. */
export class CheckpointError extends Error {
  /** An error about `path`. */
  constructor(path: string, detail: string) {
    super(`${path}: ${detail}`);
    this.name = "CheckpointError";
  }
}

/** Encodes CPU tensors as safetensors bytes. */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, StoredTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = {
      dtype: "F32",
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  json += " ".repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let position = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), position);
    position += t.data.byteLength;
  }
  return out;
}

const bytesPerElement: Record<string, number> = { F32: 4, F64: 8, F16: 2, BF16: 2 };

function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** Decodes safetensors bytes; `path` only names the source in errors. */
export function decodeSafetensors(bytes: Uint8Array, path = "<memory>"): SafetensorsContents {
  if (bytes.length < 8) throw new CheckpointError(path, "too short to be a safetensors file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength < 2 || 8 + headerLength > bytes.length) {
    throw new CheckpointError(
      path,
      `not a safetensors file (header length ${headerLength} does not fit the file's ${bytes.length} bytes; truncated or foreign)`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)),
    );
  } catch {
    throw new CheckpointError(path, "not a safetensors file (the header is not JSON)");
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) {
    throw new CheckpointError(path, "not a safetensors file (the header is not a JSON object)");
  }
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  const tensors = new Map<string, StoredTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = entry as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    const width = bytesPerElement[dtype];
    if (!width) {
      throw new CheckpointError(
        path,
        `tensor "${name}" has unsupported dtype ${dtype} (F32, F64, F16, BF16 are read)`,
      );
    }
    if (!Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
      throw new CheckpointError(path, `tensor "${name}" has a malformed header entry`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    const [begin, end] = offsets;
    if (end - begin !== count * width || begin < 0 || end > dataLength) {
      throw new CheckpointError(
        path,
        `tensor "${name}" needs bytes [${begin}, ${end}) but the data section has ${dataLength} bytes (truncated?)`,
      );
    }
    const source = new DataView(bytes.buffer, bytes.byteOffset + dataStart + begin, end - begin);
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      if (dtype === "F32") data[i] = source.getFloat32(i * 4, true);
      else if (dtype === "F64") data[i] = source.getFloat64(i * 8, true);
      else if (dtype === "F16") data[i] = halfToFloat(source.getUint16(i * 2, true));
      else {data[i] =
          new Float32Array(new Uint32Array([source.getUint16(i * 2, true) << 16]).buffer)[0];}
    }
    tensors.set(name, { shape, data });
  }
  return { tensors, metadata };
}

/** Saves GPU tensors (one readback for all of them) as a safetensors file, atomically. */
export async function saveSafetensors(
  path: string,
  tensors: ReadonlyMap<string, Tensor>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const names = [...tensors.keys()];
  const arrays = await toArrays([...tensors.values()]);
  const stored = new Map<string, StoredTensor>();
  names.forEach((name, i) =>
    stored.set(name, { shape: [...tensors.get(name)!.shape], data: arrays[i] })
  );
  await writeFileAtomic(path, encodeSafetensors(stored, metadata));
}

/** Reads a safetensors file. */
export async function loadSafetensors(path: string): Promise<SafetensorsContents> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    throw new CheckpointError(path, `cannot read checkpoint: ${(error as Error).message}`);
  }
  return decodeSafetensors(bytes, path);
}

/** Saves a module's parameters and buffers. */
export function saveModule(
  module: Module,
  path: string,
  metadata: Record<string, string> = {},
): Promise<void> {
  return saveSafetensors(path, module.stateDict(), metadata);
}

/**
 * Copies stored tensors into GPU tensors of the same names and shapes. Every target must be
 * present with its shape; the error lists what is missing or different, and nothing is copied then.
 */
export function loadTensorsInto(
  targets: ReadonlyMap<string, Tensor>,
  stored: ReadonlyMap<string, StoredTensor>,
  path: string,
): void {
  const problems: string[] = [];
  for (const [name, target] of targets) {
    const source = stored.get(name);
    if (!source) problems.push(`missing "${name}"`);
    else if (source.shape.join() !== target.shape.join()) {
      problems.push(`"${name}" is [${source.shape}], the model expects [${target.shape}]`);
    }
  }
  if (problems.length > 0) {
    throw new CheckpointError(path, `does not fit this model: ${problems.slice(0, 5).join("; ")}`);
  }
  for (const [name, target] of targets) {
    const source = tensor(stored.get(name)!.data, target.shape);
    target.gpu.recorder.copy(source.buffer, 0, target.buffer, 0, target.bytes);
    source.dispose();
  }
}

/**
 * Loads a checkpoint into a module of the same architecture. Every tensor must be present with
 * the same shape; the error lists what is missing or different.
 */
export async function loadModule(module: Module, path: string): Promise<Record<string, string>> {
  const { tensors, metadata } = await loadSafetensors(path);
  loadTensorsInto(module.stateDict(), tensors, path);
  return metadata;
}
