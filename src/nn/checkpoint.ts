/**
 * Checkpoints in the safetensors format (an 8-byte little-endian header length, a JSON header,
 * then raw little-endian data), so that Python tools read them as they are. Files are written to
 * a temporary name and renamed, so a crash never leaves a half-written checkpoint.
 */

import { InputError } from "../util/errors.ts";
import { jsonForMessage, writeFileAtomic } from "../util/fs.ts";
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
export class CheckpointError extends InputError {
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

/**
 * The longest JSON header read (the reference implementation's limit, 100 MB): a longer one is
 * refused before it is decoded.
 */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether `value` is a list of sizes (non-negative integers that a double holds exactly). */
function isSizeList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((n) => Number.isSafeInteger(n) && n >= 0);
}

/**
 * Decodes safetensors bytes; `path` only names the source in errors.
 *
 * Every size the header claims is checked against the file before anything is allocated: a
 * header claiming a 100,000×100,000 tensor is refused with the data section's size as the limit,
 * so the largest buffer made is twice the file (F16 widened to f32).
 *
 * @throws CheckpointError naming `path` for anything truncated, malformed or unsupported
 */
export function decodeSafetensors(bytes: Uint8Array, path = "<memory>"): SafetensorsContents {
  const fail = (detail: string): never => {
    throw new CheckpointError(path, detail);
  };
  if (bytes.length < 8) fail("too short to be a safetensors file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const declaredLength = view.getBigUint64(0, true);
  if (declaredLength > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) {
    fail(
      `not a safetensors file (header length ${declaredLength} is over the format's limit of ` +
        `${SAFETENSORS_MAX_HEADER_BYTES} bytes; foreign or corrupt)`,
    );
  }
  const headerLength = Number(declaredLength);
  if (headerLength < 2 || 8 + headerLength > bytes.length) {
    fail(
      `not a safetensors file (header length ${headerLength} does not fit the file's ${bytes.length} bytes; truncated or foreign)`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)),
    );
  } catch {
    fail("not a safetensors file (the header is not JSON)");
  }
  if (!isObject(header)) fail("not a safetensors file (the header is not a JSON object)");
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  // First every entry is checked, and their sizes added up; only then is anything allocated.
  const entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] =
    [];
  let metadata: Record<string, string> = {};
  let claimedBytes = 0;
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!isObject(entry) || Object.values(entry).some((value) => typeof value !== "string")) {
        fail(`"__metadata__" is ${jsonForMessage(entry)}; expected an object of strings`);
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    if (!isObject(entry)) {
      fail(`tensor "${name}" has a malformed header entry; expected {dtype, shape, data_offsets}`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string" || !Object.hasOwn(bytesPerElement, dtype)) {
      fail(
        `tensor "${name}" has unsupported dtype ${
          jsonForMessage(dtype)
        } (F32, F64, F16, BF16 are read)`,
      );
    }
    const width = bytesPerElement[dtype as string];
    if (!isSizeList(shape)) {
      fail(`tensor "${name}" has shape ${jsonForMessage(shape)}; expected a list of sizes`);
    }
    const size = (shape as number[]).reduce((a, b) => a * b, 1) * width;
    if (size > dataLength) {
      fail(
        `tensor "${name}" has shape ${jsonForMessage(shape)} of ${dtype}: ${size} bytes, more ` +
          `than the file's data section of ${dataLength} bytes holds (truncated or corrupt)`,
      );
    }
    if (!isSizeList(offsets) || offsets.length !== 2 || offsets[0] > offsets[1]) {
      fail(
        `tensor "${name}" has data_offsets ${jsonForMessage(offsets)}; expected [begin, end] ` +
          "with 0 ≤ begin ≤ end",
      );
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLength) {
      fail(
        `tensor "${name}" needs bytes [${begin}, ${end}) but the data section has ${dataLength} bytes (truncated?)`,
      );
    }
    if (end - begin !== size) {
      fail(
        `tensor "${name}" has shape ${jsonForMessage(shape)} of ${dtype} (${size} bytes) but ` +
          `data_offsets [${begin}, ${end}) hold ${end - begin} bytes`,
      );
    }
    // Tensors sharing their bytes (which the format forbids) would let a small file claim
    // gigabytes: together they must fit the data section too.
    claimedBytes += size;
    if (claimedBytes > dataLength) {
      fail(
        `its tensors claim more than the data section's ${dataLength} bytes in all (tensor ` +
          `"${name}" overlaps another's data); expected each tensor's bytes to be its own`,
      );
    }
    entries.push({ name, dtype: dtype as string, shape: shape as number[], begin, end });
  }
  const tensors = new Map<string, StoredTensor>();
  for (const { name, dtype, shape, begin, end } of entries) {
    const source = new DataView(bytes.buffer, bytes.byteOffset + dataStart + begin, end - begin);
    const data = new Float32Array((end - begin) / bytesPerElement[dtype]);
    for (let i = 0; i < data.length; i++) {
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
