//! Authentication: the right answers in the right order, and lockout.

mod common;

use std::time::Duration;

use wharf_core::{AuthConfig, Authenticator, Error, Password, Service};

#[tokio::test]
async fn right_password_logs_in_and_records_the_time() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    let user = env.login("alice", "correct horse").await.expect("login");
    assert_eq!(user.name, "alice");
    let stored = env.store.require_user("alice").await.expect("alice");
    assert!(stored.last_login_at.is_some());
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    let wrong = env.login("alice", "wrong horse").await;
    let unknown = env.login("mallory", "correct horse").await;
    let invalid = env.login("../etc", "x").await;
    for result in [&wrong, &unknown, &invalid] {
        match result {
            Err(e @ Error::AuthFailed) => assert_eq!(e.to_string(), "wrong user name or password"),
            other => panic!("expected AuthFailed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn locked_account_and_missing_right_are_refused_after_the_password() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp,chat")
        .await;
    let pw = Password::new("correct horse");
    let no_exec = env.auth.authenticate("alice", &pw, Service::Exec).await;
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
        env.auth.authenticate("alice", &pw, Service::Ftp).await,
        Err(Error::AccountLocked(_))
    ));
    // A wrong password never learns that the account is locked.
    assert!(matches!(
        env.login("alice", "guess1234").await,
        Err(Error::AuthFailed)
    ));
}

#[tokio::test]
async fn five_failures_lock_out_even_the_right_password_until_cleared() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    for _ in 0..5 {
        assert!(matches!(
            env.login("alice", "nope nope").await,
            Err(Error::AuthFailed)
        ));
    }
    let right = env.login("alice", "correct horse").await;
    match right {
        Err(e @ Error::LockedOut { .. }) => {
            let Error::LockedOut { retry_after, .. } = &e else {
                unreachable!()
            };
            assert!(
                *retry_after > Duration::from_secs(14 * 60)
                    && *retry_after <= Duration::from_secs(15 * 60)
            );
            assert!(e.to_string().contains("admin-cli user unlock alice"), "{e}");
        }
        other => panic!("expected LockedOut, got {other:?}"),
    }
    // Unknown names lock out the same way, so lockout reveals nothing.
    env.fail_logins("ghost", 5).await;
    assert!(matches!(
        env.login("ghost", "nope nope").await,
        Err(Error::LockedOut { .. })
    ));
    // What `admin-cli user unlock` does.
    env.store.clear_failures("alice").await.expect("clear");
    env.login("alice", "correct horse")
        .await
        .expect("login after unlock");
}

#[tokio::test]
async fn success_resets_the_failure_count() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    env.fail_logins("alice", 4).await;
    env.login("alice", "correct horse").await.expect("login");
    env.fail_logins("alice", 4).await;
    env.login("alice", "correct horse")
        .await
        .expect("still not locked");
}

#[tokio::test]
async fn lockout_threshold_is_configurable() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    let strict = Authenticator::new(
        env.store.clone(),
        AuthConfig {
            max_failures: 1,
            ..AuthConfig::default()
        },
    )
    .await
    .expect("auth");
    let _ = strict
        .authenticate("alice", &Password::new("nope nope"), Service::Ftp)
        .await;
    assert!(matches!(
        strict
            .authenticate("alice", &Password::new("correct horse"), Service::Ftp)
            .await,
        Err(Error::LockedOut { .. })
    ));
}

#[tokio::test]
async fn weak_passwords_are_refused_when_set() {
    for (pw, why) in [
        ("", "empty"),
        ("short", "at least 8"),
        (&"x".repeat(1025) as &str, "at most 1024"),
    ] {
        match wharf_core::auth::hash_password(&Password::new(pw)).await {
            Err(e @ Error::WeakPassword(_)) => assert!(e.to_string().contains(why), "{e}"),
            other => panic!("expected WeakPassword, got {other:?}"),
        }
    }
}
