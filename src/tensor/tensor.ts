/**
 * The tensor and its tape, in the spirit of micrograd: every op makes an output that remembers its
 * inputs and a closure that pushes the output's gradient back to them. `backward()` sorts the
 * graph and runs the closures in reverse. Data lives in pooled GPU buffers; nothing is read back
 * unless `toArray()` asks for it.
 *
 * JavaScript has no destructors, so GPU memory is freed by scopes: {@link tidy} disposes every
 * tensor made inside it except those it returns or {@link keep}s.
 */

import { currentGpu, getGpu, type Gpu } from "../gpu/device.ts";

/** A tensor's shape: sizes of its dimensions, outermost first. */
export type Shape = readonly number[];

/** Thrown when a tensor would not fit in one storage binding of this device. */
export class TensorTooLargeError extends Error {
  /** Describes the shape, its byte size and the device limit. */
  constructor(shape: Shape, bytes: number, limit: number) {
    super(
      `A tensor of shape [${shape.join(", ")}] needs ${formatBytes(bytes)}, more than this ` +
        `device's maxStorageBufferBindingSize of ${formatBytes(limit)}. ` +
        `Use a smaller batch or image size, or process the input in tiles.`,
    );
    this.name = "TensorTooLargeError";
  }
}

function formatBytes(bytes: number): string {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${bytes} bytes`;
}

/** Number of elements of a shape. */
export function shapeSize(shape: Shape): number {
  let size = 1;
  for (const dim of shape) size *= dim;
  return size;
}

/** A GPU buffer shared by a tensor and its reshaped views; freed when the last one goes. */
class Storage {
  references = 1;
  constructor(readonly gpu: Gpu, readonly buffer: GPUBuffer) {}
}

/** Pushes the output's gradient to the inputs (through {@link addGrad}). */
export type BackwardFn = (grad: Tensor) => void;

/** An f32 tensor on the GPU. */
export class Tensor {
  /** Sizes of the dimensions. */
  readonly shape: Shape;
  /** Number of elements. */
  readonly size: number;
  /** Whether gradients flow to this tensor. */
  requiresGrad: boolean;
  /** The accumulated gradient, after `backward()`. */
  grad: Tensor | null = null;
  /** Inputs of the op that made this tensor (empty for leaves). */
  readonly parents: readonly Tensor[];
  /** The op's backward closure (null for leaves and for results made without gradients). */
  readonly backwardFn: BackwardFn | null;
  private storage: Storage | null;
  /** Set while this tensor is the gradient of another, so that it is never shared by two. */
  gradOf: Tensor | null = null;
  /** Run by {@link dispose}: frees what an op keeps for this tensor's backward pass. */
  private disposers: (() => void)[] | null = null;

  /** Use the factory functions ({@link zeros}, {@link tensor}, …) or ops instead. */
  constructor(
    storage: Storage,
    shape: Shape,
    parents: readonly Tensor[] = [],
    backwardFn: BackwardFn | null = null,
  ) {
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.size = shapeSize(shape);
    this.parents = parents;
    this.backwardFn = backwardFn;
    this.requiresGrad = backwardFn !== null;
    track(this);
  }

  /** The GPU buffer (its size is a pool bucket, at least `size * 4` bytes). */
  get buffer(): GPUBuffer {
    if (!this.storage) throw new Error(`Use of a disposed tensor of shape [${this.shape}]`);
    return this.storage.buffer;
  }

  /** The GPU context this tensor lives on. */
  get gpu(): Gpu {
    if (!this.storage) throw new Error(`Use of a disposed tensor of shape [${this.shape}]`);
    return this.storage.gpu;
  }

  /** Bytes of data (size × 4). */
  get bytes(): number {
    return this.size * 4;
  }

  /** Whether {@link dispose} was called. */
  get isDisposed(): boolean {
    return this.storage === null;
  }

  /** Copies the data back to the CPU: one GPU round trip. */
  async toArray(): Promise<Float32Array> {
    const bytes = await this.gpu.recorder.read(this.buffer, 0, this.bytes);
    return new Float32Array(bytes);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() needs one element, shape is [${this.shape}]`);
    return (await this.toArray())[0];
  }

  /** Frees the GPU memory (returned to the pool). Safe to call twice. */
  dispose(): void {
    const storage = this.storage;
    if (!storage) return;
    this.storage = null;
    untrack(this);
    const disposers = this.disposers;
    this.disposers = null;
    disposers?.forEach((disposer) => disposer());
    if (--storage.references === 0) storage.gpu.pool.release(storage.buffer);
    if (this.grad && this.grad.gradOf === this) this.grad.dispose();
    this.grad = null;
  }

  /**
   * Runs `fn` when this tensor is disposed, for GPU resources that an op keeps until its
   * backward pass (which cannot run once the tensor is gone).
   */
  onDispose(fn: () => void): void {
    (this.disposers ??= []).push(fn);
  }

  /** A tensor of another shape over the same data (no copy). */
  view(shape: Shape, backwardFn: BackwardFn | null = null): Tensor {
    if (shapeSize(shape) !== this.size) {
      throw new Error(`Cannot view shape [${this.shape}] as [${shape}]: sizes differ`);
    }
    if (!this.storage) throw new Error(`Use of a disposed tensor of shape [${this.shape}]`);
    this.storage.references++;
    const recordGraph = gradEnabled && this.requiresGrad && backwardFn !== null;
    return new Tensor(
      this.storage,
      shape,
      recordGraph ? [this] : [],
      recordGraph ? backwardFn : null,
    );
  }

  /** Runs backpropagation from this tensor; see {@link backward}. */
  backward(seed?: Tensor): void {
    backward(this, seed);
  }
}

/** Reads several tensors back with a single GPU round trip. */
export async function toArrays(tensors: readonly Tensor[]): Promise<Float32Array[]> {
  if (tensors.length === 0) return [];
  const parts = tensors.map((t) => ({ buffer: t.buffer, bytes: t.bytes }));
  const buffers = await tensors[0].gpu.recorder.readMany(parts);
  return buffers.map((b) => new Float32Array(b));
}

// ---- scopes -------------------------------------------------------------------------------------

const scopes: Set<Tensor>[] = [];

function track(t: Tensor): void {
  scopes[scopes.length - 1]?.add(t);
}

function untrack(t: Tensor): void {
  for (const scope of scopes) scope.delete(t);
}

/** Takes a tensor out of every enclosing scope, so that {@link tidy} leaves it alive. */
export function keep<T extends Tensor>(t: T): T {
  untrack(t);
  return t;
}

/** Tensors found in a value returned from a scope (a tensor, an array or a plain object). */
function tensorsIn(value: unknown, found: Tensor[] = []): Tensor[] {
  if (value instanceof Tensor) found.push(value);
  else if (Array.isArray(value)) value.forEach((v) => tensorsIn(v, found));
  else if (
    value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype
  ) {
    Object.values(value).forEach((v) => tensorsIn(v, found));
  }
  return found;
}

/**
 * Runs `fn` and disposes every tensor created inside it, except the tensors it returns (alone, in
 * an array or in a plain object) and those passed to {@link keep}. Returned tensors move to the
 * enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) {
    throw new Error("tidy() takes a synchronous function; await outside it and keep() results");
  }
  const survivors = new Set(tensorsIn(result));
  for (const t of scope) {
    if (survivors.has(t)) track(t);
    else t.dispose();
  }
  return result;
}

// ---- gradient mode ------------------------------------------------------------------------------

let gradEnabled = true;

/** Whether ops currently record the graph. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording the graph (inference, optimizer steps, metrics). */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

// ---- construction -------------------------------------------------------------------------------

/**
 * Acquires the device; call once before using tensors. The shaders are bundled into the code, so
 * this needs no permission to read files or the network.
 */
export function init(): Promise<Gpu> {
  return getGpu();
}

/** A new tensor with uninitialised contents from the pool (for op outputs). */
export function empty(shape: Shape): Tensor {
  const gpu = currentGpu();
  const size = shapeSize(shape);
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) throw new Error(`Invalid shape [${shape}]`);
  }
  const bytes = size * 4;
  if (bytes > gpu.maxBindingBytes) throw new TensorTooLargeError(shape, bytes, gpu.maxBindingBytes);
  return new Tensor(new Storage(gpu, gpu.pool.acquire(bytes)), shape);
}

/**
 * The output of an op: remembers its inputs and backward closure when any input needs gradients
 * and the graph is being recorded.
 */
export function opResult(shape: Shape, inputs: readonly Tensor[], backwardFn: BackwardFn): Tensor {
  const out = empty(shape);
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    return withGraph(out, inputs, backwardFn);
  }
  return out;
}

function withGraph(out: Tensor, inputs: readonly Tensor[], backwardFn: BackwardFn): Tensor {
  // Re-wrap the storage so that `parents` and `backwardFn` stay readonly fields.
  const storage = (out as unknown as { storage: Storage }).storage;
  untrack(out);
  return new Tensor(storage, out.shape, inputs, backwardFn);
}

/** A tensor holding a copy of `data` (length must equal the shape's size). */
export function tensor(data: ArrayLike<number>, shape: Shape = [data.length]): Tensor {
  if (data.length !== shapeSize(shape)) {
    throw new Error(`Data of length ${data.length} does not fill shape [${shape}]`);
  }
  const out = empty(shape);
  const array = data instanceof Float32Array ? data : Float32Array.from(data);
  if (array.length > 0) out.gpu.recorder.write(out.buffer, 0, array);
  return out;
}

// ---- the tape -----------------------------------------------------------------------------------

let runningNode: Tensor | null = null;

/**
 * Adds `grad` to `t.grad`; backward closures call this for each input. A gradient tensor belongs
 * to exactly one tensor, so that disposing one gradient never frees another's: a gradient passed
 * through unchanged (by add, reshape, …) is handed over the first time and copied after that.
 * A freshly computed gradient is consumed, so a closure passes each fresh tensor to one input only.
 */
export function addGrad(t: Tensor, grad: Tensor): void {
  if (!t.requiresGrad) return;
  if (t.grad) {
    const sum = tapeOps.add(t.grad, grad);
    t.grad.dispose();
    if (grad.gradOf === null) grad.dispose();
    own(t, sum);
    return;
  }
  if (grad.gradOf === null) own(t, grad);
  else if (runningNode && grad === runningNode.grad) {
    runningNode.grad = null;
    own(t, grad);
  } else own(t, tapeOps.copy(grad));
}

function own(t: Tensor, grad: Tensor): void {
  grad.gradOf = t;
  t.grad = grad;
  // Gradients of leaves (parameters) outlive the scope they were computed in.
  if (t.backwardFn === null) keep(grad);
}

/** Reverse-mode differentiation from `root`; leaves' `.grad` fields receive the gradients. */
export function backward(root: Tensor, seed?: Tensor): void {
  if (!root.requiresGrad) {
    throw new Error("backward() on a tensor that does not require gradients (made under noGrad?)");
  }
  if (!seed && root.size !== 1) {
    throw new Error(`backward() without a seed needs a scalar, got shape [${root.shape}]`);
  }
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const visit = (t: Tensor): void => {
    // Iterative depth-first search: deep networks would overflow a recursive one.
    const stack: [Tensor, number][] = [[t, 0]];
    visited.add(t);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [node, next] = top;
      if (next < node.parents.length) {
        top[1]++;
        const parent = node.parents[next];
        if (parent.requiresGrad && !visited.has(parent)) {
          visited.add(parent);
          stack.push([parent, 0]);
        }
      } else {
        stack.pop();
        order.push(node);
      }
    }
  };
  visit(root);
  noGrad(() => {
    const rootGrad = seed ? tapeOps.copy(seed) : tapeOps.fill(root.shape, 1);
    if (rootGrad.shape.join() !== root.shape.join()) {
      throw new Error(`Seed shape [${rootGrad.shape}] differs from [${root.shape}]`);
    }
    runningNode = null;
    addGrad(root, rootGrad);
    for (let i = order.length - 1; i >= 0; i--) {
      const node = order[i];
      if (!node.backwardFn || !node.grad) continue;
      runningNode = node;
      node.backwardFn(node.grad);
      runningNode = null;
      // An intermediate's gradient is not needed once it has been pushed to the inputs.
      if (node.grad && node.grad.gradOf === node) node.grad.dispose();
      node.grad = null;
    }
  });
}

/** The ops the tape itself needs, registered by the ops module to break the import cycle. */
interface TapeOps {
  copy: (g: Tensor) => Tensor;
  add: (a: Tensor, b: Tensor) => Tensor;
  fill: (shape: Shape, value: number) => Tensor;
}

const missing = (): never => {
  throw new Error("Tensor ops are not registered: import the package through mod.ts");
};
let tapeOps: TapeOps = { copy: missing, add: missing, fill: missing };

/** Registers the ops the tape uses. Called once by the ops module. */
export function registerTapeOps(ops: TapeOps): void {
  tapeOps = ops;
}

/** Disposes and clears the gradients of these tensors (before the next step's backward). */
export function zeroGrad(tensors: Iterable<Tensor>): void {
  for (const t of tensors) {
    if (t.grad) {
      if (t.grad.gradOf === t) t.grad.dispose();
      t.grad = null;
    }
  }
}
