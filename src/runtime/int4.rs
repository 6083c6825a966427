//! comfy-kitchen's ConvRot W4 storage (`TensorCoreConvRotW4A4Layout`'s quantize and
//! dequantize): rows rotated per group like the int8 ConvRot weights, then signed int4 per row
//! (`absmax / 7`, values in [-7, 7]) packed two to a byte, the even column in the low nibble.
//! Wan Animate 2's pose cache stores its block inputs this way at `dtype` int4.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::int8::{rotate, rotate_weight};

/// The largest int4 magnitude the quantizer emits.
const INT4_MAX: f64 = 7.0;
/// Columns per int4 scale group of the kernel's layout; the rows must be a multiple of it.
const QUANT_GROUP: i64 = 64;

/// `x` `[rows, k]` rotated and quantized: (packed int8 `[rows, k / 2]`, float32 `[rows]`
/// scales). `k` must be a multiple of `group` and of 64.
pub fn quantize_convrot(x: &Tensor, group: i64) -> Result<(Tensor, Tensor)> {
    let (_, k) = x.size2()?;
    if k % QUANT_GROUP != 0 {
        bail!("int4 storage needs a multiple of {QUANT_GROUP} features, not {k}");
    }
    let rotated = rotate(x, group)?;
    let scale = rotated
        .abs()
        .amax([-1i64].as_slice(), true)
        .clamp_min(1e-10)
        / INT4_MAX;
    let q = (&rotated / &scale)
        .round()
        .clamp(-INT4_MAX, INT4_MAX)
        .to_kind(Kind::Int8);
    Ok((pack(&q), scale.flatten(0, -1).to_kind(Kind::Float)))
}

/// The stored rows back in float32, rotated back.
pub fn dequantize(packed: &Tensor, scale: &Tensor, group: i64) -> Result<Tensor> {
    let rows = packed.size()[0];
    let w = unpack(packed).to_kind(Kind::Float) * scale.to_kind(Kind::Float).reshape([rows, 1]);
    rotate_weight(&w, group)
}

/// Pairs of signed nibbles in one byte: column `2j` low, `2j + 1` high.
fn pack(q: &Tensor) -> Tensor {
    let k = q.size()[1];
    let q = q.to_kind(Kind::Int);
    let lo = q.slice(1, 0, k, 2).bitwise_and(0x0F);
    let hi = q.slice(1, 1, k, 2).bitwise_and(0x0F);
    lo.bitwise_or_tensor(&hi.bitwise_left_shift_tensor_scalar(4))
        .to_kind(Kind::Int8)
}

fn unpack(packed: &Tensor) -> Tensor {
    let x = packed.to_kind(Kind::Int);
    let signed = |n: Tensor| {
        let wrapped = &n - 16;
        wrapped.where_self(&n.ge(8), &n)
    };
    let lo = signed(x.bitwise_and(0x0F));
    let hi = signed(x.bitwise_right_shift_tensor_scalar(4).bitwise_and(0x0F));
    let (rows, half) = (packed.size()[0], packed.size()[1]);
    Tensor::stack(&[lo, hi], -1)
        .reshape([rows, 2 * half])
        .to_kind(Kind::Int8)
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    #[test]
    fn nibbles_pack_and_unpack_the_signed_range() {
        let values: Vec<i8> = (-8..8).collect();
        let q = Tensor::from_slice(&values).view([2, 8]);
        let packed = pack(&q);
        assert_eq!(packed.size(), [2, 4]);
        // -8 (0x8) low, -7 (0x9) high: 0x98 as a signed byte.
        assert_eq!(packed.int64_value(&[0, 0]), 0x98 - 256);
        assert!(unpack(&packed).equal(&q));
    }

    #[test]
    fn int4_rows_come_back_within_a_quantization_step() {
        let x = Tensor::randn([6, 128], (Kind::Float, Device::Cpu));
        let (packed, scale) = quantize_convrot(&x, 64).unwrap();
        assert_eq!((packed.size(), scale.size()), (vec![6, 64], vec![6]));
        let back = dequantize(&packed, &scale, 64).unwrap();
        // Each rotated value is off by at most half a step; the rotation keeps the norm.
        let step = scale.reshape([6, 1]);
        let err = (&back - &x)
            .square()
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
            .sqrt();
        assert!(bool::try_from(err.le_tensor(&(step * 0.5 * 128f64.sqrt() + 1e-5)).all()).unwrap());
        assert!(quantize_convrot(&Tensor::zeros([2, 96], (Kind::Float, Device::Cpu)), 16).is_err());
    }
}
