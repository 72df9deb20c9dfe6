//! Full-size sparse GGUF files that real llama.cpp loads and runs: the header of the real file, a
//! data region that is a hole (`File::set_len`; it reads as zeros, which every ggml type decodes to
//! 0.0, and takes no disk), and real bytes only where zeros would stop the model from working:
//! small random token embeddings and MoE router rows (so tokens differ and experts get picked), and
//! F32 norm weights of 1.0 (so activations survive the zero weights). The same choices as
//! make_fixture.py's `write_fixture(--sparse)`; random values are written directly in each tensor's
//! ggml type with a small, finite f16 scale (no quantizer needed).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use optimizer_core::gguf::{GgmlType, GgufWriter, TensorInfo};
use optimizer_core::layout::Layout;

/// Writes one shard: header, hole, the few tensors with data.
pub(crate) fn write(path: &Path, layout: &Layout, writer: &GgufWriter, seed: u64) -> Result<()> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writer.write_header(&mut out)?;
    let data_offset = writer.data_offset();
    let end = data_offset.checked_add(writer.data_size()).context("file size overflows")?;
    out.flush()?;
    out.get_ref().set_len(end)?;
    let mut rng = Rng::new(seed);
    for t in writer.tensor_infos() {
        let Some(fill) = fill_of(&t) else { continue };
        out.seek(SeekFrom::Start(data_offset + t.offset))?;
        match fill {
            Fill::Ones => {
                for _ in 0..t.elements() {
                    out.write_all(&1.0f32.to_le_bytes())?;
                }
            }
            Fill::Random(scale) => write_random(&mut out, &t, &mut rng, scale)
                .with_context(|| format!("{} {}: tensor {}", layout.model, layout.quant, t.name))?,
        }
    }
    out.flush()?;
    Ok(())
}

enum Fill {
    Ones,
    Random(f32),
}

/// Which tensors get bytes, and their scale (make_fixture.py write_fixture).
fn fill_of(t: &TensorInfo) -> Option<Fill> {
    let n = t.name.as_str();
    if n == "token_embd.weight" {
        Some(Fill::Random(0.02))
    } else if n.contains("ffn_gate_inp.weight")
        || n.contains("ffn_gate_inp.bias")
        || n.contains("exp_probs_b")
    {
        Some(Fill::Random(if n.ends_with("weight") { 0.05 } else { 0.01 }))
    } else if n.ends_with("_norm.weight") && t.ggml_type == GgmlType::F32 {
        Some(Fill::Ones)
    } else {
        None
    }
}

/// Byte offsets of the f16 scale fields in one block (the `d`/`dmin` members of the block structs,
/// ggml-common.h), and the divisor that keeps |value| near `scale` (make_fixture.py `_SCALE_FIELDS`).
fn scale_fields(t: GgmlType) -> Option<(&'static [usize], f32)> {
    Some(match t {
        GgmlType::Q4_0 | GgmlType::Q5_0 => (&[0], 10.0),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (&[0, 2], 10.0),
        GgmlType::Q8_0 => (&[0], 50.0),
        GgmlType::Q2K => (&[80, 82], 100.0),
        GgmlType::Q3K => (&[108], 200.0),
        GgmlType::Q4K => (&[0, 2], 200.0),
        GgmlType::Q5K => (&[0, 2], 400.0),
        GgmlType::Q6K => (&[208], 1000.0),
        _ => return None,
    })
}

/// Small random values of tensor `t`, encoded in its type, streamed block by block.
fn write_random(out: &mut impl Write, t: &TensorInfo, rng: &mut Rng, scale: f32) -> Result<()> {
    let n = t.elements();
    match t.ggml_type {
        GgmlType::F32 => {
            for _ in 0..n {
                out.write_all(&(rng.normal() * scale).to_le_bytes())?;
            }
        }
        GgmlType::F16 => {
            for _ in 0..n {
                out.write_all(&f16_bits(rng.normal() * scale).to_le_bytes())?;
            }
        }
        GgmlType::Bf16 => {
            for _ in 0..n {
                // bf16 is the top half of an f32 (truncated, as make_fixture.py does)
                let bits = (rng.normal() * scale).to_bits() >> 16;
                out.write_all(&u16::try_from(bits).unwrap_or(0).to_le_bytes())?;
            }
        }
        ty => {
            let blocks = n / ty.block_size();
            let size = usize::try_from(ty.type_size())?;
            let mut block = vec![0u8; size];
            // block_mxfp4 { uint8_t e; uint8_t qs[16]; }: an E8M0 exponent of 2^-8 keeps |x| <= 6/256
            let (fields, d): (&[usize], [u8; 2]) = if ty == GgmlType::Mxfp4 {
                (&[], [0; 2])
            } else if let Some((fields, div)) = scale_fields(ty) {
                (fields, f16_bits(scale / div).to_le_bytes())
            } else {
                bail!("no random data for type {ty}");
            };
            for _ in 0..blocks {
                rng.fill(&mut block);
                if ty == GgmlType::Mxfp4 {
                    block[0] = 127 - 8;
                }
                for &off in fields {
                    block[off..off + 2].copy_from_slice(&d);
                }
                out.write_all(&block)?;
            }
        }
    }
    Ok(())
}

/// f32 → IEEE half bits, rounding to nearest even, with subnormals (what numpy's astype(float16) does).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = u16::try_from((b >> 16) & 0x8000).unwrap_or(0);
    let exp = i32::try_from((b >> 23) & 0xff).unwrap_or(0);
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man == 0 { 0 } else { 0x200 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round =
        |h: u32, rem: u32, half: u32| if rem > half || (rem == half && h & 1 == 1) { h + 1 } else { h };
    let h = if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = u32::try_from(14 - e).unwrap_or(24);
        round(m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1))
    } else {
        let e = u32::try_from(e).unwrap_or(0);
        round((e << 10) | (man >> 13), man & 0x1fff, 0x1000)
    };
    // a carry out of the mantissa moves to the next exponent (up to infinity), as IEEE rounding does
    sign | u16::try_from(h).unwrap_or(0x7c00)
}

/// splitmix64: deterministic, seedable, no dependency; quality is irrelevant for fixture noise.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// A standard normal sample (Box-Muller).
    #[allow(clippy::cast_possible_truncation)] // f32 noise
    fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use optimizer_core::units::Bytes;

    use super::*;

    #[test]
    fn f16_conversion_matches_numpy() {
        // np.array([v], dtype=np.float16).view(np.uint16)
        let cases: [(f32, u16); 13] = [
            (1.0, 0x3c00),
            (2e-5, 0x0150),
            (1e-4, 0x068e),
            (5e-5, 0x0347),
            (4e-4, 0x0e8e),
            (0.005, 0x1d1f),
            (6.1e-5, 0x03ff),
            (65504.0, 0x7bff),
            (70000.0, 0x7c00),
            (1e-8, 0x0000),
            (3e-8, 0x0001),
            (-0.5, 0xb800),
            (0.1, 0x2e66),
        ];
        for (v, bits) in cases {
            assert_eq!(f16_bits(v), bits, "{v}");
        }
    }

    fn tensor(name: &str, ggml_type: GgmlType, dims: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            offset: 0,
            size: Bytes::new(ggml_type.tensor_bytes(dims).unwrap()),
            shard: 0,
        }
    }

    #[test]
    fn random_data_has_the_tensor_size_and_small_scales() {
        let mut rng = Rng::new(1);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Bf16,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q8_0,
            GgmlType::Mxfp4,
        ] {
            let t = tensor("token_embd.weight", ty, &[256, 3]);
            let mut buf = Vec::new();
            write_random(&mut buf, &t, &mut rng, 0.02).unwrap();
            assert_eq!(buf.len() as u64, t.size.get(), "{ty}");
            if let Some((fields, div)) = scale_fields(ty) {
                let d = f16_bits(0.02 / div).to_le_bytes();
                let block = usize::try_from(ty.type_size()).unwrap();
                for b in buf.chunks(block) {
                    for &off in fields {
                        assert_eq!(&b[off..off + 2], &d, "{ty}");
                    }
                }
            }
        }
        // Q8_0: values are d * q with |q| <= 128; d must be a finite, small f16
        let d = f16_bits(0.02 / 50.0);
        assert!(d != 0 && d < 0x7c00);
        let t = tensor("x", GgmlType::Iq2Xxs, &[256]);
        assert!(write_random(&mut Vec::new(), &t, &mut rng, 0.02).is_err());
    }

    #[test]
    #[allow(clippy::float_cmp)] // the scales are make_fixture.py's constants, compared exactly
    fn only_embeddings_routers_and_norms_get_data() {
        let f = |name: &str, ty| fill_of(&tensor(name, ty, &[256]));
        assert!(matches!(f("token_embd.weight", GgmlType::Q6K), Some(Fill::Random(s)) if s == 0.02));
        assert!(matches!(f("blk.0.ffn_gate_inp.weight", GgmlType::F32), Some(Fill::Random(s)) if s == 0.05));
        assert!(matches!(f("blk.0.ffn_gate_inp.bias", GgmlType::F32), Some(Fill::Random(s)) if s == 0.01));
        assert!(matches!(f("blk.1.exp_probs_b.bias", GgmlType::F32), Some(Fill::Random(s)) if s == 0.01));
        assert!(matches!(f("blk.0.attn_norm.weight", GgmlType::F32), Some(Fill::Ones)));
        assert!(f("blk.0.ffn_gate_inp_shexp.weight", GgmlType::F32).is_none());
        assert!(f("blk.0.ffn_up_exps.weight", GgmlType::Q4K).is_none());
        assert!(f("output.weight", GgmlType::Q6K).is_none());
    }

    #[test]
    fn normal_samples_look_normal() {
        let mut rng = Rng::new(7);
        let xs: Vec<f32> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }
}
