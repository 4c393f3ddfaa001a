/**
 * Rigid alignment (rotation + translation) of grayscale images to a reference, for the variation
 * model. The search maximises the normalised cross-correlation (NCC) between the reference and the
 * warped image, coarse to fine on an image pyramid, and runs on the GPU: one dispatch of
 * `align.wgsl`'s `score_poses` scores a whole angle × shift grid of candidate poses, and one small
 * readback per pyramid level picks the best of them.
 *
 * Pose convention (see align.wgsl): a pose maps a point p of the reference frame to the image,
 * T(p) = R(angle) (p − c) + c + (tx, ty), with c the image centre, in pixels of the finest level.
 * An image aligned to the reference is x(T(p)).
 *
 * @module
 */

import { type FloatImage, resize } from "../../data/image.ts";
import { bind, elementGrid, run } from "../../tensor/ops/launch.ts";
import { grid2d } from "../../gpu/kernel.ts";
import { uniformStruct } from "../../gpu/layout.ts";
import { declareShader } from "../../gpu/shaders.ts";
import { empty, type Tensor, tensor, toArrays } from "../../tensor/tensor.ts";

/** align.wgsl's score_poses: an angle × shift × shift grid of poses around a centre pose. */
const ScoreParams = uniformStruct("ScoreParams", {
  width: "u32",
  height: "u32",
  angle_count: "u32",
  shift_count: "u32", // per axis
  pose_count: "u32",
  centre_angle: "f32",
  angle_step: "f32",
  centre_tx: "f32",
  centre_ty: "f32",
  shift_step: "f32",
  support: "f32", // Σ w
});

/** align.wgsl's warp: a pose, and where the warped image goes in the output stack. */
const WarpParams = uniformStruct("WarpParams", {
  width: "u32",
  height: "u32",
  offset: "u32", // first element of the output image in the stack
  cos_angle: "f32",
  sin_angle: "f32",
  tx: "f32",
  ty: "f32",
});

/** align.wgsl's moments: per-pixel statistics of a stack of `images` images. */
export const MomentParams = uniformStruct("MomentParams", { pixels: "u32", images: "u32" });

/** align.wgsl's deviation: the pose of the image and the tolerances a + b·σ. */
export const DeviationParams = uniformStruct("DeviationParams", {
  width: "u32",
  height: "u32",
  cos_angle: "f32",
  sin_angle: "f32",
  tx: "f32",
  ty: "f32",
  absolute_tolerance: "f32", // a
  relative_tolerance: "f32", // b
});

declareShader("align", ScoreParams, WarpParams, MomentParams, DeviationParams);

/** A rigid pose: rotation about the image centre, then a shift (finest-level pixels). */
export interface RigidPose {
  /** Rotation in radians (counter-clockwise in x-right, y-down image coordinates is clockwise). */
  angle: number;
  /** Shift along x in pixels. */
  tx: number;
  /** Shift along y in pixels. */
  ty: number;
}

/** What the search compares: raw intensities or gradient magnitudes (Sobel). */
export type AlignFeature = "intensity" | "gradient";

/** Settings of the pose search. */
export interface AlignSettings {
  /** Compared quantity; gradients ignore slow illumination changes. */
  feature: AlignFeature;
  /** Rotations searched, ± this many degrees (180 = any rotation). */
  maxRotationDegrees: number;
  /** Shifts searched, ± this fraction of the image side. */
  maxShiftFraction: number;
  /** The pyramid is halved until its next level would be smaller than this (pixels). */
  coarsestSize: number;
  /** Distinct best poses of the coarsest level that are refined on the next level. */
  candidates: number;
  /** Sub-pixel refinement stops when the shift step reaches this (finest-level pixels). */
  finalShiftStep: number;
}

/** Defaults: any rotation, shifts up to 10 % of the side, 32-pixel coarsest level, 12 rivals. */
export const ALIGN_DEFAULTS: Readonly<AlignSettings> = Object.freeze({
  feature: "intensity",
  maxRotationDegrees: 180,
  maxShiftFraction: 0.1,
  coarsestSize: 32,
  candidates: 12,
  finalShiftStep: 1 / 16,
});

/** The outcome of aligning one image. */
export interface Alignment {
  /** The best pose found. */
  pose: RigidPose;
  /** Its NCC on the finest level, in [−1, 1]: the alignment quality. */
  ncc: number;
}

/**
 * Candidates kept after each refinement level: the coarsest level's many rivals are cut down once
 * a finer level has told them apart, so the large levels score only a few.
 */
const SURVIVORS = 3;

/** A grayscale plane. */
export interface Plane {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** width × height values, row-major. */
  data: Float32Array;
}

/** A grid of candidate poses around a centre pose, in one level's pixels. */
interface PoseGrid {
  centre: RigidPose;
  angleStep: number;
  angleCount: number;
  shiftStep: number;
  shiftCount: number;
}

/** Sizes of the pyramid levels, finest first. */
export function pyramidSizes(
  width: number,
  height: number,
  coarsestSize: number,
): [number, number][] {
  const sizes: [number, number][] = [[width, height]];
  while (true) {
    const [w, h] = sizes[sizes.length - 1];
    const next: [number, number] = [Math.round(w / 2), Math.round(h / 2)];
    if (Math.min(...next) < coarsestSize) break;
    sizes.push(next);
  }
  return sizes;
}

/** Sobel gradient magnitude with replicated borders. */
export function gradientMagnitude(plane: Plane): Plane {
  const { width, height, data } = plane;
  const out = new Float32Array(width * height);
  const at = (x: number, y: number) =>
    data[Math.min(height - 1, Math.max(0, y)) * width + Math.min(width - 1, Math.max(0, x))];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const gx = at(x + 1, y - 1) + 2 * at(x + 1, y) + at(x + 1, y + 1) -
        at(x - 1, y - 1) - 2 * at(x - 1, y) - at(x - 1, y + 1);
      const gy = at(x - 1, y + 1) + 2 * at(x, y + 1) + at(x + 1, y + 1) -
        at(x - 1, y - 1) - 2 * at(x, y - 1) - at(x + 1, y - 1);
      out[y * width + x] = Math.hypot(gx, gy) / 8;
    }
  }
  return { width, height, data: out };
}

/** The feature pyramid of a plane, finest first, as the search compares it. */
export function featurePyramid(plane: Plane, settings: AlignSettings): Plane[] {
  const image: FloatImage = { ...plane, channels: 1 };
  return pyramidSizes(plane.width, plane.height, settings.coarsestSize).map(([w, h], level) => {
    // Area averaging smooths each level, so the coarse search sees no aliasing.
    const scaled = level === 0 ? plane : resize(image, w, h, "area");
    return settings.feature === "gradient" ? gradientMagnitude(scaled) : scaled;
  });
}

/**
 * The pixels that the NCC is computed over: the disk inscribed in the image, which a rotation
 * about the centre keeps inside the frame.
 */
function supportDisk(width: number, height: number): Float32Array {
  const weights = new Float32Array(width * height);
  const radius = Math.min(width, height) / 2;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const inside = Math.hypot(x + 0.5 - width / 2, y + 0.5 - height / 2) <= radius;
      weights[y * width + x] = inside ? 1 : 0;
    }
  }
  return weights;
}

/** The reference made zero-mean and unit-norm on the support (zero outside). */
function normalisedReference(plane: Plane, weights: Float32Array): Float32Array {
  let support = 0;
  let sum = 0;
  for (let i = 0; i < weights.length; i++) {
    support += weights[i];
    sum += weights[i] * plane.data[i];
  }
  const mean = sum / support;
  const hat = new Float32Array(weights.length);
  let norm = 0;
  for (let i = 0; i < weights.length; i++) {
    hat[i] = weights[i] * (plane.data[i] - mean);
    norm += hat[i] * hat[i];
  }
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  for (let i = 0; i < hat.length; i++) hat[i] *= scale;
  return hat;
}

/** One pyramid level of the reference, on the GPU. */
interface ReferenceLevel {
  width: number;
  height: number;
  /** Level pixels per finest-level pixel. */
  scale: number;
  support: number;
  referenceHat: Tensor;
  weights: Tensor;
}

/**
 * A reference image prepared for alignment: its feature pyramid, normalised, on the GPU. Align
 * images of the same size to it with {@link AlignmentReference.align}; dispose it when done.
 */
export class AlignmentReference {
  /** The search settings. */
  readonly settings: AlignSettings;
  /** Finest-level width. */
  readonly width: number;
  /** Finest-level height. */
  readonly height: number;
  private readonly levels: ReferenceLevel[];

  /** Prepares `reference` (a grayscale plane at the working size). */
  constructor(reference: Plane, settings: AlignSettings = ALIGN_DEFAULTS) {
    validateAlignSettings(settings);
    this.settings = settings;
    this.width = reference.width;
    this.height = reference.height;
    this.levels = featurePyramid(reference, settings).map((plane) => {
      const weights = supportDisk(plane.width, plane.height);
      return {
        width: plane.width,
        height: plane.height,
        scale: plane.width / reference.width,
        support: weights.reduce((a, b) => a + b, 0),
        referenceHat: tensor(normalisedReference(plane, weights)),
        weights: tensor(weights),
      };
    });
  }

  /** Pyramid levels used by the search. */
  get levelCount(): number {
    return this.levels.length;
  }

  /**
   * Finds the pose that aligns `image` (same size as the reference) to the reference.
   *
   * Coarsest level: every rotation in range (steps of one pixel of arc at the support's rim) and
   * every whole-pixel shift in range; the `candidates` best local maxima go on. Each finer level
   * halves the angle step and searches ±2 steps of angle and ±2 pixels of shift (±1 on the
   * finest level) around every candidate (near-symmetric objects such as the bottle need the rivals kept this long: a pose
   * rotated by about 180° can win on the coarse levels). The best candidate of the finest level
   * is then refined by halving both steps until the shift step reaches `finalShiftStep`.
   */
  async align(image: Plane): Promise<Alignment> {
    if (image.width !== this.width || image.height !== this.height) {
      throw new Error(
        `align: image is ${image.width}×${image.height}, the reference ${this.width}×${this.height}`,
      );
    }
    const pyramid = featurePyramid(image, this.settings);
    const moving = pyramid.map((plane) => tensor(plane.data));
    try {
      const coarsest = this.levels.length - 1;
      const top = this.levels[coarsest];
      const radius = Math.min(top.width, top.height) / 2;
      let angleStep = 1 / radius;
      const maxAngle = (this.settings.maxRotationDegrees * Math.PI) / 180;
      let angleCount: number;
      if (maxAngle >= Math.PI) {
        angleCount = Math.ceil((2 * Math.PI) / angleStep);
        angleStep = (2 * Math.PI) / angleCount;
      } else {
        angleCount = 2 * Math.ceil(maxAngle / angleStep) + 1;
      }
      const maxShift = Math.ceil(
        this.settings.maxShiftFraction * Math.max(top.width, top.height),
      );
      const coarseGrid: PoseGrid = {
        centre: { angle: 0, tx: 0, ty: 0 },
        angleStep,
        angleCount,
        shiftStep: 1,
        shiftCount: 2 * maxShift + 1,
      };
      const [coarseScores] = await toArrays([this.score(coarsest, moving[coarsest], coarseGrid)]);
      let candidates = distinctBest(
        coarseScores,
        coarseGrid,
        this.settings.candidates,
        top.scale,
        maxAngle >= Math.PI,
      );

      for (let level = coarsest - 1; level >= 0; level--) {
        angleStep /= 2;
        // The finest level is the largest: there a ±1-step grid suffices, as the level above
        // leaves at most half a step of its own (one step of this level) to find.
        const reach = level === 0 ? 1 : 2;
        candidates = (await this.refine(level, moving[level], candidates, angleStep, 1, reach))
          .sort((a, b) => b.ncc - a.ncc)
          .slice(0, SURVIVORS);
      }
      let best = candidates.reduce((a, b) => (b.ncc > a.ncc ? b : a));
      // Sub-pixel refinement on the finest level: halving steps, ±1 step each time.
      let shiftStep = 0.5;
      while (shiftStep >= this.settings.finalShiftStep) {
        angleStep /= 2;
        [best] = await this.refine(0, moving[0], [best], angleStep, shiftStep, 1);
        shiftStep /= 2;
      }
      return best;
    } finally {
      moving.forEach((t) => t.dispose());
    }
  }

  /** Scores a ±`reach`-step grid around each candidate on one level; returns each grid's best. */
  private async refine(
    level: number,
    moving: Tensor,
    candidates: readonly Alignment[],
    angleStep: number,
    shiftStep: number,
    reach: number,
  ): Promise<Alignment[]> {
    const { scale } = this.levels[level];
    const grids: PoseGrid[] = candidates.map(({ pose }) => ({
      centre: pose,
      angleStep,
      angleCount: 2 * reach + 1,
      shiftStep,
      shiftCount: 2 * reach + 1,
    }));
    // Every grid is dispatched before the one readback of all their scores.
    const scores = await toArrays(grids.map((grid) => this.score(level, moving, grid)));
    return grids.map((grid, g) => {
      const index = argmax(scores[g]);
      return { pose: poseAt(grid, index, scale), ncc: scores[g][index] };
    });
  }

  /** Dispatches one pose grid on one level; returns the NCC per pose (to be read back). */
  private score(level: number, moving: Tensor, grid: PoseGrid): Tensor {
    const { width, height, scale, support, referenceHat, weights } = this.levels[level];
    const poseCount = grid.angleCount * grid.shiftCount * grid.shiftCount;
    const scores = empty([poseCount]);
    // Large grids on small levels: a thread per pose; otherwise a workgroup per pose.
    const perThread = poseCount >= 1024 && poseCount >= width * height / 8;
    run(moving, {
      shader: "align",
      entryPoint: perThread ? "score_poses_per_thread" : "score_poses",
      params: ScoreParams.pack({
        width,
        height,
        angle_count: grid.angleCount,
        shift_count: grid.shiftCount,
        pose_count: poseCount,
        centre_angle: grid.centre.angle,
        angle_step: grid.angleStep,
        centre_tx: grid.centre.tx * scale,
        centre_ty: grid.centre.ty * scale,
        shift_step: grid.shiftStep,
        support,
      }),
      buffers: [bind(referenceHat), bind(weights), bind(moving), bind(scores)],
      workgroups: perThread ? grid2d(Math.ceil(poseCount / 64)) : grid2d(poseCount),
    });
    return scores;
  }

  /** Frees the GPU copies of the reference pyramid. */
  dispose(): void {
    for (const level of this.levels) {
      level.referenceHat.dispose();
      level.weights.dispose();
    }
  }
}

/** The pose of grid entry `index` (as the kernel decodes it), in finest-level pixels. */
function poseAt(grid: PoseGrid, index: number, scale: number): RigidPose {
  const ia = index % grid.angleCount;
  const rest = Math.floor(index / grid.angleCount);
  const ix = rest % grid.shiftCount;
  const iy = Math.floor(rest / grid.shiftCount);
  const middleAngle = (grid.angleCount - 1) / 2;
  const middleShift = (grid.shiftCount - 1) / 2;
  return {
    angle: wrapAngle(grid.centre.angle + (ia - middleAngle) * grid.angleStep),
    tx: grid.centre.tx + ((ix - middleShift) * grid.shiftStep) / scale,
    ty: grid.centre.ty + ((iy - middleShift) * grid.shiftStep) / scale,
  };
}

/**
 * The `count` best local maxima of the coarse grid's scores (a pose that no neighbour in angle,
 * which wraps around when the grid spans the full circle, or in shift beats). Near-symmetric
 * objects keep their rival poses this way instead of `count` neighbours of a single peak.
 */
function distinctBest(
  scores: Float32Array,
  grid: PoseGrid,
  count: number,
  scale: number,
  fullCircle: boolean,
): Alignment[] {
  const { angleCount, shiftCount } = grid;
  const isLocalMaximum = (index: number): boolean => {
    const ia = index % angleCount;
    const ix = Math.floor(index / angleCount) % shiftCount;
    const iy = Math.floor(index / (angleCount * shiftCount));
    for (let da = -1; da <= 1; da++) {
      let a = ia + da;
      if (fullCircle) a = (a + angleCount) % angleCount;
      else if (a < 0 || a >= angleCount) continue;
      for (let dy = -1; dy <= 1; dy++) {
        const y = iy + dy;
        if (y < 0 || y >= shiftCount) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const x = ix + dx;
          if (x < 0 || x >= shiftCount) continue;
          if (scores[(y * shiftCount + x) * angleCount + a] > scores[index]) return false;
        }
      }
    }
    return true;
  };
  const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a]);
  const chosen: Alignment[] = [];
  for (const index of order) {
    if (chosen.length >= count) break;
    if (isLocalMaximum(index)) {
      chosen.push({ pose: poseAt(grid, index, scale), ncc: scores[index] });
    }
  }
  return chosen;
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** An angle brought into (−π, π]. */
export function wrapAngle(angle: number): number {
  const wrapped = angle - 2 * Math.PI * Math.round(angle / (2 * Math.PI));
  return wrapped <= -Math.PI ? wrapped + 2 * Math.PI : wrapped;
}

/** Checks the search settings, naming the bad one. */
export function validateAlignSettings(settings: AlignSettings): void {
  if (settings.feature !== "intensity" && settings.feature !== "gradient") {
    throw new Error(`align: feature must be "intensity" or "gradient", got "${settings.feature}"`);
  }
  if (!(settings.maxRotationDegrees >= 0 && settings.maxRotationDegrees <= 180)) {
    throw new Error(
      `align: maxRotationDegrees must be in [0, 180], got ${settings.maxRotationDegrees}`,
    );
  }
  if (!(settings.maxShiftFraction >= 0 && settings.maxShiftFraction < 0.5)) {
    throw new Error(
      `align: maxShiftFraction must be in [0, 0.5), got ${settings.maxShiftFraction}`,
    );
  }
  if (!Number.isInteger(settings.coarsestSize) || settings.coarsestSize < 8) {
    throw new Error(`align: coarsestSize must be an integer ≥ 8, got ${settings.coarsestSize}`);
  }
  if (!Number.isInteger(settings.candidates) || settings.candidates < 1) {
    throw new Error(`align: candidates must be a positive integer, got ${settings.candidates}`);
  }
  if (!(settings.finalShiftStep > 0 && settings.finalShiftStep <= 0.5)) {
    throw new Error(`align: finalShiftStep must be in (0, 0.5], got ${settings.finalShiftStep}`);
  }
}

/**
 * Warps `image` into the reference frame on the GPU, out[p] = image(T(p)), into image `slot` of
 * `stack` (a tensor of at least (slot + 1) · width · height values).
 */
export function warpInto(
  image: Tensor,
  width: number,
  height: number,
  pose: RigidPose,
  stack: Tensor,
  slot: number,
): void {
  run(image, {
    shader: "align",
    entryPoint: "warp",
    params: WarpParams.pack({
      width,
      height,
      offset: slot * width * height,
      cos_angle: Math.cos(pose.angle),
      sin_angle: Math.sin(pose.angle),
      tx: pose.tx,
      ty: pose.ty,
    }),
    buffers: [bind(image), bind(stack)],
    workgroups: elementGrid(width * height),
  });
}

/** The same warp on the CPU (a reference for tests, and to make test inputs). */
export function warpPlane(plane: Plane, pose: RigidPose): Plane {
  const { width, height, data } = plane;
  const out = new Float32Array(width * height);
  const cos = Math.cos(pose.angle);
  const sin = Math.sin(pose.angle);
  const cx = width / 2;
  const cy = height / 2;
  const at = (x: number, y: number) =>
    data[Math.min(height - 1, Math.max(0, y)) * width + Math.min(width - 1, Math.max(0, x))];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      const u = cos * dx - sin * dy + cx + pose.tx - 0.5;
      const v = sin * dx + cos * dy + cy + pose.ty - 0.5;
      const x0 = Math.floor(u);
      const y0 = Math.floor(v);
      const fx = u - x0;
      const fy = v - y0;
      const top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx;
      const bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx;
      out[y * width + x] = top * (1 - fy) + bottom * fy;
    }
  }
  return { width, height, data: out };
}

/**
 * The pose that undoes `pose`: if moved(q) = original(P⁻¹(q)), i.e. moved = warpPlane(original,
 * inversePose(P)), then aligning `moved` to `original` should find P.
 */
export function inversePose(pose: RigidPose): RigidPose {
  // P(p) = R(p − c) + c + t  ⇒  P⁻¹(q) = R⁻¹(q − c − t) + c = R⁻¹(q − c) + c − R⁻¹ t.
  const cos = Math.cos(pose.angle);
  const sin = Math.sin(pose.angle);
  return {
    angle: wrapAngle(-pose.angle),
    tx: -(cos * pose.tx + sin * pose.ty),
    ty: -(-sin * pose.tx + cos * pose.ty),
  };
}
