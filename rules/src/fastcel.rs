//! A fast path for the common shape of CEL conditions, evaluated straight on the [`Event`].
//!
//! `cel-interpreter` 0.10 needs the event as a CEL map (a dozen hash-map inserts and string
//! copies per event) and allocates a key for every field access; at 1,000 rules that was most
//! of the engine's time. Most conditions are comparisons and `has()` tests of event fields
//! joined by `&&`, `||` and `!`: this module compiles that subset of the parsed expression
//! once and evaluates it by reading the event's fields in place.
//!
//! It never decides anything the interpreter would decide differently: every operation is the
//! interpreter's own (its `Value` comparisons and equality, its truthiness for `&&`/`||`/`!`,
//! the same JSON-to-CEL number mapping as `cel_interpreter::to_value`), and whenever the fast
//! path meets something outside the subset at run time (a missing field, which the
//! interpreter turns into an error or a function value; a list or map value; values it
//! cannot compare) it gives up and the engine asks the interpreter. A unit test checks the two
//! agree over a table of conditions and events.

use std::cmp::Ordering;
use std::sync::Arc;

use campusgw_model::Event;
use cel_interpreter::Value;
use cel_parser::ast::{Expr, IdedExpr, operators};

/// A condition in the fast subset.
#[derive(Debug, Clone)]
pub(crate) enum Fast {
    Lit(Value),
    /// `event.a.b`: the fields after `event`.
    Path(Vec<String>),
    /// `has(event.a.b)`: the path of the operand and the tested field.
    Has(Vec<String>, String),
    Not(Box<Fast>),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Cmp(CmpOp, Box<Fast>, Box<Fast>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Fast {
    /// The fast form of a parsed condition, or None when it uses anything else.
    pub fn compile(e: &IdedExpr) -> Option<Fast> {
        Some(match &e.expr {
            Expr::Literal(v) => Fast::Lit(v.clone().into()),
            Expr::Ident(_) | Expr::Select(_) => match &e.expr {
                Expr::Select(s) if s.test => Fast::Has(path(&s.operand)?, s.field.clone()),
                _ => Fast::Path(path(e)?),
            },
            Expr::Call(c) if c.target.is_none() => {
                let arg = |i: usize| c.args.get(i).and_then(Fast::compile).map(Box::new);
                match (c.func_name.as_str(), c.args.len()) {
                    (operators::LOGICAL_NOT, 1) => Fast::Not(arg(0)?),
                    (operators::LOGICAL_AND, 2) => Fast::And(arg(0)?, arg(1)?),
                    (operators::LOGICAL_OR, 2) => Fast::Or(arg(0)?, arg(1)?),
                    (name, 2) => {
                        let op = match name {
                            operators::EQUALS => CmpOp::Eq,
                            operators::NOT_EQUALS => CmpOp::Ne,
                            operators::LESS => CmpOp::Lt,
                            operators::LESS_EQUALS => CmpOp::Le,
                            operators::GREATER => CmpOp::Gt,
                            operators::GREATER_EQUALS => CmpOp::Ge,
                            _ => return None,
                        };
                        Fast::Cmp(op, arg(0)?, arg(1)?)
                    }
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// The condition's value for `ev`, or None when the interpreter must decide.
    pub fn eval(&self, ev: &Event) -> Option<Value> {
        Some(match self {
            Fast::Lit(v) => v.clone(),
            Fast::Path(p) => value(resolve(ev, p)?)?,
            Fast::Has(p, field) => Value::Bool(has(ev, resolve(ev, p)?, field)),
            // The interpreter's truthiness (`to_bool`), not CEL's strict booleans.
            Fast::Not(a) => Value::Bool(!truthy(&a.eval(ev)?)?),
            Fast::And(a, b) => {
                if !truthy(&a.eval(ev)?)? {
                    Value::Bool(false)
                } else {
                    Value::Bool(truthy(&b.eval(ev)?)?)
                }
            }
            Fast::Or(a, b) => {
                let left = a.eval(ev)?;
                if truthy(&left)? { left } else { b.eval(ev)? }
            }
            Fast::Cmp(op, a, b) => {
                let (l, r) = (a.eval(ev)?, b.eval(ev)?);
                Value::Bool(match op {
                    CmpOp::Eq => l.eq(&r),
                    CmpOp::Ne => l.ne(&r),
                    CmpOp::Lt => l.partial_cmp(&r)? == Ordering::Less,
                    CmpOp::Le => l.partial_cmp(&r)? != Ordering::Greater,
                    CmpOp::Gt => l.partial_cmp(&r)? == Ordering::Greater,
                    CmpOp::Ge => l.partial_cmp(&r)? != Ordering::Less,
                })
            }
        })
    }
}

/// Whether the fast path, where it answers for condition `src` on `ev`, gives what the
/// interpreter gives (true when it does not answer or `src` does not parse). For the
/// `rules_parse` fuzz target; not part of the engine's interface.
#[doc(hidden)]
pub fn fast_agrees_with_interpreter(src: &str, ev: &Event) -> bool {
    let parsed = std::panic::catch_unwind(|| {
        (
            cel_interpreter::Program::compile(src),
            cel_parser::Parser::default().parse(src),
        )
    });
    let Ok((Ok(program), Ok(ast))) = parsed else {
        return true;
    };
    let Some(fast) = Fast::compile(&ast).and_then(|f| f.eval(ev)) else {
        return true;
    };
    let Ok(view) = crate::engine::cel_view(ev) else {
        return false;
    };
    let root = cel_interpreter::Context::default();
    let mut ctx = root.new_inner_scope();
    ctx.add_variable_from_value("event", view);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx))) {
        Ok(Ok(slow)) => format!("{fast:?}") == format!("{slow:?}"),
        // The fast path answered where the interpreter fails or panics.
        Ok(Err(_)) | Err(_) => false,
    }
}

/// The fields after `event` of an `event.a.b` expression.
fn path(e: &IdedExpr) -> Option<Vec<String>> {
    match &e.expr {
        Expr::Ident(name) if name == "event" => Some(Vec::new()),
        Expr::Select(s) if !s.test => {
            let mut p = path(&s.operand)?;
            p.push(s.field.clone());
            Some(p)
        }
        _ => None,
    }
}

/// Where a path leads in the event as `cel_view` presents it.
enum Node<'a> {
    Event,
    Location,
    Scalar(Value),
    Json(&'a serde_json::Value),
}

/// The fields of `cel_view`'s event map.
const EVENT_FIELDS: [&str; 7] = [
    "kind", "class", "seq", "device", "driver", "location", "payload",
];
const LEVELS: [&str; 5] = ["campus", "building", "floor", "zone", "point"];

fn text(s: &str) -> Value {
    Value::String(Arc::new(s.to_owned()))
}

fn resolve<'a>(ev: &'a Event, path: &[String]) -> Option<Node<'a>> {
    let mut node = Node::Event;
    for field in path {
        node = match node {
            Node::Event => match field.as_str() {
                "kind" => Node::Scalar(text(ev.kind.as_str())),
                "class" => Node::Scalar(text(ev.class.as_str())),
                "seq" => Node::Scalar(Value::Int(i64::try_from(ev.seq).unwrap_or(i64::MAX))),
                "device" => Node::Scalar(text(ev.source.device.as_str())),
                "driver" => Node::Scalar(text(&ev.source.driver)),
                "location" => Node::Location,
                "payload" => Node::Json(&ev.payload),
                // Missing: the interpreter errs or finds a function of that name.
                _ => return None,
            },
            Node::Location => {
                let i = LEVELS.iter().position(|l| l == field)?;
                Node::Scalar(text(ev.location.levels().get(i).copied().flatten()?))
            }
            Node::Json(serde_json::Value::Object(m)) => Node::Json(m.get(field.as_str())?),
            Node::Json(_) | Node::Scalar(_) => return None,
        };
    }
    Some(node)
}

/// `has(node.field)`: whether node is a map holding `field` (false for any other value).
fn has(ev: &Event, node: Node<'_>, field: &str) -> bool {
    match node {
        Node::Event => EVENT_FIELDS.contains(&field),
        // `cel_view` puts only the levels the event has into its location map.
        Node::Location => LEVELS
            .iter()
            .zip(ev.location.levels())
            .any(|(l, v)| *l == field && v.is_some()),
        Node::Json(serde_json::Value::Object(m)) => m.contains_key(field),
        Node::Json(_) | Node::Scalar(_) => false,
    }
}

/// A scalar as `cel_interpreter::to_value` converts it; None for maps and lists.
fn value(node: Node<'_>) -> Option<Value> {
    match node {
        Node::Scalar(v) => Some(v),
        Node::Json(j) => match j {
            serde_json::Value::Null => Some(Value::Null),
            serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
            // serde_json serializes positive integers as u64, negative ones as i64.
            serde_json::Value::Number(n) => Some(match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Value::UInt(u),
                (None, Some(i)) => Value::Int(i),
                (None, None) => Value::Float(n.as_f64()?),
            }),
            serde_json::Value::String(s) => Some(text(s)),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => None,
        },
        Node::Event | Node::Location => None,
    }
}

/// The interpreter's `to_bool` for the scalars the fast path produces.
fn truthy(v: &Value) -> Option<bool> {
    Some(match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Int(i) => *i != 0,
        Value::UInt(u) => *u != 0,
        Value::Float(f) => *f != 0.0,
        Value::String(s) => !s.is_empty(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use campusgw_model::{Class, DeviceId, EVENT_SCHEMA_VERSION, EventId, Kind, Location, Source};
    use serde_json::json;

    fn ev(payload: serde_json::Value, zone: Option<&str>) -> Event {
        Event {
            schema: EVENT_SCHEMA_VERSION,
            id: EventId::from_u128(1),
            seq: 3,
            occurred_at: None,
            received_at: chrono::DateTime::UNIX_EPOCH,
            source: Source {
                device: DeviceId::new("d1").unwrap(),
                driver: "test".into(),
            },
            kind: Kind::new("fire.alarm").unwrap(),
            class: Class::LifeSafety,
            location: Location {
                campus: Some("main".into()),
                building: Some("A".into()),
                floor: Some("1".into()),
                zone: zone.map(str::to_owned),
                point: None,
            },
            payload,
            origin_ref: None,
            dedup: Default::default(),
        }
    }

    const CONDITIONS: &[&str] = &[
        "has(event.payload.value) && event.payload.value > 940",
        "event.payload.value > 940",
        "event.location.building == 'A'",
        "event.location.zone == 'z1' || event.kind == 'fire.alarm'",
        "!(event.payload.v < 3)",
        "event.payload.v >= 2.5",
        "event.payload.s == 'x' && has(event.location.zone)",
        "event.seq != 3",
        "has(event.payload.nested.deep)",
        "event.payload.nested.deep == true",
        "event.payload.v || false",
        "event.payload.v <= -1",
        "event.class == 'life_safety'",
        "event.payload.list == 1",
        "event.payload.v > 'a'",
        "event.device == 'd1' && event.driver == 'test'",
        "has(event.kind) && !has(event.nope)",
        "has(event.location.point) || has(event.location.zone)",
        "event.payload.v == null",
        "1 < 2u && 3.0 == 3",
        "event.payload.size > 1",
        "has(event.payload.v.x)",
        "event.location.point == 'p'",
    ];

    fn payloads() -> Vec<serde_json::Value> {
        vec![
            json!({"v": 5}),
            json!({"v": -3}),
            json!({"v": 2.5}),
            json!({"v": "str", "s": "x"}),
            json!({}),
            json!({"nested": {"deep": true}}),
            json!({"list": [1]}),
            json!({"v": null}),
            json!({"value": 941}),
            json!({"value": u64::MAX}),
            json!({"v": 0}),
            json!(5),
        ]
    }

    #[test]
    fn the_fast_condition_path_agrees_with_the_cel_interpreter() {
        let root = cel_interpreter::Context::default();
        let (mut fast_answers, mut fallbacks) = (0, 0);
        for src in CONDITIONS {
            let program = cel_interpreter::Program::compile(src).unwrap();
            let ast = cel_parser::Parser::default().parse(src).unwrap();
            let fast = Fast::compile(&ast).unwrap_or_else(|| panic!("{src} is in the subset"));
            for payload in payloads() {
                for zone in [Some("z1"), None] {
                    let e = ev(payload.clone(), zone);
                    let mut ctx = root.new_inner_scope();
                    ctx.add_variable_from_value("event", crate::engine::cel_view(&e).unwrap());
                    let slow = program.execute(&ctx);
                    match fast.eval(&e) {
                        Some(v) => {
                            fast_answers += 1;
                            assert_eq!(
                                format!("{:?}", Ok::<_, ()>(v)),
                                format!("{:?}", slow.map_err(|_| ())),
                                "{src} on {payload} zone {zone:?}"
                            );
                        }
                        None => fallbacks += 1,
                    }
                }
            }
        }
        // Both paths are exercised: most answers are fast, and the odd cases fall back.
        assert!(fast_answers > 200, "{fast_answers} fast answers");
        assert!(fallbacks > 20, "{fallbacks} fallbacks");
    }

    #[test]
    fn conditions_outside_the_subset_have_no_fast_form() {
        for src in [
            "size(event.kind) > 3",
            "event.payload.v + 1 > 2",
            "event.kind in ['a']",
            "x > 1",
        ] {
            let ast = cel_parser::Parser::default().parse(src).unwrap();
            assert!(Fast::compile(&ast).is_none(), "{src}");
        }
    }
}
