// SSIM with a separable Gaussian window over NCHW planes: two passes forward, two backward. Every
// pass filters four values per pixel at once (a vec4), along x or along y, through a tile in
// workgroup memory, so each input is read from storage once per pass rather than once per tap.
//
// Forward: `moments_x` filters (a, b, a² + b², ab) along x; `ssim_y` (or `ssim_y_grad`) filters
// those along y, which gives the local moments μa, μb, E[a²] + E[b²] and E[ab] (only the sum of the
// squares enters SSIM), and turns them into the SSIM map. `ssim_y_grad` also keeps, per pixel,
// the map's partial derivatives with respect to the four moments.
//
// Backward: a moment at pixel i is r(i) · Σ_j w(i, j) · x(j), where w is the zero-padded window
// and r(i) = 1 / Σ_{j inside} w(i, j) normalises the border. Its adjoint sends g(i) to every j:
// Σ_i w(i, j) · r(i) · g(i), the same zero-padded filter with reversed taps applied to r · g.
// `grad_x` and `grad_y` apply it to the four g · r · ∂map/∂moment planes, and `grad_y` combines
// them with the chain rule through a, b, a² + b² and ab.
//
// Outside the image every value is zero (zero padding), as in shaders/filter.wgsl.

// SsimParams, RADIUS (a pipeline constant: the window has 2 · RADIUS + 1 taps) and the tile sizes
// TILE_LENGTH, TILE_BREADTH and OUTPUTS_PER_THREAD are declared in src/tensor/ops/losses.ts.

@group(0) @binding(0) var<uniform> p: SsimParams;
// a and b: the images (inputs of moments_x and of grad_y).
@group(0) @binding(1) var<storage, read> image_a: array<f32>;
@group(0) @binding(2) var<storage, read> image_b: array<f32>;
// The gradient of the map (input of grad_x).
@group(0) @binding(3) var<storage, read> map_grad: array<f32>;
// Four values per pixel: filtered along x (input of the y passes) or the saved derivatives
// (input of grad_x).
@group(0) @binding(4) var<storage, read> quad_in: array<vec4f>;
// Four values per pixel: filtered along x (x passes) or the saved derivatives (ssim_y_grad).
@group(0) @binding(5) var<storage, read_write> quad_out: array<vec4f>;
// The SSIM map (y forward passes) or the gradient of a (grad_y).
@group(0) @binding(6) var<storage, read_write> out_a: array<f32>;
// The gradient of b (grad_y).
@group(0) @binding(7) var<storage, read_write> out_b: array<f32>;

const TAP_COUNT: u32 = 2u * RADIUS + 1u;
const THREADS: u32 = TILE_BREADTH * TILE_LENGTH / OUTPUTS_PER_THREAD;
// Tile entries along the filter's axis: the outputs and RADIUS entries of margin on either side.
const SPAN: u32 = TILE_LENGTH + 2u * RADIUS;

// A workgroup's inputs, TILE_BREADTH lines of SPAN values along the pass's axis, at
// `along * TILE_BREADTH + across`.
var<workgroup> shared_tile: array<vec4f, SPAN * TILE_BREADTH>;

fn tap(t: u32) -> f32 {
  return p.taps[t / 4u][t % 4u];
}

// The pixels a workgroup computes: TILE_LENGTH along the pass's axis by TILE_BREADTH across, in
// plane `plane`, from (x0, y0).
struct Tile {
  plane: u32,
  x0: u32,
  y0: u32,
}

// Workgroups are numbered plane by plane, row of tiles by row of tiles, on a 2-D grid (see grid2d
// in src/gpu/kernel.ts), so the number of planes is not limited to 65535. p.tiles_x and
// p.tiles_y count the pass's tiles across and down a plane.
fn tile_of(wid: vec3u, nwg: vec3u, along_x: bool) -> Tile {
  let group = wid.x + wid.y * nwg.x;
  let tiles_per_plane = p.tiles_x * p.tiles_y;
  let t = group % tiles_per_plane;
  var size = vec2u(TILE_BREADTH, TILE_LENGTH);
  if (along_x) {
    size = vec2u(TILE_LENGTH, TILE_BREADTH);
  }
  return Tile(group / tiles_per_plane, (t % p.tiles_x) * size.x, (t / p.tiles_x) * size.y);
}

// The pixel (x, y) of a tile entry, or of a thread's output `along` entries past the margin;
// possibly outside the plane.
fn pixel_of(tile: Tile, along: i32, across: u32, along_x: bool) -> vec2i {
  if (along_x) {
    return vec2i(i32(tile.x0) + along, i32(tile.y0 + across));
  }
  return vec2i(i32(tile.x0 + across), i32(tile.y0) + along);
}

fn inside(pixel: vec2i) -> bool {
  return all(pixel >= vec2i(0)) && all(pixel < vec2i(i32(p.width), i32(p.height)));
}

fn pixel_index(plane: u32, pixel: vec2i) -> u32 {
  return (plane * p.height + u32(pixel.y)) * p.width + u32(pixel.x);
}

// The pixel of tile entry `slot` (entries are filled by all threads in turn).
fn slot_pixel(tile: Tile, slot: u32, along_x: bool) -> vec2i {
  return pixel_of(tile, i32(slot / TILE_BREADTH) - i32(RADIUS), slot % TILE_BREADTH, along_x);
}

// The pixels of this thread's outputs: OUTPUTS_PER_THREAD consecutive ones along the axis.
fn output_pixel(tile: Tile, lid: vec3u, k: u32, along_x: bool) -> vec2i {
  return pixel_of(tile, i32(lid.x * OUTPUTS_PER_THREAD + k), lid.y, along_x);
}

// The window's weight inside the image for a pixel at `position` along an axis of `size`.
fn inside_weight(position: i32, size: u32) -> f32 {
  var total = 0.0;
  for (var t = 0u; t < TAP_COUNT; t++) {
    let source = position + i32(t) - i32(RADIUS);
    if (source >= 0 && source < i32(size)) {
      total += tap(t);
    }
  }
  return total;
}

// Σ_t taps[t] · shared_tile[first + k + t] for this thread's outputs k < 4 (OUTPUTS_PER_THREAD), once
// the tile is full. Each entry is read once and used by every output whose window covers it:
// on lavapipe this took a pass from about 3 ms to under 2 ms against one output per thread.
fn filtered(lid: vec3u) -> array<vec4f, 4> {
  let first = lid.x * OUTPUTS_PER_THREAD;
  let across = lid.y;
  var w0 = shared_tile[first * TILE_BREADTH + across];
  var w1 = shared_tile[(first + 1u) * TILE_BREADTH + across];
  var w2 = shared_tile[(first + 2u) * TILE_BREADTH + across];
  var s0 = vec4f(0.0);
  var s1 = vec4f(0.0);
  var s2 = vec4f(0.0);
  var s3 = vec4f(0.0);
  for (var t = 0u; t < TAP_COUNT; t++) {
    let w3 = shared_tile[(first + t + 3u) * TILE_BREADTH + across];
    let weight = tap(t);
    s0 += weight * w0;
    s1 += weight * w1;
    s2 += weight * w2;
    s3 += weight * w3;
    w0 = w1;
    w1 = w2;
    w2 = w3;
  }
  return array(s0, s1, s2, s3);
}

// Fills the tile from quad_in (zero outside the plane) and filters it along y. Every thread of the
// workgroup calls it (it waits at a barrier).
fn filtered_quads_along_y(tile: Tile, lid: vec3u, thread: u32) -> array<vec4f, 4> {
  for (var slot = thread; slot < SPAN * TILE_BREADTH; slot += THREADS) {
    let pixel = slot_pixel(tile, slot, false);
    var value = vec4f(0.0);
    if (inside(pixel)) {
      value = quad_in[pixel_index(tile.plane, pixel)];
    }
    shared_tile[slot] = value;
  }
  workgroupBarrier();
  return filtered(lid);
}

// SSIM = A1 · A2 / (B1 · B2) with A1 = 2 μa μb + c1, A2 = 2 (E[ab] − μa μb) + c2,
// B1 = μa² + μb² + c1 and B2 = E[a²] + E[b²] − μa² − μb² + c2.
struct SsimTerms {
  ssim: f32,
  // ∂SSIM/∂(μa, μb, E[a²] + E[b²], E[ab]).
  derivatives: vec4f,
}

fn ssim_terms(m: vec4f) -> SsimTerms {
  let mu_a = m.x;
  let mu_b = m.y;
  let a1 = 2.0 * mu_a * mu_b + p.c1;
  let a2 = 2.0 * (m.w - mu_a * mu_b) + p.c2;
  let b1 = mu_a * mu_a + mu_b * mu_b + p.c1;
  let b2 = m.z - mu_a * mu_a - mu_b * mu_b + p.c2;
  let inverse = 1.0 / (b1 * b2);
  let ssim = a1 * a2 * inverse;
  // μ enters A1 and A2 with opposite signs, and B1 and B2 likewise.
  let numerator_slope = a2 - a1;
  let denominator_slope = ssim * (b2 - b1);
  let derivatives = vec4f(
    2.0 * inverse * (mu_b * numerator_slope - mu_a * denominator_slope),
    2.0 * inverse * (mu_a * numerator_slope - mu_b * denominator_slope),
    -ssim / b2,
    2.0 * a1 * inverse,
  );
  return SsimTerms(ssim, derivatives);
}

// 1 / (the window's weight inside the image) at a pixel: the border normaliser r.
fn normalizer(pixel: vec2i) -> f32 {
  return 1.0 / (inside_weight(pixel.x, p.width) * inside_weight(pixel.y, p.height));
}

// The x passes, once their tile of inputs is in shared_tile: filter it and write quad_out.
fn store_filtered_along_x(tile: Tile, lid: vec3u) {
  workgroupBarrier();
  let sums = filtered(lid);
  for (var k = 0u; k < OUTPUTS_PER_THREAD; k++) {
    let pixel = output_pixel(tile, lid, k, true);
    if (inside(pixel)) {
      quad_out[pixel_index(tile.plane, pixel)] = sums[k];
    }
  }
}

@compute @workgroup_size(TILE_LENGTH / OUTPUTS_PER_THREAD, TILE_BREADTH)
fn moments_x(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) thread: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tile = tile_of(wid, nwg, true);
  if (tile.plane >= p.planes) {
    return;
  }
  for (var slot = thread; slot < SPAN * TILE_BREADTH; slot += THREADS) {
    let pixel = slot_pixel(tile, slot, true);
    var value = vec4f(0.0);
    if (inside(pixel)) {
      let i = pixel_index(tile.plane, pixel);
      let a = image_a[i];
      let b = image_b[i];
      value = vec4f(a, b, a * a + b * b, a * b);
    }
    shared_tile[slot] = value;
  }
  store_filtered_along_x(tile, lid);
}

@compute @workgroup_size(TILE_LENGTH / OUTPUTS_PER_THREAD, TILE_BREADTH)
fn ssim_y(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) thread: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tile = tile_of(wid, nwg, false);
  if (tile.plane >= p.planes) {
    return;
  }
  let sums = filtered_quads_along_y(tile, lid, thread);
  for (var k = 0u; k < OUTPUTS_PER_THREAD; k++) {
    let pixel = output_pixel(tile, lid, k, false);
    if (inside(pixel)) {
      out_a[pixel_index(tile.plane, pixel)] = ssim_terms(sums[k] * normalizer(pixel)).ssim;
    }
  }
}

// ssim_y that also keeps r · ∂SSIM/∂moments for the backward pass (r: the border normaliser).
@compute @workgroup_size(TILE_LENGTH / OUTPUTS_PER_THREAD, TILE_BREADTH)
fn ssim_y_grad(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) thread: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tile = tile_of(wid, nwg, false);
  if (tile.plane >= p.planes) {
    return;
  }
  let sums = filtered_quads_along_y(tile, lid, thread);
  for (var k = 0u; k < OUTPUTS_PER_THREAD; k++) {
    let pixel = output_pixel(tile, lid, k, false);
    if (inside(pixel)) {
      let i = pixel_index(tile.plane, pixel);
      let r = normalizer(pixel);
      let terms = ssim_terms(sums[k] * r);
      out_a[i] = terms.ssim;
      quad_out[i] = terms.derivatives * r;
    }
  }
}

// The adjoint along x of g · r · ∂SSIM/∂moments; p.taps holds the reversed taps.
@compute @workgroup_size(TILE_LENGTH / OUTPUTS_PER_THREAD, TILE_BREADTH)
fn grad_x(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) thread: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tile = tile_of(wid, nwg, true);
  if (tile.plane >= p.planes) {
    return;
  }
  for (var slot = thread; slot < SPAN * TILE_BREADTH; slot += THREADS) {
    let pixel = slot_pixel(tile, slot, true);
    var value = vec4f(0.0);
    if (inside(pixel)) {
      let i = pixel_index(tile.plane, pixel);
      value = map_grad[i] * quad_in[i];
    }
    shared_tile[slot] = value;
  }
  store_filtered_along_x(tile, lid);
}

// The adjoint along y, then the chain rule through the filtered quantities (a, b, a² + b², ab):
// ∂L/∂a = G.x + 2a · G.z + b · G.w and ∂L/∂b = G.y + 2b · G.z + a · G.w.
@compute @workgroup_size(TILE_LENGTH / OUTPUTS_PER_THREAD, TILE_BREADTH)
fn grad_y(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) thread: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tile = tile_of(wid, nwg, false);
  if (tile.plane >= p.planes) {
    return;
  }
  let sums = filtered_quads_along_y(tile, lid, thread);
  for (var k = 0u; k < OUTPUTS_PER_THREAD; k++) {
    let pixel = output_pixel(tile, lid, k, false);
    if (inside(pixel)) {
      let i = pixel_index(tile.plane, pixel);
      let a = image_a[i];
      let b = image_b[i];
      let g = sums[k];
      out_a[i] = g.x + 2.0 * a * g.z + b * g.w;
      out_b[i] = g.y + 2.0 * b * g.z + a * g.w;
    }
  }
}
