//! The CubeCL backends (wgpu, CUDA; and, through the generated `Fusion<B>` implementation, the
//! fusion-wrapped default devices): launches the kernels of `crate::kernels`.
//!
//! - `m ≤ 8` token rows: the fused decode kernel (`kernels::matvec`), one pass over the weight.
//! - more rows: the tiled kernel (`kernels::tiled`), weight tiles decoded into shared memory,
//!   f32 multiply-adds (Burn's own matmul would use TF32 on CUDA and miss the 1e-5 accuracy).
//!   The input gradient (`g · W`) uses its transposed twin.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::tensor::{DType, FloatDType, IntDType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::{QuantLayout, QuantMatmulBackend, QuantPart};
use crate::kernels::decode::{block_bytes, block_elems};
use crate::kernels::{dequant, input, matvec, matvec_i4, matvec_i4_cols, matvec_i4_mma, matvec_mma, matvec_pair, matvec_q4k, matvec_q6k, matvec_q80, prefill_mma, reduce, tiled, tiled_mma};

/// Cubes the prefill path aims for (about 4 per SM of a large GPU).
const SPLIT_K_TARGET: usize = 528;

pub(super) fn f32_contiguous(x: CubeTensor) -> CubeTensor {
    let x = if x.dtype == DType::F32 { x } else { CubeBackend::float_cast(x, FloatDType::F32) };
    into_contiguous(x)
}

fn restore_dtype(y: CubeTensor, dtype: DType) -> CubeTensor {
    match dtype {
        DType::F32 => y,
        DType::F64 => CubeBackend::float_cast(y, FloatDType::F64),
        DType::F16 => CubeBackend::float_cast(y, FloatDType::F16),
        DType::BF16 => CubeBackend::float_cast(y, FloatDType::BF16),
        _ => y,
    }
}

pub(super) fn empty_f32(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    let n: usize = shape.iter().product();
    let handle = like.client.empty(n.max(1) * 4);
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), Shape::from(shape), handle, DType::F32)
}

/// An uninitialised contiguous f16 `[m, k]` tensor on `like`'s device (two values a word).
fn empty_f16(like: &CubeTensor, m: usize, k: usize) -> CubeTensor {
    let handle = like.client.empty((m * k).max(1) * 2);
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), Shape::new([m, k]), handle, DType::F16)
}

fn kind_code(p: &QuantPart) -> u32 {
    p.kind.id()
}

pub(super) fn buffer(t: &CubeTensor, elems: usize) -> BufferArg {
    // SAFETY: `t` is contiguous and holds at least `elems` elements of the kernel's type.
    unsafe { BufferArg::from_raw_parts(t.handle.clone(), elems) }
}

/// `cubes` cubes as a grid of at most 65535 per dimension (WebGPU's limit; kernels use the flat
/// `CUBE_POS`). Above 65535 the grid is `x × y` with `x` the largest divisor of `cubes` that
/// leaves `y` within the limit, so that no cube lies past the last; only a count with no such
/// divisor (a prime factor above 65535) gets `⌈cubes / 65535⌉` rows of 65535, the last partly
/// past the end.
pub(super) fn grid_1d(cubes: usize) -> CubeCount {
    const MAX: usize = 65535;
    if cubes <= MAX {
        return CubeCount::Static(cubes as u32, 1, 1);
    }
    let least = cubes.div_ceil(MAX);
    let x = (least..=MAX).rev().find(|x| cubes.is_multiple_of(*x)).unwrap_or(MAX);
    CubeCount::Static(x as u32, cubes.div_ceil(x) as u32, 1)
}

/// `(rows per thread, planes per row group)` of the Q4_K decode kernel for `m` token rows over a
/// part of `rows` rows and `k` columns. With more than one token row the kernel keeps decoded
/// weights and takes 2 rows per thread. With one it keeps the input in registers and takes 8 rows
/// (split up to 8 ways) where that still gives [`MIN_DECODE_CUBES`] cubes, else 4: more rows per
/// thread put more loads in flight per thread, which is what bounds it (H100, 4096×14336 alone
/// under ncu: 4 rows at 76 registers 33.2 µs, 8 rows at 120 registers 23.2–23.7 µs, despite 22%
/// occupancy instead of 31%). A part too small for that many cubes at 8 rows (the 0.6B shape's
/// projections, 1–6 M weights) is latency-bound: it takes 2 rows per thread and no split, for
/// the most cubes with some loads in flight (H100, 0.6B tg128 with every Q4_K launch so:
/// 692–695 t/s against 594 at 4 rows and the split; 1 row 640–697, 2 rows split 2: 671).
/// `BURN_QUANT_DECODE_M1` overrides the one-row choice.
fn q4k_launch(m: usize, rows: usize, k: usize) -> (u32, u32) {
    if m != 1 {
        return (2, decode_split(k / 1024, 4));
    }
    if let Some(o) = knobs().q4k {
        return o;
    }
    let split = decode_split(k / 1024, 8);
    let cubes = rows.div_ceil((8 * reduce::PLANES / split) as usize);
    if cubes >= MIN_DECODE_CUBES { (8, split) } else { (2, 1) }
}

/// `(rows per thread, planes per row group)` of the int4 decode kernel: 4 rows at one token
/// row (8 was measured slower: 26.1 → 32.2 µs at 4096×14336, group 128), 2 with more.
fn i4_launch(m: usize, k: usize) -> (u32, u32) {
    (if m == 1 { 4 } else { 2 }, decode_split(k / 1024, 4))
}

/// Rows a batch of loads of [`matvec_i4_cols`] (H100, 4096 × 14336, group 128, 16 rows a cube,
/// ncu, two rounds: 1 row 18.3–18.9 µs; 2 rows 18.9–19.5).
const I4_COLS_DEPTH: u32 = 1;

/// Registers a thread of [`matvec_i4_cols`] takes (CUDA, H100: 72), for [`i4_cols_rows`]'
/// estimate of the cubes an SM holds.
const I4_COLS_REGS: usize = 72;

/// Weight rows a cube of [`matvec_i4_cols`] for `rows` rows of `k` inputs on `sms` SMs: the
/// most of 32, 16 or 8 whose cubes still fill 80% of the device's slots (cubes of `32 ·
/// ⌈k / 1024⌉` threads, as many an SM as 64K registers hold at [`I4_COLS_REGS`], at most 32),
/// else 8. Fewer rows a cube make more cubes (each loads its inputs again); more rows fewer, and
/// a device short of cubes waits on fewer loads at once. H100, the 8B's int4 products at one
/// token row (ncu, µs, two layers, 32 / 16 / 8 rows; `matvec_i4` last): q/k/v 6,144 × 4,096
/// 16.8–18.1 / 11.5–12.0 / **10.4–10.9** / 11.2–11.8; o 4,096 × 4,096 16.4–16.8 / 10.5–10.6 /
/// **8.7–9.1** / 9.0–9.9; gate/up 24,576 × 4,096 **29.0–29.7** / 34.6–35.1 / 29.1–30.8 /
/// 31.7–32.9; down 4,096 × 12,288 20.2–20.5 / **16.3** / 18.0–18.3 / 17.7–19.3; and 4,096 ×
/// 14,336 alone: 16 rows 18.3–18.9, 8 20.0–20.3, 32 21.2–22.1.
fn i4_cols_rows(rows: usize, k: usize, sms: Option<usize>) -> u32 {
    let threads = 32 * k.div_ceil(matvec_i4_cols::SPAN as usize);
    let per_sm = ((1usize << 16) / (I4_COLS_REGS * threads)).clamp(1, 32);
    let slots = per_sm * sms.unwrap_or(132);
    [32u32, 16].into_iter().find(|&r| 10 * rows.div_ceil(r as usize) >= 8 * slots).unwrap_or(8)
}

/// `(weight rows a cube, rows a batch of loads, warps a cube)` of [`matvec_i4_cols`] for a part
/// of `rows` rows of `k` inputs at one token row on `x`'s device, or `None` where it does not
/// take it ([`i4_cols_pick`] with the device's limits).
fn i4_cols_shape(x: &CubeTensor, rows: usize, k: usize) -> Option<(u32, u32, u32)> {
    let hw = &x.client.properties().hardware;
    let limits = CubeLimits { units: hw.max_units_per_cube, planes: hw.max_cube_dim.1, shared: hw.max_shared_memory_size };
    i4_cols_pick(rows, k, limits, hw.num_streaming_multiprocessors.map(|s| s as usize), knobs().i4_cols?)
}

/// What a device allows a cube: units, extent along y (the warps of the decode kernels), bytes of
/// shared memory.
#[derive(Clone, Copy)]
struct CubeLimits {
    units: u32,
    planes: u32,
    shared: usize,
}

/// [`i4_cols_shape`] for given limits, SM count and `BURN_QUANT_I4_COLS` setting (`Some`: rows
/// and depth for every product): `None` above [`matvec_i4_cols::MAX_PLANES`] warps or where the
/// cube's warps exceed the limits (WebGPU's defaults are 256 units and 16 KiB); else the rows
/// [`i4_cols_rows`] (or the setting) asks for, fewer where its shared memory would not fit.
fn i4_cols_pick(rows: usize, k: usize, limits: CubeLimits, sms: Option<usize>, knob: Option<(u32, u32)>) -> Option<(u32, u32, u32)> {
    let planes = k.div_ceil(matvec_i4_cols::SPAN as usize) as u32;
    if planes > matvec_i4_cols::MAX_PLANES || 32 * planes > limits.units || planes > limits.planes {
        return None;
    }
    let fits = |r: u32| matvec_i4_cols::shared_bytes(r, planes) <= limits.shared;
    match knob {
        Some((r, d)) => fits(r).then_some((r, d, planes)),
        None => {
            let most = i4_cols_rows(rows, k, sms);
            [32u32, 16, 8, 4].into_iter().filter(|&r| r <= most).find(|&r| fits(r)).map(|r| (r, I4_COLS_DEPTH, planes))
        }
    }
}

/// `(rows per thread, planes per row group)` of the Q6_K decode kernel.
fn q6k_launch(m: usize, k: usize) -> (u32, u32) {
    match (m, knobs().q6k) {
        (1, Some(o)) => o,
        _ => (2, decode_split(k / 512, 4)),
    }
}

/// `(rows per thread, planes per row group)` of the Q6_Kx4 decode kernel: 2 rows per thread, up
/// to 4 planes per row group, at any token count (`BURN_QUANT_Q6K_M1` overrides at one row).
/// H100, 4096×14336 at one row alone under ncu (2026-11-23), µs: 2 rows × 4 planes 27.3–28.8,
/// × 8 planes 27.5–29.3; 4 × 4 39.1–40.5, 4 × 8 33.9–35.6; 8 × 4 27.5–28.2, 8 × 8 27.1–28.3 (at
/// 22% of warp slots instead of 44%).
fn q6kx4_launch(m: usize, k: usize) -> (u32, u32) {
    match (m, knobs().q6k) {
        (1, Some(o)) => o,
        _ => (2, decode_split(k / 1024, 4)),
    }
}

/// `(rows per thread, planes per row group)` of the Q8_0 / Q5_0 decode kernel (same lanes, same
/// blocks per plane step).
fn q80_launch(m: usize, k: usize) -> (u32, u32) {
    match (m, knobs().q80) {
        (1, Some(o)) => o,
        _ => (2, decode_split(k / 256, 4)),
    }
}

/// The fewest cubes a decode launch should have (about two per SM on an H100) before it trades
/// cubes for rows per thread.
const MIN_DECODE_CUBES: usize = 256;

/// Benchmarking knobs, read once: `R,SPLIT` (rows per thread, planes per row group) for a decode
/// kernel at one token row, in place of its launch function's choice, the tensor-core decode
/// kernel's warps per cube, and whether the decode kernels do the op before them.
struct LaunchKnobs {
    /// `BURN_QUANT_DECODE_M1`: the Q4_K kernel ([`q4k_launch`]).
    q4k: Option<(u32, u32)>,
    /// `BURN_QUANT_Q6K_M1`: the Q6_K kernels ([`q6k_launch`], [`q6kx4_launch`]).
    q6k: Option<(u32, u32)>,
    /// `BURN_QUANT_Q80_M1`: the Q8_0 / Q5_0 kernel ([`q80_launch`]).
    q80: Option<(u32, u32)>,
    /// `BURN_QUANT_MMA_PLANES` (4, 8 or 16): warps per cube of the tensor-core decode kernel,
    /// in place of [`mma_shape`]'s choice.
    mma_planes: Option<u32>,
    /// `BURN_QUANT_MMA_MT` (1 or 2): 16-row A tiles per warp of the tensor-core decode kernel,
    /// in place of [`mma_shape`]'s choice.
    mma_mt: Option<u32>,
    /// Which of the RMSNorm and the SwiGLU before a product the decode kernels do ([`Pre`]):
    /// `BURN_QUANT_FOLD` = `all` for both, `norm` or `glu` for one of them, `0` for neither (each
    /// then a launch of its own), for comparisons, at every product size; unset, [`folds`]
    /// decides per device, and only products of up to [`FOLD_MAX_WEIGHTS`] fold.
    fold: Option<(bool, bool)>,
    /// `BURN_QUANT_I4_MMA`: `old` puts int4 parts on [`matvec_mma::matvec_q4_mma`] (the kernel
    /// they took before [`matvec_i4_mma`]), `PLANES,SLICES,DEPTH` sets [`matvec_i4_mma`]'s warps
    /// per cube (4, 8 or 16), its slices of the reduction (0: [`I4MmaShape::new`]'s choice) and its
    /// weights' groups in flight (2 to 4), then optionally `,1` for slices of contiguous groups
    /// instead of interleaved ones, and the input's groups in flight (2 to 4; else as the
    /// weights'); for comparisons.
    i4_mma: Option<(u32, usize, u32, bool, u32)>,
    /// `BURN_QUANT_I4_COLS`: int4 at one token row on [`matvec_i4_cols`] (the input held in
    /// registers) by default, `0` on [`matvec_i4`] instead, or `ROWS,DEPTH` for every product
    /// (weight rows a cube, 4 to 32; rows a batch of loads, 1, 2 or 4, dividing ROWS). `Some(None)`:
    /// the kernel with [`i4_cols_rows`] and [`I4_COLS_DEPTH`].
    i4_cols: Option<Option<(u32, u32)>>,
    /// `BURN_QUANT_PREFILL_TILE=PLANES,NTILES,CUBES,MTILES`: warps per cube (4, 8 or 16), 8-token
    /// B tiles per warp (4, 8 or 16), the cubes split-K aims for (0: whole waves of the device's
    /// SMs, [`prefill_splits`]) and 16-row A tiles per warp (1 or 2; `PLANES · MTILES` ≤ 16), of
    /// the Q4_K / Q6_Kx4 / int4 tensor-core prefill kernel ([`prefill_mma`]) for every product;
    /// unset, [`prefill_tile`] chooses per product.
    prefill_tile: Option<(u32, u32, usize, u32)>,
    /// `BURN_QUANT_PREFILL_ORDER=rows`: [`prefill_mma`]'s grid with the row tiles on x (cubes
    /// launched together share a token tile) instead of the token tiles (they share weight rows:
    /// Q6_Kx4 4096 × 14336 at m = 512 took 276 µs against 283, the 8B's pp512 13.3–13.6k against
    /// 13.1–13.2k alternating).
    prefill_rows_first: bool,
}

/// The [`LaunchKnobs`] of this process.
fn knobs() -> &'static LaunchKnobs {
    static K: std::sync::OnceLock<LaunchKnobs> = std::sync::OnceLock::new();
    K.get_or_init(|| LaunchKnobs {
        q4k: launch_knob("BURN_QUANT_DECODE_M1"),
        q6k: launch_knob("BURN_QUANT_Q6K_M1"),
        q80: launch_knob("BURN_QUANT_Q80_M1"),
        mma_planes: std::env::var("BURN_QUANT_MMA_PLANES")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|p| matches!(p, 4 | 8 | 16)),
        mma_mt: std::env::var("BURN_QUANT_MMA_MT").ok().and_then(|v| v.parse().ok()).filter(|t| matches!(t, 1 | 2)),
        fold: match std::env::var("BURN_QUANT_FOLD").as_deref() {
            Ok("0") => Some((false, false)),
            Ok("norm") => Some((true, false)),
            Ok("glu") => Some((false, true)),
            Ok("all") => Some((true, true)),
            _ => None,
        },
        i4_mma: std::env::var("BURN_QUANT_I4_MMA").ok().and_then(|v| {
            if v == "old" {
                return Some((0, 0, 0, false, 0));
            }
            let mut it = v.split(',').map(|p| p.trim().parse::<usize>().ok());
            let (p, s, d) = (it.next()??, it.next()??, it.next()??);
            let runs = it.next().flatten() == Some(1);
            let xd = it.next().flatten().unwrap_or(d);
            (matches!(p, 4 | 8 | 16) && (2..=4).contains(&d) && (2..=4).contains(&xd)).then_some((p as u32, s, d as u32, runs, xd as u32))
        }),
        i4_cols: match std::env::var("BURN_QUANT_I4_COLS").as_deref() {
            Ok("0") => None,
            Ok(v) => Some(
                v.split_once(',')
                    .and_then(|(r, d)| Some((r.trim().parse::<u32>().ok()?, d.trim().parse::<u32>().ok()?)))
                    .filter(|&(r, d)| matches!(r, 4 | 8 | 16 | 32) && matches!(d, 1 | 2 | 4) && r % d == 0),
            ),
            Err(_) => Some(None),
        },
        prefill_tile: std::env::var("BURN_QUANT_PREFILL_TILE")
            .ok()
            .and_then(|v| {
                let mut it = v.split(',').map(|p| p.trim().parse::<usize>().ok());
                Some((it.next()??, it.next()??, it.next()??, it.next()??))
            })
            .filter(|&(p, t, _, r)| matches!(p, 4 | 8 | 16) && matches!(t, 4 | 8 | 16) && matches!(r, 1 | 2) && p * r <= 16 && (64 * t) % (32 * p) == 0)
            .map(|(p, t, c, r)| (p as u32, t as u32, c, r as u32)),
        prefill_rows_first: std::env::var("BURN_QUANT_PREFILL_ORDER").is_ok_and(|v| v == "rows"),
    })
}

/// Reads `R,SPLIT` (R in 1, 2, 4, 8, 16; SPLIT in 1, 2, 4, 8) from the environment variable `name`.
fn launch_knob(name: &str) -> Option<(u32, u32)> {
    let v = std::env::var(name).ok()?;
    let (r, s) = v.split_once(',')?;
    let (r, s) = (r.trim().parse().ok()?, s.trim().parse().ok()?);
    (matches!(r, 1 | 2 | 4 | 8 | 16) && matches!(s, 1 | 2 | 4 | 8)).then_some((r, s))
}

/// Planes sharing a row group in the vectorised decode kernels, for rows of `steps` plane
/// steps (a plane step covers 1024 columns: 4 Q4_K blocks, or 1024 / G int4 groups; 512 for
/// Q6_K, 256 for Q8_0): as many as there are steps, up to `max`.
fn decode_split(steps: usize, max: u32) -> u32 {
    let s = match steps {
        0..=1 => 1,
        2..=3 => 2,
        4..=7 => 4,
        _ => 8,
    };
    s.min(max)
}

/// Whether the device has f16 and u16 types, so kernels can convert halves in one instruction.
fn has_f16(t: &CubeTensor) -> bool {
    use cubecl::ir::{ElemType, FloatKind, UIntKind};
    let p = t.client.properties();
    p.supports_type(ElemType::Float(FloatKind::F16)) && p.supports_type(ElemType::UInt(UIntKind::U16))
}

/// Whether the device's planes are exactly as wide as the decode kernels' rows of lanes, so
/// they can reduce with `plane_sum`.
pub(super) fn planes_are_32(t: &CubeTensor) -> bool {
    let hw = &t.client.properties().hardware;
    hw.plane_size_min == reduce::LANES && hw.plane_size_max == reduce::LANES
}

/// Launches one of the vectorised decode kernels over a layout part: the grid of row groups
/// (`r` rows per thread, `split` planes per row group), the cube of `LANES × PLANES` threads,
/// 16-byte input loads (vector size 4), the weight (as `w_words` words), the input, the output,
/// the residual ([`Residual`]) and the norm's scale ([`Prologue`]), then the kernel's own
/// arguments; the kernels take `eps, m, r, split, plane32, add, pre` last, then any arguments
/// after a second `;` (the Q8_0 / Q5_0 kernel's `five`). (The Q4_K and Q6_Kx4
/// kernels, which read their weights in wider vectors, launch through [`launch_q4k_q6kx4`].)
macro_rules! launch_decode {
    ($kernel:path, $client:expr, $part:expr, $r_split:expr, $w:expr, $w_words:expr, $x:expr, $y:expr, $res:expr, $pre:expr,
     ($m:expr, $k:expr, $n:expr), $plane32:expr; $($arg:expr),* $(; $($tail:expr),*)?) => {{
        let (r, split): (u32, u32) = $r_split;
        let groups = (reduce::PLANES / split) as usize * r as usize;
        $kernel(
            &$client,
            grid_1d($part.rows.div_ceil(groups)),
            CubeDim::new_2d(reduce::LANES, reduce::PLANES),
            4,
            buffer($w, $w_words),
            buffer(&$x, $pre.x_vectors($m, $k)),
            buffer(&$y, $m * $n),
            $res.arg(),
            $pre.gamma_arg(),
            $($arg,)*
            $pre.eps,
            $m as u32,
            r,
            split,
            $plane32,
            $res.add,
            $pre.code,
            $($($tail,)*)?
        )
    }};
}

/// Most token rows the tensor-core decode kernel takes in one launch (4 per `n8` tile of B).
const MMA_MAX_M: usize = 16;

/// Whether `m` token rows go to the tensor-core decode kernel ([`matvec_mma`]) where a part's
/// layout allows it: the device has the f16 `mma.m16n8k16`, and `BURN_QUANT_MMA_DECODE` is unset
/// (2..=[`MMA_MAX_M`] rows), `1` (also one row: at one row the SIMT kernels are faster on the
/// H100, see BENCHMARKS.md) or `0` (never, for comparisons).
fn mma_decode(t: &CubeTensor, m: usize) -> bool {
    static MODE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let mode = *MODE.get_or_init(|| std::env::var("BURN_QUANT_MMA_DECODE").ok().map(|v| v == "1"));
    let want = match mode {
        Some(true) => (1..=MMA_MAX_M).contains(&m),
        Some(false) => false,
        None => (2..=MMA_MAX_M).contains(&m),
    };
    want && has_manual_mma(t)
}

/// Whether the device has the f16 `mma.m16n8k16` with registers managed by the kernel.
pub(super) fn has_manual_mma(t: &CubeTensor) -> bool {
    t.client.properties().features.matmul.mma.contains(&f16_f32_config(16, 8, 16))
}


/// The f16 · f16 → f32 matrix-instruction shape `m × n × k`, to look up in the device's features.
fn f16_f32_config(m: u32, n: u32, k: u32) -> cubecl::ir::features::MmaConfig {
    use cubecl::ir::{ElemType, FloatKind};
    let f16 = ElemType::Float(FloatKind::F16);
    let f32 = ElemType::Float(FloatKind::F32);
    cubecl::ir::features::MmaConfig { a_type: f16, b_type: f16, cd_type: f32, m, n, k }
}

/// The tensor-core decode kernel's layout argument for a part it can take: 0 for Q4_K, the
/// group size for int4 groups of a multiple of 64 weights; `None` for every other part (or one
/// not on a word boundary).
fn mma_group(p: &QuantPart) -> Option<u32> {
    if !p.byte_offset.is_multiple_of(4) {
        return None;
    }
    match p.kind {
        crate::GgmlType::Q4_K => Some(0),
        kind => kind.int4_group().filter(|g| g % 64 == 0).map(|g| g as u32),
    }
}

/// `(16-row A tiles per warp, warps per cube)` of [`matvec_mma::matvec_q4_mma`] at `m` token
/// rows for a part of layout argument `group` (0 for Q4_K): two tiles, so each B fragment read
/// serves both, and 16 warps splitting the blocks, from 2 to 8 rows and for Q4_K above; one tile
/// and 8 warps at a single row and for int4 above 8 rows (where [`matvec_i4_mma`] now runs by
/// default, [`i4_mma_on`]). H100, 4,096 × 14,336 alone under ncu,
/// µs (tiles, warps = 1, 8 / 2, 8 / 2, 16): Q4_K m=8 49.7–54.0 / 41.3–43.6 / 33.2–35.2, m=16
/// 75.7–78.6 / 57.1–58.0 / 51.1–54.1; int4 (group 128) m=8 43.2–43.7 / 30.4–31.3 / 26.8–26.9,
/// m=16 59.0–59.7 / 114–117 / 60.8–61.7; at m=1 1, 8 takes 26.5–28.5 and 2, 8 28.8–32.8.
/// `BURN_QUANT_MMA_MT` and `BURN_QUANT_MMA_PLANES` override.
fn mma_shape(m: usize, group: u32) -> (u32, u32) {
    let two = (2..=8).contains(&m) || (group == 0 && m > 8);
    let (mt, planes) = if two { (2, 16) } else { (1, matvec_mma::PLANES) };
    (knobs().mma_mt.unwrap_or(mt), knobs().mma_planes.unwrap_or(planes))
}

/// The input of the tensor-core decode kernels for the `m` token rows `x` of `k` values each,
/// scaled per `run` values ([`matvec_mma::mma_input`]): `(xq, xsum, xinv, xrun)`, and `counters`
/// zeroed split-K counters (u32) from the same launch.
#[allow(clippy::type_complexity)]
fn mma_input(x: &CubeTensor, m: usize, k: usize, run: u32, counters: usize) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
    let (n, subs, runs) = (m * k, m * k / 32, m * k / run as usize);
    let (xq, xsum, xinv) = (empty_f32(x, vec![n]), empty_f32(x, vec![subs]), empty_f32(x, vec![subs]));
    let (xrun, cnt) = (empty_f32(x, vec![2 * runs]), empty_f32(x, vec![counters]));
    let threads = (n / 4).max(counters);
    // SAFETY: `x` holds `m · k` values (`k` a multiple of 32 and of `run`, so no sub-block or run
    // straddles two rows); `xq` has a word per value (8 quads × 2 parts × 2 words per 32-value
    // sub-block), `xsum` and `xinv` one value per sub-block, `xrun` two per run, `cnt` `counters` words; threads
    // past `n / 4` read the last quad and write nothing there.
    unsafe {
        matvec_mma::mma_input::launch_unchecked(
            &x.client,
            grid_1d(threads.div_ceil(256)),
            CubeDim::new_1d(256),
            buffer(x, n),
            buffer(&xq, n),
            buffer(&xsum, subs),
            buffer(&xinv, subs),
            buffer(&xrun, 2 * runs),
            buffer(&cnt, counters.max(1)),
            (n / 4) as u32,
            counters as u32,
            run,
        )
    };
    (xq, xsum, xinv, xrun, cnt)
}

/// The launch of [`matvec_i4_mma`] over one part.
#[derive(Clone, Copy)]
struct I4MmaShape {
    /// Weights per int4 group (64 or 128).
    group: u32,
    /// Warps per cube.
    planes: u32,
    /// Row tiles of `16 · planes` rows (the grid's x).
    tiles: usize,
    /// Slices of the reduction (the grid's y).
    slices: usize,
    /// Groups whose weight words are in flight.
    depth: u32,
    /// Groups whose input is in flight.
    xdepth: u32,
}

impl I4MmaShape {
    /// The shape for `rows` weight rows of `blocks` groups of `group`: 8 warps, the weight words
    /// of 2 groups and the input of 3 in flight, and the fewest slices of the reduction that fill
    /// whole waves of two cubes per SM ([`prefill_splits`]), each slice at least 2 groups. H100,
    /// 4,096 × 14,336 (group 128) at 16 token rows, kernel alone under ncu, µs (warps, weight and
    /// input groups in flight): 8, 2, 3 29.5–31.3; 8, 2, 2 30.8–33.8; 8, 3, 2 29.8–31.1 (126
    /// registers); 8, 3, 3 43.9–44.7 (134 registers: one cube an SM); 16, 2, 3 30.5–31.3; 16, 2,
    /// 2 37.0–38.5; 4, 2, 3 43.4–44.5; slices of contiguous groups instead of interleaved ones
    /// (8, 2, 2) 31.9–33.1. `BURN_QUANT_I4_MMA` overrides.
    fn new(x: &CubeTensor, rows: usize, blocks: usize, group: u32) -> Self {
        let (planes, slices, depth, _, xdepth) = knobs().i4_mma.filter(|&(p, ..)| p > 0).unwrap_or((8, 0, 2, false, 3));
        let tiles = rows.div_ceil((matvec_i4_mma::ROWS * planes) as usize);
        let most = (blocks / 2).max(1);
        let slices = match (slices, x.client.properties().hardware.num_streaming_multiprocessors) {
            (0, Some(sms)) => prefill_splits(tiles, sms as usize * (16 / planes as usize), most),
            (0, None) => 132usize.div_ceil(tiles).clamp(1, most),
            (s, _) => s.clamp(1, blocks),
        };
        Self { group, planes, tiles, slices, depth, xdepth }
    }

    /// Whether the reduction is split (the slices meet through counters and a slices buffer).
    fn split(&self) -> bool {
        self.slices > 1
    }
}

/// Whether int4 groups of `group` weights on the tensor cores at `m` token rows take
/// [`matvec_i4_mma`] rather than [`matvec_mma::matvec_q4_mma`]: above 8 rows (H100, 4,096 ×
/// 14,336 kernel alone, µs: m = 16 29.5–31.3 against 51.8–55.0; m = 8 24.1–25.5 against
/// 23.6–24.2), with warps of 32 lanes and groups of at most 128; `BURN_QUANT_I4_MMA=old` never,
/// any other setting of it at every row count the tensor cores take.
fn i4_mma_on(x: &CubeTensor, group: u32, m: usize) -> bool {
    let rows_ok = match knobs().i4_mma {
        Some((0, ..)) => false,
        Some(_) => true,
        None => m > 8,
    };
    rows_ok && group > 0 && group <= 128 && planes_are_32(x)
}

/// Whether [`matmul_decode`] takes `m` token rows of `x` through `layout`: up to
/// [`matvec::MAX_M`] always, up to [`MMA_MAX_M`] where every part runs on the tensor cores.
fn decode_takes(x: &CubeTensor, layout: &QuantLayout, m: usize) -> bool {
    m <= matvec::MAX_M as usize
        || (m <= MMA_MAX_M && layout.in_features.is_multiple_of(32) && mma_decode(x, m) && layout.merged_parts().iter().all(|p| mma_group(p).is_some()))
}

/// The residual a decode launch adds to its output (`add`); where there is none, the first value
/// of the launch's input stands in, never read (every kernel binds one).
struct Residual {
    t: CubeTensor,
    len: usize,
    add: bool,
}

impl Residual {
    /// `r` (`[m, n]` f32, contiguous), or the stand-in from `x`.
    fn new(r: Option<CubeTensor>, x: &CubeTensor) -> Self {
        match r {
            Some(t) => {
                let len = t.meta.shape().num_elements();
                Self { t, len, add: true }
            }
            None => Self { t: x.clone(), len: 1, add: false },
        }
    }

    /// The kernel argument.
    fn arg(&self) -> BufferArg {
        buffer(&self.t, self.len)
    }
}

/// What a product does to its input first ([`input`]): nothing, SwiGLU or RMSNorm.
enum Pre {
    /// The input as it is.
    Plain,
    /// `silu(gate) ⊙ up` of an input `[m, 2k]`.
    SwiGlu,
    /// RMSNorm with this scale (`[k]`) and `eps`.
    Norm(CubeTensor, f32),
}

/// A [`Pre`] as the one-pass decode kernels take it: their `pre` code, the norm's scale (where
/// there is none, the first vector of the input stands in, never read: every kernel binds one)
/// and `eps`.
struct Prologue {
    gamma: CubeTensor,
    len: usize,
    eps: f32,
    code: u32,
}

impl Prologue {
    /// `pre` for the kernels, whose input is `x`.
    fn new(pre: Pre, x: &CubeTensor) -> Self {
        match pre {
            Pre::Plain => Self { gamma: x.clone(), len: 1, eps: 0.0, code: input::PLAIN },
            Pre::SwiGlu => Self { gamma: x.clone(), len: 1, eps: 0.0, code: input::SWIGLU },
            Pre::Norm(g, eps) => {
                let len = g.meta.shape().num_elements() / 4;
                Self { gamma: g, len, eps, code: input::RMS_NORM }
            }
        }
    }

    /// 4-float vectors of the op's input for `m` token rows of a product over `k` columns.
    fn x_vectors(&self, m: usize, k: usize) -> usize {
        if self.code == input::SWIGLU { m * k / 2 } else { m * k / 4 }
    }

    /// The kernel argument for `gamma`.
    fn gamma_arg(&self) -> BufferArg {
        buffer(&self.gamma, self.len)
    }
}

/// Most weights (`out · in`) of a product whose decode kernels do the op before it ([`Pre`]);
/// above, the op is a launch of its own. Measured on the H100 (BENCHMARKS.md, 2026-11-23): the
/// folds paid where a decode step is launch-bound (the 0.6B shape, projections of 3–6 M weights:
/// 502 → 558 t/s, against a three-launch SwiGLU) and cost where the products are bandwidth-bound
/// (the 8B shape, 25–100 M: 4.41 → 6.17 ms per token, the SwiGLU's exponentials and divisions
/// redone by every row group). Re-measured 2026-11-24 with the folds forced at every size: 8B
/// tg128 281 t/s by this rule, 229–232 with the norm folded, 187–190 with both; the folded 8-row
/// Q4_K kernel is compiled to a schedule that waits on its loads 3.3 times as long (BENCHMARKS.md,
/// session 18).
const FOLD_MAX_WEIGHTS: usize = 8 << 20;

/// Whether the decode kernels do the (RMSNorm, SwiGLU) before a product on `x`'s device:
/// `BURN_QUANT_FOLD` where set, else the norm only on CUDA and both elsewhere. On CUDA the decode
/// step replays a CUDA graph, where a launch costs about a microsecond: against the one-launch
/// SwiGLU kernel the SwiGLU fold does not pay; the norm fold paid on one machine once q/k/v
/// became one launch and was neutral on another (H100, 0.6B tg128, alternating runs,
/// 2026-11-24: 668–764 t/s with it, median 705, against 635–698 without, median 652; on the
/// other machine medians 644 and 647; 8B unchanged). wgpu replays a dispatch list whose
/// launches cost more, and keeps both.
fn folds(x: &CubeTensor) -> (bool, bool) {
    knobs().fold.unwrap_or_else(|| {
        let cuda = matches!(x.device, burn_cubecl::CubeDevice::Cuda(_));
        (true, !cuda)
    })
}

/// Which kernel [`matmul_decode`] launches for a part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DecodeKernel {
    /// [`matvec_mma`], with its layout argument ([`mma_group`]).
    Mma(u32),
    /// [`matvec_pair`] holding the Q4_K body.
    Q4K,
    /// [`matvec_i4`].
    I4,
    /// [`matvec_q80`] on Q8_0.
    Q80,
    /// [`matvec_q80`] on Q5_0 (with [`matvec_q50`](crate::kernels::matvec_q50)'s code words).
    Q50,
    /// [`matvec_pair`] holding the Q6_Kx4 body.
    Q6Kx4,
    /// [`matvec_q6k`].
    Q6K,
    /// [`matvec::matvec`], any type.
    Generic,
}

impl DecodeKernel {
    /// The kernel for `part` (`mma`: the tensor-core kernel is on for this launch's token rows,
    /// [`mma_on`]).
    fn of(part: &QuantPart, mma: bool) -> Self {
        use crate::GgmlType as T;
        let at = part.byte_offset;
        match (mma.then(|| mma_group(part)).flatten(), part.kind) {
            (Some(g), _) => Self::Mma(g),
            (None, T::Q4_K) if at % 16 == 0 => Self::Q4K,
            (None, kind) if kind.int4_group().is_some() && at % 4 == 0 => Self::I4,
            (None, T::Q8_0) if at.is_multiple_of(2) => Self::Q80,
            (None, T::Q5_0) if at.is_multiple_of(2) => Self::Q50,
            (None, T::Q6_Kx4) if at % 8 == 0 => Self::Q6Kx4,
            (None, T::Q6_K) => Self::Q6K,
            _ => Self::Generic,
        }
    }

    /// Whether the kernel does a [`Pre`] itself (the one-pass kernels of [`input`]).
    fn takes_pre(self) -> bool {
        !matches!(self, Self::Mma(_) | Self::Generic)
    }
}

/// Whether a weight of a Q4_K part then a Q6_Kx4 part decodes in one launch
/// ([`matvec_pair::matvec_q4k_q6kx4`]): yes unless the environment sets `BURN_QUANT_PAIR=0`
/// (then a launch per part, for comparisons).
fn pair_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BURN_QUANT_PAIR").map_or(true, |v| v != "0"))
}

/// What every decode launch of [`matmul_decode`] shares: the weight (`words` 4-byte words), the
/// input, output, residual and prologue, the sizes, and the device's traits.
struct DecodeArgs<'a> {
    w: &'a CubeTensor,
    words: usize,
    x: &'a CubeTensor,
    y: &'a CubeTensor,
    res: &'a Residual,
    pre: &'a Prologue,
    m: usize,
    k: usize,
    n: usize,
    f16hw: bool,
    plane32: bool,
}

/// Launches [`matvec_pair::matvec_q4k_q6kx4`] over a Q4_K part, a Q6_Kx4 part, or both (each
/// with the first output column it writes): one launch whatever the count.
fn launch_q4k_q6kx4(args: &DecodeArgs, a: Option<(&QuantPart, usize)>, b: Option<(&QuantPart, usize)>) {
    let DecodeArgs { w, words, x, y, res, pre, m, k, n, f16hw, plane32 } = *args;
    let ((ra, sa), (rb, sb)) = (a.map_or((1, 1), |(p, _)| q4k_launch(m, p.rows, k)), q6kx4_launch(m, k));
    let groups = |r: u32, split: u32| (reduce::PLANES / split) as usize * r as usize;
    let cubes_a = a.map_or(0, |(p, _)| p.rows.div_ceil(groups(ra, sa)));
    let cubes = cubes_a + b.map_or(0, |(p, _)| p.rows.div_ceil(groups(rb, sb)));
    let holds = a.map_or(0, |_| matvec_pair::HOLDS_Q4K) | b.map_or(0, |_| matvec_pair::HOLDS_Q6KX4);
    let at = |p: Option<(&QuantPart, usize)>, unit: usize| p.map_or((0, 0, 0), |(p, col)| ((p.byte_offset / unit) as u32, p.rows as u32, col as u32));
    let ((off16, rows_a, col_a), (off8, rows_b, col_b)) = (at(a, 16), at(b, 8));
    // SAFETY: a Q4_K part starts on a 16-byte boundary and its rows are whole 144-byte blocks, a
    // Q6_Kx4 part on an 8-byte boundary with rows of whole 840-byte groups (105 words of 8
    // bytes), so every read stays inside its part; rows past a part's end are clamped in the
    // kernel; `y` is `[m, n]` and each part writes its own columns from its `col`.
    unsafe {
        matvec_pair::matvec_q4k_q6kx4::launch_unchecked(
            &x.client,
            grid_1d(cubes),
            CubeDim::new_2d(reduce::LANES, reduce::PLANES),
            4,
            2,
            buffer(w, words / 4),
            buffer(w, words / 2),
            buffer(x, pre.x_vectors(m, k)),
            buffer(y, m * n),
            res.arg(),
            pre.gamma_arg(),
            off16,
            rows_a,
            col_a,
            off8,
            rows_b,
            col_b,
            cubes_a as u32,
            k as u32,
            n as u32,
            matvec_q4k::FLOAT_MAGIC,
            f16hw,
            pre.eps,
            m as u32,
            ra,
            sa,
            rb,
            sb,
            plane32,
            res.add,
            pre.code,
            holds,
        )
    };
}

/// Whether the tensor-core kernel is on for `m` token rows of `x` over `k` columns (for the
/// parts it can take).
fn mma_on(x: &CubeTensor, m: usize, k: usize) -> bool {
    k.is_multiple_of(32) && mma_decode(x, m)
}

/// `x · Wᵀ` (plus `res`, `[m, n]` f32 contiguous, in the kernels' epilogue) for `m` token rows
/// that [`decode_takes`], `x` read through `pre` (every part's kernel must [take
/// it](DecodeKernel::takes_pre) unless it is `Plain`); `on`: [`mma_on`] for these rows.
#[allow(clippy::too_many_arguments)]
fn matmul_decode(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize, res: Option<CubeTensor>, pre: Pre, on: bool) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let y = empty_f32(&x, vec![m, n]);
    let res = Residual::new(res, &x);
    let client = x.client.clone();
    let plane32 = planes_are_32(&x);
    let f16hw = has_f16(&x);
    let words = layout.total_words();
    let parts = layout.merged_parts();
    let pre = Prologue::new(pre, &x);
    // Parts the tensor-core kernels take; their input is prepared once for all of them, scaled
    // per int4 group where [`matvec_i4_mma`] takes one (its split-K counters zeroed by the same
    // launch, and its slices of the output shared by its parts).
    let i4_shapes: Vec<Option<I4MmaShape>> = parts
        .iter()
        .map(|p| match DecodeKernel::of(p, on) {
            DecodeKernel::Mma(g) if i4_mma_on(&x, g, m) => Some(I4MmaShape::new(&x, p.rows, k / g as usize, g)),
            _ => None,
        })
        .collect();
    let counters: usize = i4_shapes.iter().flatten().filter(|s| s.split()).map(|s| s.tiles).sum();
    let most_slices = i4_shapes.iter().flatten().map(|s| s.slices).max().unwrap_or(1);
    let run = i4_shapes.iter().flatten().map(|s| s.group).max().unwrap_or(32);
    let mma = parts.iter().any(|p| matches!(DecodeKernel::of(p, on), DecodeKernel::Mma(_))).then(|| mma_input(&x, m, k, run, counters));
    let slices_buf = (most_slices > 1).then(|| empty_f32(&x, vec![most_slices, m, n]));
    let mut cnt0 = 0;
    let args = DecodeArgs { w, words, x: &x, y: &y, res: &res, pre: &pre, m, k, n, f16hw, plane32 };
    if let [a, b] = parts.as_slice()
        && pair_on()
        && DecodeKernel::of(a, on) == DecodeKernel::Q4K
        && DecodeKernel::of(b, on) == DecodeKernel::Q6Kx4
    {
        launch_q4k_q6kx4(&args, Some((a, 0)), Some((b, a.rows)));
        return y;
    }
    let mut col0 = 0;
    for (pi, part) in parts.iter().enumerate() {
        let (rows, at) = (part.rows as u32, part.byte_offset);
        let kernel = DecodeKernel::of(part, on);
        let launched = if let (Some((xq, _, _, xrun, cnt)), Some(shape)) = (&mma, i4_shapes[pi]) {
            let I4MmaShape { group, planes, tiles, slices, depth, xdepth } = shape;
            let split = shape.split();
            let ys = slices_buf.as_ref().filter(|_| split).unwrap_or(&y);
            // SAFETY: the part starts on a word boundary and its rows are whole groups of
            // `1 + G/8` words (G = 64 or 128, `k` a multiple of G); rows past `rows` and tokens
            // past `m` are clamped for reads and never written; `xq` and `xrun` cover `m · k`
            // values scaled per G (`run` is a multiple of G); with a split, `ys` is `[slices', m,
            // n]` (slices' ≥ slices) and `cnt` holds this launch's `tiles` zeroed counters from
            // `cnt0`; `y` is `[m, n]` and the part writes columns `col0..col0 + rows`.
            unsafe {
                matvec_i4_mma::matvec_i4_mma::launch_unchecked(
                    &client,
                    CubeCount::Static(tiles as u32, slices as u32, 1),
                    CubeDim::new_2d(32, planes),
                    4,
                    buffer(w, words),
                    buffer(xq, m * k / 4),
                    buffer(xrun, 2 * m * k / run as usize),
                    buffer(ys, if split { most_slices * m * n } else { m * n }),
                    res.arg(),
                    buffer(&y, m * n),
                    buffer(cnt, counters.max(1)),
                    cnt0 as u32,
                    (at / 4) as u32,
                    rows,
                    k as u32,
                    n as u32,
                    col0 as u32,
                    m as u32,
                    // 0: interleaved slices.
                    if knobs().i4_mma.is_some_and(|k| k.3) { (k / group as usize).div_ceil(slices) as u32 } else { 0 },
                    group,
                    m.div_ceil(4) as u32,
                    planes,
                    depth,
                    xdepth,
                    split,
                    res.add,
                )
            };
            if split {
                cnt0 += tiles;
            }
            true
        } else if let (Some((xq, xsum, xinv, _, _)), DecodeKernel::Mma(group)) = (&mma, kernel) {
            let (mt, planes) = mma_shape(m, group);
            // SAFETY: the part starts on a word boundary and its rows are whole blocks of whole
            // words (36 for Q4_K, 1 + G/8 for int4); rows past `rows` are clamped in the kernel;
            // `xq`, `xsum`, `xinv` cover `m · k` values and tokens past `m` are clamped; `y` is
            // `[m, n]` and the part writes columns `col0..col0 + rows`.
            unsafe {
                matvec_mma::matvec_q4_mma::launch_unchecked(
                    &client,
                    grid_1d(part.rows.div_ceil((matvec_mma::ROWS * mt) as usize)),
                    CubeDim::new_2d(32, planes),
                    4,
                    buffer(w, words),
                    buffer(xq, m * k / 4),
                    buffer(xsum, m * k / 32),
                    buffer(xinv, m * k / 32),
                    buffer(&y, m * n),
                    res.arg(),
                    (at / 4) as u32,
                    rows,
                    k as u32,
                    n as u32,
                    col0 as u32,
                    m as u32,
                    group,
                    m.div_ceil(4) as u32,
                    planes,
                    mt,
                    res.add,
                )
            };
            true
        } else if kernel == DecodeKernel::Q4K {
            launch_q4k_q6kx4(&args, Some((part, col0)), None);
            true
        } else if let Some((crows, depth, planes)) = (kernel == DecodeKernel::I4 && m == 1).then(|| i4_cols_shape(&x, part.rows, k)).flatten() {
            // SAFETY: the part starts on a word boundary and its rows are whole groups of
            // `4 + G/2` bytes; lanes past the last group read nothing; rows past `rows` are
            // clamped; `planes · SPAN ≥ k`; `y` is `[1, n]`, the part writes columns
            // `col0..col0 + rows`.
            unsafe {
                matvec_i4_cols::matvec_i4_cols::launch_unchecked(
                    &client,
                    grid_1d(part.rows.div_ceil(crows as usize)),
                    CubeDim::new_2d(32, planes),
                    4,
                    buffer(w, words),
                    buffer(&x, pre.x_vectors(m, k)),
                    buffer(&y, m * n),
                    res.arg(),
                    pre.gamma_arg(),
                    (at / 4) as u32,
                    rows,
                    k as u32,
                    col0 as u32,
                    matvec_q4k::FLOAT_MAGIC,
                    pre.eps,
                    part.kind.block_elems() as u32,
                    f16hw,
                    planes,
                    crows,
                    depth,
                    res.add,
                    pre.code,
                )
            };
            true
        } else if kernel == DecodeKernel::I4 {
            // SAFETY: the part starts on a word boundary and its rows are whole groups of
            // `4 + G/2` bytes (a multiple of 4), so every word read is inside it; rows past
            // `rows` are clamped in the kernel; `y` is `[m, n]`, the part writes columns
            // `col0..col0 + rows`.
            unsafe {
                launch_decode!(matvec_i4::matvec_i4::launch_unchecked, client, part, i4_launch(m, k),
                    w, words, x, y, res, pre, (m, k, n), plane32;
                    (at / 4) as u32, rows, k as u32, n as u32, col0 as u32, matvec_q4k::FLOAT_MAGIC, part.kind.block_elems() as u32, f16hw)
            };
            true
        } else if matches!(kernel, DecodeKernel::Q80 | DecodeKernel::Q50) {
            let five = kernel == DecodeKernel::Q50;
            // SAFETY: every word read holds bytes of a block of a row below `rows` (rows past it
            // are clamped in the kernel; a word is read past an aligned one only where the codes
            // straddle into it, and the buffer is whole words); `y` is `[m, n]` and the part
            // writes columns `col0..col0 + rows`.
            unsafe {
                launch_decode!(matvec_q80::matvec_q80_q50::launch_unchecked, client, part, q80_launch(m, k),
                    w, words, x, y, res, pre, (m, k, n), plane32;
                    at as u32, rows, k as u32, layout.row_bytes(part) as u32, n as u32, col0 as u32, matvec_q4k::FLOAT_MAGIC, f16hw;
                    five)
            };
            true
        } else if kernel == DecodeKernel::Q6Kx4 {
            launch_q4k_q6kx4(&args, None, Some((part, col0)));
            true
        } else if kernel == DecodeKernel::Q6K {
            // SAFETY: every word read is inside a block of a row below `rows` (rows past it are
            // clamped in the kernel); `y` is `[m, n]` and the part writes columns
            // `col0..col0 + rows`.
            unsafe {
                launch_decode!(matvec_q6k::matvec_q6k::launch_unchecked, client, part, q6k_launch(m, k),
                    w, words, x, y, res, pre, (m, k, n), plane32;
                    at as u32, rows, k as u32, layout.row_bytes(part) as u32, n as u32, col0 as u32, matvec_q4k::FLOAT_MAGIC, f16hw)
            };
            true
        } else {
            false
        };
        if launched {
            col0 += part.rows;
            continue;
        }
        // Every other type (or a misaligned part): the generic kernel.
        let code = kind_code(part);
        let count = grid_1d(part.rows.div_ceil(matvec::ROWS_PER_CUBE as usize));
        // SAFETY: rows past `rows` are masked in the kernel; reads stay inside the part; `y` is
        // `[m, n]` and the part writes columns `col0..col0 + rows`.
        unsafe {
            matvec::matvec::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(matvec::LANES, matvec::ROWS),
                buffer(w, layout.total_words()),
                buffer(&x, m * k),
                buffer(&y, m * n),
                res.arg(),
                part.byte_offset as u32,
                part.rows as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                n as u32,
                col0 as u32,
                m as u32,
                code,
                block_elems(code),
                block_bytes(code),
                res.add,
            )
        };
        col0 += part.rows;
    }
    y
}

/// Whether the device has the 16×16×16 f16·f16→f32 matrix instruction the
/// [`tiled_mma`] prefill kernel uses.
fn has_f16_mma(t: &CubeTensor) -> bool {
    t.client.properties().features.matmul.cmma.contains(&f16_f32_config(16, 16, 16))
}

/// How many slices to split a reduction of `k` into, for `tiles` output tiles, so that about
/// [`SPLIT_K_TARGET`] cubes run, each slice at least 8 chunks of `bk`; returns `(splits, kslice)`.
fn split_k(k: usize, tiles: usize, bk: usize) -> (usize, usize) {
    let splits = SPLIT_K_TARGET.div_ceil(tiles).clamp(1, (k / (8 * bk)).max(1));
    let kslice = k.div_ceil(splits).div_ceil(bk) * bk;
    (k.div_ceil(kslice), kslice)
}

/// Sums the split-K slices of `y` (`[splits, m, n]`) into `[m, n]`.
fn sum_slices(y: CubeTensor, splits: usize, m: usize, n: usize) -> CubeTensor {
    if splits == 1 {
        CubeBackend::float_reshape(y, Shape::new([m, n]))
    } else {
        CubeBackend::float_reshape(CubeBackend::float_sum_dim(y, 0), Shape::new([m, n]))
    }
}

/// Runs one of the split-K prefill kernels (`tiled_mma::matmul_mma`, `tiled::matmul_tiled`;
/// they take the same arguments) over every layout part: output tiles of `bm × bn`, the reduction
/// split into slices of whole `bk` chunks ([`split_k`]), the slices summed at the end.
macro_rules! split_k_prefill {
    ($kernel:path, $x:expr, $w:expr, $layout:expr, $m:expr, $tile:expr, $cube:expr) => {{
        let (x, w, layout, m) = ($x, $w, $layout, $m);
        let (k, n) = (layout.in_features, layout.out_features());
        let (bm, bn, bk): (usize, usize, usize) = $tile;
        let (splits, kslice) = split_k(k, n.div_ceil(bn) * m.div_ceil(bm), bk);
        let y = empty_f32(&x, vec![splits, m, n]);
        let client = x.client.clone();
        let mut col0 = 0;
        for part in &layout.parts {
            let code = kind_code(part);
            let count = CubeCount::Static(part.rows.div_ceil(bn) as u32, m.div_ceil(bm) as u32, splits as u32);
            // SAFETY: out-of-range rows/columns are masked in the kernel; weight reads stay inside
            // the part; `y` is `[splits, m, n]` and this part writes columns `col0..col0 + rows`.
            unsafe {
                $kernel(
                    &client,
                    count,
                    $cube,
                    buffer(w, layout.total_words()),
                    buffer(&x, m * k),
                    buffer(&y, splits * m * n),
                    part.byte_offset as u32,
                    part.rows as u32,
                    m as u32,
                    k as u32,
                    layout.row_bytes(part) as u32,
                    n as u32,
                    col0 as u32,
                    kslice as u32,
                    code,
                    block_elems(code),
                    block_bytes(code),
                )
            };
            col0 += part.rows;
        }
        sum_slices(y, splits, m, n)
    }};
}

/// `(warps per cube, 8-token tiles per warp, cubes to aim for, 16-row tiles per warp)` of
/// [`prefill_mma`] by default: 128 weight rows × 64 tokens a cube (4 warps of two 16-row tiles,
/// 254 registers, so two cubes an SM), the split from the device's SMs ([`prefill_splits`]).
/// Against session 22's 256 × 64 (8 warps, one cube an SM), an 8B pp512 layer's products went
/// 877 → 844 µs (H100, ncu, BENCHMARKS.md session 24): with two cubes on an SM one computes while
/// the other waits at its barrier.
const PREFILL_TILE: (u32, u32, usize, u32) = (4, 8, 0, 2);

/// [`PREFILL_TILE`] with 128 tokens a cube (4 warps of 2 × 16 rows × 16 B tiles): each staged
/// token tile and each decoded weight fragment serve twice the products, so a product with
/// enough tiles to fill the device twice over runs faster (the 8B's gate/up at 512 tokens,
/// 4,096 → 24,576: 400 → 353 µs); with fewer it leaves SMs idle or needs splits.
const PREFILL_TILE_WIDE: (u32, u32, usize, u32) = (4, 16, 0, 2);

/// The tile of a [`prefill_mma`] launch over `rows` weight rows and `m` tokens on a device of
/// `sms` SMs: the knob's where set, else [`PREFILL_TILE_WIDE`] where its tiles (unsplit) fill
/// at least two waves of two cubes an SM, else [`PREFILL_TILE`].
fn prefill_tile(rows: usize, m: usize, sms: Option<usize>) -> (u32, u32, usize, u32) {
    if let Some(t) = knobs().prefill_tile {
        return t;
    }
    let (p, t, _, r) = PREFILL_TILE_WIDE;
    let wide_tiles = rows.div_ceil(16 * (p * r) as usize) * m.div_ceil(8 * t as usize);
    match sms {
        Some(sms) if wide_tiles >= 2 * 2 * sms => PREFILL_TILE_WIDE,
        _ => PREFILL_TILE,
    }
}

/// How many slices to split the reduction of `tiles` output tiles into (at most `most`) for
/// `slots` cubes running at once: the fewest that minimise the time in whole waves,
/// `⌈tiles · s / slots⌉ · (1 / s + c)` of an unsplit cube's, where `c` = 0.05 is a cube's
/// fixed cost (its first loads, the sum of the slices) so that many thin slices do not win by
/// a rounding. 128 tiles on 132 slots run unsplit in one wave; 192 (the 8B's q/k/v at 512
/// tokens) split in 2, three waves of half-length cubes where unsplit they took two full ones.
fn prefill_splits(tiles: usize, slots: usize, most: usize) -> usize {
    let cost = |s: usize| (tiles * s).div_ceil(slots.max(1)) as f64 * (1.0 / s as f64 + 0.05);
    (1..=most.max(1)).fold(1, |best, s| if cost(s) < cost(best) - 1e-9 { s } else { best })
}

/// [`prefill_mma::prefill_mma`]'s `(kind, group, bytes per load unit)` for a part of type
/// `kind`, or `None` for a type it does not read.
fn fused_prefill_kind(kind: crate::GgmlType) -> Option<(u32, u32, usize)> {
    use crate::GgmlType::*;
    match kind {
        Q4_K => Some((prefill_mma::KIND_Q4K, 0, 8)),
        Q6_Kx4 => Some((prefill_mma::KIND_Q6KX4, 0, 8)),
        I4_64 => Some((prefill_mma::KIND_I4, 64, 4)),
        I4_128 => Some((prefill_mma::KIND_I4, 128, 4)),
        _ => None,
    }
}

/// A run of rows [`prefill_mma`] reads in one type: a merged part ([`QuantLayout::merged_parts`])
/// with its `(kind, group, bytes per load unit)` and first output column.
#[derive(Clone, Copy, Debug)]
struct PrefillSeg {
    part: QuantPart,
    kind: u32,
    group: u32,
    unit: usize,
    col0: usize,
}

/// The segments of [`prefill_fused_f16`] where every part of `layout` is of a type
/// [`prefill_mma`] reads (Q4_K, Q6_Kx4, int4 groups of 64 or 128) and starts on a boundary of
/// its load unit, and `k` is a multiple of 256; adjacent parts of one type are one segment.
fn fused_prefill_segments(layout: &QuantLayout) -> Option<Vec<PrefillSeg>> {
    if !layout.in_features.is_multiple_of(256) {
        return None;
    }
    let mut col0 = 0;
    let mut segs = Vec::new();
    for part in layout.merged_parts() {
        let (kind, group, unit) = fused_prefill_kind(part.kind).filter(|&(_, _, unit)| part.byte_offset.is_multiple_of(unit))?;
        segs.push(PrefillSeg { part, kind, group, unit, col0 });
        col0 += part.rows;
    }
    Some(segs)
}

/// The tensor-core prefill with the weight decoded in registers ([`prefill_mma`]), from the
/// input already rounded to f16 (`x16 [m, k]`, [`input_f16`]), plus `r` where given: segments
/// two at a time (of one load unit) per launch, split along the reduction until about the
/// knob's number of cubes run, each tile's slices summed by its last cube; `like` is any f32
/// tensor on the device (the output's allocation follows it).
fn prefill_fused_f16(like: &CubeTensor, x16: CubeTensor, w: &CubeTensor, layout: &QuantLayout, segs: &[PrefillSeg], m: usize, r: Option<CubeTensor>) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let client = like.client.clone();
    let sms = client.properties().hardware.num_streaming_multiprocessors.map(|s| s as usize);
    let (planes, ntiles, target, mtiles) = prefill_tile(segs.iter().map(|s| s.part.rows).sum(), m, sms);
    let (bm, bn) = (8 * ntiles as usize, 16 * (planes * mtiles) as usize);
    let ytiles = m.div_ceil(bm);
    let tiles = segs.iter().map(|s| s.part.rows.div_ceil(bn)).sum::<usize>() * ytiles;
    let blocks = k / 256;
    let most = (blocks / 4).max(1);
    let splits = match (target, sms) {
        (0, Some(sms)) => prefill_splits(tiles, sms * (8 / planes as usize).max(1), most),
        (0, None) => 264usize.div_ceil(tiles).clamp(1, most),
        (target, _) => target.div_ceil(tiles).clamp(1, most),
    };
    let kslice = blocks.div_ceil(splits) * 256;
    let splits = k.div_ceil(kslice);
    let out = empty_f32(like, vec![m, n]);
    let split = splits > 1;
    // Without a split the kernel touches neither the slices nor the counters.
    let (y, cnt) = if split {
        (empty_f32(like, vec![splits, m, n]), CubeBackend::int_zeros(Shape::new([tiles]), &like.device, IntDType::U32))
    } else {
        (out.clone(), out.clone())
    };
    let residual = r.is_some();
    let r = r.unwrap_or_else(|| out.clone());
    let mut launches: Vec<(PrefillSeg, Option<PrefillSeg>)> = Vec::new();
    for &s in segs {
        match launches.last_mut() {
            Some((a, b @ None)) if a.unit == s.unit => *b = Some(s),
            _ => launches.push((s, None)),
        }
    }
    let tokens_first = !knobs().prefill_rows_first;
    let mut cnt0 = 0;
    for (a, b) in launches {
        let xa = a.part.rows.div_ceil(bn);
        let xs = xa + b.map_or(0, |b| b.part.rows.div_ceil(bn));
        // A launch of one segment passes it twice, its `xb` (= `xa`) past the grid.
        let b = b.unwrap_or(a);
        let count = if tokens_first { CubeCount::Static(ytiles as u32, xs as u32, splits as u32) } else { CubeCount::Static(xs as u32, ytiles as u32, splits as u32) };
        // SAFETY: each segment starts on a boundary of its load unit (`fused_prefill_segments`)
        // and its rows are whole 144-byte Q4_K blocks, 840-byte Q6_Kx4 groups or `G/2 + 4`-byte
        // int4 groups, `k` a multiple of 256; rows past a segment's and tokens past `m` are
        // clamped for reads and never written; `x16` holds `m · k` halves (16-byte vectors);
        // `out` and `r` are `[m, n]` f32, `y` `[splits, m, n]` and `cnt` one zeroed counter per
        // tile of every launch where split (this launch's from `cnt0`); the buffers a mode does
        // not use are not touched. The segments write columns `col0 .. col0 + rows`.
        unsafe {
            prefill_mma::prefill_mma::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(32, planes),
                a.unit / 4,
                4,
                buffer(w, layout.total_words() * 4 / a.unit),
                buffer(&x16, m * k / 8),
                buffer(&y, if split { splits * m * n } else { m * n }),
                buffer(&r, m * n),
                buffer(&out, m * n),
                buffer(&cnt, if split { tiles } else { 1 }),
                cnt0 as u32,
                (a.part.byte_offset / a.unit) as u32,
                a.part.rows as u32,
                a.col0 as u32,
                xa as u32,
                (b.part.byte_offset / b.unit) as u32,
                b.part.rows as u32,
                b.col0 as u32,
                m as u32,
                k as u32,
                n as u32,
                kslice as u32,
                prefill_mma::ONE_BITS,
                a.kind,
                a.group,
                b.kind,
                b.group,
                planes,
                ntiles,
                mtiles,
                split,
                residual,
                tokens_first,
            )
        };
        cnt0 += xs * ytiles;
    }
    out
}

/// The prefill path on matrix units: f16 tiles decoded into shared memory, f32 accumulation
/// ([`tiled_mma`]; any type).
fn matmul_prefill_mma(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    let tile = (tiled_mma::BM as usize, tiled_mma::BN as usize, tiled_mma::BK as usize);
    split_k_prefill!(tiled_mma::matmul_mma::launch_unchecked, x, w, layout, m, tile, CubeDim::new_2d(tiled_mma::LANES, tiled_mma::PLANES))
}

/// The prefill path as dequantize-then-matmul: the weight decoded into a transient f16 `[n, k]`
/// buffer (dropped after the call), the input cast to f16, and Burn's own matmul (autotuned
/// where the `autotune` feature is on) with f32 output.
fn matmul_prefill_dequant(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let client = x.client.clone();
    let handle = client.empty(n * k * 2);
    let w16 = CubeTensor::new_contiguous(client.clone(), x.device.clone(), Shape::new([n, k]), handle, DType::F16);
    let dim = CubeDim::new_1d(256);
    let mut row0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let (words, out16) = (layout.total_words(), n * k);
        let units = |per_unit: usize| calculate_cube_count_elemwise(&client, part.rows * k / per_unit, dim);
        // SAFETY (the specialised launches): one thread per unit of `per_unit` weights, threads
        // past the part's units return; reads stay inside the part (Q4_K: 16-byte aligned,
        // whole 144-byte blocks; Q6_Kx4: 8-byte aligned, whole 840-byte groups; int4: word
        // aligned, whole groups); `w16` is `[n, k]`,
        // written in 4-wide vectors at rows `row0..row0 + rows`.
        if part.kind == crate::GgmlType::Q4_K && part.byte_offset % 16 == 0 {
            unsafe {
                dequant::dequant_q4k_f16::launch_unchecked(
                    &client, units(32), dim, 4,
                    buffer(w, words / 4), buffer(&w16, out16 / 4),
                    (part.byte_offset / 16) as u32, row0 as u32, part.rows as u32, k as u32,
                )
            };
            row0 += part.rows;
            continue;
        }
        if part.kind == crate::GgmlType::Q6_Kx4 && part.byte_offset % 8 == 0 {
            unsafe {
                dequant::dequant_q6kx4_f16::launch_unchecked(
                    &client, units(32), dim, 4, 2,
                    buffer(w, words / 2), buffer(&w16, out16 / 4),
                    (part.byte_offset / 8) as u32, row0 as u32, part.rows as u32, k as u32,
                )
            };
            row0 += part.rows;
            continue;
        }
        if part.kind == crate::GgmlType::Q6_K {
            unsafe {
                dequant::dequant_q6k_f16::launch_unchecked(
                    &client, units(16), dim, 4,
                    buffer(w, words), buffer(&w16, out16 / 4),
                    part.byte_offset as u32, row0 as u32, part.rows as u32, k as u32, layout.row_bytes(part) as u32,
                )
            };
            row0 += part.rows;
            continue;
        }
        if part.kind.int4_group().is_some() && part.byte_offset % 4 == 0 {
            unsafe {
                dequant::dequant_i4_f16::launch_unchecked(
                    &client, units(32), dim, 4,
                    buffer(w, words), buffer(&w16, out16 / 4),
                    (part.byte_offset / 4) as u32, row0 as u32, part.rows as u32, k as u32,
                    part.kind.block_elems() as u32,
                )
            };
            row0 += part.rows;
            continue;
        }
        let count = calculate_cube_count_elemwise(&client, part.rows * k, dim);
        // SAFETY: threads past `rows · k` return; reads stay inside the part; `w16` is `[n, k]`
        // and this part writes rows `row0..row0 + rows`.
        unsafe {
            dequant::dequant_f16::launch_unchecked(
                &client,
                count,
                dim,
                buffer(w, layout.total_words()),
                buffer(&w16, n * k),
                part.byte_offset as u32,
                row0 as u32,
                part.rows as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                code,
                block_elems(code),
                block_bytes(code),
            )
        };
        row0 += part.rows;
    }
    let x16 = CubeBackend::float_cast(x, FloatDType::F16);
    let wt = CubeBackend::float_transpose(w16);
    match burn_cubecl::kernel::matmul::matmul(x16.clone(), wt.clone(), None, Default::default(), DType::F32) {
        Ok(y) => y,
        // A runtime whose matmul declines f16 inputs with an f32 output: f16 out, then widen.
        Err(_) => CubeBackend::float_cast(CubeBackend::float_matmul(x16, wt), FloatDType::F32),
    }
}

/// Which prefill route the cube backends take (see [`matmul_prefill`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PrefillRoute {
    /// [`tiled_mma`]: weight tiles decoded into shared memory, f16 matrix units.
    Mma,
    /// [`matmul_prefill_dequant`]: transient f16 weight + Burn's matmul.
    Dequant,
    /// The default on f16 matrix units: [`prefill_fused_f16`] where every part is Q4_K,
    /// Q6_Kx4 or int4 groups of 64 or 128 and the runtime has manual mma, else
    /// [`matmul_prefill_dequant`].
    Auto,
    /// [`tiled`]: f32 multiply-adds (exact to f32 rounding).
    F32,
}

/// The prefill route: `BURN_QUANT_PREFILL=mma|dequant|f32` picks one (for benchmarks and for
/// f32-exact prefill on GPUs); by default the fastest measured where the device has f16 matrix
/// units, the f32 tiled kernel elsewhere.
fn prefill_route(x: &CubeTensor) -> PrefillRoute {
    // The variable is read once per process, not on every matmul.
    static CHOICE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let mma = has_f16_mma(x) && planes_are_32(x);
    match CHOICE.get_or_init(|| std::env::var("BURN_QUANT_PREFILL").ok()).as_deref() {
        Some("f32") => PrefillRoute::F32,
        Some("dequant") => PrefillRoute::Dequant,
        Some("mma") if mma => PrefillRoute::Mma,
        _ if mma => PrefillRoute::Auto,
        _ => PrefillRoute::F32,
    }
}

/// `pre(x) · Wᵀ (+ r)` for many token rows (`x` contiguous f32 `[m, k]`, `[m, 2k]` for SwiGLU).
/// The tensor-core route takes `pre(x)` as f16 from one launch ([`input_f16`]) and adds `r` in
/// the launch that sums its split slices; the others do `pre` first and add `r` after.
fn matmul_prefill(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize, r: Option<CubeTensor>, pre: Pre) -> CubeTensor {
    let k = layout.in_features;
    let route = prefill_route(&x);
    if route == PrefillRoute::Auto
        && has_manual_mma(&x)
        && let Some(segs) = fused_prefill_segments(layout)
    {
        let like = x.clone();
        return prefill_fused_f16(&like, input_f16(x, pre, m, k), w, layout, &segs, m, r);
    }
    let x = apply_pre(x, pre, m, k);
    let y = match route {
        PrefillRoute::Mma => matmul_prefill_mma(x, w, layout, m),
        PrefillRoute::Dequant | PrefillRoute::Auto => matmul_prefill_dequant(x, w, layout),
        PrefillRoute::F32 => {
            let tile = (tiled::B as usize, tiled::B as usize, tiled::BK as usize);
            split_k_prefill!(tiled::matmul_tiled::launch_unchecked, x, w, layout, m, tile, CubeDim::new_2d(tiled::T, tiled::T))
        }
    };
    match r {
        Some(r) => CubeBackend::float_add(y, r),
        None => y,
    }
}

fn matmul_transposed_tiled(g: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let dx = CubeBackend::float_zeros(Shape::new([m, k]), &g.device, FloatDType::F32);
    let client = g.client.clone();
    let b = tiled::B as usize;
    let mut row0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let count = CubeCount::Static(k.div_ceil(b) as u32, m.div_ceil(b) as u32, 1);
        // SAFETY: as in `matmul_prefill`; each launch adds one part's contribution to `dx`.
        unsafe {
            tiled::matmul_tiled_transposed::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(tiled::T, tiled::T),
                buffer(w, layout.total_words()),
                buffer(&g, m * n),
                buffer(&dx, m * k),
                part.byte_offset as u32,
                part.rows as u32,
                m as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                n as u32,
                row0 as u32,
                code,
                block_elems(code),
                block_bytes(code),
            )
        };
        row0 += part.rows;
    }
    dx
}

/// `silu(gate) ⊙ up` of `gu [m, 2k]` (contiguous f32) in one launch ([`input::swiglu`]).
fn swiglu(gu: &CubeTensor, m: usize, k: usize) -> CubeTensor {
    let out = empty_f32(gu, vec![m, k]);
    launch_swiglu(gu, &out, m, k, false);
    out
}

/// [`input::swiglu`] of `gu [m, 2k]` into `out [m, k]` (f32, or with `half` f16 for a
/// tensor-core prefill); `k` a multiple of 4.
fn launch_swiglu(gu: &CubeTensor, out: &CubeTensor, m: usize, k: usize, half: bool) {
    let n4 = m * k / 4;
    let dim = CubeDim::new_1d(256);
    // SAFETY: `gu` holds `m · 2k` values and `out` `m · k` (f32, or f16 two to a word with
    // `half`; `k` a multiple of 4, checked by the caller); threads past `n4` do nothing. The
    // output not written (`out16` without `half`, `out` with it) is bound to `gu`.
    unsafe {
        input::swiglu::launch_unchecked(
            &gu.client,
            calculate_cube_count_elemwise(&gu.client, n4, dim),
            dim,
            4,
            2,
            buffer(gu, 2 * n4),
            buffer(if half { gu } else { out }, n4),
            buffer(if half { out } else { gu }, n4),
            (k / 4) as u32,
            n4 as u32,
            half,
        )
    };
}

/// The input of a tensor-core prefill ([`prefill_fused_f16`]), `pre(x)` rounded to f16 `[m, k]`
/// (`x` contiguous f32, `k` a multiple of 4), in one launch: [`prefill_mma::prefill_input_f16`]
/// for the input as it is, and for RMSNorm and SwiGLU their own kernels writing f16 (where `pre`
/// and then the rounding were two launches). An RMSNorm whose rows [`norm::rms_norm_held`] does
/// not take runs first on its own ([`apply_pre`]).
fn input_f16(x: CubeTensor, pre: Pre, m: usize, k: usize) -> CubeTensor {
    let out = empty_f16(&x, m, k);
    match pre {
        Pre::SwiGlu => launch_swiglu(&x, &out, m, k, true),
        // The held norm launches where it takes the rows (else nothing is launched, and the
        // last arm norms and rounds in two launches).
        Pre::Norm(ref gamma, eps) if super::cube_decode::launch_norm_held(&x, gamma, &out, eps, true) => {}
        pre => {
            let x = apply_pre(x, pre, m, k);
            let (client, units, dim) = (x.client.clone(), m * k / 4, CubeDim::new_1d(256));
            // SAFETY: one thread per 4 values, threads past `units` return; `x` is `[m, k]` f32
            // with `k` a multiple of 4, read in 16-byte vectors; `out` has `m · k` halves,
            // written 8 bytes per thread.
            unsafe {
                prefill_mma::prefill_input_f16::launch_unchecked(
                    &client, calculate_cube_count_elemwise(&client, units, dim), dim, 4, 2,
                    buffer(&x, units), buffer(&out, units), units as u32,
                )
            };
        }
    }
    out
}

/// `pre(x)` as a launch of its own (`x` contiguous f32 `[m, k]`, or `[m, 2k]` for SwiGLU).
fn apply_pre(x: CubeTensor, pre: Pre, m: usize, k: usize) -> CubeTensor {
    match pre {
        Pre::SwiGlu if k.is_multiple_of(4) => swiglu(&x, m, k),
        Pre::SwiGlu => super::decode::swiglu_composed::<CubeBackend>(x),
        Pre::Norm(gamma, eps) => <CubeBackend as super::DecodeOpsBackend>::rms_norm(x, gamma, eps),
        Pre::Plain => x,
    }
}

/// `pre(x) · Wᵀ (+ r)`: decode launches add `r` in their epilogue and, where every part's kernel
/// [takes it](DecodeKernel::takes_pre), do `pre` as they read `x`, otherwise `pre` is a launch of
/// its own first; the prefill path decides per route ([`matmul_prefill`]).
fn quant_matmul_res(x: CubeTensor, weight: CubeTensor, layout: QuantLayout, r: Option<CubeTensor>, pre: Pre) -> CubeTensor {
    let dtype = x.dtype;
    let shape = x.meta.shape().clone();
    let k = layout.in_features;
    let n = layout.out_features();
    let width = if matches!(pre, Pre::SwiGlu) { 2 * k } else { k };
    let m = shape.num_elements() / width.max(1);
    let x = CubeBackend::float_reshape(f32_contiguous(x), Shape::new([m, width]));
    let weight = into_contiguous(weight);
    let r = r.map(|r| CubeBackend::float_reshape(f32_contiguous(r), Shape::new([m, n])));
    // A fold asked for by `BURN_QUANT_FOLD` applies at every size (for comparisons).
    let folds = (n * k <= FOLD_MAX_WEIGHTS || knobs().fold.is_some())
        && match pre {
            Pre::Plain => true,
            Pre::SwiGlu => folds(&x).1,
            Pre::Norm(..) => folds(&x).0,
        };
    let on = mma_on(&x, m, k);
    let fused = matches!(pre, Pre::Plain)
        || (folds && m <= matvec::MAX_M as usize && layout.merged_parts().iter().all(|p| DecodeKernel::of(p, on).takes_pre()));
    let y = if decode_takes(&x, &layout, m) {
        let (x, pre) = if fused { (x, pre) } else { (apply_pre(x, pre, m, k), Pre::Plain) };
        matmul_decode(x, &weight, &layout, m, r, pre, on)
    } else {
        matmul_prefill(x, &weight, &layout, m, r, pre)
    };
    let mut out = shape.iter().copied().collect::<Vec<usize>>();
    if let Some(l) = out.last_mut() {
        *l = n;
    }
    let out = Shape::from(out);
    restore_dtype(CubeBackend::float_reshape(y, out), dtype)
}

impl QuantMatmulBackend for CubeBackend {
    fn quant_matmul(x: CubeTensor, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        quant_matmul_res(x, weight, layout, None, Pre::Plain)
    }

    fn quant_matmul_add(x: CubeTensor, weight: CubeTensor, layout: QuantLayout, r: CubeTensor) -> CubeTensor {
        quant_matmul_res(x, weight, layout, Some(r), Pre::Plain)
    }

    fn quant_matmul_norm(x: CubeTensor, gamma: CubeTensor, eps: f32, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        quant_matmul_res(x, weight, layout, None, Pre::Norm(f32_contiguous(gamma), eps))
    }

    fn quant_matmul_swiglu_add(gu: CubeTensor, weight: CubeTensor, layout: QuantLayout, r: CubeTensor) -> CubeTensor {
        quant_matmul_res(gu, weight, layout, Some(r), Pre::SwiGlu)
    }

    fn quant_matmul_transposed(g: CubeTensor, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        let dtype = g.dtype;
        let shape = g.meta.shape().clone();
        let (k, n) = (layout.in_features, layout.out_features());
        let m = shape.num_elements() / n.max(1);
        let g = CubeBackend::float_reshape(f32_contiguous(g), Shape::new([m, n]));
        let weight = into_contiguous(weight);
        let y = matmul_transposed_tiled(g, &weight, &layout, m);
        let mut out = shape.iter().copied().collect::<Vec<usize>>();
        if let Some(l) = out.last_mut() {
            *l = k;
        }
        restore_dtype(CubeBackend::float_reshape(y, Shape::from(out)), dtype)
    }

    fn quant_rows(ids: CubeTensor, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        let ids = into_contiguous(CubeBackend::int_cast(ids, IntDType::U32));
        let n = ids.meta.shape().num_elements();
        let k = layout.in_features;
        let weight = into_contiguous(weight);
        let out = empty_f32(&weight, vec![n, k]);
        let client = weight.client.clone();
        let dim = CubeDim::new_1d(256);
        let count = calculate_cube_count_elemwise(&client, n * k, dim);
        let mut first = 0;
        for part in &layout.parts {
            let code = kind_code(part);
            // SAFETY: ids outside this part are skipped; reads stay inside the part; `out` has
            // `n · k` elements.
            unsafe {
                dequant::dequant_ids::launch_unchecked(
                    &client,
                    count.clone(),
                    dim,
                    buffer(&weight, layout.total_words()),
                    buffer(&ids, n),
                    buffer(&out, n * k),
                    part.byte_offset as u32,
                    first as u32,
                    part.rows as u32,
                    n as u32,
                    k as u32,
                    layout.row_bytes(part) as u32,
                    code,
                    block_elems(code),
                    block_bytes(code),
                )
            };
            first += part.rows;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{i4_cols_pick, i4_cols_rows, knobs, prefill_splits, prefill_tile, CubeLimits, I4_COLS_DEPTH, PREFILL_TILE, PREFILL_TILE_WIDE};

    /// The one-row int4 kernel within a device's limits: the H100's take every 8B product with
    /// the rows [`i4_cols_rows`] asks for; WebGPU's defaults (256 units, 16 KiB) take k = 4,096
    /// with at most 16 rows a cube (32 would need 17.4 KB) and refuse k = 14,336 (448 units).
    #[test]
    fn i4_cols_pick_keeps_within_the_device() {
        let h100 = CubeLimits { units: 1024, planes: 1024, shared: 227 << 10 };
        let webgpu = CubeLimits { units: 256, planes: 256, shared: 16 << 10 };
        let d = I4_COLS_DEPTH;
        assert_eq!(i4_cols_pick(24_576, 4_096, h100, Some(132), None), Some((32, d, 4)));
        assert_eq!(i4_cols_pick(4_096, 14_336, h100, Some(132), None), Some((16, d, 14)));
        assert_eq!(i4_cols_pick(24_576, 4_096, webgpu, Some(132), None), Some((16, d, 4)));
        assert_eq!(i4_cols_pick(4_096, 4_096, webgpu, Some(132), None), Some((8, d, 4)));
        assert_eq!(i4_cols_pick(4_096, 14_336, webgpu, Some(132), None), None);
        // Past 16 warps (k > 16,384), and a setting whose rows do not fit.
        assert_eq!(i4_cols_pick(4_096, 17_408, h100, Some(132), None), None);
        assert_eq!(i4_cols_pick(4_096, 4_096, webgpu, Some(132), Some((32, 2))), None);
    }

    /// The rows a cube of the one-row int4 kernel that were fastest for the 8B's products on the
    /// H100 (132 SMs).
    #[test]
    fn i4_cols_rows_fill_the_device() {
        let h100 = Some(132);
        // k = 4,096: cubes of 4 warps, 7 an SM. q/k/v and o take 8 rows, gate/up 32.
        assert_eq!(i4_cols_rows(6_144, 4_096, h100), 8);
        assert_eq!(i4_cols_rows(4_096, 4_096, h100), 8);
        assert_eq!(i4_cols_rows(24_576, 4_096, h100), 32);
        // k = 12,288 and 14,336: 12 and 14 warps, 2 an SM; 16 rows make 256 cubes.
        assert_eq!(i4_cols_rows(4_096, 12_288, h100), 16);
        assert_eq!(i4_cols_rows(4_096, 14_336, h100), 16);
    }

    /// The split that minimises whole waves, the fewest slices on a tie.
    #[test]
    fn prefill_splits_fill_whole_waves() {
        // 128 tiles fit one wave of 132: no split.
        assert_eq!(prefill_splits(128, 132, 14), 1);
        // 192 tiles: two full waves unsplit, three half ones split in 2.
        assert_eq!(prefill_splits(192, 132, 14), 2);
        // 768 tiles: 5.8 waves either way; no split.
        assert_eq!(prefill_splits(768, 132, 14), 1);
        // 32 tiles: 4 slices fill 128 slots; more would not fit in one wave.
        assert_eq!(prefill_splits(32, 132, 14), 4);
        // The cap on slices holds.
        assert_eq!(prefill_splits(32, 132, 2), 2);
        assert_eq!(prefill_splits(5, 132, 1), 1);
    }

    /// 128-token tiles only where they fill two waves of two cubes an SM unsplit.
    #[test]
    fn prefill_tile_widens_only_products_that_fill_the_device() {
        if knobs().prefill_tile.is_some() {
            return;
        }
        // The 8B's gate/up at 512 tokens: 192 × 4 wide tiles, over two waves of 264 cubes.
        assert_eq!(prefill_tile(24_576, 512, Some(132)), PREFILL_TILE_WIDE);
        // Its q/k/v (6,144 rows) and down (4,096): 192 and 128 wide tiles, too few.
        assert_eq!(prefill_tile(6_144, 512, Some(132)), PREFILL_TILE);
        assert_eq!(prefill_tile(4_096, 512, Some(132)), PREFILL_TILE);
        // The same gate/up at 128 tokens, or on a device whose SMs are unknown.
        assert_eq!(prefill_tile(24_576, 128, Some(132)), PREFILL_TILE);
        assert_eq!(prefill_tile(24_576, 512, None), PREFILL_TILE);
    }
}
