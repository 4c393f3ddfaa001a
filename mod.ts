/**
 * anodet: visual anomaly detection on WebGPU, for Deno.
 *
 * The public API: the engine (GPU device, tensors with autograd, ops, layers, optimizers, the
 * training loop and checkpoints), the MVTec AD data loaders and augmentation, the methods and
 * their registry, the run folder, and the MVTec AD evaluation. Importing it needs no permission:
 * the shaders are bundled, and the image codec loads only when an image is decoded.
 *
 * @example
 * ```ts
 * import { init, relu, tensor } from "@anodet/webgpu";
 * await init();
 * console.log(await relu(tensor([-1, 2])).toArray()); // Float32Array [0, 2]
 * ```
 *
 * @module
 */

// ---- GPU and tensors ----------------------------------------------------------------------------
export { type AdapterDescription, getGpu, type Gpu, NoGpuAdapterError } from "./src/gpu/device.ts";
export { GpuDeviceLostError } from "./src/gpu/lost.ts";
export {
  init,
  keep,
  noGrad,
  type Shape,
  shapeSize,
  Tensor,
  tensor,
  TensorTooLargeError,
  tidy,
  toArrays,
} from "./src/tensor/tensor.ts";
export {
  abs,
  add,
  addScalar,
  affine,
  avgPool2d,
  batchNorm2d,
  bceWithLogits,
  boxFilter,
  clamp,
  concat,
  conv2d,
  type Conv2dOptions,
  convTranspose2d,
  type ConvTranspose2dOptions,
  copy,
  div,
  exp,
  expand,
  fakeQuantize,
  fill,
  flatten,
  gaussianBlur,
  greater,
  l1,
  leakyRelu,
  log,
  manualSeed,
  matmul,
  max,
  maximum,
  maxPool2d,
  mean,
  minimum,
  mse,
  mul,
  mulScalar,
  neg,
  ones,
  pad,
  permute,
  powScalar,
  rand,
  randn,
  reciprocal,
  relu,
  reshape,
  separableFilter,
  sigmoid,
  sign,
  slice,
  sqrt,
  square,
  ssim,
  type SsimOptions,
  type SsimResult,
  sub,
  sum,
  tanh,
  transpose,
  upsample,
  withSeed,
  zeros,
  zerosLike,
} from "./src/tensor/ops.ts";

// ---- networks -----------------------------------------------------------------------------------
export { Module } from "./src/nn/module.ts";
export {
  BatchNorm2d,
  Conv2d,
  ConvTranspose2d,
  LeakyReLU,
  Linear,
  ReLU,
  Sequential,
  Sigmoid,
  Tanh,
} from "./src/nn/layers.ts";
export { glorotUniform, heNormal, normalInit } from "./src/nn/init.ts";
export { Adam, type AdamOptions, type Optimizer, SGD, type SgdOptions } from "./src/nn/optim.ts";
export {
  CheckpointError,
  loadModule,
  loadSafetensors,
  saveModule,
  saveSafetensors,
} from "./src/nn/checkpoint.ts";
export {
  type CheckpointableOptimizer,
  fit,
  type FitOptions,
  type FitResult,
  type TrainProgress,
} from "./src/nn/fit.ts";
export {
  BACKBONE_NAMES,
  type BackboneName,
  type BackboneSource,
  loadBackbone,
} from "./src/nn/backbones/backbones.ts";
export { Backbone, foldBatchNorms, type Prediction } from "./src/nn/backbones/runner.ts";
export {
  type BackboneGraph,
  GRAPH_INPUT,
  type GraphNode,
  type GraphOp,
  type GraphWeight,
  ModelFormatError,
  type Preprocessing,
} from "./src/nn/backbones/graph.ts";
export { loadTflite, readLabels, readTflite } from "./src/nn/backbones/tflite.ts";
export { convertTfjsLayersModel, readTfjsLayersModel } from "./src/nn/backbones/tfjs.ts";
export { loadGraph, saveGraph, type StoredGraph } from "./src/nn/backbones/graph_file.ts";
export {
  backboneCacheDir,
  RESNET50_PACKAGE,
  resolveResnet50,
} from "./src/nn/backbones/resnet50.ts";

// ---- data ---------------------------------------------------------------------------------------
export {
  type Channels,
  convertChannels,
  encodePng,
  type FloatImage,
  ImageFormatError,
  MAX_IMAGE_PIXELS,
  MAX_IMAGE_SIDE,
  type PngBitDepth,
  type PngColorType,
  type PngEncodeOptions,
  readImage,
  resize,
  type ResizeMethod,
  type RgbaImage,
  toGrayscale,
  toRgb,
  writePng,
} from "./src/data/image.ts";
export { InputError, isInputError } from "./src/util/errors.ts";
export {
  type CategoryInfo,
  categoryInfo,
  type CategoryKind,
  listCategories,
  MVTEC_CATEGORIES,
  MvtecCategory,
  OBJECT_CATEGORIES,
  openCategory,
  type OpenOptions,
  type Sample,
  TEXTURE_CATEGORIES,
} from "./src/data/mvtec.ts";
export {
  augment,
  type AugmentOptions,
  augmentOptionsFor,
  type Batch,
  batches,
  categorySource,
} from "./src/data/augment.ts";
export { Random } from "./src/data/random.ts";

// ---- methods and runs ---------------------------------------------------------------------------
export {
  type AnomalyDetector,
  applicabilityProblem,
  defineMethod,
  type MethodDeclaration,
  type MethodDefinition,
  OptionError,
  type OptionSpec,
  type OptionSpecs,
  type OptionValues,
  TrainingStoppedError,
  type TrainOptions,
  type TrainResult,
} from "./src/methods/method.ts";
export { BUILTIN_METHODS, getMethod, listMethods, registerMethod } from "./src/methods/registry.ts";
export {
  type RunOptions,
  type RunResult,
  trainRun,
  writeRunOutputs,
} from "./src/methods/runner.ts";
export {
  aeL2,
  aeSsim,
  AUTOENCODER_PRESETS,
  AutoencoderDetector,
  type AutoencoderSettings,
  type AutoencoderTrainOptions,
  loadAutoencoder,
  trainAutoencoder,
} from "./src/methods/ae/ae.ts";
export { buildAutoencoder } from "./src/methods/ae/model.ts";
export {
  GMM_DEFAULTS,
  gmmMethod,
  type GmmSettings,
  GmmTextureModel,
  loadGmm,
  trainGmm,
} from "./src/methods/gmm/model.ts";
export {
  loadVariation,
  trainVariation,
  VARIATION_DEFAULTS,
  variationMethod,
  VariationModel,
  type VariationSettings,
} from "./src/methods/variation/model.ts";
export {
  loadPadim,
  PADIM_DEFAULTS,
  padimMethod,
  PadimModel,
  type PadimSettings,
  trainPadim,
} from "./src/methods/padim/padim.ts";
export {
  CNN_DICT_DEFAULTS,
  cnnDictMethod,
  CnnDictModel,
  type CnnDictSettings,
  loadCnnDict,
  trainCnnDict,
} from "./src/methods/cnn_dict/cnn_dict.ts";
export {
  kmeans,
  nearestCentreDistance,
  type Pca,
  pca,
  project,
  symmetricEigen,
} from "./src/methods/cnn_dict/statistics.ts";
export { greedyCoreset, MemoryBank } from "./src/methods/patchcore/search.ts";
export {
  loadPatchcore,
  PATCHCORE_DEFAULTS,
  patchcoreMethod,
  PatchcoreModel,
  type PatchcoreSettings,
  trainPatchcore,
} from "./src/methods/patchcore/patchcore.ts";
export {
  findRuns,
  type FoundRun,
  readRun,
  type RunConfig,
  runDirectory,
  type RunThreshold,
} from "./src/run/folder.ts";

// ---- evaluation ---------------------------------------------------------------------------------
export {
  auPro,
  averagePrecision,
  pixelAveragePrecision,
  pixelRocAuc,
  proCurve,
  rocAuc,
  rocCurve,
  validationThreshold,
} from "./src/eval/metrics.ts";
export {
  type CategoryInput,
  type CategoryMetrics,
  evaluateCategory,
  EvaluationInputError,
  type MeanMetrics,
  meanOverCategories,
} from "./src/eval/evaluate.ts";
export { DEFAULT_MIN_AREA_FRACTION, defaultMinArea } from "./src/eval/protocol.ts";
export { evaluateMapsFolder, type EvaluateMapsOptions } from "./src/eval/maps_folder.ts";
export { evaluateRuns, type MethodEvaluation } from "./src/eval/runs.ts";
export { writeEvaluationOutputs } from "./src/eval/outputs.ts";
export { readTiffFile, writeTiffFile } from "./src/eval/tiff.ts";
export { renderHeatmap, renderLineChart, renderQualitative } from "./src/eval/plot.ts";
export { VERSION } from "./src/version.ts";
