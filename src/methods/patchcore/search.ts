/**
 * PatchCore's two heavy steps on the GPU (shaders/patchcore.wgsl): the greedy k-center coreset
 * that thins the training patches into the memory bank, and the nearest-neighbour search of test
 * patches in that bank.
 *
 * Both hold more data than one storage binding allows (160,000 × 1024 features are 650 MB; on
 * lavapipe a binding holds 128 MiB), so rows are uploaded and kept in chunks that each fit one
 * binding (or, for the coreset's points, one texture).
 */

import { Random } from "../../data/random.ts";
import { currentGpu, type Gpu } from "../../gpu/device.ts";
import { grid2d } from "../../gpu/kernel.ts";
import { uniformStruct, wgslConstants } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import {
  type OperandTexture,
  operandTextureDeclaration,
  operandTextureWidth,
} from "../../gpu/textures.ts";
import { bind, elementGrid, run } from "../../tensor/ops/launch.ts";
import * as op from "../../tensor/ops.ts";
import { empty, keep, noGrad, type Tensor, tensor, tidy } from "../../tensor/tensor.ts";

/**
 * Writes rows (`rows` rows of `columns` floats, row-major) into a points texture from texel
 * `texel_offset`: `texels` texels, the rows padded to `width` vec4s and whole blocks.
 */
const PointStoreParams = uniformStruct("PointStoreParams", {
  rows: "u32",
  columns: "u32",
  width: "u32",
  texel_offset: "u32",
  texels: "u32",
});

/**
 * One chunk of the coreset's points: `rows` rows from `row_offset`, `width` vec4s each, updated
 * by `threads` threads whose partials start at `partial_offset`; `partials` in all and `count`
 * rows to select.
 */
const CoresetParams = uniformStruct("CoresetParams", {
  rows: "u32",
  row_offset: "u32",
  width: "u32",
  threads: "u32",
  partial_offset: "u32",
  partials: "u32",
  count: "u32",
});

/**
 * A block of `queries` queries (from `query_offset`) against a bank chunk of `columns` rows (from
 * `column_offset`), merged with earlier chunks unless `merge` is 0; queries are `dim` long.
 */
const NearestParams = uniformStruct("NearestParams", {
  queries: "u32",
  query_offset: "u32",
  columns: "u32",
  column_offset: "u32",
  merge: "u32",
  dim: "u32",
});

/**
 * The layout of the coreset's points (see shaders/patchcore.wgsl): blocks of `block` rows, so
 * that the 8 lanes of a lavapipe SIMD batch read 8 neighbouring texels, and `rowsPerThread` rows
 * per thread of the update (more would leave too few threads for a large GPU).
 */
const CoresetLayout = { block: 8, rowsPerThread: 16, textureWidth: operandTextureWidth } as const;

declareShader(
  "patchcore",
  PointStoreParams,
  CoresetParams,
  NearestParams,
  wgslConstants(CoresetLayout),
  operandTextureDeclaration(),
);

/** Coreset iterations recorded per submit: enough that recording is a small part of the time. */
const ITERATIONS_PER_SUBMIT = 256;
/** The largest f32: the distance of a row to an empty selection. */
const FLOAT_MAX = 3.4028234663852886e38;

/** Options of {@link greedyCoreset}. */
export interface CoresetOptions {
  /**
   * Dimension of the random Gaussian projection that distances are computed in (default 128, as
   * PatchCore does). 0, or at least `dim`, compares the rows themselves: the exact greedy
   * selection.
   */
  projectionDim?: number;
  /** Seed of the first row and of the projection (default 0). */
  seed?: number;
  /** Called between submits with the rows selected so far and `count`. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the selection before its next submit (throws the signal's reason). */
  signal?: AbortSignal;
  /**
   * Largest upload and points chunk in bytes (default: the device's limits). Only tests set it,
   * to split small inputs into many chunks.
   */
  maxChunkBytes?: number;
}

/**
 * Greedy k-center selection of `count` rows of `features` (n × `dim`, row-major), as PatchCore
 * thins its memory bank: from a seeded random row, each step adds the row farthest from the rows
 * selected so far (squared Euclidean distance in the projected space; ties go to the smaller
 * row). A selected row is never picked again, even among duplicates. Everything runs on the GPU;
 * the indices are read back once, at the end.
 *
 * @returns the selected rows in the order they were picked
 * @throws Error naming what was expected for a bad shape, `count` or option, or a non-finite value
 */
export async function greedyCoreset(
  features: Float32Array,
  dim: number,
  count: number,
  options: CoresetOptions = {},
): Promise<Int32Array> {
  const n = checkRows(features, dim, "greedyCoreset");
  if (!Number.isInteger(count) || count < 1 || count > n) {
    throw new Error(
      `greedyCoreset: count must be an integer from 1 to ${n} (the rows), got ${count}`,
    );
  }
  const projectionDim = options.projectionDim ?? 128;
  if (!Number.isInteger(projectionDim) || projectionDim < 0) {
    throw new Error(
      `greedyCoreset: projectionDim must be a non-negative integer, got ${projectionDim}`,
    );
  }
  const gpu = currentGpu();
  const random = new Random(options.seed ?? 0);
  const start = random.int(0, n);
  const project = projectionDim > 0 && projectionDim < dim;
  const chunks = pointChunks(gpu, features, dim, project ? projectionDim : 0, random, options);
  const { block, rowsPerThread } = CoresetLayout;
  const threads = (chunk: PointChunk) => Math.ceil(chunk.rows / (block * rowsPerThread)) * block;
  const partials = chunks.reduce((sum, chunk) => sum + threads(chunk), 0);
  const width = chunks[0].width;
  const selected = empty([count]);
  const state = empty([2]);
  const centre = empty([4 * width]);
  const minDistance = op.fill([n], FLOAT_MAX);
  const partialValues = empty([2 * partials]);
  try {
    const first = new Uint32Array(count);
    first[0] = start;
    gpu.recorder.write(selected.buffer, 0, first);
    gpu.recorder.write(state.buffer, 0, new Uint32Array([1, start]));
    let partialOffset = 0;
    const steps = chunks.map((chunk) => {
      const params = CoresetParams.pack({
        rows: chunk.rows,
        row_offset: chunk.first,
        width,
        threads: threads(chunk),
        partial_offset: partialOffset,
        partials,
        count,
      });
      partialOffset += threads(chunk);
      return { chunk, params };
    });
    const selectParams = CoresetParams.pack({
      rows: 0,
      row_offset: 0,
      width,
      threads: 0,
      partial_offset: 0,
      partials,
      count,
    });
    for (let done = 1; done < count;) {
      options.signal?.throwIfAborted();
      const batch = Math.min(ITERATIONS_PER_SUBMIT, count - done);
      for (let i = 0; i < batch; i++) {
        // Every chunk gathers before any updates: the centre may lie in a later chunk.
        for (const { chunk, params } of steps) {
          run(selected, {
            shader: "patchcore",
            entryPoint: "gather",
            params,
            buffers: [{ view: chunk.texture.view }, bind(state), bind(centre)],
            workgroups: [1],
          });
        }
        for (const { chunk, params } of steps) {
          run(selected, {
            shader: "patchcore",
            entryPoint: "update",
            params,
            buffers: [
              { view: chunk.texture.view },
              bind(state),
              bind(centre),
              bind(minDistance),
              bind(partialValues),
            ],
            workgroups: elementGrid(threads(chunk)),
          });
        }
        run(selected, {
          shader: "patchcore",
          entryPoint: "select_next",
          params: selectParams,
          buffers: [bind(partialValues), bind(state), bind(selected)],
          workgroups: [1],
        });
      }
      done += batch;
      // Waiting here lets progress and cancellation follow the GPU, at one round trip per batch.
      await gpu.recorder.sync();
      options.onProgress?.(done, count);
    }
    const bytes = await gpu.recorder.read(selected.buffer, 0, count * 4);
    return new Int32Array(bytes);
  } finally {
    for (const chunk of chunks) gpu.textures.release(chunk.texture);
    for (const t of [selected, state, centre, minDistance, partialValues]) t.dispose();
  }
}

/** Rows `first` … `first + rows − 1` of the coreset's points, `width` vec4s each, in a texture. */
interface PointChunk {
  first: number;
  rows: number;
  width: number;
  texture: OperandTexture;
}

/**
 * The rows, or with `projectionDim` > 0 the rows times a Gaussian [dim, projectionDim] matrix
 * with N(0, 1/projectionDim) entries (Johnson–Lindenstrauss, computed on the GPU), in points
 * textures. Rows are uploaded a storage binding at a time, whole blocks per upload and whole
 * uploads per chunk.
 */
function pointChunks(
  gpu: Gpu,
  features: Float32Array,
  dim: number,
  projectionDim: number,
  random: Random,
  options: CoresetOptions,
): PointChunk[] {
  const n = features.length / dim;
  const { block } = CoresetLayout;
  const width = Math.ceil((projectionDim || dim) / 4);
  const bindingBytes = chunkBytes(gpu.maxBindingBytes, options.maxChunkBytes, "greedyCoreset");
  const textureBytes = chunkBytes(
    gpu.textures.maxTexels * 16,
    options.maxChunkBytes,
    "greedyCoreset",
  );
  // An upload holds the rows and, when projecting, their projections.
  const uploadRowBytes = 4 * Math.max(dim, projectionDim ? 4 * width : 0);
  const perUpload = rowsPerChunk(bindingBytes, uploadRowBytes * block, "greedyCoreset") * block;
  const perChunk = rowsPerChunk(textureBytes, 16 * width * block, "greedyCoreset") * block;
  const uploadRows = Math.min(perUpload, perChunk);
  const chunkRows = Math.floor(perChunk / uploadRows) * uploadRows;
  const projection = projectionDim ? gaussianMatrix(dim, 4 * width, projectionDim, random) : null;
  const chunks: PointChunk[] = [];
  try {
    noGrad(() => {
      for (let first = 0; first < n; first += chunkRows) {
        const rows = Math.min(chunkRows, n - first);
        const texture = gpu.textures.acquire(Math.ceil(rows / block) * block * width);
        chunks.push({ first, rows, width, texture });
        for (let offset = 0; offset < rows; offset += uploadRows) {
          const count = Math.min(uploadRows, rows - offset);
          const from = (first + offset) * dim;
          tidy(() => {
            const upload = tensor(features.subarray(from, from + count * dim), [count, dim]);
            const source = projection ? op.matmul(upload, projection) : upload;
            const texels = Math.ceil(count / block) * block * width;
            run(source, {
              shader: "patchcore",
              entryPoint: "store",
              params: PointStoreParams.pack({
                rows: count,
                columns: source.shape[1],
                width,
                texel_offset: offset * width,
                texels,
              }),
              buffers: [bind(source), { view: texture.view }],
              workgroups: elementGrid(texels),
            });
          });
        }
      }
    });
  } catch (error) {
    for (const chunk of chunks) gpu.textures.release(chunk.texture);
    throw error;
  } finally {
    projection?.dispose();
  }
  return chunks;
}

/**
 * A [dim, columns] matrix of N(0, 1/projectionDim) numbers in its first projectionDim columns and
 * zeros after them, so that projected rows come out padded to `columns`.
 */
function gaussianMatrix(
  dim: number,
  columns: number,
  projectionDim: number,
  random: Random,
): Tensor {
  const matrix = new Float32Array(dim * columns);
  const scale = 1 / Math.sqrt(projectionDim);
  for (let k = 0; k < dim; k++) {
    for (let j = 0; j < projectionDim; j++) matrix[k * columns + j] = random.normal() * scale;
  }
  return tensor(matrix, [dim, columns]);
}

/** Options of {@link MemoryBank}. */
export interface MemoryBankOptions {
  /** Like {@link CoresetOptions.maxChunkBytes}: for tests only. */
  maxChunkBytes?: number;
}

/** One chunk of the bank: rows `first` … `first + rows − 1`, transposed, and their squared norms. */
interface BankChunk {
  first: number;
  rows: number;
  /** [dim, rows], so that queries · transposed is a plain matmul. */
  transposed: Tensor;
  norms: Tensor;
}

/** Results of {@link MemoryBank.nearest}, on the GPU. */
export interface NearestResult {
  /** [q]: Euclidean distance of each query to its nearest bank row. */
  distances: Tensor;
  /** [q]: that row's index, as an f32 holding the exact integer (banks have < 2^24 rows). */
  indices: Tensor;
}

/** Nearest rows of one bank row, from {@link MemoryBank.nearestOfRow}. */
export interface RowNeighbours {
  /** Bank rows, nearest first (the row itself, at distance 0, comes first unless duplicated). */
  indices: Int32Array;
  /** Their Euclidean distances to the row. */
  distances: Float32Array;
}

/**
 * PatchCore's memory bank on the GPU: rows × `dim` features, stored transposed ([dim, rows]) in
 * chunks that fit one storage binding, with each row's squared norm, for nearest-neighbour search
 * by |q|² + |m|² − 2 q·m with the engine's matmul.
 */
export class MemoryBank {
  /** Number of rows. */
  readonly rows: number;
  private chunks: BankChunk[];
  /** Queries per product, so that a block of scores fits one binding. */
  private readonly queryBlock: number;

  /**
   * Uploads `rows` (rows × `dim`, row-major). The bank keeps this array (no copy) for
   * {@link nearestOfRow}, so the caller must not change it afterwards.
   *
   * @throws Error for a bad shape, a non-finite value, or 2^24 rows or more
   */
  constructor(
    private readonly data: Float32Array,
    readonly dim: number,
    options: MemoryBankOptions = {},
  ) {
    this.rows = checkRows(data, dim, "MemoryBank");
    const maxRows = 2 ** 24 - 1;
    if (this.rows > maxRows) {
      throw new Error(
        `MemoryBank: at most ${maxRows} rows (indices are exact f32 integers), got ${this.rows}`,
      );
    }
    const limit = chunkBytes(currentGpu().maxBindingBytes, options.maxChunkBytes, "MemoryBank");
    const perChunk = rowsPerChunk(limit, 4 * dim, "MemoryBank");
    this.queryBlock = Math.max(1, Math.floor(limit / (4 * Math.min(perChunk, this.rows))));
    const chunks: BankChunk[] = [];
    try {
      for (let first = 0; first < this.rows; first += perChunk) {
        const rows = Math.min(perChunk, this.rows - first);
        const part = data.subarray(first * dim, (first + rows) * dim);
        const norms = new Float32Array(rows);
        for (let r = 0; r < rows; r++) {
          let sum = 0;
          for (let k = r * dim; k < (r + 1) * dim; k++) sum += part[k] * part[k];
          norms[r] = sum;
        }
        chunks.push(noGrad(() =>
          tidy(() => {
            const transposed = keep(op.transpose(tensor(part, [rows, dim])));
            return { first, rows, transposed, norms: keep(tensor(norms)) };
          })
        ));
      }
    } catch (error) {
      for (const chunk of chunks) [chunk.transposed, chunk.norms].forEach((t) => t.dispose());
      throw error;
    }
    this.chunks = chunks;
  }

  /**
   * Each query's nearest bank row and its Euclidean distance (squared distances that rounding
   * makes negative count as 0; ties go to the smaller row). Recorded on the GPU; nothing is read
   * back.
   *
   * @param queries [q, dim]
   */
  nearest(queries: Tensor): NearestResult {
    const chunks = this.liveChunks();
    const [q, dim] = queries.shape;
    if (queries.shape.length !== 2 || dim !== this.dim || q < 1) {
      throw new Error(
        `MemoryBank.nearest expects queries of shape [q ≥ 1, ${this.dim}], got [${queries.shape}]`,
      );
    }
    return noGrad(() =>
      tidy(() => {
        const bestValue = empty([q]);
        // u32 rows (the shader binds it as array<u32>), never read as f32 values.
        const bestRow = empty([q]);
        for (let queryOffset = 0; queryOffset < q; queryOffset += this.queryBlock) {
          const count = Math.min(this.queryBlock, q - queryOffset);
          const block = count === q ? queries : op.slice(queries, [queryOffset, 0], [count, dim]);
          chunks.forEach((chunk, c) => {
            const scores = op.matmul(block, chunk.transposed);
            run(scores, {
              shader: "patchcore",
              entryPoint: "scan",
              params: NearestParams.pack({
                queries: count,
                query_offset: queryOffset,
                columns: chunk.rows,
                column_offset: chunk.first,
                merge: c === 0 ? 0 : 1,
                dim,
              }),
              buffers: [bind(scores), bind(chunk.norms), bind(bestValue), bind(bestRow)],
              workgroups: grid2d(count),
            });
            // Freed now so that the next chunk's scores reuse its buffer.
            scores.dispose();
          });
          if (block !== queries) block.dispose();
        }
        const distances = empty([q]);
        const indices = empty([q]);
        run(queries, {
          shader: "patchcore",
          entryPoint: "finish",
          params: NearestParams.pack({
            queries: q,
            query_offset: 0,
            columns: 0,
            column_offset: 0,
            merge: 0,
            dim,
          }),
          buffers: [bind(queries), bind(bestValue), bind(bestRow), bind(distances), bind(indices)],
          workgroups: elementGrid(q),
        });
        return { distances, indices };
      })
    );
  }

  /**
   * The `k` bank rows nearest to bank row `rowIndex` (at most all rows), nearest first, ties to the
   * smaller row: PatchCore's support set for reweighting the image score. Computed on the CPU in
   * float64 from the kept rows; one row against the bank is too little work to pay a readback.
   */
  nearestOfRow(rowIndex: number, k: number): Promise<RowNeighbours> {
    this.liveChunks();
    const last = this.rows - 1;
    if (!Number.isInteger(rowIndex) || rowIndex < 0 || rowIndex > last) {
      throw new Error(
        `MemoryBank.nearestOfRow: rowIndex must be an integer from 0 to ${last}, got ${rowIndex}`,
      );
    }
    if (!Number.isInteger(k) || k < 1) {
      throw new Error(`MemoryBank.nearestOfRow: k must be a positive integer, got ${k}`);
    }
    const { data, dim } = this;
    const base = rowIndex * dim;
    const squared = new Float64Array(this.rows);
    for (let r = 0; r < this.rows; r++) {
      let sum = 0;
      for (let j = 0; j < dim; j++) sum += (data[r * dim + j] - data[base + j]) ** 2;
      squared[r] = sum;
    }
    const order = Array.from({ length: this.rows }, (_, r) => r);
    order.sort((a, b) => squared[a] - squared[b] || a - b);
    const nearest = order.slice(0, Math.min(k, this.rows));
    return Promise.resolve({
      indices: Int32Array.from(nearest),
      distances: Float32Array.from(nearest, (r) => Math.sqrt(squared[r])),
    });
  }

  /** Frees the GPU memory; the bank cannot be used afterwards. Safe to call twice. */
  dispose(): void {
    for (const chunk of this.chunks) [chunk.transposed, chunk.norms].forEach((t) => t.dispose());
    this.chunks = [];
  }

  private liveChunks(): BankChunk[] {
    if (this.chunks.length === 0) throw new Error("MemoryBank: used after dispose()");
    return this.chunks;
  }
}

/** Rows of a row-major matrix with `dim` columns; throws, naming `what`, unless it is one. */
function checkRows(data: Float32Array, dim: number, what: string): number {
  if (!(data instanceof Float32Array)) {
    throw new Error(`${what} expects features as a Float32Array`);
  }
  if (!Number.isInteger(dim) || dim < 1) {
    throw new Error(`${what}: dim must be a positive integer, got ${dim}`);
  }
  if (data.length === 0 || data.length % dim !== 0) {
    throw new Error(
      `${what} expects rows × ${dim} values (at least one row), got ${data.length} values`,
    );
  }
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new Error(
        `${what}: the value at row ${Math.floor(i / dim)}, column ${i % dim} is ${data[i]}; ` +
          `features must be finite`,
      );
    }
  }
  return data.length / dim;
}

/** The chunk size in bytes: the device's `limit`, or less when a test asks. */
function chunkBytes(limit: number, requested: number | undefined, what: string): number {
  if (requested === undefined) return limit;
  if (!Number.isInteger(requested) || requested < 16) {
    throw new Error(`${what}: maxChunkBytes must be an integer of at least 16, got ${requested}`);
  }
  return Math.min(requested, limit);
}

/** Rows of `rowBytes` bytes per chunk of at most `limit` bytes (at least one). */
function rowsPerChunk(limit: number, rowBytes: number, what: string): number {
  const rows = Math.floor(limit / rowBytes);
  if (rows < 1) {
    throw new Error(
      `${what}: one row needs ${rowBytes} bytes, more than a chunk of ${limit} bytes may hold`,
    );
  }
  return rows;
}
