//! Audio programs: PCM at 8 kHz, converted once to G.711 frames of 20 ms.
//!
//! A [`Program`] is what a zone plays: one cycle of frames, encoded at load in both laws so
//! a call answered with either payload type costs nothing at play time. Programs are built
//! from clips (WAV files read by [`crate::wav`]) and synthesised tones, and can be wrapped in
//! the GB 50116-2013 §4.8 cycle ([`alternating`]): an announcement of 10-30 s alternating
//! with the sounder for 8-20 s.

use std::f64::consts::TAU;
use std::sync::Arc;
use std::time::Duration;

use crate::g711::{linear_to_alaw, linear_to_ulaw};
use crate::rtp::{Codec, SAMPLES_PER_PACKET};
use crate::wav::RATE;

/// GB 50116-2013 §4.8.9: one announcement lasts 10-30 s.
pub const ANNOUNCEMENT_MIN: Duration = Duration::from_secs(10);
/// GB 50116-2013 §4.8.9: ... at most 30 s.
pub const ANNOUNCEMENT_MAX: Duration = Duration::from_secs(30);
/// GB 50116-2013 §4.8.6: the sounder sounds for 8-20 s between announcements.
pub const SOUNDER_MIN: Duration = Duration::from_secs(8);
/// GB 50116-2013 §4.8.6: ... at most 20 s.
pub const SOUNDER_MAX: Duration = Duration::from_secs(20);

/// One cycle of audio in G.711, ready to packetise.
#[derive(Debug, Clone)]
pub struct Program {
    pcma: Arc<[u8]>,
    pcmu: Arc<[u8]>,
}

impl Program {
    /// Encodes `pcm` (8 kHz mono), padding the last frame with silence.
    pub fn from_pcm(pcm: &[i16]) -> Program {
        let mut pcm = pcm.to_vec();
        let rem = pcm.len() % SAMPLES_PER_PACKET;
        if rem != 0 || pcm.is_empty() {
            pcm.resize(pcm.len() + SAMPLES_PER_PACKET - rem, 0);
        }
        Program {
            pcma: pcm.iter().map(|&s| linear_to_alaw(s)).collect(),
            pcmu: pcm.iter().map(|&s| linear_to_ulaw(s)).collect(),
        }
    }

    /// Frames (20 ms packets) in one cycle; at least 1.
    pub fn frames(&self) -> usize {
        self.pcma.len() / SAMPLES_PER_PACKET
    }

    /// One cycle's duration.
    pub fn duration(&self) -> Duration {
        crate::rtp::PACKET_INTERVAL * u32::try_from(self.frames()).unwrap_or(u32::MAX)
    }

    /// Frame `i` (modulo the cycle) in `codec`.
    pub fn frame(&self, codec: Codec, i: usize) -> &[u8] {
        let i = i % self.frames();
        let all = match codec {
            Codec::Pcma => &self.pcma,
            Codec::Pcmu => &self.pcmu,
        };
        &all[i * SAMPLES_PER_PACKET..(i + 1) * SAMPLES_PER_PACKET]
    }
}

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(RATE)) as usize
}

/// A steady sine tone.
pub fn tone(hz: f64, d: Duration, amplitude: f64) -> Vec<i16> {
    (0..samples(d))
        .map(|n| (amplitude * (TAU * hz * n as f64 / f64::from(RATE)).sin()) as i16)
        .collect()
}

/// Silence.
pub fn silence(d: Duration) -> Vec<i16> {
    vec![0; samples(d)]
}

/// The evacuation sounder: a rising sweep 500 → 1200 Hz once a second (a "whoop", distinct
/// from a school bell, which GB 50116-2013 §4.8.3 forbids as a fire sounder).
pub fn sounder(d: Duration) -> Vec<i16> {
    let mut phase = 0.0;
    (0..samples(d))
        .map(|n| {
            let t = (n % RATE as usize) as f64 / f64::from(RATE);
            phase += TAU * (500.0 + 700.0 * t) / f64::from(RATE);
            (12_000.0 * phase.sin()) as i16
        })
        .collect()
}

/// The school bell: two seconds of an 880 Hz ring with 1,320 Hz overtone, then a pause.
pub fn bell() -> Vec<i16> {
    let a = tone(880.0, Duration::from_secs(2), 7_000.0);
    let b = tone(1_320.0, Duration::from_secs(2), 3_000.0);
    let mut v: Vec<i16> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.saturating_add(*y))
        .collect();
    v.extend(silence(Duration::from_secs(1)));
    v
}

/// Stand-in speech for a message that has no recording: a recognisable tone pattern
/// (three short high-low pairs for evacuation, a pulsed low tone for lockdown), used when
/// espeak-ng is absent and no WAV is configured.
pub fn tone_message(name: &str) -> Vec<i16> {
    let mut v = Vec::new();
    let beep = Duration::from_millis(300);
    let gap = Duration::from_millis(150);
    if name.contains("lockdown") {
        for _ in 0..6 {
            v.extend(tone(400.0, beep, 9_000.0));
            v.extend(silence(gap));
        }
    } else {
        for _ in 0..3 {
            v.extend(tone(990.0, beep, 9_000.0));
            v.extend(tone(660.0, beep, 9_000.0));
            v.extend(silence(gap));
        }
    }
    v.extend(silence(Duration::from_millis(500)));
    v
}

/// GB 50116-2013 §4.8: `announcement` repeated (or cut) to fill 10-30 s, then the sounder
/// for `sounder_for` (clamped to 8-20 s). One cycle; the player repeats it.
pub fn alternating(announcement: &[i16], sounder_for: Duration) -> Vec<i16> {
    let min = samples(ANNOUNCEMENT_MIN);
    let max = samples(ANNOUNCEMENT_MAX);
    let mut v = Vec::with_capacity(max);
    if !announcement.is_empty() {
        while v.len() < min {
            v.extend_from_slice(announcement);
        }
    }
    v.truncate(max);
    v.extend(sounder(sounder_for.clamp(SOUNDER_MIN, SOUNDER_MAX)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_padded_to_whole_frames_in_both_laws() {
        let p = Program::from_pcm(&[0; 170]);
        assert_eq!(p.frames(), 2);
        assert_eq!(p.frame(Codec::Pcma, 1), &[0xD5; 160][..]);
        assert_eq!(p.frame(Codec::Pcmu, 3), &[0xFF; 160][..]);
        assert_eq!(Program::from_pcm(&[]).frames(), 1);
    }

    #[test]
    fn the_alternating_cycle_keeps_announcement_and_sounder_within_gb50116_limits() {
        let short = tone(440.0, Duration::from_secs(4), 1000.0);
        let cycle = alternating(&short, Duration::from_secs(2));
        // 4 s repeated to 12 s (>= 10 s), then the sounder clamped up to 8 s
        assert_eq!(cycle.len(), samples(Duration::from_secs(12 + 8)));
        let long = tone(440.0, Duration::from_secs(45), 1000.0);
        let cycle = alternating(&long, Duration::from_secs(60));
        assert_eq!(cycle.len(), samples(Duration::from_secs(30 + 20)));
    }
}
