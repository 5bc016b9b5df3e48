//! The opening every service shares: one policy and one set of texts.

use std::time::Duration;

use crate::common;

use wharf_core::Service;
use wharf_proto::message::{ClientHello, CommonRequest, Login};
use wharf_proto::{ErrorCode, PROTOCOL_VERSION, Password};
use wharf_server::Refusal;
use wharf_server::opening::Opening;
use wharf_server::opening::Step;

fn hello(version: u32) -> Option<CommonRequest> {
    Some(CommonRequest::Hello(ClientHello {
        version,
        client: "test".into(),
    }))
}

fn login(user: &str, password: &str) -> Option<CommonRequest> {
    Some(CommonRequest::Login(Login {
        user: user.into(),
        password: Password::new(password),
        key: None,
    }))
}

fn refusal(step: Step) -> Refusal {
    match step {
        Step::Refuse(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_then_login_with_one_set_of_texts_and_three_tries() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "ftp").await;
    let ip = common::HOME_IP;
    let mut o = Opening::new(Service::Ftp, "wharf-ftpd", 3, Duration::from_secs(10));

    let r = refusal(o.step(None, &env.auth, ip).await);
    assert_eq!(
        r,
        Refusal::new(ErrorCode::NotLoggedIn, "start with hello, then login")
    );
    let r = refusal(o.step(login("alice", "correct horse"), &env.auth, ip).await);
    assert_eq!(r.code, ErrorCode::NotLoggedIn);

    let Step::Hello(h) = o.step(hello(PROTOCOL_VERSION), &env.auth, ip).await else {
        panic!("no hello");
    };
    let server = format!("wharf-ftpd/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (h.version, h.server.as_str(), h.service.as_str()),
        (PROTOCOL_VERSION, server.as_str(), "ftp")
    );
    let r = refusal(o.step(hello(PROTOCOL_VERSION), &env.auth, ip).await);
    assert_eq!(
        r,
        Refusal::new(ErrorCode::BadRequest, "hello was already said; now login")
    );
    assert_eq!(
        refusal(o.step(None, &env.auth, ip).await),
        Refusal::not_logged_in()
    );

    // Two wrong passwords leave the connection open; the third closes it.
    for close in [false, false, true] {
        let r = refusal(o.step(login("alice", "wrong one"), &env.auth, ip).await);
        assert_eq!((r.code, r.close), (ErrorCode::AuthFailed, close), "{r:?}");
    }
}

#[tokio::test]
async fn another_version_is_refused_and_closes() {
    let env = common::env().await;
    let mut o = Opening::new(Service::Chat, "wharf-chatd", 3, Duration::from_secs(10));
    let r = refusal(
        o.step(hello(PROTOCOL_VERSION + 1), &env.auth, common::HOME_IP)
            .await,
    );
    assert_eq!(r.code, ErrorCode::UnsupportedVersion);
    assert!(r.close);
    assert!(r.message.contains("use a matching client"), "{}", r.message);
}

#[tokio::test]
async fn a_login_gives_the_user_and_its_session() {
    let env = common::env().await;
    env.add_user("alice", "correct horse", None, "exec").await;
    let mut o = Opening::new(Service::Exec, "wharf-execd", 3, Duration::from_secs(10));
    assert!(matches!(
        o.step(hello(PROTOCOL_VERSION), &env.auth, common::HOME_IP)
            .await,
        Step::Hello(_)
    ));
    let Step::LoggedIn(logged_in) = o
        .step(login("alice", "correct horse"), &env.auth, common::HOME_IP)
        .await
    else {
        panic!("not logged in");
    };
    let entered = *logged_in;
    assert_eq!(entered.user.name, "alice");
    {
        let standing = entered.standing.borrow();
        assert_eq!(
            (standing.name.as_str(), standing.exists, standing.locked),
            ("alice", true, false)
        );
    }
    assert_eq!(wharf_server::opening::login_ok(&entered.user).user, "alice");
}

#[test]
fn no_login_in_time_is_said_the_same_everywhere() {
    let o = Opening::new(Service::Exec, "wharf-execd", 3, Duration::from_secs(10));
    assert!(o.time_left() <= Duration::from_secs(10));
    assert_eq!(
        o.timed_out(),
        Refusal::closing(
            ErrorCode::Timeout,
            "no login within 10s; closing the connection"
        )
    );
}
