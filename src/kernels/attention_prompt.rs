//! A prompt's attention in Qwen3 after the q/k/v projection, in two launches where Burn's ops
//! took about fifteen (views, the q/k norm + RoPE, transposes, two cache writes, the mask, the
//! attention and the output's transpose), each of which costs a fusion-wrapped backend's host
//! 15–40 µs (BENCHMARKS.md, session 14):
//!
//! 1. [`prompt_prologue`](fn@prompt_prologue): one cube per (token, head) of the fused projection `qkv`: q and k
//!    heads get their RMSNorm over `d` and NEOX RoPE, the rotated queries go to a `[b, s, heads,
//!    d]` buffer, the keys and the values are written into the caches at `start + t`;
//! 2. [`attention_prompt`](fn@attention_prompt): causal attention with an online softmax. A cube takes `R` query rows
//!    of one KV head (its `g` query heads × `R / g` tokens, so every key tile it stages is used
//!    by all of them), holds them in shared memory, and walks the cached positions up to its
//!    last row's in tiles of `T` keys: scores (2 rows × 2 keys a thread, 16-byte reads), the
//!    running maximum and sum (a thread per row), then the weighted values (`R·d / threads`
//!    outputs a thread). The output is written as `[b, s, heads·d]`, the layout the output
//!    projection reads.
//!
//! Shared rows are padded by one 16-byte vector, so the 8 lanes of a 16-byte load phase reading
//! 8 different keys hit 8 different bank groups.

use cubecl::prelude::*;

use super::norm::cube_reduce;

/// Whether [`prompt_prologue`](fn@prompt_prologue) takes heads of `d` values: `d / 2` threads, a power of two.
pub fn prologue_supports(d: usize) -> bool {
    d >= 8 && d.is_multiple_of(4) && (d / 2).is_power_of_two() && d <= 512
}

/// The tile of [`attention_prompt`](fn@attention_prompt): `rows` query rows a cube, `keys` keys a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Query rows per cube (`R`).
    pub rows: u32,
    /// Keys per tile (`T`).
    pub keys: u32,
}

impl Tile {
    /// Threads per cube: 2 rows × 2 keys each.
    pub const fn threads(self) -> u32 {
        self.rows * self.keys / 4
    }

    /// Bytes of shared memory for rows of `d` values.
    pub const fn shared_bytes(self, d: u32) -> u32 {
        16 * (self.rows + self.keys) * (d / 4 + 1) + 4 * self.rows * (self.keys + 1) + 8 * self.rows
    }

    /// Whether the thread layout covers rows of `d` values: the value pass's `d/4` columns must
    /// divide the threads, and the threads' row groups the rows.
    pub const fn fits(self, d: u32) -> bool {
        let dv = d / 4;
        let nt = self.threads();
        d.is_multiple_of(4) && dv > 0 && nt.is_multiple_of(dv) && (self.rows * dv).is_multiple_of(nt) && self.rows.is_multiple_of(2) && self.keys.is_multiple_of(2)
    }
}

/// The tiles tried, largest first: 32 rows × 32 keys (256 threads, 38 KiB at `d` = 128), then
/// smaller ones for devices with 16 KiB of shared memory (WebGPU's guaranteed minimum).
pub const TILES: [Tile; 3] = [Tile { rows: 32, keys: 32 }, Tile { rows: 16, keys: 16 }, Tile { rows: 16, keys: 8 }];

/// The first of [`TILES`] for rows of `d` values within `shared` bytes of shared memory and
/// `threads` threads per cube; `BURN_QUANT_ATTN_TILE=rows,keys` tries that tile first (for
/// comparisons).
pub fn pick_tile(d: usize, shared: usize, threads: usize) -> Option<Tile> {
    let d = u32::try_from(d).ok()?;
    let forced = std::env::var("BURN_QUANT_ATTN_TILE").ok().and_then(|v| {
        let (r, k) = v.split_once(',')?;
        Some(Tile { rows: r.trim().parse().ok()?, keys: k.trim().parse().ok()? })
    });
    forced.into_iter().chain(TILES).find(|t| t.fits(d) && t.shared_bytes(d) as usize <= shared && t.threads() as usize <= threads)
}

/// `qkv [b·s, (heads + 2·kv_heads)·d]` (query heads, key heads, value heads of each token);
/// one cube of `d/2` threads per (token row, head). Query and key heads: `x / √(mean(x²) + eps)`
/// times `q_gamma`/`k_gamma` `[d]`, then rotated by row `t` of `cos`/`sin` `[s, d/2]` (pairs
/// `(j, j + d/2)`); queries go to `q [b·s, heads, d]`, keys to `k [b, kv_heads, cap, d]` at
/// position `start + t`. Value heads are copied into `v` there. Cubes from `cubes` on write
/// nothing.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn prompt_prologue(
    qkv: &[f32],
    q_gamma: &[f32],
    k_gamma: &[f32],
    cos: &[f32],
    sin: &[f32],
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
    s: u32,
    heads: u32,
    kv_heads: u32,
    cap: u32,
    start: u32,
    eps: f32,
    cubes: u32,
    #[comptime] d: u32,
) {
    let half = comptime!(d / 2);
    let tid = UNIT_POS;
    let all = heads + 2 * kv_heads;
    // A grid past `cubes` (a count with no exact 2-d factoring) has cubes that do nothing.
    let cube = u32::min(CUBE_POS as u32, cubes - 1);
    let live = (CUBE_POS as u32) < cubes;
    let hd = cube % all;
    let row = cube / all;
    let t = row % s;
    let src = (row * all + hd) * d;
    let a = qkv[(src + tid) as usize];
    let b = qkv[(src + half + tid) as usize];
    // Every cube reduces (a barrier in uniform control flow), value heads too.
    let inv = 1.0f32 / f32::sqrt(cube_reduce(a * a + b * b, false, half) / f32::cast_from(d) + eps);
    if live && hd < heads + kv_heads {
        let is_q = hd < heads;
        let g1 = select(is_q, q_gamma[tid as usize], k_gamma[tid as usize]);
        let g2 = select(is_q, q_gamma[(half + tid) as usize], k_gamma[(half + tid) as usize]);
        let (x1, x2) = (a * inv * g1, b * inv * g2);
        let (c, sn) = (cos[(t * half + tid) as usize], sin[(t * half + tid) as usize]);
        let (y1, y2) = (x1 * c - x2 * sn, x2 * c + x1 * sn);
        if is_q {
            let dst = (row * heads + hd) * d;
            q[(dst + tid) as usize] = y1;
            q[(dst + half + tid) as usize] = y2;
        } else {
            let dst = (((row / s) * kv_heads + hd - heads) * cap + start + t) * d;
            k[(dst + tid) as usize] = y1;
            k[(dst + half + tid) as usize] = y2;
        }
    }
    if live && hd >= heads + kv_heads {
        let dst = (((row / s) * kv_heads + hd - heads - kv_heads) * cap + start + t) * d;
        v[(dst + tid) as usize] = a;
        v[(dst + half + tid) as usize] = b;
    }
}

/// `a · b` over a 4-float vector.
#[cube]
fn dot4<N: Size>(a: Vector<f32, N>, b: Vector<f32, N>) -> f32 {
    a.extract(0usize) * b.extract(0usize) + a.extract(1usize) * b.extract(1usize) + a.extract(2usize) * b.extract(2usize) + a.extract(3usize) * b.extract(3usize)
}

/// Causal attention of a prompt's `s` tokens at positions `start..start + s`: `q [b, s, g·kv_heads,
/// d]` (rotated queries), the caches `k`/`v` `[b, kv_heads, cap, d]` holding positions `0..start
/// + s`, all read as 4-float vectors (`N` = 4); token `t` attends positions `0..=start + t` of its
/// KV head with scores `scale · q·k`. `out [b, s, g·kv_heads, d]`. One cube per `R` query rows
/// of a KV head (row `i` = token `i / g`, query head `i % g` of the KV head's group); cubes
/// `(b·kv_heads + kv head)·blocks + block`, `blocks = ⌈g·s / R⌉`; `R·T/4` threads.
#[cube(launch_unchecked)]
// Plain division and `x = x * a`: a first version with `*=` on an array element and on a
// variable, a `let (mut a, mut b) = ..` and an empty `if` arm failed SPIR-V validation on
// lavapipe ("expected operand type cube.ptr"); which of them did was not isolated.
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil, clippy::assign_op_pattern)]
pub fn attention_prompt<N: Size>(
    q: &[Vector<f32, N>],
    k: &[Vector<f32, N>],
    v: &[Vector<f32, N>],
    out: &mut [Vector<f32, N>],
    s: u32,
    g: u32,
    kv_heads: u32,
    cap: u32,
    start: u32,
    scale: f32,
    #[comptime] d: u32,
    #[comptime] rows: u32,
    #[comptime] keys: u32,
) {
    let dv = comptime!(d / 4);
    let stride = comptime!(d / 4 + 1);
    let threads = comptime!(rows * keys / 4);
    let (half_rows, half_keys) = (comptime!(rows / 2), comptime!(keys / 2));
    let groups = comptime!(rows * keys / 4 / (d / 4));
    let per = comptime!(rows / (rows * keys / 4 / (d / 4)));
    let tid = UNIT_POS;
    let n_rows = g * s;
    let blocks = (n_rows + rows - 1) / rows;
    let cube = CUBE_POS as u32;
    let head_kv = cube / blocks;
    let row0 = (cube % blocks) * rows;
    let bi = head_kv / kv_heads;
    let kh = head_kv % kv_heads;
    let heads = g * kv_heads;
    let kb = head_kv * cap;

    let mut qs = Shared::<[Vector<f32, N>]>::new_slice(comptime!(rows * (d / 4 + 1)) as usize);
    let mut ks = Shared::<[Vector<f32, N>]>::new_slice(comptime!(keys * (d / 4 + 1)) as usize);
    let mut ps = Shared::<[f32]>::new_slice(comptime!(rows * (keys + 1)) as usize);
    let mut st = Shared::<[f32]>::new_slice(comptime!(2 * rows) as usize);

    // The block's query rows (rows past the last repeat it: computed, never written).
    let mut idx = tid;
    while idx < comptime!(rows * (d / 4)) {
        let i = idx / dv;
        let r = u32::min(row0 + i, n_rows - 1);
        let src = ((bi * s + r / g) * heads + kh * g + r % g) * dv + idx % dv;
        qs[(i * stride + idx % dv) as usize] = q[src as usize];
        idx += threads;
    }
    // Positions the block's last row sees, and the tiles that hold them.
    let n_keys = start + (u32::min(row0 + rows, n_rows) - 1) / g + 1;
    let tiles = (n_keys + keys - 1) / keys;

    // The softmax thread of row `tid` (< rows): its running maximum and sum, and the last position
    // its token sees.
    let lim = start + (row0 + tid) / g;
    let mut m_run = f32::new(-3.0e38);
    let mut l_run = 0.0f32;

    // Scores: rows `rp`, `rp + rows/2` × keys `kp`, `kp + keys/2`.
    let rp = tid / half_keys;
    let kp = tid % half_keys;
    // Values: column vector `cq` of rows `rg + j·groups`.
    let cq = tid % dv;
    let rg = tid / dv;
    let mut acc = Array::<f32>::new(comptime!(4 * (rows / (rows * keys / 4 / (d / 4)))) as usize);
    #[unroll]
    for e in 0..comptime!(4 * per) {
        acc[e as usize] = 0.0;
    }

    for tile in 0..tiles {
        let kt0 = tile * keys;
        sync_cube();
        let mut idx = tid;
        while idx < comptime!(keys * (d / 4)) {
            let p = u32::min(kt0 + idx / dv, cap - 1);
            ks[((idx / dv) * stride + idx % dv) as usize] = k[((kb + p) * dv + idx % dv) as usize];
            idx += threads;
        }
        sync_cube();
        let mut s00 = 0.0f32;
        let mut s01 = 0.0f32;
        let mut s10 = 0.0f32;
        let mut s11 = 0.0f32;
        #[unroll]
        for c in 0..dv {
            let q0 = qs[(rp * stride + c) as usize];
            let q1 = qs[((rp + half_rows) * stride + c) as usize];
            let k0 = ks[(kp * stride + c) as usize];
            let k1 = ks[((kp + half_keys) * stride + c) as usize];
            s00 += dot4(q0, k0);
            s01 += dot4(q0, k1);
            s10 += dot4(q1, k0);
            s11 += dot4(q1, k1);
        }
        let pr = comptime!(keys + 1);
        ps[(rp * pr + kp) as usize] = s00 * scale;
        ps[(rp * pr + kp + half_keys) as usize] = s01 * scale;
        ps[((rp + half_rows) * pr + kp) as usize] = s10 * scale;
        ps[((rp + half_rows) * pr + kp + half_keys) as usize] = s11 * scale;
        sync_cube();
        // The values of the tile replace its keys while the row threads do the softmax.
        let mut idx = tid;
        while idx < comptime!(keys * (d / 4)) {
            let p = u32::min(kt0 + idx / dv, cap - 1);
            ks[((idx / dv) * stride + idx % dv) as usize] = v[((kb + p) * dv + idx % dv) as usize];
            idx += threads;
        }
        if tid < rows {
            let base = tid * pr;
            let mut mx = m_run;
            for j in 0..keys {
                if kt0 + j <= lim {
                    mx = f32::max(mx, ps[(base + j) as usize]);
                }
            }
            let alpha = f32::exp(m_run - mx);
            l_run = l_run * alpha;
            for j in 0..keys {
                let e = select(kt0 + j <= lim, f32::exp(ps[(base + j) as usize] - mx), 0.0f32);
                ps[(base + j) as usize] = e;
                l_run += e;
            }
            m_run = mx;
            st[tid as usize] = alpha;
        }
        sync_cube();
        let jn = u32::min(keys, n_keys - kt0);
        #[unroll]
        for i in 0..per {
            let a = st[(rg + i * groups) as usize];
            #[unroll]
            for e in 0..4u32 {
                let at = (4 * i + e) as usize;
                acc[at] = acc[at] * a;
            }
        }
        for j in 0..jn {
            let vv = ks[(j * stride + cq) as usize];
            #[unroll]
            for i in 0..per {
                let p = ps[((rg + i * groups) * pr + j) as usize];
                #[unroll]
                for e in 0..4u32 {
                    acc[(4 * i + e) as usize] += p * vv.extract(e as usize);
                }
            }
        }
    }
    sync_cube();
    if tid < rows {
        st[(rows + tid) as usize] = l_run;
    }
    sync_cube();
    #[unroll]
    for i in 0..per {
        let r = rg + i * groups;
        if row0 + r < n_rows {
            let inv = 1.0f32 / st[(rows + r) as usize];
            let mut o = Vector::<f32, N>::empty();
            #[unroll]
            for e in 0..4u32 {
                o.insert(e as usize, acc[(4 * i + e) as usize] * inv);
            }
            let row = row0 + r;
            out[(((bi * s + row / g) * heads + kh * g + row % g) * dv + cq) as usize] = o;
        }
    }
}
