// The statistics of the CNN feature dictionary (src/methods/cnn_dict/statistics.ts): the
// eigenvectors of a covariance by parallel cyclic Jacobi, and k-means.
//
// Jacobi, with no readback per rotation. The m × m matrix (m a multiple of 4; the padding's rows
// and columns are zero, so they never rotate) is rotated in rounds of m / 2 disjoint pairs, the
// round-robin ("chess tournament") ordering: the pairs of a round are the neighbouring positions
// (2k, 2k + 1), and after the round every index moves to its position in the next round
// (next_position), so that every round is the same three dispatches with the same uniforms. The
// m − 1 non-fixed positions form one cycle: after a sweep of m − 1 rounds every index is back at
// its own position. A and Vᵀ are ping-pong pairs, each round reading one and writing the other.
// jacobi_init: the symmetrised matrix, zero-padded, into A; the identity into Vᵀ.
// jacobi_angles: each pair's rotation, from the pair's diagonal block.
// jacobi_rotate: each thread takes one 2 × 2 block of pairs (a, b) with a ≤ b and writes
//   Raᵀ·block·Rb and its transpose (A stays exactly symmetric) at the next positions.
// jacobi_rotate_vectors: the eigenvector estimates are the rows of Vᵀ, so a rotation combines two
//   rows, whole vec4s at a time (rather than V's columns, one scalar each).
// jacobi_norms: one workgroup sums the squares of the off-diagonal and the diagonal entries.
// jacobi_diagonal: the diagonal, the eigenvalues once converged.
//
// k-means (Lloyd), with a readback only every few iterations: `state` holds the iterations done,
// whether the centres have converged, and the last centre shift, and every iteration kernel does
// nothing once they have, so iterations recorded past convergence cost next to nothing.
// nearest_distance: each point's squared (or plain) distance to the nearest of the first
//   `clusters` centres (k-means++ weights, the final inertia, anomaly scores).
// take_row: copies point `row` into centre `slot` (k-means++ picks).
// assign: each point's nearest centre and its squared distance (ties: the smaller centre).
// partial_sums: per chunk of `chunk` points and per column j ≤ dim (column dim counts points),
//   the sums per cluster, accumulated in the chunk's own slice of `partials` (no atomics).
// reduce_sums: the sums of every chunk per cluster and column.
// finish: one workgroup makes the new centres (sum / count); an empty cluster takes the point
//   farthest from its centre, each later empty cluster the farthest point not yet taken (ties: the
//   smaller row); then counts the iteration, and marks convergence when the summed squared shift
//   of the centres is at most `threshold`.
//
// JacobiParams and KmeansParams are declared in src/methods/cnn_dict/statistics.ts.

const WORKGROUP: u32 = 256u;
const NO_ROW: u32 = 0xffffffffu;
// 2^-24 / 100: an off-diagonal entry this small next to both diagonal entries of its pair changes
// neither in f32 (Numerical Recipes' test), so its rotation is skipped and the entry dropped.
const NEGLIGIBLE: f32 = 5.96e-10;

var<workgroup> wg_value: array<f32, WORKGROUP>;
var<workgroup> wg_row: array<u32, WORKGROUP>;
var<workgroup> wg_flag: u32;

fn linear_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WORKGROUP;
}

// Tree sum of wg_value into slot 0. Every thread of the workgroup must call it.
fn sum_workgroup(lid: u32) {
  workgroupBarrier();
  for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      wg_value[lid] += wg_value[lid + half];
    }
    workgroupBarrier();
  }
}

// Tree reduction of (wg_value, wg_row) into slot 0 keeping the largest value, the smaller row on
// ties. Every thread of the workgroup must call it.
fn max_workgroup(lid: u32) {
  workgroupBarrier();
  for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      let value = wg_value[lid + half];
      let row = wg_row[lid + half];
      let mine = wg_value[lid];
      if (value > mine || (value == mine && row < wg_row[lid])) {
        wg_value[lid] = value;
        wg_row[lid] = row;
      }
    }
    workgroupBarrier();
  }
}

// ---- Jacobi ------------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> jp: JacobiParams;
@group(0) @binding(1) var<storage, read> init_source: array<f32>;
@group(0) @binding(2) var<storage, read_write> init_a: array<f32>;
@group(0) @binding(3) var<storage, read_write> init_v: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn jacobi_init(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = linear_index(gid, nwg);
  let m = jp.size;
  if (e >= m * m) {
    return;
  }
  let i = e / m;
  let j = e % m;
  var value = 0.0;
  if (i < jp.dim && j < jp.dim) {
    value = 0.5 * (init_source[i * jp.dim + j] + init_source[j * jp.dim + i]);
  }
  init_a[e] = value;
  init_v[e] = select(0.0, 1.0, i == j);
}

// The position that the index at position i holds in the next round.
fn next_position(i: u32) -> u32 {
  let m = jp.size;
  if (i == 0u || m == 2u) {
    return i;
  }
  if (i == 1u) {
    return 2u;
  }
  if (i % 2u == 1u) {
    return i - 2u;
  }
  return select(i + 2u, m - 1u, i == m - 2u);
}

// A is read as pairs of neighbouring entries, (2k, 2k + 1) being a pair: one vec2 load is cheaper
// on lavapipe than two scalar ones.
@group(0) @binding(1) var<storage, read> a_in: array<vec2f>;
// Per pair, the rotation (c, s, t = s / c) that zeroes its off-diagonal entry: column p becomes
// c·p − s·q and column q becomes s·p + c·q.
@group(0) @binding(2) var<storage, read_write> rotations: array<vec4f>;

// Entries (row, col) and (row, col + 1) of an m-wide matrix, as one vec2; col is even.
fn pair_index(row: u32, col: u32) -> u32 {
  return (row * jp.size + col) / 2u;
}

@compute @workgroup_size(WORKGROUP)
fn jacobi_angles(@builtin(global_invocation_id) gid: vec3u) {
  let pair = gid.x;
  if (pair >= jp.pairs) {
    return;
  }
  let p = 2u * pair;
  let row_p = a_in[pair_index(p, p)];
  let app = row_p.x;
  let apq = row_p.y;
  let aqq = a_in[pair_index(p + 1u, p)].y;
  let theta = (aqq - app) / (2.0 * apq);
  // The smaller root of t² + 2θt − 1 = 0 (|angle| ≤ π/4); 1 / (2θ) where θ² would overflow.
  var t = 0.5 / theta;
  if (abs(theta) < 1e18) {
    t = select(1.0, -1.0, theta < 0.0) / (abs(theta) + sqrt(theta * theta + 1.0));
  }
  let c = inverseSqrt(t * t + 1.0);
  let negligible = abs(apq) <= NEGLIGIBLE * min(abs(app), abs(aqq));
  rotations[pair] = select(vec4f(c, t * c, t, 0.0), vec4f(1.0, 0.0, 0.0, 0.0), negligible);
}

@group(0) @binding(2) var<storage, read> rotation: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> a_out: array<f32>;

// Lavapipe runs both sides of a branch and the rest of a returning lane's kernel, masked: the
// grid covers only the blocks a ≤ b, and the diagonal blocks go through the general formula,
// their entries replaced by select.
@compute @workgroup_size(WORKGROUP)
fn jacobi_rotate(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let pairs = jp.pairs;
  let blocks = pairs * (pairs + 1u) / 2u;
  let t = linear_index(gid, nwg);
  if (t >= blocks) {
    return;
  }
  // Counted from the last block, u = r(r + 1)/2 + e with e ≤ r gives a = pairs − 1 − r and
  // b = pairs − 1 − e: neighbouring threads take neighbouring blocks of one row.
  let u = blocks - 1u - t;
  var r = u32((sqrt(8.0 * f32(u) + 1.0) - 1.0) * 0.5);
  r = select(r, r + 1u, (r + 1u) * (r + 2u) / 2u <= u);
  r = select(r, r - 1u, r * (r + 1u) / 2u > u);
  let a = pairs - 1u - r;
  let b = pairs - 1u - (u - r * (r + 1u) / 2u);
  let m = jp.size;
  let ra = rotation[a];
  let rb = rotation[b];
  let pa = 2u * a;
  let pb = 2u * b;
  let to_pa = next_position(pa);
  let to_qa = next_position(pa + 1u);
  let to_pb = next_position(pb);
  let to_qb = next_position(pb + 1u);
  let x0 = a_in[pair_index(pa, pb)];
  let x1 = a_in[pair_index(pa + 1u, pb)];
  // Rows by pair a's rotation, then columns by pair b's.
  let r0 = ra.x * x0 - ra.y * x1;
  let r1 = ra.y * x0 + ra.x * x1;
  var y00 = rb.x * r0.x - rb.y * r0.y;
  var y01 = rb.y * r0.x + rb.x * r0.y;
  var y10 = rb.x * r1.x - rb.y * r1.y;
  var y11 = rb.y * r1.x + rb.x * r1.y;
  // A diagonal block becomes exactly diagonal, by the more accurate a_pp − t·a_pq, a_qq + t·a_pq.
  let diagonal = a == b;
  y00 = select(y00, x0.x - ra.z * x0.y, diagonal);
  y11 = select(y11, x1.y + ra.z * x0.y, diagonal);
  y01 = select(y01, 0.0, diagonal);
  y10 = select(y10, 0.0, diagonal);
  a_out[to_pa * m + to_pb] = y00;
  a_out[to_pa * m + to_qb] = y01;
  a_out[to_qa * m + to_pb] = y10;
  a_out[to_qa * m + to_qb] = y11;
  a_out[to_pb * m + to_pa] = y00;
  a_out[to_qb * m + to_pa] = y01;
  a_out[to_pb * m + to_qa] = y10;
  a_out[to_qb * m + to_qa] = y11;
}

// Vᵀ: row k is the eigenvector of the index at position k, so a rotation combines two rows
// (whole vec4s) and moves them to their next positions.
@group(0) @binding(1) var<storage, read> vt_in: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> vt_out: array<vec4f>;

@compute @workgroup_size(WORKGROUP)
fn jacobi_rotate_vectors(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let width = jp.size / 4u;
  let t = linear_index(gid, nwg);
  if (t >= jp.pairs * width) {
    return;
  }
  let pair = t / width;
  let column = t % width;
  let r = rotation[pair];
  let p = 2u * pair;
  let vp = vt_in[p * width + column];
  let vq = vt_in[(p + 1u) * width + column];
  vt_out[next_position(p) * width + column] = r.x * vp - r.y * vq;
  vt_out[next_position(p + 1u) * width + column] = r.y * vp + r.x * vq;
}

@group(0) @binding(1) var<storage, read> norms_a: array<f32>;
// [sum of squared off-diagonal entries, sum of squared diagonal entries]
@group(0) @binding(2) var<storage, read_write> norms: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn jacobi_norms(@builtin(local_invocation_index) lid: u32) {
  let m = jp.size;
  var off = 0.0;
  var diagonal = 0.0;
  // Entry e = i·m + j, with i and j followed as e steps (no division per entry).
  var i = lid / m;
  var j = lid % m;
  for (var e = lid; e < m * m; e += WORKGROUP) {
    let value = norms_a[e];
    if (i == j) {
      diagonal += value * value;
    } else {
      off += value * value;
    }
    j += WORKGROUP;
    while (j >= m) {
      j -= m;
      i++;
    }
  }
  wg_value[lid] = off;
  sum_workgroup(lid);
  if (lid == 0u) {
    norms[0] = wg_value[0];
  }
  workgroupBarrier();
  wg_value[lid] = diagonal;
  sum_workgroup(lid);
  if (lid == 0u) {
    norms[1] = wg_value[0];
  }
}

@group(0) @binding(1) var<storage, read> diagonal_a: array<f32>;
@group(0) @binding(2) var<storage, read_write> diagonal_out: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn jacobi_diagonal(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i < jp.size) {
    diagonal_out[i] = diagonal_a[i * jp.size + i];
  }
}

// ---- k-means -----------------------------------------------------------------------------------

@group(0) @binding(0) var<uniform> kp: KmeansParams;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> centres: array<f32>;
@group(0) @binding(3) var<storage, read_write> nearest_out: array<f32>;

struct Nearest {
  squared: f32,
  cluster: u32,
}

// Four centres at a time, so that each value of the point (a gather across lanes on lavapipe) is
// read once per four centres; past the last centre the last one repeats, which never wins.
fn nearest_centre(i: u32) -> Nearest {
  let dim = kp.dim;
  let last = kp.clusters - 1u;
  var best = Nearest(3.402823e38, 0u);
  for (var c = 0u; c < kp.clusters; c += 4u) {
    let group = vec4u(c, min(c + 1u, last), min(c + 2u, last), min(c + 3u, last)) * dim;
    var sum = vec4f(0.0);
    for (var j = 0u; j < dim; j++) {
      let centre = vec4f(
        centres[group.x + j],
        centres[group.y + j],
        centres[group.z + j],
        centres[group.w + j],
      );
      let d = vec4f(points[i * dim + j]) - centre;
      sum += d * d;
    }
    for (var k = 0u; k < 4u; k++) {
      if (sum[k] < best.squared) {
        best = Nearest(sum[k], min(c + k, last));
      }
    }
  }
  return best;
}

@compute @workgroup_size(WORKGROUP)
fn nearest_distance(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= kp.points) {
    return;
  }
  let squared = nearest_centre(i).squared;
  nearest_out[i] = select(squared, sqrt(squared), kp.root != 0u);
}

@group(0) @binding(2) var<storage, read_write> take_centres: array<f32>;

@compute @workgroup_size(64)
fn take_row(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j < kp.dim) {
    take_centres[kp.slot * kp.dim + j] = points[kp.row * kp.dim + j];
  }
}

// [iterations done, converged (0 or 1), bits of the last summed squared shift]
@group(0) @binding(3) var<storage, read> state: array<u32>;
@group(0) @binding(4) var<storage, read_write> assignment: array<u32>;
@group(0) @binding(5) var<storage, read_write> distance: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn assign(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= kp.points || state[1] != 0u) {
    return;
  }
  let nearest = nearest_centre(i);
  assignment[i] = nearest.cluster;
  distance[i] = nearest.squared;
}

@group(0) @binding(2) var<storage, read> assigned: array<u32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn partial_sums(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = linear_index(gid, nwg);
  let stride = kp.dim + 1u;
  if (t >= kp.chunks * stride || state[1] != 0u) {
    return;
  }
  let chunk = t / stride;
  let j = t % stride;
  let base = chunk * kp.clusters * stride + j;
  for (var c = 0u; c < kp.clusters; c++) {
    partials[base + c * stride] = 0.0;
  }
  let end = min(kp.points, (chunk + 1u) * kp.chunk);
  for (var i = chunk * kp.chunk; i < end; i++) {
    var value = 1.0;
    if (j < kp.dim) {
      value = points[i * kp.dim + j];
    }
    partials[base + assigned[i] * stride] += value;
  }
}

@group(0) @binding(1) var<storage, read> all_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn reduce_sums(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = linear_index(gid, nwg);
  let size = kp.clusters * (kp.dim + 1u);
  if (t >= size || state[1] != 0u) {
    return;
  }
  var sum = 0.0;
  for (var chunk = 0u; chunk < kp.chunks; chunk++) {
    sum += all_partials[chunk * size + t];
  }
  sums[t] = sum;
}

@group(0) @binding(2) var<storage, read> cluster_sums: array<f32>;
@group(0) @binding(3) var<storage, read_write> finish_state: array<u32>;
@group(0) @binding(4) var<storage, read_write> finish_centres: array<f32>;
@group(0) @binding(5) var<storage, read_write> finish_distance: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn finish(@builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) {
    wg_flag = finish_state[1];
  }
  if (workgroupUniformLoad(&wg_flag) != 0u) {
    return;
  }
  let dim = kp.dim;
  let stride = dim + 1u;
  var shift = 0.0;
  for (var c = 0u; c < kp.clusters; c++) {
    workgroupBarrier();
    if (lid == 0u) {
      wg_flag = select(0u, 1u, cluster_sums[c * stride + dim] == 0.0);
    }
    if (workgroupUniformLoad(&wg_flag) == 0u) {
      let count = cluster_sums[c * stride + dim];
      for (var j = lid; j < dim; j += WORKGROUP) {
        let value = cluster_sums[c * stride + j] / count;
        let d = value - finish_centres[c * dim + j];
        shift += d * d;
        finish_centres[c * dim + j] = value;
      }
      continue;
    }
    var value = -3.402823e38;
    var row = NO_ROW;
    // Rows in increasing order per thread, so a strict > keeps the smaller row.
    for (var i = lid; i < kp.points; i += WORKGROUP) {
      let v = finish_distance[i];
      if (v > value) {
        value = v;
        row = i;
      }
    }
    wg_value[lid] = value;
    wg_row[lid] = row;
    max_workgroup(lid);
    let far = wg_row[0];
    for (var j = lid; j < dim; j += WORKGROUP) {
      let v = points[far * dim + j];
      let d = v - finish_centres[c * dim + j];
      shift += d * d;
      finish_centres[c * dim + j] = v;
    }
    // Taken: a later empty cluster takes the next farthest point.
    if (lid == 0u) {
      finish_distance[far] = -1.0;
    }
    storageBarrier();
  }
  workgroupBarrier();
  wg_value[lid] = shift;
  sum_workgroup(lid);
  if (lid == 0u) {
    let total = wg_value[0];
    finish_state[0] += 1u;
    finish_state[1] = select(0u, 1u, total <= kp.threshold);
    finish_state[2] = bitcast<u32>(total);
  }
}
