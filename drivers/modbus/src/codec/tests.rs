use proptest::prelude::*;

use super::*;

fn fmt(value_type: ValueType, word_order: WordOrder, scale: f64, offset: f64) -> RegisterFormat {
    RegisterFormat {
        value_type,
        word_order,
        scale,
        offset,
    }
}

#[test]
fn decoding_follows_type_word_order_scale_and_offset() {
    use ValueType::*;
    use WordOrder::*;
    let f21_5 = 21.5f32.to_bits();
    let (hi, lo) = ((f21_5 >> 16) as u16, (f21_5 & 0xFFFF) as u16);
    let cases: &[(RegisterFormat, &[u16], f64, f64)] = &[
        (fmt(U16, Big, 1.0, 0.0), &[65535], 65535.0, 65535.0),
        (fmt(I16, Big, 1.0, 0.0), &[0xFFFF], -1.0, -1.0),
        (fmt(I16, Big, 0.1, 0.0), &[0xFF38], -200.0, -20.0),
        (fmt(U16, Big, 0.1, 0.0), &[215], 215.0, 21.5),
        (fmt(U16, Big, 0.5, -40.0), &[100], 100.0, 10.0),
        (fmt(U32, Big, 1.0, 0.0), &[0x0001, 0x0002], 65538.0, 65538.0),
        (
            fmt(U32, Little, 1.0, 0.0),
            &[0x0002, 0x0001],
            65538.0,
            65538.0,
        ),
        (fmt(I32, Big, 1.0, 0.0), &[0xFFFF, 0xFFFE], -2.0, -2.0),
        (fmt(I32, Little, 1.0, 0.0), &[0xFFFE, 0xFFFF], -2.0, -2.0),
        (
            fmt(U32, Big, 1.0, 0.0),
            &[0xFFFF, 0xFFFF],
            4_294_967_295.0,
            4_294_967_295.0,
        ),
        (fmt(F32, Big, 1.0, 0.0), &[hi, lo], 21.5, 21.5),
        (fmt(F32, Little, 1.0, 0.0), &[lo, hi], 21.5, 21.5),
        (fmt(F32, Big, 2.0, 1.0), &[hi, lo], 21.5, 44.0),
    ];
    for (f, words, raw, value) in cases {
        let r = f.decode(words).unwrap_or_else(|| panic!("{f:?} {words:?}"));
        assert_eq!((r.raw, r.value), (*raw, *value), "{f:?} {words:?}");
    }
}

#[test]
fn decoding_rejects_wrong_word_counts_and_non_finite_floats() {
    assert_eq!(
        fmt(ValueType::U16, WordOrder::Big, 1.0, 0.0).decode(&[1, 2]),
        None
    );
    assert_eq!(
        fmt(ValueType::U32, WordOrder::Big, 1.0, 0.0).decode(&[1]),
        None
    );
    let nan = f32::NAN.to_bits();
    let f = fmt(ValueType::F32, WordOrder::Big, 1.0, 0.0);
    assert_eq!(f.decode(&[(nan >> 16) as u16, nan as u16]), None);
}

#[test]
fn encoding_inverts_scale_and_checks_ranges() {
    use ValueType::*;
    use WordOrder::*;
    let ok: &[(RegisterFormat, f64, &[u16])] = &[
        (fmt(U16, Big, 0.1, 0.0), 21.5, &[215]),
        (fmt(I16, Big, 1.0, 0.0), -1.0, &[0xFFFF]),
        (fmt(I16, Big, 0.5, -40.0), -50.0, &[0xFFEC]),
        (fmt(U32, Big, 1.0, 0.0), 65538.0, &[1, 2]),
        (fmt(U32, Little, 1.0, 0.0), 65538.0, &[2, 1]),
        (fmt(I32, Big, 1.0, 0.0), -2.0, &[0xFFFF, 0xFFFE]),
        (fmt(F32, Big, 1.0, 0.0), 1.0, &[0x3F80, 0x0000]),
        (fmt(F32, Little, 1.0, 0.0), 1.0, &[0x0000, 0x3F80]),
    ];
    for (f, v, words) in ok {
        assert_eq!(f.encode(*v).as_deref(), Ok(*words), "{f:?} {v}");
    }
    let bad: &[(RegisterFormat, f64)] = &[
        (fmt(U16, Big, 1.0, 0.0), -1.0),
        (fmt(U16, Big, 1.0, 0.0), 65536.0),
        (fmt(U16, Big, 0.1, 0.0), 6553.6),
        (fmt(I16, Big, 1.0, 0.0), 32768.0),
        (fmt(I32, Big, 1.0, 0.0), 3e9),
        (fmt(F32, Big, 1.0, 0.0), 1e300),
        (fmt(U16, Big, 1.0, 0.0), f64::NAN),
    ];
    for (f, v) in bad {
        assert!(f.encode(*v).is_err(), "{f:?} {v} accepted");
    }
}

#[test]
fn reads_coalesce_adjacent_addresses_of_one_table_only() {
    let s = |table, address, width| Span {
        table,
        address,
        width,
    };
    let spans = [
        s(Table::InputRegister, 10, 2),
        s(Table::DiscreteInput, 3, 1),
        s(Table::InputRegister, 12, 1),
        s(Table::DiscreteInput, 4, 1),
        s(Table::InputRegister, 14, 1), // gap at 13: not bridged
        s(Table::Coil, 4, 1),           // same address, other table
        s(Table::DiscreteInput, 3, 1),  // overlap is fine
    ];
    let plan = plan_reads(&spans);
    let got: Vec<_> = plan
        .iter()
        .map(|b| (b.table, b.start, b.count, b.members.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Table::Coil, 4, 1, vec![5]),
            (Table::DiscreteInput, 3, 2, vec![1, 6, 3]),
            (Table::InputRegister, 10, 3, vec![0, 2]),
            (Table::InputRegister, 14, 1, vec![4]),
        ]
    );
}

#[test]
fn reads_respect_the_protocol_maximum_counts() {
    let regs: Vec<Span> = (0..130)
        .map(|a| Span {
            table: Table::HoldingRegister,
            address: a,
            width: 1,
        })
        .collect();
    let plan = plan_reads(&regs);
    assert_eq!(
        plan.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
        vec![(0, 125), (125, 5)]
    );
    let bits: Vec<Span> = (0..2001)
        .map(|a| Span {
            table: Table::Coil,
            address: a,
            width: 1,
        })
        .collect();
    let plan = plan_reads(&bits);
    assert_eq!(
        plan.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
        vec![(0, 2000), (2000, 1)]
    );
    // a 32-bit value never straddles two requests
    let mut spans: Vec<Span> = (0..124)
        .map(|a| Span {
            table: Table::InputRegister,
            address: a,
            width: 1,
        })
        .collect();
    spans.push(Span {
        table: Table::InputRegister,
        address: 124,
        width: 2,
    });
    let plan = plan_reads(&spans);
    assert_eq!(
        plan.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
        vec![(0, 124), (124, 2)]
    );
}

proptest! {
    #[test]
    fn every_point_lands_in_exactly_one_block_that_covers_it(
        raw in proptest::collection::vec((0u8..4, 0u16..300, 1u16..3), 0..200)
    ) {
        let tables = [Table::Coil, Table::DiscreteInput, Table::HoldingRegister, Table::InputRegister];
        let spans: Vec<Span> = raw.iter().map(|&(t, a, w)| {
            let table = tables[usize::from(t)];
            Span { table, address: a, width: if table.is_bit() { 1 } else { w } }
        }).collect();
        let plan = plan_reads(&spans);
        let mut seen = vec![0; spans.len()];
        for b in &plan {
            prop_assert!(b.count >= 1 && b.count <= b.table.max_read());
            for &m in &b.members {
                seen[m] += 1;
                let s = spans[m];
                prop_assert_eq!(s.table, b.table);
                prop_assert!(s.address >= b.start && s.address + s.width <= b.start + b.count);
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn integer_encodings_round_trip(v in -32768i32..32768, little in any::<bool>()) {
        let order = if little { WordOrder::Little } else { WordOrder::Big };
        for ty in [ValueType::I16, ValueType::I32] {
            let f = fmt(ty, order, 0.5, 3.0);
            let value = f64::from(v) * 0.5 + 3.0;
            let words = f.encode(value).expect("in range");
            prop_assert_eq!(f.decode(&words).map(|r| r.value), Some(value));
        }
    }

    #[test]
    fn decoding_arbitrary_words_never_panics(a in any::<u16>(), b in any::<u16>()) {
        for ty in [ValueType::U16, ValueType::I16, ValueType::U32, ValueType::I32, ValueType::F32] {
            let f = fmt(ty, WordOrder::Little, 0.1, -5.0);
            let _ = f.decode(&[a, b]);
            let _ = f.decode(&[a]);
        }
    }
}
