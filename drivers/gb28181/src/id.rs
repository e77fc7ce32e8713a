//! GB/T 28181 ids: 20 decimal digits, centre code 8 + industry 2 + type 3 + network 1 +
//! serial 6 (GB/T 28181-2016 appendix D; PROTOCOLS §6). The type code says what the id
//! names: 111..=130 front-end devices (131 camera, 132 IP camera, 134 alarm input, 135
//! alarm output are the ones campusgw uses), 200 the SIP server of a platform, 118 an NVR.

use std::fmt;

/// Type code of an alarm input device (报警输入设备).
pub const TYPE_ALARM_INPUT: u16 = 134;
/// Type code of a camera (摄像机).
pub const TYPE_CAMERA: u16 = 131;
/// Type code of an IP camera (网络摄像机).
pub const TYPE_IP_CAMERA: u16 = 132;

/// A validated 20-digit id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct GbId(String);

impl GbId {
    /// Checks `s` is 20 ASCII digits.
    ///
    /// # Errors
    /// What is wrong, for the config message.
    pub fn new(s: &str) -> Result<GbId, String> {
        if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{s:?} is not a GB/T 28181 id: write the 20 digits the platform assigned (centre 8, industry 2, type 3, network 1, serial 6)"
            ));
        }
        Ok(GbId(s.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits 11-13: the type code.
    pub fn type_code(&self) -> u16 {
        self.0[10..13].parse().unwrap_or(0)
    }

    /// The first 10 digits: the SIP domain of a platform id (GB/T 28181-2016 §4.3).
    pub fn domain(&self) -> &str {
        &self.0[..10]
    }
}

impl fmt::Display for GbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for GbId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GbId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn the_example_id_is_an_alarm_input_and_bad_ids_are_refused() {
        let id = GbId::new("64010000001340000001").unwrap();
        assert_eq!(id.type_code(), TYPE_ALARM_INPUT);
        assert_eq!(id.domain(), "6401000000");
        for bad in [
            "",
            "6401000000134000000",
            "640100000013400000012",
            "6401000000134000000x",
        ] {
            assert!(GbId::new(bad).is_err(), "{bad}");
        }
    }
}
