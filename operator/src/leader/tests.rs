use super::*;

const LEASE: Duration = Duration::from_secs(15);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// A lease held by `holder`, acquired at 0 and last renewed at `renewed`, with 4 transitions.
fn held(holder: &str, renewed: i64) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.into()),
        acquire_time: Some(MicroTime(at(0))),
        renew_time: Some(MicroTime(at(renewed))),
        lease_duration_seconds: Some(15),
        lease_transitions: Some(4),
        ..LeaseSpec::default()
    }
}

#[test]
fn no_lease_yet_is_acquired_with_no_transition() {
    let Decision::Acquire(spec) = decide(None, at(7), "a", LEASE) else {
        panic!("not acquired");
    };
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.acquire_time, Some(MicroTime(at(7))));
    assert_eq!(spec.renew_time, Some(MicroTime(at(7))));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));
}

#[test]
fn the_holder_renews_keeping_acquire_time_and_transitions() {
    // Even a lease of ours that has expired (a restarted container of the same pod) is renewed.
    for now in [5, 40] {
        let Decision::Renew(spec) = decide(Some(&held("a", 3)), at(now), "a", LEASE) else {
            panic!("not renewed at {now}");
        };
        assert_eq!(spec.renew_time, Some(MicroTime(at(now))));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    }
}

#[test]
fn a_valid_lease_of_another_is_followed_up_to_and_including_its_expiry() {
    for now in [3, 10, 18] {
        assert_eq!(
            decide(Some(&held("a", 3)), at(now), "b", LEASE),
            Decision::Follow { holder: "a".into() },
            "at {now}"
        );
    }
}

#[test]
fn an_expired_lease_is_taken_over_counting_a_transition() {
    let Decision::Acquire(spec) = decide(Some(&held("a", 3)), at(19), "b", LEASE) else {
        panic!("not taken over");
    };
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.acquire_time, Some(MicroTime(at(19))));
    assert_eq!(spec.renew_time, Some(MicroTime(at(19))));
    assert_eq!(spec.lease_transitions, Some(5));
}

#[test]
fn the_holders_own_duration_counts_not_ours() {
    let long = LeaseSpec {
        lease_duration_seconds: Some(60),
        ..held("a", 3)
    };
    assert!(matches!(
        decide(Some(&long), at(40), "b", LEASE),
        Decision::Follow { .. }
    ));
    assert!(matches!(
        decide(Some(&long), at(64), "b", LEASE),
        Decision::Acquire(_)
    ));
    let unset = LeaseSpec {
        lease_duration_seconds: None,
        ..held("a", 3)
    };
    assert!(matches!(
        decide(Some(&unset), at(18), "b", LEASE),
        Decision::Follow { .. }
    ));
    assert!(matches!(
        decide(Some(&unset), at(19), "b", LEASE),
        Decision::Acquire(_)
    ));
}

#[test]
fn acquire_time_stands_in_for_a_missing_renew_time_and_no_time_means_expired() {
    let acquired_only = LeaseSpec {
        renew_time: None,
        ..held("a", 0)
    };
    assert!(matches!(
        decide(Some(&acquired_only), at(10), "b", LEASE),
        Decision::Follow { .. }
    ));
    assert!(matches!(
        decide(Some(&acquired_only), at(16), "b", LEASE),
        Decision::Acquire(_)
    ));
    let timeless = LeaseSpec {
        acquire_time: None,
        renew_time: None,
        ..held("a", 0)
    };
    assert!(matches!(
        decide(Some(&timeless), at(1), "b", LEASE),
        Decision::Acquire(_)
    ));
}

#[test]
fn a_lease_without_holder_is_free() {
    for holder in [None, Some(String::new())] {
        let free = LeaseSpec {
            holder_identity: holder,
            ..held("x", 10)
        };
        let Decision::Acquire(spec) = decide(Some(&free), at(11), "b", LEASE) else {
            panic!("a free lease not acquired");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(5));
    }
}

#[test]
fn a_released_lease_is_free_at_once_and_keeps_its_other_fields() {
    let lease = LeaseSpec {
        strategy: Some("OldestEmulationVersion".into()),
        ..held("a", 3)
    };
    let free = released(&lease, at(5));
    assert_eq!(free.holder_identity, None);
    assert_eq!(free.lease_transitions, Some(4));
    assert_eq!(free.strategy.as_deref(), Some("OldestEmulationVersion"));
    let Decision::Acquire(spec) = decide(Some(&free), at(5), "b", LEASE) else {
        panic!("a released lease not acquired");
    };
    assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
}

#[test]
fn the_leader_gives_up_before_a_standby_may_take_over() {
    let config = |secs| LeaseConfig {
        name: "l".into(),
        namespace: "ns".into(),
        identity: "a".into(),
        duration: Duration::from_secs(secs),
    };
    // client-go's defaults at 15 s: retry 2 s, renew deadline 10 s.
    assert_eq!(config(15).retry_period(), Duration::from_secs(2));
    assert_eq!(config(15).renew_deadline(), Duration::from_secs(10));
    assert_eq!(config(3).retry_period(), Duration::from_secs(1));
    assert_eq!(config(3).renew_deadline(), Duration::from_secs(2));
    for secs in [1, 2, 3, 15, 60] {
        let c = config(secs);
        assert!(
            c.retry_period() < c.renew_deadline() && c.renew_deadline() < c.duration,
            "{secs} s"
        );
    }
}

#[test]
fn the_lease_namespace_is_the_first_one_set() {
    let some = |ns: &str| Some(ns.to_string());
    assert_eq!(lease_namespace(some("a"), some("b")), "a");
    assert_eq!(lease_namespace(None, some("b")), "b");
    assert_eq!(lease_namespace(some(""), some(" b\n")), "b");
    assert_eq!(first_namespace([None, some(""), some("c")]), some("c"));
    assert_eq!(first_namespace::<1>([None]), None);
}
