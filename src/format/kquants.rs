//! ggml's k-quant super-block formats: 256 weights per block, split into 16 or 8 sub-blocks with
//! their own 4/6/8-bit scales under one or two f16 super-scales. Layout and formulas follow
//! ggml's `ggml-common.h` and `dequantize_row_q*_K`.

use super::{BlockFormat, GgmlType, finite_f16, LANES, f16_le};

/// Weights per k-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K / Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// Q2_K: 16 sub-blocks of 16; `x = d * sc * q - dmin * m` with 4-bit `sc`/`m` packed in
/// `scales[i]` (low/high nibble) and 2-bit q; 2.625 bits per weight.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and mins (high nibble).
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-scale for the scales (f16).
    pub d: [u8; 2],
    /// Super-scale for the mins (f16).
    pub dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 2 * 2 + QK_K / 16 + QK_K / 4, "wrong q2_K block size/padding");

/// Q3_K: 16 sub-blocks of 16; `x = d * (sc - 32) * q` with 6-bit `sc` and q in -4..4 (2 low bits
/// in `qs`, the high bit in `hmask`, set meaning "no -4"); 3.4375 bits per weight.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits of the quants.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the quants.
    pub qs: [u8; QK_K / 4],
    /// 6-bit scales, packed.
    pub scales: [u8; 12],
    /// Super-scale (f16).
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 2 + QK_K / 4 + QK_K / 8 + 12, "wrong q3_K block size/padding");

/// Q4_K: 8 sub-blocks of 32; `x = d * sc * q - dmin * m` with 6-bit `sc`/`m` packed in `scales`
/// and 4-bit q; 4.5 bits per weight.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-scale for the scales (f16).
    pub d: [u8; 2],
    /// Super-scale for the mins (f16).
    pub dmin: [u8; 2],
    /// 6-bit scales and mins, packed (see [`scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
    /// 4-bit quants: byte `l` of each 32-byte group holds sub-block 2i (low) and 2i+1 (high).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2, "wrong q4_K block size/padding");

/// Q5_K: as Q4_K with a fifth bit per weight in `qh`; 5.5 bits per weight.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-scale for the scales (f16).
    pub d: [u8; 2],
    /// Super-scale for the mins (f16).
    pub dmin: [u8; 2],
    /// 6-bit scales and mins, packed as Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8, "wrong q5_K block size/padding");

/// Q6_K: 16 sub-blocks of 16; `x = d * sc * (q - 32)` with 8-bit signed `sc` and 6-bit q (4 low
/// bits in `ql`, 2 high in `qh`); 6.5625 bits per weight.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Signed 8-bit sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-scale (f16).
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 2 + QK_K / 16 + 3 * QK_K / 4, "wrong q6_K block size/padding");

/// Unpacks the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// All eight `(scale, min)` pairs of a Q4_K / Q5_K block at once, branch-free (vectorizable):
/// the same values as [`scale_min_k4`] for `j = 0..8`.
#[inline(always)]
pub fn scales_mins_k4(q: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Unpacks Q3_K's sixteen 6-bit scales (still offset by 32).
#[inline(always)]
pub fn q3k_scales(scales: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| u32::from_le_bytes([scales[4 * i], scales[4 * i + 1], scales[4 * i + 2], scales[4 * i + 3]]);
    let (a0, a1, tmp) = (w(0), w(1), w(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, b) in a.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = *b as i8;
        }
    }
    out
}

impl BlockFormat for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d) && finite_f16(self.dmin)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let (d, min) = (f16_le(self.d), f16_le(self.dmin));
        let mut y = 0;
        let mut is = 0;
        for half in 0..2 {
            let q = &self.qs[32 * half..32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let sc = self.scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0F) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        out[y] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                        y += 1;
                    }
                }
            }
        }
    }
}

impl BlockFormat for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let d_all = f16_le(self.d);
        let scales = q3k_scales(&self.scales);
        let mut y = 0;
        let mut is = 0;
        let mut m = 1u8;
        for half in 0..2 {
            let q = &self.qs[32 * half..32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let dl = d_all * (scales[is] as i32 - 32) as f32;
                    is += 1;
                    for l in 0..16 {
                        let i = l + 16 * part;
                        let hi = if self.hmask[i] & m != 0 { 0 } else { 4 };
                        out[y] = dl * (((q[i] >> shift) & 3) as i32 - hi) as f32;
                        y += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d) && finite_f16(self.dmin)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let (d, min) = (f16_le(self.d), f16_le(self.dmin));
        for j in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * j, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &self.qs[32 * j..32 * j + 32];
            let (lo, hi) = out[64 * j..64 * j + 64].split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                hi[l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }

    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        // Per sub-block s of 32: Σ (d·sc_s·q − dmin·m_s)·x = d·sc_s·Σ q·x − dmin·m_s·Σ x.
        // The four 64-weight groups are independent and summed as a tree, so the only
        // dependency on `acc` is one add per block (FMA latency, not throughput, was the limit).
        let (d, min) = (f16_le(self.d), f16_le(self.dmin));
        let (sc, m) = scales_mins_k4(&self.scales);
        let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
        for s in 0..8 {
            a[s] = d * sc[s] as f32;
            b[s] = -(min * m[s] as f32);
        }
        let mut r = [[0f32; LANES]; 4];
        for (j, r) in r.iter_mut().enumerate() {
            let (a1, b1, a2, b2) = (a[2 * j], b[2 * j], a[2 * j + 1], b[2 * j + 1]);
            let q = &self.qs[32 * j..32 * j + 32];
            let xs = &x[64 * j..64 * j + 64];
            let (x0, x1, x2, x3) = (&xs[..16], &xs[16..32], &xs[32..48], &xs[48..64]);
            for i in 0..LANES {
                let lo = ((q[i] & 0x0F) as f32).mul_add(x0[i], (q[16 + i] & 0x0F) as f32 * x1[i]);
                let hi = ((q[i] >> 4) as f32).mul_add(x2[i], (q[16 + i] >> 4) as f32 * x3[i]);
                let (s_lo, s_hi) = (x0[i] + x1[i], x2[i] + x3[i]);
                r[i] = lo.mul_add(a1, s_lo * b1) + hi.mul_add(a2, s_hi * b2);
            }
        }
        for i in 0..LANES {
            acc[i] += (r[0][i] + r[1][i]) + (r[2][i] + r[3][i]);
        }
    }
}

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d) && finite_f16(self.dmin)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let (d, min) = (f16_le(self.d), f16_le(self.dmin));
        for j in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * j, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let ql = &self.qs[32 * j..32 * j + 32];
            let (lo, hi) = out[64 * j..64 * j + 64].split_at_mut(32);
            for l in 0..32 {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                lo[l] = d1 * ((ql[l] & 0x0F) + h1) as f32 - m1;
                hi[l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

impl BlockQ6K {
    /// This block's fields.
    #[inline(always)]
    pub fn fields(&self) -> Q6KFields<'_> {
        Q6KFields { ql: &self.ql, qh: &self.qh, scales: &self.scales, d: self.d }
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        self.fields().decode(out);
    }
    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        self.fields().dot_acc(x, acc);
    }
}

/// The fields of one Q6_K block, wherever they are stored (a [`BlockQ6K`], or one of the four
/// blocks of a [`BlockQ6Kx4`]): the one place ggml's Q6_K formula is written.
#[derive(Clone, Copy, Debug)]
pub struct Q6KFields<'a> {
    /// Low 4 bits.
    pub ql: &'a [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: &'a [u8; QK_K / 4],
    /// Signed 8-bit sub-block scales.
    pub scales: &'a [i8; QK_K / 16],
    /// Super-scale (f16).
    pub d: [u8; 2],
}

impl Q6KFields<'_> {
    /// Decodes the block into `out[..256]` (ggml's `dequantize_row_q6_K`, bit-exact).
    #[inline(always)]
    pub fn decode(self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for n in 0..2 {
            let ql = &self.ql[64 * n..64 * n + 64];
            let qh = &self.qh[32 * n..32 * n + 32];
            let sc = &self.scales[8 * n..8 * n + 8];
            let y = &mut out[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }

    /// [`BlockFormat::dot_acc`] of the block against `x[..256]`.
    #[inline(always)]
    pub fn dot_acc(self, x: &[f32], acc: &mut [f32; LANES]) {
        // Sub-blocks are 16 wide, so each lane group has one scale: Σ_s d·sc_s · Σ (q−32)·x.
        // The four 32-weight quarters are summed as a tree before touching `acc`.
        let d = f16_le(self.d);
        let mut r = [[0f32; LANES]; 4];
        for n in 0..2 {
            let ql = &self.ql[64 * n..64 * n + 64];
            let qh = &self.qh[32 * n..32 * n + 32];
            let sc = &self.scales[8 * n..8 * n + 8];
            let xs = &x[128 * n..128 * n + 128];
            for c in 0..2 {
                let scale = |g: usize| d * sc[c + 2 * g] as f32;
                let (s0, s1, s2, s3) = (scale(0), scale(1), scale(2), scale(3));
                let r = &mut r[2 * n + c];
                for i in 0..LANES {
                    let l = 16 * c + i;
                    let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    let a = (q1 as f32 * xs[l]).mul_add(s0, q2 as f32 * xs[l + 32] * s1);
                    let b = (q3 as f32 * xs[l + 64]).mul_add(s2, q4 as f32 * xs[l + 96] * s3);
                    r[i] = a + b;
                }
            }
        }
        for i in 0..LANES {
            acc[i] += (r[0][i] + r[1][i]) + (r[2][i] + r[3][i]);
        }
    }
}

/// Four consecutive Q6_K blocks of a row (1024 weights, the same 840 bytes) with each field of
/// the four stored side by side: `ql` of blocks 0..4, then `qh`, `scales` and `d`. burn-quant's
/// own layout (never in a GGUF file), into which Q6_K rows of a multiple of 1024 weights are
/// regrouped at load ([`GgmlType::stored_form`]): every field then sits on an 8-byte boundary
/// (a 210-byte Q6_K block is only 2-byte aligned), so the GPU kernels read it in whole 8-byte
/// words. Decoding is ggml's Q6_K, bit for bit.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ6Kx4 {
    /// `ql` of each block.
    pub ql: [[u8; QK_K / 2]; 4],
    /// `qh` of each block.
    pub qh: [[u8; QK_K / 4]; 4],
    /// `scales` of each block.
    pub scales: [[i8; QK_K / 16]; 4],
    /// `d` of each block.
    pub d: [[u8; 2]; 4],
}
const _: () = assert!(std::mem::size_of::<BlockQ6Kx4>() == 4 * std::mem::size_of::<BlockQ6K>(), "wrong q6_Kx4 block size/padding");

impl BlockQ6Kx4 {
    /// The fields of block `i` (0..4).
    #[inline(always)]
    pub fn fields(&self, i: usize) -> Q6KFields<'_> {
        Q6KFields { ql: &self.ql[i], qh: &self.qh[i], scales: &self.scales[i], d: self.d[i] }
    }

    /// The four blocks `b`, regrouped.
    pub fn from_blocks(b: &[BlockQ6K; 4]) -> Self {
        Self {
            ql: std::array::from_fn(|i| b[i].ql),
            qh: std::array::from_fn(|i| b[i].qh),
            scales: std::array::from_fn(|i| b[i].scales),
            d: std::array::from_fn(|i| b[i].d),
        }
    }
}

impl BlockFormat for BlockQ6Kx4 {
    const TYPE: GgmlType = GgmlType::Q6_Kx4;
    const ELEMS: usize = 4 * QK_K;
    #[inline]
    fn is_finite(&self) -> bool {
        self.d.iter().all(|&d| finite_f16(d))
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        for i in 0..4 {
            self.fields(i).decode(&mut out[QK_K * i..QK_K * (i + 1)]);
        }
    }
    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        for i in 0..4 {
            self.fields(i).dot_acc(&x[QK_K * i..QK_K * (i + 1)], acc);
        }
    }
}

/// Regroups Q6_K `bytes` (whole runs of 4 blocks) in place into [`BlockQ6Kx4`]s.
pub fn regroup_q6k(bytes: &mut [u8]) -> crate::error::Result<()> {
    let n = std::mem::size_of::<BlockQ6Kx4>();
    if !bytes.len().is_multiple_of(n) {
        return Err(crate::error::Error::ByteLength { what: "Q6_K blocks in runs of 4".into(), expected: bytes.len() / n * n, got: bytes.len() });
    }
    for chunk in bytes.chunks_exact_mut(n) {
        let blocks: [BlockQ6K; 4] = bytemuck::pod_read_unaligned(chunk);
        chunk.copy_from_slice(bytemuck::bytes_of(&BlockQ6Kx4::from_blocks(&blocks)));
    }
    Ok(())
}
