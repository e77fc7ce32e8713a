//! WAV (RIFF, PCM 16-bit) reading, down to the 8 kHz mono the G.711 payload needs.
//!
//! Accepts format tag 1 (PCM), 16 bits per sample, one or two channels (two are averaged),
//! any sample rate from 8 kHz up (espeak-ng writes 22,050 Hz; recordings are often 16 or
//! 48 kHz). Rates above 8 kHz are box-filtered over each output period and decimated: a
//! crude low-pass, enough for speech on a ceiling speaker. Chunks other than `fmt ` and
//! `data` are skipped; a `data` length larger than the file (streams written to a pipe) is
//! clamped to what is there. Lengths are checked before anything is allocated.

/// The rate G.711 is sampled at (ITU-T G.711 §1).
pub const RATE: u32 = 8_000;

/// Why a WAV file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not RIFF/WAVE.
    #[error("not a RIFF/WAVE file")]
    NotWav,
    /// A chunk is cut short.
    #[error("truncated {0} chunk")]
    Truncated(&'static str),
    /// No `fmt ` chunk before `data`.
    #[error("no fmt chunk before the data chunk")]
    NoFormat,
    /// No `data` chunk.
    #[error("no data chunk")]
    NoData,
    /// A format this reader does not convert.
    #[error("unsupported format: {0} (want PCM 16-bit, mono or stereo, >= 8000 Hz)")]
    Unsupported(String),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

struct Format {
    channels: u16,
    rate: u32,
}

fn parse_fmt(body: &[u8]) -> Result<Format, WavError> {
    let tag = u16_at(body, 0).ok_or(WavError::Truncated("fmt"))?;
    let channels = u16_at(body, 2).ok_or(WavError::Truncated("fmt"))?;
    let rate = u32_at(body, 4).ok_or(WavError::Truncated("fmt"))?;
    let bits = u16_at(body, 14).ok_or(WavError::Truncated("fmt"))?;
    if tag != 1 || bits != 16 || !(1..=2).contains(&channels) || rate < RATE {
        return Err(WavError::Unsupported(format!(
            "tag {tag}, {bits} bits, {channels} channels, {rate} Hz"
        )));
    }
    Ok(Format { channels, rate })
}

/// Reads a WAV file's samples as 8 kHz mono.
///
/// # Errors
/// [`WavError`] for anything but PCM 16-bit mono/stereo at 8 kHz or more.
pub fn read_8k_mono(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWav);
    }
    let mut at = 12;
    let mut format = None;
    while let (Some(id), Some(len)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) {
        let start = at + 8;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let end = start.saturating_add(len).min(bytes.len());
        let body = bytes.get(start..end).ok_or(WavError::Truncated("chunk"))?;
        match id {
            b"fmt " => format = Some(parse_fmt(body)?),
            b"data" => {
                let f = format.ok_or(WavError::NoFormat)?;
                return Ok(to_8k_mono(body, &f));
            }
            _ => {}
        }
        // RIFF chunks are padded to an even length.
        at = end.saturating_add(len & 1);
    }
    Err(WavError::NoData)
}

fn to_8k_mono(data: &[u8], f: &Format) -> Vec<i16> {
    let frame = 2 * usize::from(f.channels);
    let mono: Vec<i32> = data
        .chunks_exact(frame)
        .map(|c| {
            let l = i32::from(i16::from_le_bytes([c[0], c[1]]));
            if f.channels == 2 {
                (l + i32::from(i16::from_le_bytes([c[2], c[3]]))) / 2
            } else {
                l
            }
        })
        .collect();
    resample(&mono, f.rate)
}

/// Box-filters and decimates `input` (at `rate`) to [`RATE`].
fn resample(input: &[i32], rate: u32) -> Vec<i16> {
    let n_out = (input.len() as u64 * u64::from(RATE) / u64::from(rate)) as usize;
    (0..n_out)
        .map(|i| {
            let lo = (i as u64 * u64::from(rate) / u64::from(RATE)) as usize;
            let hi = (((i as u64 + 1) * u64::from(rate) / u64::from(RATE)) as usize)
                .clamp(lo + 1, input.len());
            let window = input.get(lo..hi).unwrap_or(&[]);
            let sum: i64 = window.iter().map(|&s| i64::from(s)).sum();
            let n = i64::try_from(window.len().max(1)).unwrap_or(1);
            (sum / n).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
        })
        .collect()
}

/// Writes 8 kHz mono PCM16 as a WAV file (for the demo and tests).
pub fn write_8k_mono(samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let mut w = write_8k_mono(samples);
        w[22..24].copy_from_slice(&channels.to_le_bytes());
        w[24..28].copy_from_slice(&rate.to_le_bytes());
        w
    }

    #[test]
    fn an_8khz_file_reads_back_unchanged() {
        let s: Vec<i16> = (0..400).map(|i| (i * 37 % 2000) as i16).collect();
        assert_eq!(read_8k_mono(&write_8k_mono(&s)).unwrap(), s);
    }

    #[test]
    fn a_16khz_file_is_halved_by_averaging_pairs() {
        let s = [100, 300, -50, -150, 7, 9];
        assert_eq!(
            read_8k_mono(&wav(16_000, 1, &s)).unwrap(),
            vec![200, -100, 8]
        );
    }

    #[test]
    fn a_22050hz_file_keeps_its_duration() {
        let s = vec![1000i16; 22_050];
        let out = read_8k_mono(&wav(22_050, 1, &s)).unwrap();
        assert_eq!(out.len(), 8_000);
        assert!(out.iter().all(|&x| x == 1000));
    }

    #[test]
    fn stereo_is_mixed_down_and_other_formats_are_refused() {
        let out = read_8k_mono(&wav(8_000, 2, &[100, 300, -10, 10])).unwrap();
        assert_eq!(out, vec![200, 0]);
        let mut eight_bit = write_8k_mono(&[0, 0]);
        eight_bit[34] = 8;
        assert!(matches!(
            read_8k_mono(&eight_bit),
            Err(WavError::Unsupported(_))
        ));
        assert_eq!(read_8k_mono(b"RIFF\0\0\0\0WAVE"), Err(WavError::NoData));
        assert_eq!(read_8k_mono(b"garbage"), Err(WavError::NotWav));
    }
}
