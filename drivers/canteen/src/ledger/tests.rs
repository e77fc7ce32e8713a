//! The authorisation rules and card-list changes, with an injected clock.

use chrono::TimeZone;

use super::*;
use crate::proto::CardKey;

fn rules() -> Rules {
    Rules {
        offset: FixedOffset::east_opt(8 * 3600).unwrap(),
        meals: vec![MealPeriod {
            name: "lunch".into(),
            start: NaiveTime::from_hms_opt(11, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(13, 30, 0).unwrap(),
            limit_cents: Some(3000),
        }],
        daily_limit_cents: Some(5000),
    }
}

/// 2026-12-03 at local (+08:00) hh:mm.
fn at(h: u32, m: u32) -> DateTime<Utc> {
    FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 12, 3, h, m, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn ledger(dir: &tempfile::TempDir) -> Ledger {
    let mut l = Ledger::open(&dir.path().join("c.db")).unwrap();
    let list = crate::sim::card_list(3, 4000);
    l.apply(&list, Some("1"), &rules(), at(8, 0)).unwrap();
    l
}

fn sale(terminal: &str, txn: u64, card: usize, amount: i64) -> SaleRequest {
    SaleRequest {
        terminal: terminal.into(),
        txn,
        card: crate::sim::cards(3).remove(card),
        amount_cents: amount,
        terminal_time: None,
    }
}

fn decide(l: &mut Ledger, r: &SaleRequest, now: DateTime<Utc>) -> Decision {
    l.decide(r, &rules(), now).unwrap().unwrap()
}

#[test]
fn an_approved_sale_debits_the_balance_to_the_cent_and_a_resend_returns_it_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir);
    let d = decide(&mut l, &sale("t1", 1, 0, 1250), at(11, 5));
    assert_eq!(
        (d.declined, d.balance_after, d.fresh),
        (None, Some(2750), true)
    );
    assert_eq!(d.meal.as_deref(), Some("lunch"));
    let again = decide(&mut l, &sale("t1", 1, 0, 1250), at(11, 6));
    assert_eq!(
        (again.declined, again.balance_after, again.fresh),
        (None, Some(2750), false)
    );
    assert_eq!(l.balance("S00001").unwrap(), Some(2750), "counted once");
}

#[test]
fn replays_and_reused_numbers_are_refused_not_decided() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir);
    decide(&mut l, &sale("t1", 5, 0, 100), at(11, 5));
    assert_eq!(
        l.decide(&sale("t1", 3, 0, 100), &rules(), at(11, 6))
            .unwrap(),
        Err(Refusal::Replayed { last: 5 })
    );
    assert_eq!(
        l.decide(&sale("t1", 5, 1, 100), &rules(), at(11, 6))
            .unwrap(),
        Err(Refusal::Conflict)
    );
    assert_eq!(
        l.decide(&sale("t1", 5, 0, 999), &rules(), at(11, 6))
            .unwrap(),
        Err(Refusal::Conflict)
    );
    // Another terminal has its own numbers.
    assert!(
        decide(&mut l, &sale("t2", 1, 0, 100), at(11, 6))
            .declined
            .is_none()
    );
    assert_eq!(l.balance("S00001").unwrap(), Some(3800));
}

#[test]
fn each_rule_declines_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir);
    let unknown = SaleRequest {
        card: CardKey::Number("999".into()),
        ..sale("t1", 1, 0, 100)
    };
    assert_eq!(
        decide(&mut l, &unknown, at(11, 0)).declined,
        Some(DeclineReason::CardUnknown)
    );
    assert_eq!(
        decide(&mut l, &sale("t1", 2, 0, 100), at(10, 59)).declined,
        Some(DeclineReason::OutsideMealPeriod)
    );
    assert_eq!(
        decide(&mut l, &sale("t1", 3, 0, 100), at(13, 30)).declined,
        Some(DeclineReason::OutsideMealPeriod),
        "the end is exclusive"
    );
    assert_eq!(
        decide(&mut l, &sale("t1", 4, 0, 4001), at(12, 0)).declined,
        Some(DeclineReason::InsufficientFunds)
    );
    assert!(
        decide(&mut l, &sale("t1", 5, 0, 2500), at(12, 0))
            .declined
            .is_none()
    );
    assert_eq!(
        decide(&mut l, &sale("t1", 6, 0, 600), at(12, 1)).declined,
        Some(DeclineReason::MealLimit),
        "2500 + 600 is over the 3000 lunch limit"
    );
    assert!(
        decide(&mut l, &sale("t1", 7, 0, 500), at(12, 2))
            .declined
            .is_none()
    );
    assert_eq!(l.balance("S00001").unwrap(), Some(1000));
    let lost = vec![Change::Card {
        id: "lost-1".into(),
        card_uid: Some("04000000000002".into()),
        card_no: None,
        account: "S00002".into(),
        status: "lost".into(),
        lost_at: Some(at(12, 30)),
    }];
    assert_eq!(
        l.apply(&lost, Some("2"), &rules(), at(12, 40)).unwrap(),
        vec![]
    );
    assert_eq!(
        decide(&mut l, &sale("t1", 8, 1, 100), at(12, 45)).declined,
        Some(DeclineReason::CardLost)
    );
    let frozen = vec![Change::Account {
        id: "f-3".into(),
        account: "S00003".into(),
        status: "frozen".into(),
        balance_cents: 0,
        daily_limit_cents: None,
        meal_limit_cents: None,
    }];
    l.apply(&frozen, None, &rules(), at(12, 46)).unwrap();
    assert_eq!(
        decide(&mut l, &sale("t1", 9, 2, 100), at(12, 47)).declined,
        Some(DeclineReason::AccountBlocked)
    );
    assert_eq!(
        l.balance("S00003").unwrap(),
        Some(4000),
        "a status change keeps the balance"
    );
}

#[test]
fn the_daily_limit_spans_meals_and_resets_the_next_local_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir);
    let mut r = rules();
    r.meals.clear();
    let topup = vec![Change::Credit {
        id: "top".into(),
        account: "S00001".into(),
        amount_cents: 6000,
    }];
    l.apply(&topup, None, &r, at(7, 0)).unwrap();
    let mut d = |txn, amount, now| {
        l.decide(&sale("t1", txn, 0, amount), &r, now)
            .unwrap()
            .unwrap()
    };
    assert!(d(1, 3000, at(8, 0)).declined.is_none());
    assert_eq!(
        d(2, 2001, at(18, 0)).declined,
        Some(DeclineReason::DailyLimit)
    );
    // 00:30 local on the 4th is 16:30 UTC on the 3rd: a new local day.
    let next = at(0, 30) + chrono::Duration::days(1);
    assert!(d(3, 900, next).declined.is_none());
}

/// A one-hour platform outage, in injected time: sales go on from the synced list; the
/// changes queued at the platform meanwhile apply after, and what they contradict becomes
/// conflicts, never a silent correction.
#[test]
fn an_hour_without_the_platform_keeps_selling_and_the_changes_after_it_raise_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir);
    let mut approved = 0i64;
    for i in 0..60u32 {
        let d = decide(
            &mut l,
            &sale("t1", u64::from(i) + 1, (i % 3) as usize, 50),
            at(11, 0) + chrono::Duration::minutes(i64::from(i)),
        );
        assert!(d.declined.is_none(), "minute {i}: {d:?}");
        approved += 50;
    }
    // The platform comes back: card 2 was reported lost at 11:30, and account 3 spent
    // 3950 at the school shop during the outage.
    let queued = vec![
        Change::Card {
            id: "p-7".into(),
            card_uid: Some("04000000000002".into()),
            card_no: None,
            account: "S00002".into(),
            status: "lost".into(),
            lost_at: Some(at(11, 30)),
        },
        Change::Debit {
            id: "p-8".into(),
            account: "S00003".into(),
            amount_cents: 3950,
        },
    ];
    let found = l.apply(&queued, Some("8"), &rules(), at(12, 0)).unwrap();
    let lost: Vec<_> = found
        .iter()
        .filter(|c| c.kind == "card_lost_after_sale")
        .collect();
    assert_eq!(lost.len(), 10, "sales on card 2 from 11:30 on: {found:#?}");
    let neg: Vec<_> = found
        .iter()
        .filter(|c| c.kind == "balance_negative")
        .collect();
    assert_eq!(neg.len(), 1);
    assert_eq!(neg[0].balance_cents, 4000 - 20 * 50 - 3950);
    assert_eq!(
        l.balance("S00003").unwrap(),
        Some(-950),
        "kept as found, not corrected"
    );
    // Applying the same changes again changes nothing.
    assert_eq!(
        l.apply(&queued, Some("8"), &rules(), at(12, 1)).unwrap(),
        vec![]
    );
    assert_eq!(l.cursor().unwrap().as_deref(), Some("8"));
    let rep = l.report("2026-12-03").unwrap();
    assert_eq!((rep.approved, rep.approved_cents), (60, approved));
    assert_eq!(rep.conflicts.len(), 11);
    assert_eq!(rep.unjournaled, 60, "nothing marked journaled in this test");
    assert_eq!(l.unjournaled_conflicts().unwrap().len(), 11);
}
