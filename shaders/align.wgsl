// Rigid alignment and the variation model (Steger et al., MVAA 3.4.1.4).
//
// A pose (θ, t) maps a point p of the reference (aligned) frame to the image frame:
//   T(p) = R(θ) (p − c) + c + t,  c = (width / 2, height / 2),
// in continuous pixel coordinates where pixel (i, j) has its centre at (i + 0.5, j + 0.5).
// Images are sampled bilinearly with clamp-to-edge, so poses that look past the border see the
// border's (usually background) gray value.
//
// score_poses: one workgroup per candidate pose of an angle × shift-x × shift-y grid. It warps the
//   moving image onto the reference's support and returns the normalised cross-correlation
//   NCC = Σ r̂ x / sqrt(Σ w x² − (Σ w x)² / Σ w), where r̂ is the reference made zero-mean and of
//   unit norm on its support w (so Σ r̂ = 0 and the numerator needs no mean of x).
// warp: out[offset + p] = x(T(p)), writing into one image of a stack.
// moments: per-pixel mean and (population) standard deviation over a stack of images.
// deviation: the anomaly map in the image frame. For every image pixel q, p = T⁻¹(q) is where q
//   lies in the aligned frame; the model's μ, σ and foreground there give
//   |x(q) − μ(p)| / max(a, b σ(p)), and 0 outside the foreground or the aligned frame.
//
// ScoreParams, WarpParams, MomentParams and DeviationParams are declared in
// src/methods/variation/align.ts.

@group(0) @binding(0) var<uniform> sp: ScoreParams;
@group(0) @binding(1) var<storage, read> reference_hat: array<f32>;
@group(0) @binding(2) var<storage, read> support_weight: array<f32>;
@group(0) @binding(3) var<storage, read> score_src: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

var<workgroup> sum_rx: array<f32, 256>;
var<workgroup> sum_x: array<f32, 256>;
var<workgroup> sum_xx: array<f32, 256>;

fn sample_score_src(q: vec2f) -> f32 {
  let u = q - vec2f(0.5);
  let base = floor(u);
  let f = u - base;
  let x0 = clamp(i32(base.x), 0, i32(sp.width) - 1);
  let x1 = clamp(i32(base.x) + 1, 0, i32(sp.width) - 1);
  let y0 = clamp(i32(base.y), 0, i32(sp.height) - 1);
  let y1 = clamp(i32(base.y) + 1, 0, i32(sp.height) - 1);
  let w = i32(sp.width);
  let top = mix(score_src[y0 * w + x0], score_src[y0 * w + x1], f.x);
  let bottom = mix(score_src[y1 * w + x0], score_src[y1 * w + x1], f.x);
  return mix(top, bottom, f.y);
}

@compute @workgroup_size(256)
fn score_poses(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let pose = wid.x + wid.y * nwg.x;
  // Uniform control flow: every thread of a workgroup agrees on `in_range`.
  let in_range = pose < sp.pose_count;
  let ia = pose % sp.angle_count;
  let rest = pose / sp.angle_count;
  let ix = rest % sp.shift_count;
  let iy = rest / sp.shift_count;
  let middle_angle = f32(sp.angle_count - 1u) * 0.5;
  let middle_shift = f32(sp.shift_count - 1u) * 0.5;
  let angle = sp.centre_angle + (f32(ia) - middle_angle) * sp.angle_step;
  let t = vec2f(
    sp.centre_tx + (f32(ix) - middle_shift) * sp.shift_step,
    sp.centre_ty + (f32(iy) - middle_shift) * sp.shift_step,
  );
  let c = vec2f(f32(sp.width), f32(sp.height)) * 0.5;
  let cs = cos(angle);
  let sn = sin(angle);
  var rx = 0.0;
  var sx = 0.0;
  var sxx = 0.0;
  let n = sp.width * sp.height;
  if (in_range) {
    for (var i = lid; i < n; i += 256u) {
      let w = support_weight[i];
      if (w > 0.0) {
        let d = vec2f(f32(i % sp.width), f32(i / sp.width)) + vec2f(0.5) - c;
        let q = vec2f(cs * d.x - sn * d.y, sn * d.x + cs * d.y) + c + t;
        let x = sample_score_src(q);
        rx += reference_hat[i] * x;
        sx += w * x;
        sxx += w * x * x;
      }
    }
  }
  sum_rx[lid] = rx;
  sum_x[lid] = sx;
  sum_xx[lid] = sxx;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      sum_rx[lid] += sum_rx[lid + stride];
      sum_x[lid] += sum_x[lid + stride];
      sum_xx[lid] += sum_xx[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u && in_range) {
    let variance = sum_xx[0] - sum_x[0] * sum_x[0] / sp.support;
    // A flat warped image correlates with nothing.
    scores[pose] = select(0.0, sum_rx[0] / sqrt(variance), variance > 1e-8);
  }
}

// The same scores with one thread per pose, for grids of thousands of poses on small levels:
// there the per-workgroup reduction of score_poses costs more than the sums themselves.
@compute @workgroup_size(64)
fn score_poses_per_thread(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let pose = gid.x + gid.y * nwg.x * 64u;
  if (pose >= sp.pose_count) {
    return;
  }
  let ia = pose % sp.angle_count;
  let rest = pose / sp.angle_count;
  let ix = rest % sp.shift_count;
  let iy = rest / sp.shift_count;
  let angle = sp.centre_angle + (f32(ia) - f32(sp.angle_count - 1u) * 0.5) * sp.angle_step;
  let middle_shift = f32(sp.shift_count - 1u) * 0.5;
  let t = vec2f(
    sp.centre_tx + (f32(ix) - middle_shift) * sp.shift_step,
    sp.centre_ty + (f32(iy) - middle_shift) * sp.shift_step,
  );
  let c = vec2f(f32(sp.width), f32(sp.height)) * 0.5;
  let cs = cos(angle);
  let sn = sin(angle);
  var rx = 0.0;
  var sx = 0.0;
  var sxx = 0.0;
  for (var i = 0u; i < sp.width * sp.height; i++) {
    let w = support_weight[i];
    if (w > 0.0) {
      let d = vec2f(f32(i % sp.width), f32(i / sp.width)) + vec2f(0.5) - c;
      let q = vec2f(cs * d.x - sn * d.y, sn * d.x + cs * d.y) + c + t;
      let x = sample_score_src(q);
      rx += reference_hat[i] * x;
      sx += w * x;
      sxx += w * x * x;
    }
  }
  let variance = sxx - sx * sx / sp.support;
  scores[pose] = select(0.0, rx / sqrt(variance), variance > 1e-8);
}

@group(0) @binding(0) var<uniform> wp: WarpParams;
@group(0) @binding(1) var<storage, read> warp_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> warp_dst: array<f32>;

fn sample_warp_src(q: vec2f) -> f32 {
  let u = q - vec2f(0.5);
  let base = floor(u);
  let f = u - base;
  let x0 = clamp(i32(base.x), 0, i32(wp.width) - 1);
  let x1 = clamp(i32(base.x) + 1, 0, i32(wp.width) - 1);
  let y0 = clamp(i32(base.y), 0, i32(wp.height) - 1);
  let y1 = clamp(i32(base.y) + 1, 0, i32(wp.height) - 1);
  let w = i32(wp.width);
  let top = mix(warp_src[y0 * w + x0], warp_src[y0 * w + x1], f.x);
  let bottom = mix(warp_src[y1 * w + x0], warp_src[y1 * w + x1], f.x);
  return mix(top, bottom, f.y);
}

@compute @workgroup_size(256)
fn warp(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= wp.width * wp.height) {
    return;
  }
  let c = vec2f(f32(wp.width), f32(wp.height)) * 0.5;
  let d = vec2f(f32(i % wp.width), f32(i / wp.width)) + vec2f(0.5) - c;
  let q = vec2f(wp.cos_angle * d.x - wp.sin_angle * d.y, wp.sin_angle * d.x + wp.cos_angle * d.y) +
    c + vec2f(wp.tx, wp.ty);
  warp_dst[wp.offset + i] = sample_warp_src(q);
}

@group(0) @binding(0) var<uniform> mp: MomentParams;
@group(0) @binding(1) var<storage, read> stack: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> std_out: array<f32>;

@compute @workgroup_size(256)
fn moments(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= mp.pixels) {
    return;
  }
  // Two passes over the stack: the mean first, then squared deviations from it, which keeps the
  // variance accurate where a single Σx² − (Σx)²/n pass would cancel.
  var total = 0.0;
  for (var n = 0u; n < mp.images; n++) {
    total += stack[n * mp.pixels + i];
  }
  let mean = total / f32(mp.images);
  var squares = 0.0;
  for (var n = 0u; n < mp.images; n++) {
    let d = stack[n * mp.pixels + i] - mean;
    squares += d * d;
  }
  mean_out[i] = mean;
  std_out[i] = sqrt(squares / f32(mp.images));
}

@group(0) @binding(0) var<uniform> dp: DeviationParams;
@group(0) @binding(1) var<storage, read> dev_image: array<f32>;
@group(0) @binding(2) var<storage, read> dev_mean: array<f32>;
@group(0) @binding(3) var<storage, read> dev_std: array<f32>;
@group(0) @binding(4) var<storage, read> dev_foreground: array<f32>;
@group(0) @binding(5) var<storage, read_write> dev_out: array<f32>;

fn sample_model(values_index: u32, q: vec2f) -> f32 {
  let u = q - vec2f(0.5);
  let base = floor(u);
  let f = u - base;
  let x0 = clamp(i32(base.x), 0, i32(dp.width) - 1);
  let x1 = clamp(i32(base.x) + 1, 0, i32(dp.width) - 1);
  let y0 = clamp(i32(base.y), 0, i32(dp.height) - 1);
  let y1 = clamp(i32(base.y) + 1, 0, i32(dp.height) - 1);
  let w = i32(dp.width);
  let i00 = y0 * w + x0;
  let i01 = y0 * w + x1;
  let i10 = y1 * w + x0;
  let i11 = y1 * w + x1;
  var v = vec4f(0.0);
  if (values_index == 0u) {
    v = vec4f(dev_mean[i00], dev_mean[i01], dev_mean[i10], dev_mean[i11]);
  } else if (values_index == 1u) {
    v = vec4f(dev_std[i00], dev_std[i01], dev_std[i10], dev_std[i11]);
  } else {
    v = vec4f(
      dev_foreground[i00],
      dev_foreground[i01],
      dev_foreground[i10],
      dev_foreground[i11],
    );
  }
  return mix(mix(v.x, v.y, f.x), mix(v.z, v.w, f.x), f.y);
}

@compute @workgroup_size(256)
fn deviation(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= dp.width * dp.height) {
    return;
  }
  let size = vec2f(f32(dp.width), f32(dp.height));
  let c = size * 0.5;
  // Inverse pose: p = R(−θ) (q − c − t) + c.
  let d = vec2f(f32(i % dp.width), f32(i / dp.width)) + vec2f(0.5) - c - vec2f(dp.tx, dp.ty);
  let p = vec2f(dp.cos_angle * d.x + dp.sin_angle * d.y, -dp.sin_angle * d.x + dp.cos_angle * d.y) +
    c;
  if (any(p < vec2f(0.0)) || any(p > size)) {
    dev_out[i] = 0.0;
    return;
  }
  // Bilinear weights make the mask soft at its edge; half of the support counts as inside.
  if (sample_model(2u, p) < 0.5) {
    dev_out[i] = 0.0;
    return;
  }
  let mean = sample_model(0u, p);
  let sigma = sample_model(1u, p);
  let tolerance = max(dp.absolute_tolerance, dp.relative_tolerance * sigma);
  dev_out[i] = abs(dev_image[i] - mean) / tolerance;
}
