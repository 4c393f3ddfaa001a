/**
 * A small TF.js layers model built in memory (model.json and two weight shards): the TF.js
 * reader's tests check the conversion on it, and the fuzzing harness mutates it.
 *
 * @module
 */

/** A JSON object. */
export type Json = Record<string, unknown>;

/** A layers model held in memory. */
export interface Synthetic {
  model: Json;
  /** Shard path → bytes. */
  shards: Map<string, Uint8Array>;
  /** The Keras weights by manifest name, for hand computations. */
  values: Map<string, Float32Array>;
}

/** Deterministic values that are distinct and not round. */
function values(count: number, seed: number): Float32Array {
  return Float32Array.from({ length: count }, (_, i) => Math.sin(seed * 100 + i * 1.7) + 0.01 * i);
}

/** A Keras layer called once on `inputs` (layer names). */
export function layer(className: string, name: string, inputs: string[], config: Json = {}): Json {
  return {
    class_name: className,
    name,
    config: { name, ...config },
    inbound_nodes: inputs.length ? [inputs.map((input) => [input, 0, 0, {}])] : [],
  };
}

/**
 * The small model: pad → conv (stride 2, relu) → BN → max pool → two residual blocks → global
 * average pool → dense softmax, its weights in two shards cut inside a weight. `bnScale: false`
 * leaves the batch norm without gamma; `quantizeFcBias` stores the dense bias as uint8.
 */
export function syntheticTfjsModel(
  options: { bnScale?: boolean; quantizeFcBias?: boolean } = {},
): Synthetic {
  const bnScale = options.bnScale ?? true;
  const conv = (
    filters: number,
    size: number,
    strides: number,
    padding: string,
    bias: boolean,
  ) => ({
    filters,
    kernel_size: [size, size],
    strides: [strides, strides],
    padding,
    data_format: "channels_last",
    dilation_rate: [1, 1],
    activation: "linear",
    use_bias: bias,
  });
  const layers = [
    layer("InputLayer", "input_1", [], { batch_input_shape: [null, 16, 16, 3], dtype: "float32" }),
    layer("ZeroPadding2D", "pad", ["input_1"], { padding: [[1, 1], [1, 1]] }),
    layer("Conv2D", "conv1", ["pad"], { ...conv(4, 3, 2, "valid", true), activation: "relu" }),
    layer("BatchNormalization", "bn1", ["conv1"], {
      axis: [3],
      epsilon: 0.001,
      center: true,
      scale: bnScale,
    }),
    layer("MaxPooling2D", "pool", ["bn1"], {
      pool_size: [2, 2],
      strides: [2, 2],
      padding: "valid",
    }),
    layer("Conv2D", "conv2", ["pool"], conv(4, 1, 1, "same", false)),
    layer("Add", "add1", ["conv2", "pool"]),
    layer("Activation", "act1", ["add1"], { activation: "relu" }),
    layer("Conv2D", "conv3", ["act1"], conv(4, 1, 1, "same", false)),
    layer("Add", "add2", ["conv3", "act1"]),
    layer("Activation", "act2", ["add2"], { activation: "relu" }),
    layer("GlobalAveragePooling2D", "gap", ["act2"]),
    layer("Dense", "fc", ["gap"], { units: 2, activation: "softmax", use_bias: true }),
  ];
  const specs: [string, number[]][] = [
    ["conv1/kernel", [3, 3, 3, 4]],
    ["conv1/bias", [4]],
    ...(bnScale ? [["bn1/gamma", [4]] as [string, number[]]] : []),
    ["bn1/beta", [4]],
    ["bn1/moving_mean", [4]],
    ["bn1/moving_variance", [4]],
    ["conv2/kernel", [1, 1, 4, 4]],
    ["conv3/kernel", [1, 1, 4, 4]],
    ["fc/kernel", [4, 2]],
    ["fc/bias", [2]],
  ];
  const valueMap = new Map<string, Float32Array>();
  const parts: Uint8Array[] = [];
  const weights = specs.map(([name, shape], i) => {
    const count = shape.reduce((a, b) => a * b, 1);
    let data = values(count, i + 1);
    if (name === "bn1/moving_variance") data = data.map((v) => Math.abs(v) + 0.5);
    if (name === "fc/bias" && options.quantizeFcBias) {
      // uint8 levels 7 and 200 with min −1 and scale 0.01.
      valueMap.set(name, Float32Array.of(-1 + 7 * 0.01, -1 + 200 * 0.01));
      parts.push(Uint8Array.of(7, 200));
      return {
        name,
        shape,
        dtype: "float32",
        quantization: { dtype: "uint8", min: -1, scale: 0.01 },
      };
    }
    valueMap.set(name, data);
    parts.push(new Uint8Array(data.buffer));
    return { name, shape, dtype: "float32" };
  });
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((offset, p) => (all.set(p, offset), offset + p.length), 0);
  // Two shards cut inside a weight, as the converter cuts at a fixed shard size.
  const shards = new Map([
    ["group1-shard1of2.bin", all.slice(0, 101)],
    ["group1-shard2of2.bin", all.slice(101)],
  ]);
  const model = {
    format: "layers-model",
    generatedBy: "test",
    convertedBy: "test",
    modelTopology: {
      keras_version: "2.2.4-tf",
      backend: "tensorflow",
      model_config: {
        class_name: "Model",
        config: {
          name: "tiny",
          layers,
          input_layers: [["input_1", 0, 0]],
          output_layers: [["fc", 0, 0]],
        },
      },
    },
    weightsManifest: [{ paths: [...shards.keys()], weights }],
  };
  return { model, shards, values: valueMap };
}
