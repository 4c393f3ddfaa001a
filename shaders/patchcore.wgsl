// PatchCore's two searches (src/methods/patchcore/search.ts).
//
// Greedy k-center coreset, with no readback per iteration: the last selected row and the number
// selected so far live in `state`, so every iteration records the same dispatches with the same
// uniforms. The points are rows padded with zeros to whole vec4s, in rgba32float textures (on
// lavapipe a texel fetch is a vector load where a storage buffer read is a per-lane gather) laid
// out in blocks of BLOCK rows, [width, BLOCK] texels each, texel t at (t mod TEXTURE_WIDTH,
// t div TEXTURE_WIDTH): neighbouring threads read neighbouring texels.
// store: writes uploaded rows (row-major f32, possibly projected already) into that layout.
// gather: the chunk holding the last selected row copies it into `centre`.
// update: min_distance[i] = min(min_distance[i], |x_i − centre|²) over the chunk's rows (the
//   selected row itself becomes −1, so that it can never be picked again). Each thread takes one
//   row in each of ROWS_PER_THREAD consecutive blocks and writes the largest value it saw and that
//   value's row to `partials`: no workgroup barriers, which lavapipe runs slowly.
// select_next: one workgroup reduces every partial, appends the winner to `selected` at the slot
//   state[0] and makes it the last selected row.
// Ties go to the smallest row index everywhere, so the selection is deterministic.
//
// Nearest neighbours: with S = Q · Bᵀ from the GEMM engine (one chunk of bank rows at a time),
// scan: per query (one workgroup), the smallest |b_j|² − 2 s_j over the chunk's columns and its
//   row, merged with what earlier chunks found (strictly smaller wins: earlier rows win ties).
// finish: adds |q|² and takes the square root (rounding can make the sum slightly negative), and
//   writes the row as an f32 (exact: the bank has fewer than 2^24 rows).
//
// PointStoreParams, CoresetParams, NearestParams, BLOCK, ROWS_PER_THREAD and TEXTURE_WIDTH are
// declared in src/methods/patchcore/search.ts; OperandTexture (the type of points) and load_operand
// in src/gpu/textures.ts.

const WORKGROUP: u32 = 256u;
const NO_ROW: u32 = 0xffffffffu;

var<workgroup> wg_value: array<f32, WORKGROUP>;
var<workgroup> wg_row: array<u32, WORKGROUP>;

// Tree reduction of (wg_value, wg_row) into slot 0, keeping the largest value (`largest`) or the
// smallest, the smaller row on ties. Every thread of the workgroup must call it.
fn reduce_workgroup(lid: u32, largest: bool) {
  workgroupBarrier();
  for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      let value = wg_value[lid + half];
      let row = wg_row[lid + half];
      let mine = wg_value[lid];
      let better = select((value < mine), (value > mine), largest);
      if (better || (value == mine && row < wg_row[lid])) {
        wg_value[lid] = value;
        wg_row[lid] = row;
      }
    }
    workgroupBarrier();
  }
}

// ---- greedy coreset ----------------------------------------------------------------------------

fn texel(t: u32) -> vec2u {
  return vec2u(t % TEXTURE_WIDTH, t / TEXTURE_WIDTH);
}

// Texel of row `row` (of its chunk), vec4 `v`.
fn point_texel(row: u32, v: u32, width: u32) -> u32 {
  return ((row / BLOCK) * width + v) * BLOCK + row % BLOCK;
}

@group(0) @binding(0) var<uniform> sp: PointStoreParams;
@group(0) @binding(1) var<storage, read> store_src: array<f32>;
@group(0) @binding(2) var store_dst: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(WORKGROUP)
fn store(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * WORKGROUP;
  if (t >= sp.texels) {
    return;
  }
  let row = (t / (sp.width * BLOCK)) * BLOCK + t % BLOCK;
  let v = (t / BLOCK) % sp.width;
  var value = vec4f(0.0);
  if (row < sp.rows) {
    for (var c = 0u; c < 4u; c++) {
      if (4u * v + c < sp.columns) {
        value[c] = store_src[row * sp.columns + 4u * v + c];
      }
    }
  }
  textureStore(store_dst, texel(sp.texel_offset + t), value);
}

@group(0) @binding(0) var<uniform> cp: CoresetParams;
@group(0) @binding(1) var points: OperandTexture;
// [rows selected so far, the last selected row]
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> centre: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> min_distance: array<f32>;
// Per thread of every chunk's update: (bits of the largest min_distance, its row).
@group(0) @binding(5) var<storage, read_write> partials: array<vec2u>;

@compute @workgroup_size(64)
fn gather(@builtin(local_invocation_index) lid: u32) {
  let row = state[1];
  if (row < cp.row_offset || row >= cp.row_offset + cp.rows) {
    return;
  }
  for (var v = lid; v < cp.width; v += 64u) {
    centre[v] = load_operand(points, texel(point_texel(row - cp.row_offset, v, cp.width)));
  }
}

@compute @workgroup_size(WORKGROUP)
fn update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let thread = gid.x + gid.y * nwg.x * WORKGROUP;
  if (thread >= cp.threads) {
    return;
  }
  let last = state[1];
  let lane = thread % BLOCK;
  let first_block = (thread / BLOCK) * ROWS_PER_THREAD;
  var best = -3.402823e38;
  var best_row = NO_ROW;
  // Rows in increasing order, so that a strict > keeps the smaller row.
  for (var block = first_block; block < first_block + ROWS_PER_THREAD; block++) {
    let local_row = block * BLOCK + lane;
    if (local_row >= cp.rows) {
      break;
    }
    let row = cp.row_offset + local_row;
    var value = min_distance[row];
    if (value >= 0.0) {
      if (row == last) {
        value = -1.0;
      } else {
        let base = block * cp.width * BLOCK + lane;
        var sum = 0.0;
        for (var v = 0u; v < cp.width; v++) {
          let d = load_operand(points, texel(base + v * BLOCK)) - centre[v];
          sum += dot(d, d);
        }
        value = min(value, sum);
      }
      min_distance[row] = value;
    }
    if (value > best) {
      best = value;
      best_row = row;
    }
  }
  partials[cp.partial_offset + thread] = vec2u(bitcast<u32>(best), best_row);
}

@group(0) @binding(1) var<storage, read> all_partials: array<vec2u>;
@group(0) @binding(2) var<storage, read_write> select_state: array<u32>;
@group(0) @binding(3) var<storage, read_write> selected: array<u32>;

@compute @workgroup_size(WORKGROUP)
fn select_next(@builtin(local_invocation_index) lid: u32) {
  var value = -3.402823e38;
  var row = NO_ROW;
  // Partials are not in row order, so equal values compare their rows.
  for (var i = lid; i < cp.partials; i += WORKGROUP) {
    let partial = all_partials[i];
    let v = bitcast<f32>(partial.x);
    if (v > value || (v == value && partial.y < row)) {
      value = v;
      row = partial.y;
    }
  }
  wg_value[lid] = value;
  wg_row[lid] = row;
  reduce_workgroup(lid, true);
  if (lid == 0u) {
    let slot = select_state[0];
    if (slot < cp.count) {
      selected[slot] = wg_row[0];
      select_state[0] = slot + 1u;
      select_state[1] = wg_row[0];
    }
  }
}

// ---- nearest neighbours ------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> np: NearestParams;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read> bank_norms: array<f32>;
// Per query: the smallest |b|² − 2 q·b so far and its bank row.
@group(0) @binding(3) var<storage, read_write> best_value: array<f32>;
@group(0) @binding(4) var<storage, read_write> best_row: array<u32>;

@compute @workgroup_size(WORKGROUP)
fn scan(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let query = wid.x + wid.y * nwg.x;
  if (query >= np.queries) {
    return;
  }
  var value = 3.402823e38;
  var row = NO_ROW;
  let base = query * np.columns;
  // Columns in increasing order per thread, so a strict < keeps the smaller row.
  for (var j = lid; j < np.columns; j += WORKGROUP) {
    let v = bank_norms[j] - 2.0 * scores[base + j];
    if (v < value) {
      value = v;
      row = np.column_offset + j;
    }
  }
  wg_value[lid] = value;
  wg_row[lid] = row;
  reduce_workgroup(lid, false);
  if (lid == 0u) {
    let slot = np.query_offset + query;
    if (np.merge == 0u || wg_value[0] < best_value[slot]) {
      best_value[slot] = wg_value[0];
      best_row[slot] = wg_row[0];
    }
  }
}

@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> found_value: array<f32>;
@group(0) @binding(3) var<storage, read> found_row: array<u32>;
@group(0) @binding(4) var<storage, read_write> distances: array<f32>;
@group(0) @binding(5) var<storage, read_write> rows: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn finish(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let query = gid.x + gid.y * nwg.x * WORKGROUP;
  if (query >= np.queries) {
    return;
  }
  let base = query * np.dim;
  var norm = 0.0;
  for (var k = 0u; k < np.dim; k++) {
    let x = queries[base + k];
    norm += x * x;
  }
  distances[query] = sqrt(max(norm + found_value[query], 0.0));
  rows[query] = f32(found_row[query]);
}
