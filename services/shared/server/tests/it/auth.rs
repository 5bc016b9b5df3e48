//! Authentication: the right answers in the right order, and lockout.

use crate::common;

use std::time::Duration;

use wharf_core::Password;
use wharf_core::Service;
use wharf_proto::ErrorCode;
use wharf_store::AuthConfig;
use wharf_store::Authenticator;
use wharf_store::Error;

#[tokio::test]
async fn right_password_logs_in_and_records_the_time() {
    for env in common::envs().await {
        env.add_user("alice", "correct horse", None, "ftp").await;
        let user = env.login("alice", "correct horse").await.expect("login");
        assert_eq!(user.name, "alice");
        let stored = env.store.require_user("alice").await.expect("alice");
        assert!(stored.last_login_at.is_some());
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    for env in common::envs().await {
        env.add_user("alice", "correct horse", None, "ftp").await;
        let wrong = env.login("alice", "wrong horse").await;
        let unknown = env.login("mallory", "correct horse").await;
        let invalid = env.login("../etc", "x").await;
        for result in [&wrong, &unknown, &invalid] {
            match result {
                Err(e @ Error::AuthFailed) => {
                    assert_eq!(e.to_string(), "wrong user name or password")
                }
                other => panic!("expected AuthFailed, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn locked_account_and_missing_right_are_refused_after_the_password() {
    for env in common::envs().await {
        env.add_user("alice", "correct horse", None, "ftp,chat")
            .await;
        let pw = Password::new("correct horse");
        let no_exec = env
            .auth
            .authenticate("alice", &pw, Service::Exec, common::HOME_IP)
            .await;
        match no_exec {
            Err(e @ Error::NotPermitted { .. }) => {
                assert!(
                    e.to_string().contains("admin-cli user grant alice exec"),
                    "{e}"
                )
            }
            other => panic!("expected NotPermitted, got {other:?}"),
        }
        env.store.set_locked("alice", true).await.expect("lock");
        assert!(matches!(
            env.auth
                .authenticate("alice", &pw, Service::Ftp, common::HOME_IP)
                .await,
            Err(Error::AccountLocked(_))
        ));
        // A wrong password never learns that the account is locked.
        assert!(matches!(
            env.login("alice", "guess1234").await,
            Err(Error::AuthFailed)
        ));
    }
}

fn ip(a: u8, b: u8) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(10, 0, a, b).into()
}

#[tokio::test]
async fn strangers_failures_never_stop_the_right_password_from_a_clean_address() {
    for env in common::envs().await {
        env.add_user("alice", "correct horse", None, "ftp").await;
        // 8 wrong guesses at alice from 8 addresses: no hard lock.
        for i in 0..8 {
            assert!(matches!(
                env.login_from("alice", "nope nope", ip(1, i)).await,
                Err(Error::AuthFailed)
            ));
        }
        // The name is slowed, within bounds a person does not mind.
        let delay = env.auth.name_delay("alice").await.expect("delay");
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_millis(1500),
            "{delay:?}"
        );
        env.login("alice", "correct horse")
            .await
            .expect("the right password from a clean address");
        // Success forgets only that address's failures: the attack still counts.
        assert!(env.auth.name_delay("alice").await.expect("delay") > Duration::ZERO);
    }
}

#[tokio::test]
async fn a_distributed_guess_on_one_name_slows_down_more_and_more() {
    for env in common::envs().await {
        // The default shape (5 free, then 100 ms doubling to 1.5 s), a tenth
        // as long, so the test does not sleep through it.
        let auth = Authenticator::new(
            env.store.clone(),
            AuthConfig {
                name_delay_step: Duration::from_millis(10),
                name_delay_max: Duration::from_millis(150),
                ..AuthConfig::default()
            },
        )
        .await
        .expect("auth");
        let mut last = Duration::ZERO;
        let mut delays = Vec::new();
        for i in 0..10 {
            let guess = Password::new("guess guess");
            let _ = auth
                .authenticate("bob", &guess, Service::Ftp, ip(2, i))
                .await;
            let d = auth.name_delay("bob").await.expect("delay");
            assert!(d >= last, "the delay never shrinks: {delays:?}");
            last = d;
            delays.push(d);
        }
        assert_eq!(delays[..5], [Duration::ZERO; 5], "{delays:?}");
        assert_eq!(delays[5], Duration::from_millis(10));
        assert_eq!(delays[6], Duration::from_millis(20));
        assert_eq!(delays[9], Duration::from_millis(150), "capped");
        let defaults = AuthConfig::default();
        assert_eq!(defaults.name_delay_step, Duration::from_millis(100));
        assert_eq!(defaults.name_delay_max, Duration::from_millis(1500));
    }
}

#[tokio::test]
async fn a_spray_from_one_address_is_rate_limited_there_only() {
    for env in common::envs().await {
        env.add_user("alice", "correct horse", None, "ftp").await;
        // 10 names, one password each, from one address.
        for i in 0..10 {
            assert!(matches!(
                env.login_from(&format!("user{i}"), "Summer2026!", ip(3, 3))
                    .await,
                Err(Error::AuthFailed)
            ));
        }
        // The 11th try from there is refused without looking, even a right one.
        match env.login_from("alice", "correct horse", ip(3, 3)).await {
            Err(e @ Error::RateLimited { .. }) => {
                let Error::RateLimited { retry_after } = &e else {
                    unreachable!()
                };
                assert!(
                    *retry_after > Duration::from_secs(50)
                        && *retry_after <= Duration::from_secs(60),
                    "{retry_after:?}"
                );
                assert_eq!(e.code(), ErrorCode::RateLimited);
                assert!(e.to_string().contains("try again in"), "{e}");
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        // Another address is not affected, nor is the IPv6 neighbour's /64.
        env.login_from("alice", "correct horse", ip(3, 4))
            .await
            .expect("from elsewhere");
    }
}

#[tokio::test]
async fn the_penalty_grows_with_each_burst() {
    for env in common::envs().await {
        let policy = AuthConfig {
            source_max_failures: 3,
            source_window: Duration::from_secs(30),
            source_max_penalty: Duration::from_secs(100),
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(env.store.clone(), policy)
            .await
            .expect("auth");
        let wrong = Password::new("nope nope");
        let mut waits = Vec::new();
        for (n, earlier_bursts) in [0i64, 1, 2, 5].into_iter().enumerate() {
            let from = ip(4, n as u8);
            let key = wharf_store::auth::source_key(from);
            // Bursts this address made hours ago (each sat out its penalty).
            let hours_ago = wharf_core::time::now_ms() - 3 * 3600 * 1000;
            for i in 0..earlier_bursts * 3 {
                env.store
                    .record_failure("x", &key, hours_ago + i, 0)
                    .await
                    .expect("record");
            }
            for _ in 0..3 {
                let tried = auth.authenticate("x", &wrong, Service::Ftp, from).await;
                assert!(matches!(tried, Err(Error::AuthFailed)), "{tried:?}");
            }
            let Err(Error::RateLimited { retry_after }) =
                auth.authenticate("x", &wrong, Service::Ftp, from).await
            else {
                panic!("not limited after a burst");
            };
            waits.push(retry_after.as_secs());
        }
        // One window, then doubling with each burst, up to the maximum; told
        // in whole seconds, rounded up.
        assert!((29..=30).contains(&waits[0]), "{waits:?}");
        assert!((59..=60).contains(&waits[1]), "{waits:?}");
        assert!(
            (99..=100).contains(&waits[2]),
            "4 windows, capped: {waits:?}"
        );
        assert!((99..=100).contains(&waits[3]), "capped: {waits:?}");
    }
}

#[test]
fn ipv6_sources_count_per_64() {
    use wharf_store::auth::source_key;
    let a: std::net::IpAddr = "2001:db8:1:2::1".parse().expect("ip");
    let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let c: std::net::IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
    assert_eq!(source_key(a), source_key(b));
    assert_ne!(source_key(a), source_key(c));
    assert_eq!(source_key(mapped), "10.0.0.1");
}

#[tokio::test]
async fn weak_passwords_are_refused_when_set() {
    for (pw, why) in [
        ("", "empty"),
        ("short", "at least 8"),
        (&"x".repeat(1025) as &str, "at most 1024"),
    ] {
        match wharf_store::auth::hash_password(&Password::new(pw)).await {
            Err(e @ Error::WeakPassword(_)) => assert!(e.to_string().contains(why), "{e}"),
            other => panic!("expected WeakPassword, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn users_change_their_own_password_knowing_the_old_one() {
    for env in common::envs().await {
        env.add_user("alice", "correct horse", None, "ftp").await;
        let change = |old: &str, new: &str| {
            let (old, new) = (Password::new(old), Password::new(new));
            let auth = env.auth.clone();
            async move {
                auth.change_password("alice", &old, &new, Service::Ftp, common::HOME_IP)
                    .await
            }
        };
        // The old password is checked as a login is: wrong is wrong, and
        // counts as a failure.
        assert!(matches!(
            change("wrong horse", "battery staple").await,
            Err(Error::AuthFailed)
        ));
        // The new one meets the policy and is new.
        for (new, why) in [
            ("short", "at least 8 characters"),
            ("correct horse", "the same as the old one"),
        ] {
            match change("correct horse", new).await {
                Err(e @ Error::WeakPassword(_)) => {
                    assert_eq!(e.code(), ErrorCode::BadRequest);
                    assert!(e.to_string().contains(why), "{e}");
                }
                other => panic!("expected WeakPassword, got {other:?}"),
            }
        }
        change("correct horse", "battery staple")
            .await
            .expect("changed");
        assert!(env.login("alice", "correct horse").await.is_err());
        assert!(env.login("alice", "battery staple").await.is_ok());
    }
}
