/**
 * Reads TensorFlow Lite models (the FlatBuffer format of TensorFlow's `schema.fbs`, file
 * identifier "TFL3") into a {@link BackboneGraph}, so that the quantized ImageNet MobileNets run
 * on this engine in float32.
 *
 * The FlatBuffer decoding is our own, over a DataView, and checks every offset and length against
 * the file: a truncated or corrupt file throws {@link ModelFormatError} saying what was expected,
 * never a RangeError or a graph built from garbage. Quantized constants (uint8/int8 weights, int32
 * biases) are dequantized to float32 and put in this engine's layout; activations are not
 * quantized again, so results match the quantized interpreter up to its rounding.
 *
 * @module
 */

import { basename, extname } from "node:path";
import {
  type BackboneGraph,
  GRAPH_INPUT,
  type GraphActivation,
  type GraphNode,
  type GraphOp,
  type GraphPadding,
  type GraphWeight,
  MAX_MODEL_INPUT_SIDE,
  ModelFormatError,
} from "./graph.ts";

/** TFLite's `BuiltinOperator` names, indexed by code, for messages. */
const BUILTIN_NAMES = (
  "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE " +
  "EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D " +
  "LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 " +
  "RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS " +
  "SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER " +
  "BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE " +
  "UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT " +
  "LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG " +
  "PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE " +
  "EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD " +
  "REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV " +
  "REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU " +
  "SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE " +
  "RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE " +
  "NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM " +
  "BATCH_MATMUL"
).split(" ");

/** The builtin operator codes this reader turns into graph nodes. */
const Op = {
  ADD: 0,
  AVERAGE_POOL_2D: 1,
  CONV_2D: 3,
  DEPTHWISE_CONV_2D: 4,
  DEQUANTIZE: 6,
  MAX_POOL_2D: 17,
  RESHAPE: 22,
  SOFTMAX: 25,
  CUSTOM: 32,
  SQUEEZE: 43,
  QUANTIZE: 114,
} as const;

const SUPPORTED_OPS = "CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE, " +
  "SQUEEZE, SOFTMAX, QUANTIZE, DEQUANTIZE";

/** Members of the `BuiltinOptions` union that the supported operators carry. */
const Options = {
  Conv2DOptions: 1,
  DepthwiseConv2DOptions: 2,
  Pool2DOptions: 5,
  SoftmaxOptions: 9,
  AddOptions: 11,
} as const;

/** `TensorType` codes with their names and the bytes per element of those we can read. */
const TENSOR_TYPES: Record<number, { name: string; bytes?: number }> = {
  0: { name: "FLOAT32", bytes: 4 },
  1: { name: "FLOAT16" },
  2: { name: "INT32", bytes: 4 },
  3: { name: "UINT8", bytes: 1 },
  4: { name: "INT64" },
  5: { name: "STRING" },
  6: { name: "BOOL" },
  7: { name: "INT16" },
  8: { name: "COMPLEX64" },
  9: { name: "INT8", bytes: 1 },
};
const FLOAT32 = 0, INT32 = 2, UINT8 = 3, INT8 = 9;

const ACTIVATIONS: Record<number, GraphActivation> = { 0: "none", 1: "relu", 3: "relu6" };
const ACTIVATION_NAMES = ["NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT"];

/** The schema version this reader follows; versions 0–2 laid tensors and buffers out otherwise. */
const SCHEMA_VERSION = 3;

/**
 * The file as a FlatBuffer: little-endian reads that each check they stay inside the file.
 * `what` arguments name the thing being read, for the error message.
 */
class FlatBuffer {
  readonly view: DataView;

  constructor(readonly bytes: Uint8Array, readonly path: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(problem: string): never {
    throw new ModelFormatError(this.path, problem);
  }

  /** Checks that `size` bytes at `position` lie inside the file. */
  check(position: number, size: number, what: string): void {
    if (position < 0 || position + size > this.bytes.length) {
      this.fail(
        `truncated or corrupt TFLite file: expected ${what} at bytes ${position}–` +
          `${position + size - 1}, but the file has ${this.bytes.length} bytes`,
      );
    }
  }

  u16(position: number, what: string): number {
    this.check(position, 2, what);
    return this.view.getUint16(position, true);
  }

  i32(position: number, what: string): number {
    this.check(position, 4, what);
    return this.view.getInt32(position, true);
  }

  u32(position: number, what: string): number {
    this.check(position, 4, what);
    return this.view.getUint32(position, true);
  }

  /** Follows the unsigned offset stored at `position` (offsets count from where they are stored). */
  follow(position: number, what: string): number {
    return position + this.u32(position, `the offset to ${what}`);
  }

  /** The table whose start is at `position`. */
  table(position: number, what: string): Table {
    return new Table(this, position, what);
  }
}

/** A FlatBuffer table: fields are looked up by their id (their order in schema.fbs). */
class Table {
  private readonly vtable: number;
  private readonly vtableSize: number;
  private readonly inlineSize: number;

  constructor(
    private readonly file: FlatBuffer,
    private readonly position: number,
    readonly what: string,
  ) {
    // A table starts with a signed offset back to its vtable: two uint16 sizes, then one uint16
    // field offset per field id (0, or ids past the end, for fields left at their default).
    this.vtable = position - file.i32(position, what);
    this.vtableSize = file.u16(this.vtable, `the vtable of ${what}`);
    this.inlineSize = file.u16(this.vtable + 2, `the vtable of ${what}`);
    if (this.vtableSize < 4 || this.vtableSize % 2 !== 0 || this.inlineSize < 4) {
      file.fail(
        `corrupt TFLite file: the vtable of ${what} has sizes ${this.vtableSize} and ` +
          `${this.inlineSize}; expected an even size of at least 4 and a table of at least 4 bytes`,
      );
    }
    file.check(this.vtable, this.vtableSize, `the vtable of ${what}`);
    file.check(position, this.inlineSize, what);
  }

  /** Where field `id` (`size` bytes) is stored, or undefined when it is absent. */
  private field(id: number, size: number): number | undefined {
    const slot = 4 + 2 * id;
    if (slot >= this.vtableSize) return undefined;
    const offset = this.file.u16(this.vtable + slot, `the vtable of ${this.what}`);
    if (offset === 0) return undefined;
    if (offset + size > this.inlineSize) {
      this.file.fail(
        `corrupt TFLite file: field ${id} of ${this.what} lies outside the table; expected it within the table's ${this.inlineSize} bytes`,
      );
    }
    return this.position + offset;
  }

  i8(id: number, fallback: number): number {
    const at = this.field(id, 1);
    return at === undefined ? fallback : this.file.view.getInt8(at);
  }

  u8(id: number, fallback: number): number {
    const at = this.field(id, 1);
    return at === undefined ? fallback : this.file.view.getUint8(at);
  }

  i32(id: number, fallback: number): number {
    const at = this.field(id, 4);
    return at === undefined ? fallback : this.file.view.getInt32(at, true);
  }

  u32(id: number, fallback: number): number {
    const at = this.field(id, 4);
    return at === undefined ? fallback : this.file.view.getUint32(at, true);
  }

  u64(id: number, fallback: number): number {
    const at = this.field(id, 8);
    return at === undefined ? fallback : Number(this.file.view.getBigUint64(at, true));
  }

  f32(id: number, fallback: number): number {
    const at = this.field(id, 4);
    return at === undefined ? fallback : this.file.view.getFloat32(at, true);
  }

  table(id: number, what: string): Table | undefined {
    const at = this.field(id, 4);
    return at === undefined ? undefined : this.file.table(this.file.follow(at, what), what);
  }

  /** The first element's position and the length of vector field `id`, checked against the file. */
  private vector(id: number, elementSize: number, what: string): [number, number] {
    const at = this.field(id, 4);
    if (at === undefined) return [0, 0];
    const start = this.file.follow(at, what);
    const length = this.file.u32(start, `the length of ${what}`);
    this.file.check(start + 4, length * elementSize, `${what} (${length} elements)`);
    return [start + 4, length];
  }

  ints(id: number, what: string): number[] {
    const [start, length] = this.vector(id, 4, what);
    return Array.from({ length }, (_, i) => this.file.view.getInt32(start + 4 * i, true));
  }

  floats(id: number, what: string): number[] {
    const [start, length] = this.vector(id, 4, what);
    return Array.from({ length }, (_, i) => this.file.view.getFloat32(start + 4 * i, true));
  }

  longs(id: number, what: string): number[] {
    const [start, length] = this.vector(id, 8, what);
    return Array.from(
      { length },
      (_, i) => Number(this.file.view.getBigInt64(start + 8 * i, true)),
    );
  }

  bytes(id: number, what: string): Uint8Array {
    const [start, length] = this.vector(id, 1, what);
    return this.file.bytes.subarray(start, start + length);
  }

  string(id: number, what: string): string | undefined {
    if (this.field(id, 4) === undefined) return undefined;
    return new TextDecoder().decode(this.bytes(id, what));
  }

  tables(id: number, what: string): Table[] {
    const [start, length] = this.vector(id, 4, `the ${what} list`);
    return Array.from(
      { length },
      (_, i) => this.file.table(this.file.follow(start + 4 * i, `${what} ${i}`), `${what} ${i}`),
    );
  }
}

/** A tensor of subgraph 0 as the file describes it. */
interface Tensor {
  index: number;
  name: string;
  shape: number[];
  type: number;
  buffer: number;
  /** Present when the file gives at least one scale. */
  quantization?: { scale: number[]; zeroPoint: number[]; dimension: number };
}

/** An operator of subgraph 0: its builtin code, tensor indices (−1: optional input left out). */
interface Operator {
  index: number;
  code: number;
  /** The custom operator's name, for messages. */
  customCode?: string;
  inputs: number[];
  outputs: number[];
  optionsType: number;
  options?: Table;
}

/** What the graph conversion needs from the file. */
interface TfliteModel {
  tensors: Tensor[];
  operators: Operator[];
  inputs: number[];
  /** Raw data of a buffer (empty for tensors computed at run time). */
  bufferData(index: number): Uint8Array;
}

/** Decodes the FlatBuffer down to subgraph 0's tensors and operators. */
function decodeModel(file: FlatBuffer): TfliteModel {
  const { bytes } = file;
  const expected = 'expected a TFLite FlatBuffer model (file identifier "TFL3" at bytes 4–7)';
  if (bytes.length === 0) file.fail(`the file is empty; ${expected}`);
  if (bytes.length < 8) file.fail(`the file has only ${bytes.length} bytes; ${expected}`);
  const identifier = String.fromCharCode(...bytes.subarray(4, 8));
  if (identifier !== "TFL3") {
    file.fail(`found file identifier ${JSON.stringify(identifier)}; ${expected}`);
  }
  const model = file.table(file.follow(0, "the model"), "the model");
  const version = model.u32(0, 0);
  if (version !== SCHEMA_VERSION) {
    file.fail(`TFLite schema version ${version}; expected version ${SCHEMA_VERSION}`);
  }
  const codes = model.tables(1, "operator code").map((code) => ({
    // Codes up to 127 sit in the old int8 field; newer files also (or only, for larger codes)
    // fill the int32 one, and TFLite takes the larger of the two.
    code: Math.max(code.i8(0, 0), code.i32(3, 0)),
    custom: code.string(1, `the custom code of ${code.what}`),
  }));
  const subgraph = model.tables(2, "subgraph")[0] ??
    file.fail("the model has no subgraph; expected at least one");
  const buffers = model.tables(4, "buffer");

  const tensors = subgraph.tables(0, "tensor").map((t, index): Tensor => {
    const name = t.string(3, `the name of ${t.what}`) ?? `tensor ${index}`;
    const q = t.table(4, `the quantization of tensor "${name}"`);
    const scale = q?.floats(2, `the scales of tensor "${name}"`) ?? [];
    return {
      index,
      name,
      shape: t.ints(0, `the shape of tensor "${name}"`),
      type: t.i8(1, FLOAT32),
      buffer: t.u32(2, 0),
      quantization: scale.length === 0 ? undefined : {
        scale,
        zeroPoint: q!.longs(3, `the zero points of tensor "${name}"`),
        dimension: q!.i32(6, 0),
      },
    };
  });
  const operators = subgraph.tables(3, "operator").map((o, index): Operator => {
    const opcode = o.u32(0, 0);
    const code = codes[opcode] ??
      file.fail(
        `operator ${index} uses operator code ${opcode}; expected an index below ${codes.length}`,
      );
    return {
      index,
      code: code.code,
      customCode: code.custom,
      inputs: o.ints(1, `the inputs of ${o.what}`),
      outputs: o.ints(2, `the outputs of ${o.what}`),
      optionsType: o.u8(3, 0),
      options: o.table(4, `the options of ${o.what}`),
    };
  });
  return {
    tensors,
    operators,
    inputs: subgraph.ints(1, "the subgraph inputs"),
    bufferData(index) {
      const buffer = buffers[index] ??
        file.fail(`a tensor refers to buffer ${index}; expected an index below ${buffers.length}`);
      // Models over 2 GB keep buffer data after the FlatBuffer, at an offset from the file start
      // (offsets 0 and 1 mean "not used").
      const offset = buffer.u64(1, 0);
      if (offset > 1) {
        const size = buffer.u64(2, 0);
        file.check(offset, size, `the data of buffer ${index}`);
        return bytes.subarray(offset, offset + size);
      }
      return buffer.bytes(0, `the data of buffer ${index}`);
    },
  };
}

/** The builtin name of an operator, for messages. */
function opName(op: Operator): string {
  if (op.code === Op.CUSTOM && op.customCode) return `CUSTOM ("${op.customCode}")`;
  return BUILTIN_NAMES[op.code] ?? `builtin operator ${op.code}`;
}

/** Converts a decoded model's operators, in file order, into graph nodes and weights. */
class GraphBuilder {
  readonly nodes: GraphNode[] = [];
  readonly weights = new Map<string, GraphWeight>();
  /** The node (or {@link GRAPH_INPUT}) that produces each activation tensor. */
  private readonly producers = new Map<number, string>();
  /** The file's NHWC shape of each node's result and of the graph input. */
  readonly shapes = new Map<string, number[]>();
  /** The tensor each weight name was taken from, to catch two tensors sharing a name. */
  private readonly weightSources = new Map<string, number>();
  /** The bytes of the constants read so far, buffers shared between tensors counted each time. */
  private constantBytes = 0;
  private op!: Operator;

  constructor(private readonly model: TfliteModel, private readonly file: FlatBuffer) {}

  /** Throws for the operator being converted, naming it and its output. */
  private fail(problem: string): never {
    this.file.fail(`${this.label()}: ${problem}`);
  }

  private label(): string {
    const output = this.model.tensors[this.op.outputs[0]];
    return `operator ${this.op.index} (${opName(this.op)}${
      output ? `, output "${output.name}"` : ""
    })`;
  }

  private tensor(index: number | undefined, role: string): Tensor {
    return this.model.tensors[index ?? -1] ?? this.fail(
      `its ${role} is tensor ${index}; expected an index below ${this.model.tensors.length}`,
    );
  }

  /** The node (or the graph input) an activation input comes from, and its NHWC shape. */
  private source(position: number): { name: string; shape: number[] } {
    const t = this.tensor(this.op.inputs[position], `input ${position}`);
    const name = this.producers.get(t.index) ?? this.fail(
      `input "${t.name}" is neither the model input nor the result of an earlier operator; ` +
        "expected operators in execution order",
    );
    return { name, shape: this.shapes.get(name)! };
  }

  build(): void {
    const input = this.model.tensors[this.model.inputs[0]];
    this.producers.set(input.index, GRAPH_INPUT);
    this.shapes.set(GRAPH_INPUT, input.shape);
    for (const op of this.model.operators) {
      this.op = op;
      this.convert(op);
    }
  }

  private convert(op: Operator): void {
    switch (op.code) {
      case Op.QUANTIZE:
      case Op.DEQUANTIZE:
        // In float32 both are the identity: consumers read the input directly.
        this.producers.set(this.output().index, this.source(0).name);
        return;
      case Op.CONV_2D:
        return this.conv(false);
      case Op.DEPTHWISE_CONV_2D:
        return this.conv(true);
      case Op.ADD: {
        const options = this.options(Options.AddOptions, "AddOptions", false);
        const [a, b] = [this.source(0), this.source(1)];
        if (`${a.shape}` !== `${b.shape}`) {
          this.fail(`it adds [${a.shape}] and [${b.shape}]; expected equal shapes`);
        }
        return this.add({
          kind: "add",
          inputs: [a.name, b.name],
          activation: this.activation(options?.i8(0, 0) ?? 0),
        });
      }
      case Op.AVERAGE_POOL_2D:
      case Op.MAX_POOL_2D:
        return this.pool(op.code === Op.MAX_POOL_2D ? "maxPool" : "avgPool");
      case Op.RESHAPE:
      case Op.SQUEEZE:
        return this.flatten();
      case Op.SOFTMAX: {
        const beta = this.options(Options.SoftmaxOptions, "SoftmaxOptions", true)!.f32(0, 0);
        if (beta !== 1) {
          this.fail(`softmax beta is ${beta}; expected beta 1, the only one supported`);
        }
        const input = this.source(0);
        if (input.shape.length !== 2) {
          this.fail(`softmax of a [${input.shape}] tensor; expected [N, classes]`);
        }
        return this.add({ kind: "softmax", inputs: [input.name] });
      }
      default:
        this.file.fail(
          `operator ${op.index} is ${opName(op)}, which is not supported; expected one of ` +
            SUPPORTED_OPS,
        );
    }
  }

  private output(): Tensor {
    return this.tensor(this.op.outputs[0], "output");
  }

  /** Adds the node for the current operator, named after its output tensor. */
  private add(node: GraphOp & { inputs: string[] }): void {
    const out = this.output();
    if (out.name === GRAPH_INPUT || this.shapes.has(out.name)) {
      this.fail(`its output name "${out.name}" is already taken; expected unique tensor names`);
    }
    const named = { ...node, name: out.name, ...eightBitGrid(out) } as GraphNode;
    this.nodes.push(named);
    this.shapes.set(out.name, out.shape);
    this.producers.set(out.index, out.name);
  }

  /** The operator's options table, checked to be of the expected union member. */
  private options(type: number, typeName: string, required: boolean): Table | undefined {
    const { options, optionsType } = this.op;
    if (options && optionsType !== type) {
      this.fail(`its options are union member ${optionsType}; expected ${typeName} (${type})`);
    }
    if (!options && required) this.fail(`it has no options; expected ${typeName}`);
    return options;
  }

  private activation(code: number): GraphActivation {
    return ACTIVATIONS[code] ?? this.fail(
      `fused activation ${ACTIVATION_NAMES[code] ?? code} is not supported; ` +
        "expected NONE, RELU or RELU6",
    );
  }

  private padding(code: number): GraphPadding {
    if (code === 0) return "same";
    if (code === 1) return "valid";
    return this.fail(`padding ${code}; expected SAME (0) or VALID (1)`);
  }

  /** A positive stride, window or dilation read from the options. */
  private positive(value: number, what: string): number {
    if (!(value >= 1)) this.fail(`${what} is ${value}; expected at least 1`);
    return value;
  }

  /** The first input, which must be a 4-D (NHWC) map. */
  private map(): { name: string; shape: number[] } {
    const input = this.source(0);
    if (input.shape.length !== 4) {
      this.fail(`its input "${input.name}" has shape [${input.shape}]; expected NHWC`);
    }
    return input;
  }

  private conv(depthwise: boolean): void {
    const options = depthwise
      ? this.options(Options.DepthwiseConv2DOptions, "DepthwiseConv2DOptions", true)!
      : this.options(Options.Conv2DOptions, "Conv2DOptions", true)!;
    // Field ids: padding, stride_w, stride_h, then (depthwise only) depth_multiplier, then the
    // activation and the dilations.
    const skip = depthwise ? 1 : 0;
    const input = this.map();
    const cin = input.shape[3];
    const w = this.tensor(this.op.inputs[1], "weight");
    const [a, kh, kw, b] = w.shape;
    if (w.shape.length !== 4) this.fail(`weight "${w.name}" has shape [${w.shape}]; expected 4-D`);
    // TFLite keeps conv weights as OHWI and depthwise ones as [1, kh, kw, cin·multiplier]; both
    // become [cout, cin/groups, kh, kw].
    let groups: number, weight: string;
    if (depthwise) {
      if (a !== 1 || b % cin !== 0) {
        this.fail(`weight "${w.name}" has shape [${w.shape}]; expected [1, kh, kw, ${cin}·k]`);
      }
      groups = cin;
      weight = this.constant(w, [b, 1, kh, kw], (o, _i, y, x) => (y * kw + x) * b + o);
    } else {
      if (cin % b !== 0) {
        this.fail(
          `weight "${w.name}" has ${b} input channels; expected a divisor of the input's ${cin}`,
        );
      }
      groups = cin / b;
      weight = this.constant(w, [a, b, kh, kw], (o, i, y, x) => ((o * kh + y) * kw + x) * b + i);
    }
    const biasIndex = this.op.inputs[2] ?? -1;
    let bias: string | undefined;
    if (biasIndex >= 0) {
      const t = this.tensor(biasIndex, "bias");
      const cout = depthwise ? b : a;
      if (t.shape.length !== 1 || t.shape[0] !== cout) {
        this.fail(`bias "${t.name}" has shape [${t.shape}]; expected [${cout}]`);
      }
      bias = this.constant(t, [cout], (o) => o);
    }
    this.add({
      kind: "conv2d",
      inputs: [input.name],
      weight,
      bias,
      stride: [
        this.positive(options.i32(2, 0), "stride_h"),
        this.positive(options.i32(1, 0), "stride_w"),
      ],
      padding: this.padding(options.i8(0, 0)),
      dilation: [
        this.positive(options.i32(5 + skip, 1), "dilation_h_factor"),
        this.positive(options.i32(4 + skip, 1), "dilation_w_factor"),
      ],
      groups,
      activation: this.activation(options.i8(3 + skip, 0)),
    });
  }

  private pool(kind: "maxPool" | "avgPool"): void {
    const options = this.options(Options.Pool2DOptions, "Pool2DOptions", true)!;
    const activation = options.i8(5, 0);
    if (activation !== 0) {
      this.fail(`fused activation ${ACTIVATION_NAMES[activation] ?? activation}; expected NONE`);
    }
    this.add({
      kind,
      inputs: [this.map().name],
      window: [
        this.positive(options.i32(4, 0), "filter_height"),
        this.positive(options.i32(3, 0), "filter_width"),
      ],
      stride: [
        this.positive(options.i32(2, 0), "stride_h"),
        this.positive(options.i32(1, 0), "stride_w"),
      ],
      padding: this.padding(options.i8(0, 0)),
    });
  }

  private flatten(): void {
    const { name, shape: input } = this.source(0);
    const out = this.output().shape;
    const features = input.slice(1).reduce((p, d) => p * d, 1);
    if (out.length !== 2 || out[0] !== input[0] || out[1] !== features) {
      this.fail(
        `it turns [${input}] into [${out}]; expected a flatten to [N, features]`,
      );
    }
    // Our flatten runs on NCHW, TFLite's on NHWC: the orders agree only when at most one of
    // height, width and channels is above 1.
    if (input.slice(1).filter((d) => d > 1).length > 1) {
      this.fail(
        `it flattens a [${input}] map, whose NHWC order NCHW cannot reproduce; expected at ` +
          "most one of height, width and channels above 1",
      );
    }
    this.add({ kind: "flatten", inputs: [name] });
  }

  /**
   * Dequantizes a constant tensor into `shape`; `from(o, i, y, x)` gives, for an index into the
   * new layout, the index into the file's row-major data. Returns the weight's name.
   */
  private constant(
    t: Tensor,
    shape: number[],
    from: (o: number, i: number, y: number, x: number) => number,
  ): string {
    if (this.producers.has(t.index)) {
      this.fail(`"${t.name}" is computed at run time; expected a constant stored in the file`);
    }
    const known = this.weightSources.get(t.name);
    if (known !== undefined && known !== t.index) {
      this.fail(`two constant tensors are called "${t.name}"; expected unique tensor names`);
    }
    const raw = this.model.bufferData(t.buffer);
    // Tensors may share a buffer, and each gets its own float32 copy: so that a small file
    // cannot make gigabytes of them, the constants' stored bytes, counted once per tensor, may
    // add up to the file's size at most (the copies are then at most 4 times the file).
    this.constantBytes += raw.length;
    if (this.constantBytes > this.file.bytes.length) {
      this.fail(
        `its constants (tensor "${t.name}" and those before it) hold more bytes in all than ` +
          `the file's ${this.file.bytes.length}; expected each constant to have bytes of its own`,
      );
    }
    const values = dequantize(t, raw, (p) => this.fail(p));
    const [d0, d1 = 1, d2 = 1, d3 = 1] = shape;
    const data = new Float32Array(values.length);
    // An empty tensor has nothing to copy; looping over its other sizes, which the file may set
    // to 2^31, would take seconds. A non-empty one has as many iterations as stored values.
    let n = 0;
    for (let o = 0; o < d0 && data.length > 0; o++) {
      for (let i = 0; i < d1; i++) {
        for (let y = 0; y < d2; y++) {
          for (let x = 0; x < d3; x++) data[n++] = values[from(o, i, y, x)];
        }
      }
    }
    this.weights.set(t.name, { shape, data });
    this.weightSources.set(t.name, t.index);
    return t.name;
  }
}

/**
 * A constant tensor's values in float32, in the file's order: real = scale·(q − zero point), per
 * tensor or per channel along the quantized dimension.
 */
function dequantize(t: Tensor, raw: Uint8Array, fail: (problem: string) => never): Float32Array {
  const type = TENSOR_TYPES[t.type];
  const typeName = type?.name ?? `type ${t.type}`;
  if (t.type !== FLOAT32 && t.type !== INT32 && t.type !== UINT8 && t.type !== INT8) {
    fail(`constant "${t.name}" is ${typeName}; expected FLOAT32, INT32, UINT8 or INT8`);
  }
  if (t.shape.some((d) => d < 0)) {
    fail(`constant "${t.name}" has shape [${t.shape}]; expected sizes of at least 0`);
  }
  const count = t.shape.reduce((p, d) => p * d, 1);
  if (raw.length !== count * type.bytes!) {
    fail(
      `constant "${t.name}" holds ${raw.length} bytes; its shape [${t.shape}] of ${typeName} ` +
        `needs ${count * type.bytes!}`,
    );
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(count);
  if (t.type === FLOAT32) {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  const q = t.quantization ??
    fail(`constant "${t.name}" is ${typeName} without a scale; expected quantization parameters`);
  const zeroPoint = q.zeroPoint.length === 0 ? q.scale.map(() => 0) : q.zeroPoint;
  if (zeroPoint.length !== q.scale.length) {
    fail(
      `constant "${t.name}" has ${q.scale.length} scales and ${zeroPoint.length} zero points; ` +
        "expected as many of each",
    );
  }
  // Per-channel parameters vary along `dimension`; `inner` elements share each step along it.
  const channels = q.scale.length;
  const inner = t.shape.slice(q.dimension + 1).reduce((p, d) => p * d, 1);
  if (channels > 1 && t.shape[q.dimension] !== channels) {
    fail(
      `constant "${t.name}" has ${channels} scales along dimension ${q.dimension} of ` +
        `[${t.shape}]; expected one per channel`,
    );
  }
  const read = t.type === INT32
    ? (i: number) => view.getInt32(4 * i, true)
    : t.type === INT8
    ? (i: number) => view.getInt8(i)
    : (i: number) => view.getUint8(i);
  for (let i = 0; i < count; i++) {
    const c = channels === 1 ? 0 : Math.floor(i / inner) % channels;
    out[i] = q.scale[c] * (read(i) - zeroPoint[c]);
  }
  return out;
}

/**
 * Finds the last node at each of spatial strides 4, 8, 16 and 32 ("layer1".."layer4"), from the
 * file's NHWC shapes.
 */
function featureLayers(
  nodes: GraphNode[],
  shapes: Map<string, number[]>,
  [height, width]: [number, number],
): Record<string, string> {
  const layers: Record<string, string> = {};
  for (const node of nodes) {
    const shape = shapes.get(node.name)!;
    if (shape.length !== 4) continue;
    // A pool whose window covers its whole input (MobileNet's final average) gives a 1×1 result
    // that matches a stride only by accident of the input size: it is no feature map.
    if (node.kind === "avgPool" || node.kind === "maxPool") {
      const [, h, w] = shapes.get(node.inputs[0])!;
      if (node.window[0] >= h && node.window[1] >= w) continue;
    }
    const stride = height / shape[1];
    const level = [4, 8, 16, 32].indexOf(stride) + 1;
    if (level > 0 && width / shape[2] === stride) layers[`layer${level}`] = node.name;
  }
  return layers;
}

/**
 * The 8-bit grid a quantized tensor's values lie on, as a node's `quantization` (an INT8 tensor
 * stores q − 128); nothing for float tensors.
 */
function eightBitGrid(t: Tensor): Pick<GraphNode, "quantization"> {
  const q = t.quantization;
  if ((t.type !== UINT8 && t.type !== INT8) || !q || q.scale.length !== 1) return {};
  return {
    quantization: {
      scale: q.scale[0],
      zeroPoint: (q.zeroPoint[0] ?? 0) + (t.type === INT8 ? 128 : 0),
    },
  };
}

/**
 * Reads a TFLite model from its bytes into graph form: subgraph 0's operators in file order, with
 * quantized constants dequantized to float32 and convolution weights as [cout, cin/groups, kh,
 * kw]. Node names are the output tensors' names; strides, dilations and windows are [h, w].
 * Preprocessing comes from the input tensor's quantization (real = scale·(q − zero point) with q
 * the 0–255 pixel); feature layers are the last nodes at strides 4, 8, 16 and 32.
 *
 * @param bytes the file's contents
 * @param path the file, for error messages (and for the name when `name` is not given)
 * @param name the graph's name; defaults to the file's base name without extension
 * @throws ModelFormatError when the file is not a valid TFLite model, or uses an operator, type
 *   or option this reader does not support; the message names the file and what was expected
 */
export function readTflite(bytes: Uint8Array, path: string, name?: string): BackboneGraph {
  // Typed explicitly so that TypeScript narrows after `file.fail(...)`, which never returns.
  const file: FlatBuffer = new FlatBuffer(bytes, path);
  const model = decodeModel(file);
  if (model.inputs.length !== 1) {
    file.fail(`the model has ${model.inputs.length} inputs; expected one image input`);
  }
  const input = model.tensors[model.inputs[0]] ??
    file.fail(
      `the model input is tensor ${
        model.inputs[0]
      }; expected an index below ${model.tensors.length}`,
    );
  const [batch, height, width, channels] = input.shape;
  if (
    input.shape.length !== 4 || batch < 1 || height < 1 || width < 1 || channels !== 3 ||
    height > MAX_MODEL_INPUT_SIDE || width > MAX_MODEL_INPUT_SIDE
  ) {
    file.fail(
      `the input "${input.name}" has shape [${input.shape}]; expected [1, H, W, 3] with H and ` +
        `W at most ${MAX_MODEL_INPUT_SIDE}`,
    );
  }
  // The input's quantization says how a 0–255 pixel q maps to the value the network was trained
  // on (an INT8 input stores q − 128), which is our (x − mean) / std with std = 1 / scale.
  const q = input.quantization;
  if (!q || (input.type !== UINT8 && input.type !== INT8) || q.scale.length !== 1) {
    file.fail(
      `the input "${input.name}" is ${TENSOR_TYPES[input.type]?.name ?? input.type} without ` +
        "one scale; expected a quantized UINT8 or INT8 input, whose scale and zero point give " +
        "the preprocessing",
    );
  }
  const mean = (q.zeroPoint[0] ?? 0) + (input.type === INT8 ? 128 : 0);
  const std = 1 / q.scale[0];

  const builder = new GraphBuilder(model, file);
  builder.build();
  const { nodes } = builder;
  if (nodes.length === 0) file.fail("the model has no operators; expected a network");
  const softmax = nodes.findLast((node) => node.kind === "softmax");
  return {
    name: name ?? basename(path, extname(path)),
    nodes,
    weights: builder.weights,
    inputSize: [height, width],
    preprocessing: { channelOrder: "rgb", mean: [mean, mean, mean], std: [std, std, std] },
    inputQuantization: { scale: q.scale[0], zeroPoint: mean },
    probabilities: softmax?.name,
    featureLayers: featureLayers(nodes, builder.shapes, [height, width]),
  };
}

/**
 * Reads a TFLite model file into graph form (see {@link readTflite}).
 *
 * @param path the .tflite file
 * @param name the graph's name; defaults to the file's base name without extension
 * @throws ModelFormatError naming `path` when the file is missing, unreadable or not a model
 *   this reader supports
 */
export async function loadTflite(path: string, name?: string): Promise<BackboneGraph> {
  return readTflite(await readModelFile(path, "a TFLite model (.tflite)"), path, name);
}

/**
 * Reads a label file with one label per line (e.g. ImageNet's 1001 labels, "background" first):
 * labels trimmed, trailing empty lines dropped.
 *
 * @param path the text file
 * @returns the labels in class order
 * @throws ModelFormatError naming `path` when the file is missing, unreadable or holds no label
 */
export async function readLabels(path: string): Promise<string[]> {
  const text = new TextDecoder().decode(
    await readModelFile(path, "a label file (one label per line)"),
  );
  const labels = text.split(/\r?\n/).map((line) => line.trim());
  while (labels.length > 0 && labels[labels.length - 1] === "") labels.pop();
  if (labels.length === 0) {
    throw new ModelFormatError(path, "the file holds no label; expected one label per line");
  }
  return labels;
}

/** Reads a file, turning system errors into a {@link ModelFormatError} that says what was wanted. */
async function readModelFile(path: string, expected: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : `cannot be read (${(error as Error).message})`;
    throw new ModelFormatError(path, `${reason}; expected ${expected}`);
  }
}
