//! Names of codes and status bits, in English and Chinese (GB/T 26875.3-2011 code tables,
//! as transcribed in PROTOCOLS §1.2).
//!
//! Only the codes PROTOCOLS lists are named; any other code reads as "unknown" / "未知" and
//! is kept numerically in every payload.

/// A named code: English, Chinese.
pub type Name = (&'static str, &'static str);

/// The unknown code's name.
pub const UNKNOWN: Name = ("unknown", "未知");

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): system type (系统类型标志).
pub fn system_type(code: u8) -> Name {
    match code {
        0 => ("general", "通用"),
        1 => ("fire alarm system", "火灾报警系统"),
        10 => ("fire linkage controller", "消防联动控制器"),
        11 => ("fire hydrant system", "消火栓系统"),
        12 => ("automatic sprinkler system", "自动喷水灭火系统"),
        13 => ("gas extinguishing system", "气体灭火系统"),
        18 => ("smoke control system", "防烟排烟系统"),
        19 => ("fire doors and shutters", "防火门及卷帘系统"),
        20 => ("fire lift", "消防电梯"),
        21 => ("emergency broadcast", "消防应急广播"),
        22 => (
            "emergency lighting and evacuation signs",
            "消防应急照明和疏散指示系统",
        ),
        23 => ("fire power supply", "消防电源"),
        24 => ("fire telephone", "消防电话"),
        _ => UNKNOWN,
    }
}

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2) (selection): component type (部件类型).
pub fn component_type(code: u8) -> Name {
    match code {
        0 => ("general", "通用"),
        1 => ("fire alarm controller", "火灾报警控制器"),
        23 => ("manual call point", "手动火灾报警按钮"),
        24 => ("hydrant button", "消火栓按钮"),
        30 => ("heat detector", "感温火灾探测器"),
        40 => ("smoke detector", "感烟火灾探测器"),
        42 => ("photoelectric smoke detector", "点型光电感烟火灾探测器"),
        84..=88 => ("module", "模块"),
        91 => ("fire pump", "消防水泵"),
        102 => ("fire door", "防火门"),
        111 => ("smoke exhaust fan", "排烟风机"),
        121 => ("fire alarm device", "火灾警报装置"),
        _ => UNKNOWN,
    }
}

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2) (selection): analog type (模拟量类型): name and the
/// unit of one raw step.
pub fn analog_type(code: u8) -> (Name, f64, &'static str) {
    match code {
        1 => (("event count", "事件计数"), 1.0, "count"),
        2 => (("height", "高度"), 0.01, "m"),
        3 => (("temperature", "温度"), 0.1, "°C"),
        4 => (("pressure", "压力"), 0.1, "MPa"),
        6 => (("gas concentration", "气体浓度"), 0.1, "%LEL"),
        8 => (("voltage", "电压"), 0.1, "V"),
        9 => (("current", "电流"), 0.1, "A"),
        _ => (UNKNOWN, 1.0, ""),
    }
}

/// A status bit: position, snake_case tag, English, Chinese.
pub type Bit = (u8, &'static str, &'static str, &'static str);

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): system status word (系统状态), bit 0 = 1 normal / 0 test.
pub const SYSTEM_STATUS_BITS: &[Bit] = &[
    (
        0,
        "normal_operation",
        "normal operation (0 = test)",
        "正常运行",
    ),
    (1, "fire", "fire alarm", "火警"),
    (2, "fault", "fault", "故障"),
    (3, "disabled", "disabled", "屏蔽"),
    (4, "supervisory", "supervisory", "监管"),
    (5, "started", "started", "启动"),
    (6, "feedback", "feedback", "反馈"),
    (7, "delay", "delay", "延时状态"),
    (8, "main_power_fault", "main power fault", "主电故障"),
    (9, "backup_power_fault", "backup power fault", "备电故障"),
    (10, "bus_fault", "bus fault", "总线故障"),
    (11, "manual_mode", "manual mode (0 = automatic)", "手动状态"),
    (12, "config_changed", "configuration changed", "配置改变"),
    (13, "reset", "reset", "复位"),
];

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): component status word (部件状态), bits 9-15 reserved.
pub const COMPONENT_STATUS_BITS: &[Bit] = &[
    (
        0,
        "normal_operation",
        "normal operation (0 = test)",
        "正常运行",
    ),
    (1, "fire", "fire alarm", "火警"),
    (2, "fault", "fault", "故障"),
    (3, "disabled", "disabled", "屏蔽"),
    (4, "supervisory", "supervisory", "监管"),
    (5, "started", "started", "启动"),
    (6, "feedback", "feedback", "反馈"),
    (7, "delay", "delay", "延时状态"),
    (8, "power_fault", "power fault", "电源故障"),
];

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): facility operation flags (操作标志).
pub const OPERATION_BITS: &[Bit] = &[
    (0, "reset", "reset", "复位"),
    (1, "silence", "silence", "消音"),
    (2, "manual_alarm", "manual alarm", "手动报警"),
    (3, "alarm_cleared", "alarm cleared", "警情消除"),
    (4, "self_test", "self-test", "自检"),
    (5, "confirm", "confirm", "确认"),
    (6, "test", "test", "测试"),
];

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): UITD operation flags; bit 5 is "duty check answered".
pub const UITD_OPERATION_BITS: &[Bit] = &[
    (0, "reset", "reset", "复位"),
    (1, "silence", "silence", "消音"),
    (2, "manual_alarm", "manual alarm", "手动报警"),
    (3, "alarm_cleared", "alarm cleared", "警情消除"),
    (4, "self_test", "self-test", "自检"),
    (5, "duty_check_answered", "duty check answered", "查岗应答"),
    (6, "test", "test", "测试"),
];

/// GB/T 26875.3-2011 ADU codes (PROTOCOLS §1.2): UITD status byte (用户信息传输装置运行状态).
pub const UITD_STATUS_BITS: &[Bit] = &[
    (0, "normal_monitoring", "normal monitoring", "正常监视"),
    (1, "fire", "fire alarm", "火警"),
    (2, "fault", "fault", "故障"),
    (3, "main_power_fault", "main power fault", "主电故障"),
    (4, "backup_power_fault", "backup power fault", "备电故障"),
    (
        5,
        "link_fault",
        "link to centre fault",
        "与监控中心通信信道故障",
    ),
    (6, "line_fault", "monitored line fault", "监测连接线路故障"),
];

/// The tags of the bits set in `word`.
pub fn set_bits(table: &[Bit], word: u16) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(bit, ..)| word & (1 << bit) != 0)
        .map(|(_, tag, ..)| *tag)
        .collect()
}
