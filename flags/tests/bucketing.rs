//! Property tests of percentage bucketing: stable for a user, uniform over users, and monotone —
//! raising a canary from p% to q% keeps everyone already on the service there.

use flags::{Context, RouteMode, bucket, evaluate};
use proptest::prelude::*;
use serde_json::Value;

fn side(mode: RouteMode, user: &str) -> String {
    let flag = mode.to_flag("route.products", 1, "salt-1");
    evaluate(&flag, &Context::new(user))
        .value
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

proptest! {
    #[test]
    fn bucket_is_stable_and_in_range(key in "[a-z0-9.-]{1,20}", salt in "[a-z0-9]{0,8}", user in ".{0,40}") {
        let a = bucket(&key, &salt, None, &user);
        prop_assert_eq!(a, bucket(&key, &salt, None, &user));
        prop_assert!((0.0..=1.0).contains(&a));
    }

    #[test]
    fn raising_a_canary_never_moves_service_users_back(user in "[a-zA-Z0-9@._-]{1,32}", p in 0u32..=100, extra in 0u32..=100) {
        let q = (p + extra).min(100);
        let low = side(RouteMode::Canary { percent: f64::from(p) }, &user);
        let high = side(RouteMode::Canary { percent: f64::from(q) }, &user);
        if low == "service" {
            prop_assert_eq!(high, "service");
        }
    }
}

#[test]
fn buckets_are_uniform() {
    // 20,000 users over 10 deciles: each decile within ±10% of its expected 2,000.
    let mut deciles = [0u32; 10];
    for i in 0..20_000 {
        let b = bucket("route.orders", "s", None, &format!("user-{i}"));
        deciles[((b * 10.0) as usize).min(9)] += 1;
    }
    for (d, n) in deciles.iter().enumerate() {
        assert!((1800..=2200).contains(n), "decile {d} has {n}: {deciles:?}");
    }
}

#[test]
fn canary_share_follows_the_percentage() {
    for percent in [1.0, 10.0, 50.0, 90.0] {
        let on_service = (0..20_000)
            .filter(|i| side(RouteMode::Canary { percent }, &format!("u{i}")) == "service")
            .count() as f64;
        let share = on_service / 20_000.0 * 100.0;
        assert!(
            (share - percent).abs() < 1.0,
            "{percent}% canary served {share}%"
        );
    }
    assert_eq!(
        side(RouteMode::Canary { percent: 0.0 }, "anyone"),
        "monolith"
    );
    assert_eq!(
        side(RouteMode::Canary { percent: 100.0 }, "anyone"),
        "service"
    );
}
