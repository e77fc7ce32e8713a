//! Application data units (应用数据单元), GB/T 26875.3-2011 (PROTOCOLS §1.2).
//!
//! An ADU is a type flag (类型标志, 1 byte), an object count (信息对象数目, 1 byte) and that
//! many information objects (信息对象) of the type's layout, most followed by a 6-byte time
//! label. Unknown and user-defined type flags are kept as raw bytes ([`Adu::Other`]) so they
//! can still be journaled.

use serde::Serialize;

use super::{EncodeError, MAX_ADU_LEN, TimeLabel};

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): type flags (类型标志).
#[derive(Debug, Clone, Copy)]
pub struct TypeFlag;

impl TypeFlag {
    /// 1 上传建筑消防设施系统状态.
    pub const SYSTEM_STATUS: u8 = 1;
    /// 2 上传建筑消防设施部件运行状态.
    pub const COMPONENT_STATUS: u8 = 2;
    /// 3 上传建筑消防设施部件模拟量值.
    pub const COMPONENT_ANALOG: u8 = 3;
    /// 4 上传建筑消防设施操作信息.
    pub const SYSTEM_OPERATION: u8 = 4;
    /// 5 上传建筑消防设施软件版本.
    pub const SYSTEM_VERSION: u8 = 5;
    /// 6 上传建筑消防设施系统配置情况.
    pub const SYSTEM_CONFIG: u8 = 6;
    /// 7 上传建筑消防设施部件配置情况.
    pub const COMPONENT_CONFIG: u8 = 7;
    /// 8 上传建筑消防设施系统时间.
    pub const SYSTEM_TIME: u8 = 8;
    /// 21 上传用户信息传输装置运行状态.
    pub const UITD_STATUS: u8 = 21;
    /// 24 上传用户信息传输装置操作信息.
    pub const UITD_OPERATION: u8 = 24;
    /// 25 上传用户信息传输装置软件版本.
    pub const UITD_VERSION: u8 = 25;
    /// 26 上传用户信息传输装置配置情况.
    pub const UITD_CONFIG: u8 = 26;
    /// 28 上传用户信息传输装置系统时间.
    pub const UITD_TIME: u8 = 28;
    /// 61 读建筑消防设施系统状态.
    pub const READ_SYSTEM_STATUS: u8 = 61;
    /// 62 读建筑消防设施部件运行状态.
    pub const READ_COMPONENT_STATUS: u8 = 62;
    /// 63 读建筑消防设施部件模拟量值.
    pub const READ_COMPONENT_ANALOG: u8 = 63;
    /// 64 读建筑消防设施操作信息.
    pub const READ_SYSTEM_OPERATIONS: u8 = 64;
    /// 65 读建筑消防设施软件版本.
    pub const READ_SYSTEM_VERSION: u8 = 65;
    /// 66 读建筑消防设施系统配置情况.
    pub const READ_SYSTEM_CONFIG: u8 = 66;
    /// 67 读建筑消防设施部件配置情况.
    pub const READ_COMPONENT_CONFIG: u8 = 67;
    /// 68 读建筑消防设施系统时间.
    pub const READ_SYSTEM_TIME: u8 = 68;
    /// 81 读用户信息传输装置运行状态.
    pub const READ_UITD_STATUS: u8 = 81;
    /// 84 读用户信息传输装置操作信息记录.
    pub const READ_UITD_OPERATIONS: u8 = 84;
    /// 85 读用户信息传输装置软件版本.
    pub const READ_UITD_VERSION: u8 = 85;
    /// 86 读用户信息传输装置配置情况.
    pub const READ_UITD_CONFIG: u8 = 86;
    /// 88 读用户信息传输装置系统时间.
    pub const READ_UITD_TIME: u8 = 88;
    /// 89 初始化用户信息传输装置.
    pub const INITIALISE_UITD: u8 = 89;
    /// 90 同步用户信息传输装置时钟.
    pub const SYNC_UITD_CLOCK: u8 = 90;
    /// 91 查岗命令.
    pub const DUTY_CHECK: u8 = 91;
}

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): the component description (部件说明) is 31 bytes of GB18030.
pub const DESCRIPTION_LEN: usize = 31;

/// Why an ADU does not match its type's layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AduError {
    /// Fewer than the two bytes of type flag and count.
    #[error("adu of {len} bytes has no type flag and object count")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The objects need more bytes than present.
    #[error("adu type {type_flag}: {count} objects need more than the {len} bytes present")]
    Truncated {
        /// The type flag.
        type_flag: u8,
        /// Declared object count.
        count: u8,
        /// ADU length.
        len: usize,
    },
    /// Bytes left over after the declared objects.
    #[error("adu type {type_flag}: {extra} bytes left after {count} objects")]
    TrailingBytes {
        /// The type flag.
        type_flag: u8,
        /// Declared object count.
        count: u8,
        /// Bytes left.
        extra: usize,
    },
}

/// A facility system (建筑消防设施系统): system type (系统类型标志) and address (系统地址).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SystemRef {
    /// System type code ([`super::names::system_type`]).
    pub system_type: u8,
    /// System address on the UITD.
    pub system_address: u8,
}

/// A component address (部件地址): 4 bytes LE.
///
/// Vendors split it into loop/zone and point; campusgw reads the low 16 bits as the zone
/// (区/回路) and the high 16 bits as the point (号), so `0A 00 02 00` is `10-2` ("10区 2号",
/// PROTOCOLS §1.2). The split is not normative: the raw value is always kept too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentAddress(pub u32);

impl ComponentAddress {
    /// From zone (low 16 bits) and point (high 16 bits).
    pub fn from_parts(zone: u16, point: u16) -> ComponentAddress {
        ComponentAddress(u32::from(zone) | (u32::from(point) << 16))
    }

    /// The loop/zone part (low 16 bits).
    pub fn zone(self) -> u16 {
        u16::try_from(self.0 & 0xFFFF).unwrap_or_default()
    }

    /// The point part (high 16 bits).
    pub fn point(self) -> u16 {
        u16::try_from(self.0 >> 16).unwrap_or_default()
    }

    /// Parses `"10-2"` (zone-point) or a plain integer (the raw value).
    pub fn parse(s: &str) -> Option<ComponentAddress> {
        match s.split_once('-') {
            Some((z, p)) => Some(Self::from_parts(
                z.trim().parse().ok()?,
                p.trim().parse().ok()?,
            )),
            None => s.trim().parse().ok().map(ComponentAddress),
        }
    }
}

impl std::fmt::Display for ComponentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.zone(), self.point())
    }
}

impl Serialize for ComponentAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A component within a system, as requests 62, 63 and 67 name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ComponentRef {
    /// The system.
    pub system: SystemRef,
    /// The component.
    pub component_address: ComponentAddress,
}

/// A 31-byte GB18030 description (部件说明), kept raw so frames re-encode identically.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Description(pub [u8; DESCRIPTION_LEN]);

impl Description {
    /// Encodes `text` as GB18030, cut at a character boundary to 31 bytes, NUL-padded.
    pub fn new(text: &str) -> Description {
        let mut raw = [0u8; DESCRIPTION_LEN];
        let mut at = 0;
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let (bytes, _, _) = encoding_rs::GB18030.encode(c.encode_utf8(&mut buf));
            let Some(slot) = raw.get_mut(at..at + bytes.len()) else {
                break;
            };
            slot.copy_from_slice(&bytes);
            at += bytes.len();
        }
        Description(raw)
    }

    /// The text as UTF-8: cut at the first NUL, trailing spaces trimmed.
    pub fn text(&self) -> String {
        gb18030_text(&self.0)
    }
}

impl std::fmt::Debug for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Description({:?})", self.text())
    }
}

impl Serialize for Description {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

/// Variable-length GB18030 text (系统配置说明, at most 255 bytes), kept raw.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(pub Vec<u8>);

impl Text {
    /// Encodes `text` as GB18030, cut at a character boundary to 255 bytes.
    pub fn new(text: &str) -> Text {
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let (bytes, _, _) = encoding_rs::GB18030.encode(c.encode_utf8(&mut buf));
            if out.len() + bytes.len() > 255 {
                break;
            }
            out.extend_from_slice(&bytes);
        }
        Text(out)
    }

    /// The text as UTF-8.
    pub fn text(&self) -> String {
        gb18030_text(&self.0)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Text({:?})", self.text())
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

fn gb18030_text(raw: &[u8]) -> String {
    // GB18030 never uses 0x00 inside a multi-byte character, so cutting there is safe.
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let (text, _) = encoding_rs::GB18030.decode_without_bom_handling(&raw[..end]);
    text.trim_end_matches([' ', '\0']).to_owned()
}

/// Type 1 object: a system's status (系统状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemStatus {
    /// The system.
    pub system: SystemRef,
    /// Status word (系统状态数据), bits in [`super::names::SYSTEM_STATUS_BITS`].
    pub status: u16,
    /// When (device clock).
    pub time: TimeLabel,
}

/// Type 2 object: a component's running status (部件运行状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// The system it belongs to.
    pub system: SystemRef,
    /// Component type code ([`super::names::component_type`]).
    pub component_type: u8,
    /// Its address.
    pub component_address: ComponentAddress,
    /// Status word (部件状态数据), bits in [`super::names::COMPONENT_STATUS_BITS`].
    pub status: u16,
    /// Description (部件说明).
    pub description: Description,
    /// When (device clock).
    pub time: TimeLabel,
}

/// Type 3 object: a component's analog value (部件模拟量值).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AnalogValue {
    /// The system.
    pub system: SystemRef,
    /// Component type code.
    pub component_type: u8,
    /// Its address.
    pub component_address: ComponentAddress,
    /// Analog type (模拟量类型, [`super::names::analog_type`]).
    pub analog_type: u8,
    /// Raw value (模拟量值), signed, in the analog type's unit.
    pub value: i16,
    /// When (device clock).
    pub time: TimeLabel,
}

/// Type 4 object: an operator action on a facility (操作信息).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemOperation {
    /// The system.
    pub system: SystemRef,
    /// Operation flags (操作标志), bits in [`super::names::OPERATION_BITS`].
    pub flags: u8,
    /// Operator number (操作员编号).
    pub operator: u8,
    /// When (device clock).
    pub time: TimeLabel,
}

/// Type 5 object: a facility's software version (软件版本).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemVersion {
    /// The system.
    pub system: SystemRef,
    /// Major version (主版本号).
    pub major: u8,
    /// Minor version (次版本号).
    pub minor: u8,
}

/// Type 6 object: a facility's configuration text (系统配置情况).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemConfig {
    /// The system.
    pub system: SystemRef,
    /// Configuration text (系统配置说明).
    pub text: Text,
}

/// Type 7 object: a component's configuration (部件配置情况).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComponentConfig {
    /// The system.
    pub system: SystemRef,
    /// Component type code.
    pub component_type: u8,
    /// Its address.
    pub component_address: ComponentAddress,
    /// Description (部件说明).
    pub description: Description,
}

/// Type 8 object: a facility's clock (系统时间).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemTime {
    /// The system.
    pub system: SystemRef,
    /// Its clock.
    pub time: TimeLabel,
}

/// Type 21 object: the UITD's own status (用户信息传输装置运行状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UitdStatus {
    /// Status byte, bits in [`super::names::UITD_STATUS_BITS`].
    pub status: u8,
    /// When (device clock).
    pub time: TimeLabel,
}

/// Type 24 object: an operator action on the UITD (用户信息传输装置操作信息).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UitdOperation {
    /// Operation flags, bits in [`super::names::UITD_OPERATION_BITS`].
    pub flags: u8,
    /// Operator number.
    pub operator: u8,
    /// When (device clock).
    pub time: TimeLabel,
}

/// Type 84 object: how many operation records to read, from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordQuery {
    /// Number of records (查询记录数目).
    pub count: u8,
    /// Start time (指定时间).
    pub since: TimeLabel,
}

/// Type 64 object: [`RecordQuery`] for one facility system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OperationRecord {
    /// The system.
    pub system: SystemRef,
    /// Which records.
    pub query: RecordQuery,
}

/// An application data unit, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "objects", rename_all = "snake_case")]
pub enum Adu {
    /// 1: facility system status.
    SystemStatus(Vec<SystemStatus>),
    /// 2: component running status.
    ComponentStatus(Vec<ComponentStatus>),
    /// 3: component analog values.
    ComponentAnalog(Vec<AnalogValue>),
    /// 4: facility operation records.
    SystemOperation(Vec<SystemOperation>),
    /// 5: facility software version.
    SystemVersion(Vec<SystemVersion>),
    /// 6: facility configuration.
    SystemConfig(Vec<SystemConfig>),
    /// 7: component configuration.
    ComponentConfig(Vec<ComponentConfig>),
    /// 8: facility clock.
    SystemTime(Vec<SystemTime>),
    /// 21: UITD status.
    UitdStatus(Vec<UitdStatus>),
    /// 24: UITD operation records.
    UitdOperation(Vec<UitdOperation>),
    /// 25: UITD software version (major, minor).
    UitdVersion(Vec<(u8, u8)>),
    /// 26: UITD configuration.
    UitdConfig(Vec<Text>),
    /// 28: UITD clock.
    UitdTime(Vec<TimeLabel>),
    /// 61: read facility system status.
    ReadSystemStatus(Vec<SystemRef>),
    /// 62: read component status.
    ReadComponentStatus(Vec<ComponentRef>),
    /// 63: read component analog value.
    ReadComponentAnalog(Vec<ComponentRef>),
    /// 64: read facility operation records.
    ReadSystemOperations(Vec<OperationRecord>),
    /// 65: read facility software version.
    ReadSystemVersion(Vec<SystemRef>),
    /// 66: read facility configuration.
    ReadSystemConfig(Vec<SystemRef>),
    /// 67: read component configuration.
    ReadComponentConfig(Vec<ComponentRef>),
    /// 68: read facility clock.
    ReadSystemTime(Vec<SystemRef>),
    /// 81: read UITD status (one reserved byte per object).
    ReadUitdStatus(Vec<u8>),
    /// 84: read UITD operation records.
    ReadUitdOperations(Vec<RecordQuery>),
    /// 85: read UITD software version (reserved byte).
    ReadUitdVersion(Vec<u8>),
    /// 86: read UITD configuration (reserved byte).
    ReadUitdConfig(Vec<u8>),
    /// 88: read UITD clock (reserved byte).
    ReadUitdTime(Vec<u8>),
    /// 89: initialise the UITD (reserved byte).
    InitialiseUitd(Vec<u8>),
    /// 90: set the UITD clock.
    SyncUitdClock(Vec<TimeLabel>),
    /// 91: 查岗 duty check; the "reserved" byte carries the answer window in minutes on
    /// the vendor units PROTOCOLS §1.3 describes.
    DutyCheck(Vec<u8>),
    /// Any other type flag (reserved or user-defined 128-254), kept raw.
    Other {
        /// The type flag.
        type_flag: u8,
        /// The declared object count.
        count: u8,
        /// Everything after the count.
        body: Vec<u8>,
    },
}

/// A cursor over ADU bytes; every read is checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn vec(&mut self, n: usize) -> Option<Vec<u8>> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head.to_vec())
    }
}

/// One information object's layout.
trait Object: Sized {
    fn read(r: &mut Reader<'_>) -> Option<Self>;
    fn write(&self, out: &mut Vec<u8>);
}

impl Object for u8 {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.u8()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}

impl Object for (u8, u8) {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some((r.u8()?, r.u8()?))
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.0, self.1]);
    }
}

impl Object for TimeLabel {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.take::<6>().map(TimeLabel::from_bytes)
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

impl Object for SystemRef {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(SystemRef {
            system_type: r.u8()?,
            system_address: r.u8()?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.system_type, self.system_address]);
    }
}

impl Object for ComponentAddress {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.take::<4>()
            .map(|b| ComponentAddress(u32::from_le_bytes(b)))
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
}

impl Object for Description {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.take::<DESCRIPTION_LEN>().map(Description)
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Object for Text {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let n = r.u8()?;
        r.vec(usize::from(n)).map(Text)
    }
    fn write(&self, out: &mut Vec<u8>) {
        let n = self.0.len().min(255);
        out.push(u8::try_from(n).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.0[..n]);
    }
}

impl Object for u16 {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        r.take::<2>().map(u16::from_le_bytes)
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Implements [`Object`] for a struct as its fields in wire order.
macro_rules! object_fields {
    ($ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {
        impl Object for $ty {
            fn read(r: &mut Reader<'_>) -> Option<Self> {
                Some($ty { $($field: <$fty as Object>::read(r)?),* })
            }
            fn write(&self, out: &mut Vec<u8>) {
                $(Object::write(&self.$field, out);)*
            }
        }
    };
}

object_fields!(ComponentRef {
    system: SystemRef,
    component_address: ComponentAddress
});
object_fields!(SystemStatus {
    system: SystemRef,
    status: u16,
    time: TimeLabel
});
object_fields!(ComponentStatus {
    system: SystemRef,
    component_type: u8,
    component_address: ComponentAddress,
    status: u16,
    description: Description,
    time: TimeLabel,
});
object_fields!(SystemOperation {
    system: SystemRef,
    flags: u8,
    operator: u8,
    time: TimeLabel
});
object_fields!(SystemVersion {
    system: SystemRef,
    major: u8,
    minor: u8
});
object_fields!(SystemConfig {
    system: SystemRef,
    text: Text
});
object_fields!(ComponentConfig {
    system: SystemRef,
    component_type: u8,
    component_address: ComponentAddress,
    description: Description,
});
object_fields!(SystemTime {
    system: SystemRef,
    time: TimeLabel
});
object_fields!(UitdStatus {
    status: u8,
    time: TimeLabel
});
object_fields!(UitdOperation {
    flags: u8,
    operator: u8,
    time: TimeLabel
});
object_fields!(RecordQuery {
    count: u8,
    since: TimeLabel
});
object_fields!(OperationRecord {
    system: SystemRef,
    query: RecordQuery
});

impl Object for AnalogValue {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(AnalogValue {
            system: SystemRef::read(r)?,
            component_type: r.u8()?,
            component_address: ComponentAddress::read(r)?,
            analog_type: r.u8()?,
            value: r.take::<2>().map(i16::from_le_bytes)?,
            time: TimeLabel::read(r)?,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.system.write(out);
        out.push(self.component_type);
        self.component_address.write(out);
        out.push(self.analog_type);
        out.extend_from_slice(&self.value.to_le_bytes());
        self.time.write(out);
    }
}

fn read_all<T: Object>(type_flag: u8, count: u8, body: &[u8]) -> Result<Vec<T>, AduError> {
    let mut r = Reader { rest: body };
    let mut objects = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let o = T::read(&mut r).ok_or(AduError::Truncated {
            type_flag,
            count,
            len: body.len() + 2,
        })?;
        objects.push(o);
    }
    if r.rest.is_empty() {
        Ok(objects)
    } else {
        Err(AduError::TrailingBytes {
            type_flag,
            count,
            extra: r.rest.len(),
        })
    }
}

fn write_all<T: Object>(type_flag: u8, objects: &[T]) -> Result<Vec<u8>, EncodeError> {
    let count =
        u8::try_from(objects.len()).map_err(|_| EncodeError::TooManyObjects(objects.len()))?;
    let mut out = vec![type_flag, count];
    for o in objects {
        o.write(&mut out);
    }
    if out.len() > MAX_ADU_LEN {
        return Err(EncodeError::AduTooLong(out.len()));
    }
    Ok(out)
}

impl Adu {
    /// Decodes an ADU.
    ///
    /// # Errors
    /// [`AduError`] when the bytes do not match the type's layout and declared count.
    pub fn decode(b: &[u8]) -> Result<Adu, AduError> {
        let [t, count, ref body @ ..] = *b else {
            return Err(AduError::TooShort { len: b.len() });
        };
        let c = count;
        use TypeFlag as F;
        Ok(match t {
            F::SYSTEM_STATUS => Adu::SystemStatus(read_all(t, c, body)?),
            F::COMPONENT_STATUS => Adu::ComponentStatus(read_all(t, c, body)?),
            F::COMPONENT_ANALOG => Adu::ComponentAnalog(read_all(t, c, body)?),
            F::SYSTEM_OPERATION => Adu::SystemOperation(read_all(t, c, body)?),
            F::SYSTEM_VERSION => Adu::SystemVersion(read_all(t, c, body)?),
            F::SYSTEM_CONFIG => Adu::SystemConfig(read_all(t, c, body)?),
            F::COMPONENT_CONFIG => Adu::ComponentConfig(read_all(t, c, body)?),
            F::SYSTEM_TIME => Adu::SystemTime(read_all(t, c, body)?),
            F::UITD_STATUS => Adu::UitdStatus(read_all(t, c, body)?),
            F::UITD_OPERATION => Adu::UitdOperation(read_all(t, c, body)?),
            F::UITD_VERSION => Adu::UitdVersion(read_all(t, c, body)?),
            F::UITD_CONFIG => Adu::UitdConfig(read_all(t, c, body)?),
            F::UITD_TIME => Adu::UitdTime(read_all(t, c, body)?),
            F::READ_SYSTEM_STATUS => Adu::ReadSystemStatus(read_all(t, c, body)?),
            F::READ_COMPONENT_STATUS => Adu::ReadComponentStatus(read_all(t, c, body)?),
            F::READ_COMPONENT_ANALOG => Adu::ReadComponentAnalog(read_all(t, c, body)?),
            F::READ_SYSTEM_OPERATIONS => Adu::ReadSystemOperations(read_all(t, c, body)?),
            F::READ_SYSTEM_VERSION => Adu::ReadSystemVersion(read_all(t, c, body)?),
            F::READ_SYSTEM_CONFIG => Adu::ReadSystemConfig(read_all(t, c, body)?),
            F::READ_COMPONENT_CONFIG => Adu::ReadComponentConfig(read_all(t, c, body)?),
            F::READ_SYSTEM_TIME => Adu::ReadSystemTime(read_all(t, c, body)?),
            F::READ_UITD_STATUS => Adu::ReadUitdStatus(read_all(t, c, body)?),
            F::READ_UITD_OPERATIONS => Adu::ReadUitdOperations(read_all(t, c, body)?),
            F::READ_UITD_VERSION => Adu::ReadUitdVersion(read_all(t, c, body)?),
            F::READ_UITD_CONFIG => Adu::ReadUitdConfig(read_all(t, c, body)?),
            F::READ_UITD_TIME => Adu::ReadUitdTime(read_all(t, c, body)?),
            F::INITIALISE_UITD => Adu::InitialiseUitd(read_all(t, c, body)?),
            F::SYNC_UITD_CLOCK => Adu::SyncUitdClock(read_all(t, c, body)?),
            F::DUTY_CHECK => Adu::DutyCheck(read_all(t, c, body)?),
            _ => Adu::Other {
                type_flag: t,
                count,
                body: body.to_vec(),
            },
        })
    }

    /// Encodes the ADU.
    ///
    /// # Errors
    /// [`EncodeError`] with more than 255 objects or more than 1024 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let t = self.type_flag();
        match self {
            Adu::SystemStatus(o) => write_all(t, o),
            Adu::ComponentStatus(o) => write_all(t, o),
            Adu::ComponentAnalog(o) => write_all(t, o),
            Adu::SystemOperation(o) => write_all(t, o),
            Adu::SystemVersion(o) => write_all(t, o),
            Adu::SystemConfig(o) => write_all(t, o),
            Adu::ComponentConfig(o) => write_all(t, o),
            Adu::SystemTime(o) => write_all(t, o),
            Adu::UitdStatus(o) => write_all(t, o),
            Adu::UitdOperation(o) => write_all(t, o),
            Adu::UitdVersion(o) => write_all(t, o),
            Adu::UitdConfig(o) => write_all(t, o),
            Adu::UitdTime(o) | Adu::SyncUitdClock(o) => write_all(t, o),
            Adu::ReadSystemStatus(o)
            | Adu::ReadSystemVersion(o)
            | Adu::ReadSystemConfig(o)
            | Adu::ReadSystemTime(o) => write_all(t, o),
            Adu::ReadComponentStatus(o)
            | Adu::ReadComponentAnalog(o)
            | Adu::ReadComponentConfig(o) => write_all(t, o),
            Adu::ReadSystemOperations(o) => write_all(t, o),
            Adu::ReadUitdOperations(o) => write_all(t, o),
            Adu::ReadUitdStatus(o)
            | Adu::ReadUitdVersion(o)
            | Adu::ReadUitdConfig(o)
            | Adu::ReadUitdTime(o)
            | Adu::InitialiseUitd(o)
            | Adu::DutyCheck(o) => write_all(t, o),
            Adu::Other {
                type_flag,
                count,
                body,
            } => {
                let mut out = vec![*type_flag, *count];
                out.extend_from_slice(body);
                if out.len() > MAX_ADU_LEN {
                    return Err(EncodeError::AduTooLong(out.len()));
                }
                Ok(out)
            }
        }
    }

    /// The type flag (类型标志).
    pub fn type_flag(&self) -> u8 {
        use TypeFlag as F;
        match self {
            Adu::SystemStatus(_) => F::SYSTEM_STATUS,
            Adu::ComponentStatus(_) => F::COMPONENT_STATUS,
            Adu::ComponentAnalog(_) => F::COMPONENT_ANALOG,
            Adu::SystemOperation(_) => F::SYSTEM_OPERATION,
            Adu::SystemVersion(_) => F::SYSTEM_VERSION,
            Adu::SystemConfig(_) => F::SYSTEM_CONFIG,
            Adu::ComponentConfig(_) => F::COMPONENT_CONFIG,
            Adu::SystemTime(_) => F::SYSTEM_TIME,
            Adu::UitdStatus(_) => F::UITD_STATUS,
            Adu::UitdOperation(_) => F::UITD_OPERATION,
            Adu::UitdVersion(_) => F::UITD_VERSION,
            Adu::UitdConfig(_) => F::UITD_CONFIG,
            Adu::UitdTime(_) => F::UITD_TIME,
            Adu::ReadSystemStatus(_) => F::READ_SYSTEM_STATUS,
            Adu::ReadComponentStatus(_) => F::READ_COMPONENT_STATUS,
            Adu::ReadComponentAnalog(_) => F::READ_COMPONENT_ANALOG,
            Adu::ReadSystemOperations(_) => F::READ_SYSTEM_OPERATIONS,
            Adu::ReadSystemVersion(_) => F::READ_SYSTEM_VERSION,
            Adu::ReadSystemConfig(_) => F::READ_SYSTEM_CONFIG,
            Adu::ReadComponentConfig(_) => F::READ_COMPONENT_CONFIG,
            Adu::ReadSystemTime(_) => F::READ_SYSTEM_TIME,
            Adu::ReadUitdStatus(_) => F::READ_UITD_STATUS,
            Adu::ReadUitdOperations(_) => F::READ_UITD_OPERATIONS,
            Adu::ReadUitdVersion(_) => F::READ_UITD_VERSION,
            Adu::ReadUitdConfig(_) => F::READ_UITD_CONFIG,
            Adu::ReadUitdTime(_) => F::READ_UITD_TIME,
            Adu::InitialiseUitd(_) => F::INITIALISE_UITD,
            Adu::SyncUitdClock(_) => F::SYNC_UITD_CLOCK,
            Adu::DutyCheck(_) => F::DUTY_CHECK,
            Adu::Other { type_flag, .. } => *type_flag,
        }
    }
}
