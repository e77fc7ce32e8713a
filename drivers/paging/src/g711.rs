//! ITU-T G.711 companding: 16-bit linear PCM ↔ A-law (PCMA) and µ-law (PCMU).
//!
//! Written here because it is forty lines and the crates that offer it are either unmaintained
//! or pull in a codec framework. The segment tables and bias follow the Recommendation
//! (G.711 Tables 1a/1b and 2a/2b): A-law works on the 13 most significant bits and inverts the
//! even bits (XOR 0x55); µ-law works on 14 bits with a bias of 33 and inverts every bit. The
//! tests check the table values every implementation agrees on (the two zeros, the extremes,
//! segment edges) and that encode/decode round trips within one quantisation step.

/// G.711 Table 1a: upper end of each A-law segment, on the 13-bit magnitude.
const A_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
/// G.711 Table 2a: upper end of each µ-law segment, on the biased 14-bit magnitude.
const U_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// G.711 µ-law: magnitudes are clipped at 8159 before the bias of 33 is added.
const U_CLIP: i32 = 8159;
const U_BIAS: i32 = 0x21;

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&e| value <= e).unwrap_or(8)
}

/// Encodes one sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = segment(pcm, &A_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if seg < 2 { 1 } else { seg };
    // seg < 8 and the masked mantissa < 16: both fit a byte.
    let aval = ((seg as u8) << 4) | (((pcm >> shift) & 0x0F) as u8);
    aval ^ mask
}

/// Decodes one A-law byte.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    let v = if a & 0x80 != 0 { t } else { -t };
    // |t| <= 32256: fits i16.
    v as i16
}

/// Encodes one sample as µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 2;
    let mask: u8 = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    let pcm = pcm.min(U_CLIP) + U_BIAS;
    let seg = segment(pcm, &U_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let uval = ((seg as u8) << 4) | (((pcm >> (seg + 1)) & 0x0F) as u8);
    uval ^ mask
}

/// Decodes one µ-law byte.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let mut t = (i32::from(u & 0x0F) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    let v = if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 };
    // |v| <= 32124: fits i16.
    v as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alaw_matches_the_table_values_of_g711() {
        // zero, the two smallest magnitudes, the extremes and a segment edge
        let table: [(i16, u8); 7] = [
            (0, 0xD5),
            (-1, 0x55),
            (16, 0xD4),
            (-17, 0x54),
            (32767, 0xAA),
            (-32768, 0x2A),
            (256, 0xC5),
        ];
        for (pcm, code) in table {
            assert_eq!(linear_to_alaw(pcm), code, "pcm {pcm}");
        }
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn ulaw_matches_the_table_values_of_g711() {
        let table: [(i16, u8); 6] = [
            (0, 0xFF),
            (-4, 0x7E),
            (32767, 0x80),
            (-32768, 0x00),
            (4, 0xFE),
            (100, 0xF2),
        ];
        for (pcm, code) in table {
            assert_eq!(linear_to_ulaw(pcm), code, "pcm {pcm}");
        }
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
    }

    #[test]
    fn every_code_decodes_and_reencodes_to_itself() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "a-law {code:#x}"
            );
            // µ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes as 0xFF.
            if code != 0x7F {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "µ-law {code:#x}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips_stay_within_one_quantisation_step(x in proptest::num::i16::ANY) {
            let a = i32::from(alaw_to_linear(linear_to_alaw(x)));
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(x)));
            let x = i32::from(x);
            // the step of the top segment is 1024 (A-law) and 1024 (µ-law), plus clipping
            proptest::prop_assert!((a - x).abs() <= 1024, "a-law {x} -> {a}");
            proptest::prop_assert!((u - x).abs() <= 1024 + 700, "µ-law {x} -> {u}");
            proptest::prop_assert!(a * x >= 0 && u * x >= 0, "sign kept for {x}");
        }
    }
}
