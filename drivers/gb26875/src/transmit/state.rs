//! The UITD's side of the protocol without I/O: numbering uploads, remembering what was
//! uploaded (to answer the centre's status reads) and answering what the centre sends.
//!
//! Everything here takes the time as an argument, so the frames of the reference vectors
//! can be rebuilt byte for byte (`tests/transmit.rs`).

use std::collections::BTreeMap;

use super::Identity;
use crate::codec::{
    Adu, CommandByte, ComponentStatus, Description, EncodeError, Frame, SystemRef, SystemStatus,
    SystemTime, TimeLabel, TypeFlag, UitdStatus,
};

/// GB/T 26875.3-2011 §5.2.2 (PROTOCOLS §1.2): system / component status bit 0, 1 = normal.
const STATUS_NORMAL: u16 = 1;
/// GB/T 26875.3-2011 (PROTOCOLS §1.2): UITD status bit 0, normal monitoring.
const UITD_NORMAL: u8 = 1;

/// Something the centre sent that the caller must know about (the answer on the wire, if
/// any, is already in [`Handled::reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The centre confirmed (command 3) the frame with this serial.
    Confirmed(u16),
    /// The centre denied (command 6) the frame with this serial.
    Denied(u16),
    /// 查岗 (control, type 91): an operator must answer within `minutes` (the byte the
    /// standard calls reserved; 0 when the centre sends none). Confirmed at once.
    DutyCheck {
        /// The centre's serial of the check.
        serial: u16,
        /// Minutes to answer, as the centre gave them.
        minutes: u8,
    },
    /// Clock sync (control, type 90): the centre's time. Confirmed; the gateway's clock is
    /// not changed (it follows NTP), the difference is reported.
    ClockSync {
        /// The time the centre sent (CST).
        time: TimeLabel,
    },
    /// The centre sent something refused with a deny (reason for the log and counter).
    Refused(&'static str),
    /// A status read answered from what was uploaded.
    Answered(u8),
}

/// What to do about one frame from the centre.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The frame to write back (confirm, response, deny), if any.
    pub reply: Option<Frame>,
    /// What the caller learns.
    pub inbound: Inbound,
}

/// The transmitting UITD's state: serial counter and the last status uploaded for each
/// system, component and the UITD itself.
#[derive(Debug, Clone)]
pub struct UitdState {
    id: Identity,
    serial: u16,
    uitd: UitdStatus,
    systems: BTreeMap<(u8, u8), SystemStatus>,
    components: BTreeMap<(u8, u8, u32), ComponentStatus>,
    /// Software version answered to type 85 (major, minor).
    pub version: (u8, u8),
}

impl UitdState {
    /// A fresh state: serial 0, UITD normal, nothing uploaded.
    pub fn new(id: Identity) -> UitdState {
        UitdState {
            id,
            serial: 0,
            uitd: UitdStatus {
                status: UITD_NORMAL,
                time: TimeLabel::default(),
            },
            systems: BTreeMap::new(),
            components: BTreeMap::new(),
            version: (1, 0),
        }
    }

    /// The addresses and version used.
    pub fn identity(&self) -> Identity {
        self.id
    }

    /// GB/T 26875.3-2011 (PROTOCOLS §1.1): the serial starts at 0 when a connection is set
    /// up and the initiator increments it, so the first upload of a connection is 1.
    pub fn connection_opened(&mut self) {
        self.serial = 0;
    }

    fn next_serial(&mut self) -> u16 {
        self.serial = self.serial.wrapping_add(1);
        self.serial
    }

    /// An upload (command 2) of `adu`, stamped `now`, under a fresh serial; the statuses
    /// it carries are remembered for status reads. `None` is a heartbeat (empty ADU).
    ///
    /// # Errors
    /// [`EncodeError`] when the ADU exceeds the frame's limits.
    pub fn upload(&mut self, adu: Option<&Adu>, now: TimeLabel) -> Result<Frame, EncodeError> {
        let data = match adu {
            Some(a) => a.encode()?,
            None => Vec::new(),
        };
        if let Some(a) = adu {
            self.remember(a);
        }
        Ok(Frame {
            serial: self.next_serial(),
            version: self.id.version,
            time: now,
            source: self.id.uitd,
            destination: self.id.centre,
            command: CommandByte::SendData,
            data,
        })
    }

    /// Keeps the statuses `adu` carries (the last one per system, component, UITD).
    fn remember(&mut self, adu: &Adu) {
        match adu {
            Adu::SystemStatus(o) => {
                for s in o {
                    self.systems
                        .insert((s.system.system_type, s.system.system_address), *s);
                }
            }
            Adu::ComponentStatus(o) => {
                for c in o {
                    let key = (
                        c.system.system_type,
                        c.system.system_address,
                        c.component_address.0,
                    );
                    self.components.insert(key, *c);
                }
            }
            Adu::UitdStatus(o) => {
                if let Some(last) = o.last() {
                    self.uitd = *last;
                }
            }
            _ => {}
        }
    }

    /// What to answer to `frame` from the centre, stamped `now` (GB/T 26875.3-2011 §6:
    /// control → confirm after executing it; request → response; a frame failing its
    /// checks or not for this UITD → deny).
    pub fn handle(&mut self, frame: &Frame, now: TimeLabel) -> Handled {
        let mut h = self.decide(frame, now);
        // Always from this UITD, also when denying a frame meant for another address.
        if let Some(r) = h.reply.as_mut() {
            r.source = self.id.uitd;
        }
        h
    }

    fn decide(&mut self, frame: &Frame, now: TimeLabel) -> Handled {
        let deny = |why| Handled {
            reply: Some(frame.reply(CommandByte::Deny, now)),
            inbound: Inbound::Refused(why),
        };
        if frame.destination != self.id.uitd {
            return deny("not_our_address");
        }
        match frame.command {
            CommandByte::Confirm => Handled {
                reply: None,
                inbound: Inbound::Confirmed(frame.serial),
            },
            CommandByte::Deny => Handled {
                reply: None,
                inbound: Inbound::Denied(frame.serial),
            },
            CommandByte::Control => match frame.adu() {
                Ok(Some(Adu::DutyCheck(o))) => Handled {
                    reply: Some(frame.reply(CommandByte::Confirm, now)),
                    inbound: Inbound::DutyCheck {
                        serial: frame.serial,
                        minutes: o.first().copied().unwrap_or(0),
                    },
                },
                Ok(Some(Adu::SyncUitdClock(o))) if !o.is_empty() => Handled {
                    reply: Some(frame.reply(CommandByte::Confirm, now)),
                    inbound: Inbound::ClockSync { time: o[0] },
                },
                // Initialising (type 89) would wipe the gateway's state: refused.
                Ok(_) => deny("unsupported_control"),
                Err(_) => deny("bad_adu"),
            },
            CommandByte::Request => match frame.adu() {
                Ok(Some(adu)) => match self.response(&adu, now) {
                    Some(data) => Handled {
                        reply: Some(Frame {
                            command: CommandByte::Response,
                            data,
                            ..frame.reply(CommandByte::Response, now)
                        }),
                        inbound: Inbound::Answered(adu.type_flag()),
                    },
                    None => deny("unsupported_request"),
                },
                Ok(None) => deny("empty_request"),
                Err(_) => deny("bad_adu"),
            },
            CommandByte::SendData | CommandByte::Response | CommandByte::UserDefined(_) => {
                deny("unexpected_command")
            }
        }
    }

    /// The response ADU (encoded) to a read, from what was uploaded; `None` for reads this
    /// UITD does not serve.
    fn response(&self, adu: &Adu, now: TimeLabel) -> Option<Vec<u8>> {
        let answer = match adu {
            Adu::ReadUitdStatus(_) => Adu::UitdStatus(vec![self.uitd]),
            Adu::ReadUitdTime(_) => Adu::UitdTime(vec![now]),
            Adu::ReadUitdVersion(_) => Adu::UitdVersion(vec![self.version]),
            Adu::ReadSystemStatus(refs) => {
                Adu::SystemStatus(refs.iter().map(|r| self.system_status(*r, now)).collect())
            }
            Adu::ReadComponentStatus(refs) => Adu::ComponentStatus(
                refs.iter()
                    .map(|r| {
                        let key = (
                            r.system.system_type,
                            r.system.system_address,
                            r.component_address.0,
                        );
                        self.components
                            .get(&key)
                            .copied()
                            .unwrap_or(ComponentStatus {
                                system: r.system,
                                component_type: 0,
                                component_address: r.component_address,
                                status: STATUS_NORMAL,
                                description: Description::new(""),
                                time: now,
                            })
                    })
                    .collect(),
            ),
            Adu::ReadSystemTime(refs) => Adu::SystemTime(
                refs.iter()
                    .map(|r| SystemTime {
                        system: *r,
                        time: now,
                    })
                    .collect(),
            ),
            _ => return None,
        };
        debug_assert_ne!(answer.type_flag(), TypeFlag::DUTY_CHECK);
        answer.encode().ok()
    }

    fn system_status(&self, r: SystemRef, now: TimeLabel) -> SystemStatus {
        self.systems
            .get(&(r.system_type, r.system_address))
            .copied()
            .unwrap_or(SystemStatus {
                system: r,
                status: STATUS_NORMAL,
                time: now,
            })
    }
}

/// A frame from the centre to the UITD `id` (what a centre sends: control or request),
/// with the centre's serial `serial`.
///
/// # Errors
/// [`EncodeError`] when the ADU exceeds the frame's limits.
pub fn centre_frame(
    id: Identity,
    serial: u16,
    command: CommandByte,
    adu: &Adu,
    now: TimeLabel,
) -> Result<Frame, EncodeError> {
    Ok(Frame {
        serial,
        version: id.version,
        time: now,
        source: id.centre,
        destination: id.uitd,
        command,
        data: adu.encode()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::codec::{Address, Version};
    use proptest::prelude::*;

    fn id() -> Identity {
        Identity {
            uitd: Address::new(889).unwrap(),
            centre: Address::new(88888).unwrap(),
            version: Version::V1_1,
        }
    }

    proptest! {
        /// Whatever the centre sends, an answer echoes its serial, swaps the addresses,
        /// carries data only as a response, and encodes to a frame that decodes back.
        #[test]
        fn every_answer_is_a_well_formed_reply(
            serial: u16,
            command in 0u8..=255,
            data in proptest::collection::vec(any::<u8>(), 0..64),
            ours: bool,
        ) {
            let Some(command) = CommandByte::from_u8(command) else { return Ok(()) };
            let mut s = UitdState::new(id());
            let frame = Frame {
                serial,
                version: Version::V1_1,
                time: TimeLabel::default(),
                source: id().centre,
                destination: if ours { id().uitd } else { Address::new(1).unwrap() },
                command,
                data,
            };
            let h = s.handle(&frame, TimeLabel::default());
            if let Some(r) = h.reply {
                prop_assert_eq!(r.serial, serial);
                prop_assert_eq!((r.source, r.destination), (id().uitd, frame.source));
                prop_assert!(r.data.is_empty() || r.command == CommandByte::Response);
                let bytes = r.encode().unwrap();
                prop_assert_eq!(Frame::decode(&bytes).unwrap(), r);
            } else {
                prop_assert!(matches!(h.inbound, Inbound::Confirmed(_) | Inbound::Denied(_)));
            }
        }
    }

    #[test]
    fn a_component_read_answers_the_last_status_uploaded() {
        use crate::codec::{ComponentAddress, ComponentRef, SystemRef};
        let mut s = UitdState::new(id());
        let system = SystemRef {
            system_type: 1,
            system_address: 1,
        };
        let fire = ComponentStatus {
            system,
            component_type: 40,
            component_address: ComponentAddress::from_parts(10, 2),
            status: 0x0003,
            description: Description::new("3楼东"),
            time: TimeLabel::default(),
        };
        s.upload(
            Some(&Adu::ComponentStatus(vec![fire])),
            TimeLabel::default(),
        )
        .unwrap();
        let read = centre_frame(
            id(),
            9,
            CommandByte::Request,
            &Adu::ReadComponentStatus(vec![ComponentRef {
                system,
                component_address: fire.component_address,
            }]),
            TimeLabel::default(),
        )
        .unwrap();
        let reply = s.handle(&read, TimeLabel::default()).reply.unwrap();
        assert_eq!(reply.command, CommandByte::Response);
        assert_eq!(reply.adu().unwrap(), Some(Adu::ComponentStatus(vec![fire])));
    }
}
