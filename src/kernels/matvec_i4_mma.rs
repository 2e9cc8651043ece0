//! burn-quant's int4 groups (GPTQ and AWQ after repacking, groups of 64 or 128) at up to 16
//! token rows on the tensor cores (CUDA `mma.m16n8k16`, f16 × f16 → f32), exact, with the input
//! staged in shared memory and the reduction split across cubes.
//!
//! The arithmetic is [`matvec_mma`](super::matvec_mma)'s: a nibble masked in place in a 16-bit
//! half is the exact f16 subnormal `q·2⁻²⁴`, and the input goes in as two B columns per token row
//! (`hi = f16(x)`, `lo = f16(x − hi)`, scaled by a power of two per run). Here the run is the
//! whole group ([`mma_input`](super::matvec_mma::mma_input) with `run = G`) and the high nibbles
//! are shifted down to the low position, so the D fragments of all of a group's sub-blocks share
//! one unit and are summed in the accumulators before the group's `d·Σq·x − d·z·Σx` is applied
//! (once per group and token tile, not once per sub-block).
//!
//! What bounds [`matvec_q4_mma`](super::matvec_mma::matvec_q4_mma) at 16 token rows is its
//! input: each warp reads its B fragments from L2 for its own blocks (148 MB moved for a 31 MB
//! weight at 4,096 × 14,336). Here the warps of a cube own different rows and walk the same
//! groups together: the cube's threads load a group's input for all token rows into shared
//! memory once (double-buffered; the weight words of the next groups and the input of the
//! groups after them in flight while the current one is multiplied, in rings of compile-time
//! stages), and every warp reads its fragments from there. The rows of a cube
//! (`16 · planes`) then read the input once per cube instead of once per warp, and the cube
//! count comes from splitting the groups into slices along `CUBE_POS_Y`; each tile's slices are
//! summed by its last cube, in slice order (deterministic).

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::decode::f16_pair;
use super::matvec_mma::fill_a;
use super::reduce::last_of_slices;

/// Weight rows of a warp (one m16n8k16 A tile); a cube covers `ROWS · planes` rows.
pub const ROWS: u32 = 16;

/// Loads the lane's words of group `b` of its rows `ga` and `gb` (first words of the rows' group
/// runs) into stage `st` of `out` (`2 + G/16` words a stage): words 0 and 1 the rows' `d | z <<
/// 16` headers, then per 64-weight chunk `j` the lane's two code words of row `ga` (`2 + 4j`,
/// `+ 1`) and of row `gb` (`+ 2`, `+ 3`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_words(w: &[u32], out: &mut Array<u32>, ga: u32, gb: u32, b: u32, t: u32, #[comptime] st: u32, #[comptime] group: u32) {
    let bw = comptime!(1 + group / 8);
    let s0 = comptime!(st * (2 + group / 16));
    let a = ga + b * bw;
    let c = gb + b * bw;
    out[s0 as usize] = w[a as usize];
    out[(s0 + 1) as usize] = w[c as usize];
    #[unroll]
    for j in 0..group / 64 {
        let o = comptime!(s0 + 2 + 4 * j) as usize;
        out[o] = w[(a + 1 + 8 * j + 2 * t) as usize];
        out[o + 1] = w[(a + 2 + 8 * j + 2 * t) as usize];
        out[o + 2] = w[(c + 1 + 8 * j + 2 * t) as usize];
        out[o + 3] = w[(c + 2 + 8 * j + 2 * t) as usize];
    }
}

/// Loads this thread's share of group `b`'s input for token rows `0..4·tiles` (clamped to `m`):
/// stage `st` of `xr` holds the 16-byte units `s·threads + tid` below `4·tiles·G/4` (token `· /
/// (G/4)`, unit `· % (G/4)` of the group's `G` words), and for threads below `4·tiles`, stage
/// `st` of `sr` that token row's group `Σx` and unit (`2²⁴ / scale`: one f16 subnormal step of a
/// code times the inverse input scale).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_inputs<X4: Size>(
    xq: &[Vector<u32, X4>],
    xrun: &[f32],
    xr: &mut Array<Vector<u32, X4>>,
    sr: &mut Array<f32>,
    b: u32,
    tid: u32,
    m: u32,
    k: u32,
    #[comptime] st: u32,
    #[comptime] group: u32,
    #[comptime] tiles: u32,
    #[comptime] threads: u32,
) {
    let gu = comptime!(group / 4);
    let units = comptime!(4 * tiles * group / 4);
    let per = comptime!(units.div_ceil(threads));
    #[unroll]
    for s in 0..per {
        let idx = s * threads + tid;
        if idx < units {
            let tok = u32::min(idx / gu, m - 1);
            xr[comptime!(st * per + s) as usize] = xq[((tok * k + b * group) / 4 + idx % gu) as usize];
        }
    }
    if tid < 4 * tiles {
        let r = 2 * (u32::min(tid, m - 1) * (k / group) + b);
        sr[comptime!(2 * st) as usize] = xrun[r as usize];
        sr[comptime!(2 * st + 1) as usize] = xrun[(r + 1) as usize];
    }
}

/// Stores stage `st` of [`load_inputs`]' registers into buffer `buf` (0 or 1) of `xs` and `sx`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_inputs<X4: Size>(
    xr: &Array<Vector<u32, X4>>,
    sr: &Array<f32>,
    xs: &mut [Vector<u32, X4>],
    sx: &mut [f32],
    buf: u32,
    tid: u32,
    #[comptime] st: u32,
    #[comptime] group: u32,
    #[comptime] tiles: u32,
    #[comptime] threads: u32,
) {
    let units = comptime!(4 * tiles * group / 4);
    let per = comptime!(units.div_ceil(threads));
    #[unroll]
    for s in 0..per {
        let idx = s * threads + tid;
        if idx < units {
            xs[(buf * units + idx) as usize] = xr[comptime!(st * per + s) as usize];
        }
    }
    if tid < 4 * tiles {
        let o = (buf * 4 * tiles + tid) * 2;
        sx[o as usize] = sr[comptime!(2 * st) as usize];
        sx[(o + 1) as usize] = sr[comptime!(2 * st + 1) as usize];
    }
}

/// The products of the group in stage `st` of the weight ring `cur` with its input in buffer
/// `buf` of `xs` / `sx`, added to `acc` (token tile `tile`: rows g and g + 8 at `2·tile`, `+ 1`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn group_products<X4: Size>(
    def: &MmaDefinition<f16, f16, f32>,
    cur: &Array<u32>,
    xs: &[Vector<u32, X4>],
    sx: &[f32],
    acc: &mut Array<f32>,
    buf: u32,
    g: u32,
    t: u32,
    #[comptime] st: u32,
    #[comptime] group: u32,
    #[comptime] tiles: u32,
) {
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);
    let units = comptime!(4 * tiles * group / 4);
    let s0 = comptime!(st * (2 + group / 16));
    let mut a0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut a1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut bf = Array::<Vector<f16, NB>>::new(2usize);
    let mut bg = Array::<Vector<f16, NB>>::new(2usize);
    let mut c = Array::<Vector<f32, NC>>::new(2usize);
    // Per token tile: the group's D fragments (rows g, g + 8).
    let mut blk = Array::<Vector<f32, NC>>::new(comptime!(2 * tiles) as usize);
    #[unroll]
    for i in 0..2 * tiles {
        blk[i as usize] = Vector::cast_from(0.0f32);
    }
    #[unroll]
    for j in 0..group / 64 {
        let o = comptime!(s0 + 2 + 4 * j) as usize;
        #[unroll]
        for s in 0..2u32 {
            // Low nibbles: sub-block j of the group; high nibbles: sub-block j + G/64.
            fill_a(cur[o], cur[o + 1], cur[o + 2], cur[o + 3], &mut a0, &mut a1, comptime!(4 * s), 0x000F_000Fu32);
            let sb = comptime!(j + s * (group / 64));
            #[unroll]
            for tile in 0..tiles {
                let v = xs[(buf * units + (4 * tile + g / 2) * (group / 4) + sb * 8 + (g % 2) * 4 + t) as usize];
                bf[0] = Vector::reinterpret(v.extract(0usize));
                bf[1] = Vector::reinterpret(v.extract(1usize));
                bg[0] = Vector::reinterpret(v.extract(2usize));
                bg[1] = Vector::reinterpret(v.extract(3usize));
                c[0] = blk[(2 * tile) as usize];
                c[1] = blk[(2 * tile + 1) as usize];
                def.execute_inplace(&a0, &bf, &mut c);
                def.execute_inplace(&a1, &bg, &mut c);
                blk[(2 * tile) as usize] = c[0];
                blk[(2 * tile + 1) as usize] = c[1];
            }
        }
    }
    // d·Σq·x − d·z·Σx of the group, per row and token (the lane's D columns are token
    // `4·tile + t`'s hi and lo).
    let (da, _) = f16_pair(cur[s0 as usize], true);
    let (db, _) = f16_pair(cur[(s0 + 1) as usize], true);
    let dza = da * f32::cast_from((cur[s0 as usize] >> 16) & 0xFF);
    let dzb = db * f32::cast_from((cur[(s0 + 1) as usize] >> 16) & 0xFF);
    #[unroll]
    for tile in 0..tiles {
        let o = (buf * 4 * tiles + 4 * tile + t) * 2;
        let xsv = sx[o as usize];
        let unit = sx[(o + 1) as usize];
        let va = blk[(2 * tile) as usize];
        let vb = blk[(2 * tile + 1) as usize];
        acc[(2 * tile) as usize] += da * ((va.extract(0usize) + va.extract(1usize)) * unit) - dza * xsv;
        acc[(2 * tile + 1) as usize] += db * ((vb.extract(0usize) + vb.extract(1usize)) * unit) - dzb * xsv;
    }
}

/// See the module docs. `w` is the packed weight in words (`off` the part's first word; rows of
/// `k / G` groups of `1 + G/8` words), `xq` and `xrun` [`mma_input`](super::matvec_mma::mma_input)'s
/// output with `run = G` for `m ≤ 4·tiles` token rows. Cube `(x, y)` of `32 × planes` threads
/// covers rows `16·planes·x ..` and, of the groups, every `slices`-th from `y` (`bps = 0`: the
/// slices interleave, so the cubes of a row tile read neighbouring groups at the same time) or
/// groups `y·bps .. (y + 1)·bps`. `depth` and `xdepth` are the groups whose weight words and
/// input are in flight (2 to 4 each). `out` is `[m, n]`, this launch writing columns
/// `col0..col0 + rows` (plus `res` at the same index with `add`).
///
/// With `split` (more than one slice along y), each cube writes its sums to slice `CUBE_POS_Y`
/// of `y` (`[slices, m, n]`), publishes them and counts itself in `cnt[cnt0 + CUBE_POS_X]`
/// (zero before the launch); the row tile's last cube adds the slices in slice order into
/// `out`. Without, `y` and `cnt` are not touched.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
pub fn matvec_i4_mma<X4: Size>(
    w: &[u32],
    xq: &[Vector<u32, X4>],
    xrun: &[f32],
    y: &mut [f32],
    res: &[f32],
    out: &mut [f32],
    cnt: &mut [Atomic<u32>],
    cnt0: u32,
    off: u32,
    rows: u32,
    k: u32,
    n: u32,
    col0: u32,
    m: u32,
    bps: u32,
    #[comptime] group: u32,
    #[comptime] tiles: u32,
    #[comptime] planes: u32,
    #[comptime] depth: u32,
    #[comptime] xdepth: u32,
    #[comptime] split: bool,
    #[comptime] add: bool,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let tid = plane * 32 + lane;
    let g = lane / 4;
    let t = lane % 4;
    let threads = comptime!(32 * planes);
    let r0 = (CUBE_POS_X * planes + plane) * ROWS;
    let blocks = k / group;
    let bw = comptime!(1 + group / 8);
    // Rows g and g + 8 of the warp's tile, clamped for reads (never written past `rows`).
    let ra = select(r0 + g < rows, r0 + g, rows - 1);
    let rb = select(r0 + g + 8 < rows, r0 + g + 8, rows - 1);
    let ga = off + ra * blocks * bw;
    let gb = off + rb * blocks * bw;
    // This cube's groups: `first + step·i` for `i < b1`.
    let interleaved = bps == 0;
    let first = select(interleaved, CUBE_POS_Y, CUBE_POS_Y * bps);
    let step = select(interleaved, CUBE_COUNT_Y, 1u32);
    let b1 = select(interleaved, (blocks - first + step - 1) / step, u32::min(bps, blocks - first));

    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let units = comptime!(4 * tiles * group / 4);
    let per = comptime!(units.div_ceil(threads));
    let nw = comptime!(2 + group / 16);
    let mut xs = Shared::<[Vector<u32, X4>]>::new_slice(comptime!(2 * units) as usize);
    let mut sx = Shared::<[f32]>::new_slice(comptime!(2 * 4 * tiles * 2) as usize);
    // Rings of `depth` (weight words) and `xdepth` (input) stages: group `i`'s in stage `i mod
    // depth`, `i mod xdepth`.
    let mut cur = Array::<u32>::new(comptime!(depth * nw) as usize);
    let mut xr = Array::<Vector<u32, X4>>::new(comptime!(xdepth * per) as usize);
    let mut sr = Array::<f32>::new(comptime!(2 * xdepth) as usize);
    // Per token tile: the running sums of rows g and g + 8.
    let mut acc = Array::<f32>::new(comptime!(2 * tiles) as usize);
    #[unroll]
    for i in 0..2 * tiles {
        acc[i as usize] = 0.0;
    }

    // Groups past the slice's last load it again; what they store is never read.
    #[unroll]
    for i in 0..depth - 1 {
        load_words(w, &mut cur, ga, gb, first + step * u32::min(i, b1 - 1), t, i, group);
    }
    #[unroll]
    for i in 0..xdepth - 1 {
        load_inputs::<X4>(xq, xrun, &mut xr, &mut sr, first + step * u32::min(i, b1 - 1), tid, m, k, i, group, tiles, threads);
    }
    store_inputs::<X4>(&xr, &sr, &mut xs, &mut sx, 0u32, tid, 0u32, group, tiles, threads);
    sync_cube();
    // The rings are indexed by compile-time stages (the loop unrolled over a common multiple
    // of both depths), so no register waits on a load before its group's turn.
    let unroll = comptime!(if depth.is_multiple_of(xdepth) { depth } else if xdepth.is_multiple_of(depth) { xdepth } else { depth * xdepth });
    let mut b = 0u32;
    while b < b1 {
        #[unroll]
        for st in 0..unroll {
            let bb = b + st;
            if bb < b1 {
                // Group `bb + depth − 1`'s words and group `bb + xdepth − 1`'s input are loaded
                // before this one's products.
                let nw_at = first + step * u32::min(bb + depth - 1, b1 - 1);
                load_words(w, &mut cur, ga, gb, nw_at, t, comptime!((st + depth - 1) % depth), group);
                let nx_at = first + step * u32::min(bb + xdepth - 1, b1 - 1);
                load_inputs::<X4>(xq, xrun, &mut xr, &mut sr, nx_at, tid, m, k, comptime!((st + xdepth - 1) % xdepth), group, tiles, threads);
                let buf = bb % 2;
                group_products::<X4>(&def, &cur, &xs, &sx, &mut acc, buf, g, t, comptime!(st % depth), group, tiles);
                store_inputs::<X4>(&xr, &sr, &mut xs, &mut sx, 1 - buf, tid, comptime!((st + 1) % xdepth), group, tiles, threads);
                sync_cube();
            }
        }
        b += unroll;
    }

    if comptime!(split) {
        let slices = CUBE_COUNT_Y;
        store_sums(&acc, y, res, CUBE_POS_Y, r0, g, t, rows, m, n, col0, false, tiles);
        // Only the row tile's last arrival goes on.
        if !last_of_slices(cnt, cnt0 + CUBE_POS_X, slices, tid) {
            terminate!();
        }
        sync_storage();
        // The slices in slice order (the same sum whichever cube is last), each slice's loads
        // issued together; positions past `rows` or `m` read clamped and are never written.
        for z in 0..slices {
            #[unroll]
            for tile in 0..tiles {
                #[unroll]
                for i in 0..2u32 {
                    let row = u32::min(r0 + g + 8 * i, rows - 1);
                    let tok = u32::min(4 * tile + t, m - 1);
                    let p = y[((z * m + tok) * n + col0 + row) as usize];
                    let a = (2 * tile + i) as usize;
                    acc[a] = select(z == 0, p, acc[a] + p);
                }
            }
        }
    }
    store_sums(&acc, out, res, 0u32, r0, g, t, rows, m, n, col0, add, tiles);
}

/// Writes the lane's sums `acc` (token tile `tile`: rows `r0 + g` and `r0 + g + 8` at `2·tile`,
/// `+ 1`; token `4·tile + t`) to slice `z` of `dst` (`[·, m, n]`, columns `col0 + row`), plus `res`
/// at the same position of `[m, n]` with `add`, for rows below `rows` and tokens below `m`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_sums(
    acc: &Array<f32>,
    dst: &mut [f32],
    res: &[f32],
    z: u32,
    r0: u32,
    g: u32,
    t: u32,
    rows: u32,
    m: u32,
    n: u32,
    col0: u32,
    #[comptime] add: bool,
    #[comptime] tiles: u32,
) {
    #[unroll]
    for tile in 0..tiles {
        #[unroll]
        for i in 0..2u32 {
            let row = r0 + g + 8 * i;
            let tok = 4 * tile + t;
            if row < rows && tok < m {
                let at = tok * n + col0 + row;
                let v = acc[(2 * tile + i) as usize];
                dst[(z * m * n + at) as usize] = if comptime!(add) { v + res[at as usize] } else { v };
            }
        }
    }
}
