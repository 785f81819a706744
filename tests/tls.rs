//! TLS and mutual TLS (issue #16), with certificates made at test time (rcgen):
//!
//! - three coordinators gossip over TLS, and our client publishes to all of them
//!   through an `https://` address;
//! - the commands talk TLS (`--ca`), and mutual TLS (`--cert`, `--key`);
//! - mutual TLS refuses a client without a certificate (but not `/status` and
//!   `/ready`) and one with a certificate from another CA, and logs the subject
//!   of each write;
//! - a changed certificate is picked up by new connections while a held query on
//!   an old one carries on;
//! - each error says what is wrong: a CA we do not trust, an expired certificate,
//!   a name mismatch, a CA certificate served as the server's own, plain HTTP
//!   sent to the TLS port, TLS sent to a plain port,
//!   and bad files at start.

mod common;

use common::pki::{fresh_dir, Pair, Pki, Validity};
use common::process::CoordinatorProcess;
use common::{eventually, PATIENCE};
use hakken::coordinator::{Coordinator, CoordinatorConfig, CoordinatorError, ServerTls};
use hakken::remote::{Blocking, Remote, RemoteError};
use hakken::tls::ClientTls;
use hakken::{Client, ClientConfig, Listing};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hakken");

fn server_tls(pair: &Pair, client_ca: Option<&Pki>) -> ServerTls {
    ServerTls {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
        client_ca: client_ca.map(|pki| pki.ca.clone()),
    }
}

fn trusting(pki: &Pki) -> ClientTls {
    ClientTls {
        ca: Some(pki.ca.clone()),
        ..ClientTls::default()
    }
}

/// A coordinator serving TLS from `pair`, trusting `pki` for its peers.
async fn tls_coordinator(
    pki: &Pki,
    pair: &Pair,
    discovery: Option<String>,
    client_ca: Option<&Pki>,
) -> Coordinator {
    common::start(CoordinatorConfig {
        discovery_host: discovery,
        tls: Some(server_tls(pair, client_ca)),
        peer_tls: trusting(pki),
        ..common::config(200)
    })
    .await
}

fn remote(tls: &ClientTls) -> Remote {
    Remote::with_tls(Duration::from_secs(5), tls, true).expect("the TLS files are good")
}

async fn coordinators(remote: &Remote, addr: &str) -> Option<Vec<String>> {
    let answer = remote.coordinators(addr, None).await.ok()?;
    let mut hosts: Vec<String> = answer.value.iter().map(|p| p.host().to_owned()).collect();
    hosts.sort();
    Some(hosts)
}

#[tokio::test]
async fn three_coordinators_gossip_over_tls_and_our_client_publishes_to_all() {
    let pki = Pki::new("gossip");
    let pairs = [pki.server("a"), pki.server("b"), pki.server("c")];
    let a = tls_coordinator(&pki, &pairs[0], None, None).await;
    let b = tls_coordinator(&pki, &pairs[1], Some(a.host().to_owned()), None).await;
    let c = tls_coordinator(&pki, &pairs[2], Some(a.host().to_owned()), None).await;
    let mut all = vec![
        a.host().to_owned(),
        b.host().to_owned(),
        c.host().to_owned(),
    ];
    all.sort();
    let remote = remote(&trusting(&pki));
    for addr in &all {
        eventually(&format!("{addr} knows all three over TLS"), || async {
            (coordinators(&remote, addr).await.as_ref() == Some(&all)).then_some(())
        })
        .await;
    }

    let client = Client::new(
        ClientConfig::new(format!("https://{}", a.host()))
            .heartbeat_interval(Duration::from_millis(200))
            .poll_interval(Duration::from_millis(200))
            .tls(trusting(&pki)),
    );
    tokio::time::timeout(PATIENCE, client.start())
        .await
        .expect("start is bounded")
        .expect("the client starts over TLS");
    eventually("the client knows all three", || async {
        let mut known = client.coordinators();
        known.sort();
        (known == all).then_some(())
    })
    .await;
    client
        .publish(Listing::new("pay", "p1:80").unwrap())
        .await
        .unwrap();
    for addr in &all {
        eventually(&format!("{addr} holds the listing"), || async {
            let answer = remote.listings(addr, "pay", None).await.ok()?;
            (answer.value.len() == 1).then_some(())
        })
        .await;
    }
    client.close().await;
}

/// Runs `hakken ARGS` to its end: exit code, stdout, stderr.
async fn hakken(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(BIN);
    for var in [
        "HAKKEN_COORDINATOR",
        "HAKKEN_TOKEN",
        "HAKKEN_CA",
        "HAKKEN_CERT",
        "HAKKEN_KEY",
    ] {
        command.env_remove(var);
    }
    command
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("hakken {args:?} did not exit"))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_commands_talk_tls_and_mutual_tls() {
    let pki = Pki::new("commands");
    let coordinator = tls_coordinator(&pki, &pki.server("server"), None, Some(&pki)).await;
    let client = pki.leaf("client", "deploy-bot", &[], Validity::Current);
    remote(&ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
    })
    .publish(
        coordinator.host(),
        &Listing::new("pay", "p1:80").unwrap(),
        false,
    )
    .await
    .unwrap();
    let address = format!("https://{}", coordinator.host());
    let ca = pki.ca.to_str().unwrap();
    let (cert, key) = (client.cert.to_str().unwrap(), client.key.to_str().unwrap());

    let (code, out, err) = hakken(&[
        "listings",
        "pay",
        "--json",
        "--coordinator",
        &address,
        "--ca",
        ca,
        "--cert",
        cert,
        "--key",
        key,
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("p1:80"), "{out}");

    // Without a client certificate: refused, and told what to do.
    let (code, out, err) =
        hakken(&["listings", "pay", "--coordinator", &address, "--ca", ca]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("client certificate"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A certificate without its key is an argument error.
    let (code, _, err) =
        hakken(&["listings", "pay", "--coordinator", &address, "--cert", cert]).await;
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_or_with_one_from_another_ca() {
    let pki = Pki::new("mtls");
    let stranger = Pki::new("stranger");
    let coordinator = tls_coordinator(&pki, &pki.server("server"), None, Some(&pki)).await;
    let addr = coordinator.host();
    let listing = Listing::new("pay", "p1:80").unwrap();

    // No certificate: /status and /ready answer, every other route is refused.
    let anonymous = remote(&trusting(&pki));
    anonymous.status(addr).await.expect("/status stays open");
    match anonymous.listings(addr, "pay", None).await {
        Err(RemoteError::Status {
            status: 403, body, ..
        }) => {
            assert!(body.contains("client certificate"), "{body}")
        }
        other => panic!("a read without a certificate: {other:?}"),
    }
    assert!(matches!(
        anonymous.publish(addr, &listing, false).await,
        Err(RemoteError::Status { status: 403, .. })
    ));
    common::http(); // installs the provider for the raw check of /ready
    let ready = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap()])
        .build()
        .unwrap()
        .get(format!("https://{addr}/ready"))
        .send()
        .await
        .unwrap();
    assert_ne!(ready.status().as_u16(), 403, "/ready stays open");

    // A certificate from another CA fails the handshake, and says so.
    let foreign = stranger.leaf("client", "intruder", &[], Validity::Current);
    let error = remote(&ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(foreign.cert.clone()),
        key: Some(foreign.key.clone()),
    })
    .publish(addr, &listing, false)
    .await
    .expect_err("a foreign certificate is refused");
    assert!(
        error.to_string().contains("refused our client certificate"),
        "{error}"
    );

    // One from the CA is taken.
    let member = pki.leaf("client", "billing", &[], Validity::Current);
    let admitted = remote(&ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(member.cert.clone()),
        key: Some(member.key.clone()),
    });
    admitted.publish(addr, &listing, false).await.unwrap();
    assert_eq!(
        admitted
            .listings(addr, "pay", None)
            .await
            .unwrap()
            .value
            .len(),
        1
    );
}

#[tokio::test]
async fn writes_are_logged_with_the_certificate_subject() {
    let pki = Pki::new("audit");
    let server = pki.server("server");
    let (cert, key, ca) = (
        server.cert.to_str().unwrap(),
        server.key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    let process = CoordinatorProcess::loopback(&[
        "--announce-host",
        "127.0.0.1",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-client-ca",
        ca,
    ])
    .await;
    let member = pki.leaf("client", "billing-publisher", &[], Validity::Current);
    remote(&ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(member.cert.clone()),
        key: Some(member.key.clone()),
    })
    .publish(
        &process.address(),
        &Listing::new("pay", "p1:80").unwrap(),
        false,
    )
    .await
    .unwrap();
    eventually("the write is logged with its subject", || async {
        process
            .logs()
            .iter()
            .any(|line| {
                line.contains("write by client certificate")
                    && line.contains("CN=billing-publisher")
                    && line.contains("/v1/listings")
                    && line.contains("\"status\":201")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_changed_certificate_is_picked_up_without_dropping_connections() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let pair = first.server("server");
    let coordinator = tls_coordinator(&first, &pair, None, None).await;
    let addr = coordinator.host().to_owned();
    let old = remote(&trusting(&first));
    let new = remote(&trusting(&second));
    let error = new.status(&addr).await.expect_err("not trusted yet");
    assert!(
        error.to_string().contains("not signed by a CA we trust"),
        "{error}"
    );

    // A held query on a connection made with the first certificate.
    let index = old
        .listings(&addr, "pay", None)
        .await
        .unwrap()
        .index
        .expect("our coordinator sends an index");
    let held = {
        let old = old.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            old.listings(
                &addr,
                "pay",
                Some(Blocking {
                    index,
                    wait: Duration::from_secs(60),
                }),
            )
            .await
        })
    };
    // The certificate of the second CA replaces the first's, in the same files.
    let replaced = second.server("replacement");
    std::fs::copy(&replaced.key, &pair.key).unwrap();
    std::fs::copy(&replaced.cert, &pair.cert).unwrap();
    eventually("new connections get the new certificate", || async {
        new.status(&addr).await.ok()
    })
    .await;

    // The held query, on its old connection, still gets the change.
    new.publish(&addr, &Listing::new("pay", "p1:80").unwrap(), false)
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, held)
        .await
        .expect("the held query returns")
        .unwrap()
        .expect("its connection was not dropped");
    assert_eq!(answer.value.len(), 1);
}

#[tokio::test]
async fn each_error_says_what_is_wrong() {
    let pki = Pki::new("errors");
    let stranger = Pki::new("stranger");
    let good = tls_coordinator(&pki, &pki.server("good"), None, None).await;
    let expired = {
        let pair = pki.leaf("expired", "expired", &["127.0.0.1"], Validity::Expired);
        tls_coordinator(&pki, &pair, None, None).await
    };
    let misnamed = {
        let pair = pki.leaf(
            "misnamed",
            "misnamed",
            &["other.example"],
            Validity::Current,
        );
        tls_coordinator(&pki, &pair, None, None).await
    };
    let plain = common::start(common::config(200)).await;
    let self_signed = common::pki::ca_as_server("self-signed");
    let ca_as_server = common::start(CoordinatorConfig {
        tls: Some(server_tls(&self_signed, None)),
        ..common::config(200)
    })
    .await;
    let trusted = remote(&trusting(&pki));
    let message = |result: Result<(), RemoteError>| result.expect_err("fails").to_string();

    let wrong_ca = message(remote(&trusting(&stranger)).status(good.host()).await);
    assert!(
        wrong_ca.contains("not signed by a CA we trust") && wrong_ca.contains("--ca"),
        "{wrong_ca}"
    );
    let old = message(trusted.status(expired.host()).await);
    assert!(old.contains("expired"), "{old}");
    let name = message(trusted.status(misnamed.host()).await);
    assert!(name.contains("not valid for this name"), "{name}");
    let plain_to_tls = message(
        Remote::new(Duration::from_secs(5))
            .status(good.host())
            .await,
    );
    assert!(
        plain_to_tls.contains("speaks TLS") && plain_to_tls.contains("https://"),
        "{plain_to_tls}"
    );
    let tls_to_plain = message(trusted.status(plain.host()).await);
    assert!(
        tls_to_plain.contains("does not speak TLS"),
        "{tls_to_plain}"
    );
    let ca_as_own = message(
        remote(&ClientTls {
            ca: Some(self_signed.cert.clone()),
            ..ClientTls::default()
        })
        .status(ca_as_server.host())
        .await,
    );
    assert!(
        ca_as_own.contains("a CA certificate, not a server certificate"),
        "{ca_as_own}"
    );
    for text in [
        &wrong_ca,
        &old,
        &name,
        &plain_to_tls,
        &tls_to_plain,
        &ca_as_own,
    ] {
        assert!(!text.contains("Other("), "no Rust debug output: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    // The commands say the same, in one line.
    let (code, _, err) = hakken(&[
        "listings",
        "pay",
        "--coordinator",
        &format!("https://{}", expired.host()),
        "--ca",
        pki.ca.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("expired") && err.trim().lines().count() == 1,
        "{err}"
    );

    // Bad files at start: each named, with its cause.
    let dir = fresh_dir("bad-files");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.join("missing.pem");
    let pair = pki.server("fine");
    for (cert, key, expected) in [
        (
            missing.clone(),
            pair.key.clone(),
            "cannot read the certificate",
        ),
        (
            garbage.clone(),
            pair.key.clone(),
            "holds no PEM CERTIFICATE",
        ),
        (
            pair.cert.clone(),
            garbage.clone(),
            "holds no PEM PRIVATE KEY",
        ),
    ] {
        let config = CoordinatorConfig {
            tls: Some(ServerTls {
                cert,
                key,
                client_ca: None,
            }),
            ..common::config(200)
        };
        match Coordinator::bind("127.0.0.1:0", config).await {
            Err(error @ CoordinatorError::Tls(_)) => {
                assert!(error.to_string().contains(expected), "{error}")
            }
            Err(other) => panic!("expected a TLS error, got {other}"),
            Ok(_) => panic!("started with bad TLS files ({expected})"),
        }
    }
}

#[tokio::test]
async fn a_tls_port_over_its_connection_cap_says_so_in_tls() {
    let pki = Pki::new("cap");
    let coordinator = common::start(CoordinatorConfig {
        tls: Some(server_tls(&pki.server("server"), None)),
        max_connections: 1,
        ..common::config(200)
    })
    .await;
    // One connection that never says hello holds the only slot.
    let _holder = tokio::net::TcpStream::connect(coordinator.local_addr())
        .await
        .unwrap();
    let remote = remote(&trusting(&pki));
    let error = eventually("a refusal past the cap", || async {
        remote.status(coordinator.host()).await.err()
    })
    .await;
    let text = error.to_string();
    assert!(text.contains("over its connection limit"), "{text}");
    assert!(!text.contains("does not speak TLS"), "{text}");
}

#[tokio::test]
async fn a_renewed_client_certificate_is_presented_without_a_restart() {
    let pki = Pki::new("renew");
    let stranger = Pki::new("renew-stranger");
    let coordinator = tls_coordinator(&pki, &pki.server("server"), None, Some(&pki)).await;
    // The client's files first hold a certificate the coordinator refuses.
    let files = stranger.leaf("client", "old", &[], Validity::Current);
    let client = remote(&ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(files.cert.clone()),
        key: Some(files.key.clone()),
    });
    let listing = Listing::new("pay", "p1:80").unwrap();
    assert!(client
        .publish(coordinator.host(), &listing, false)
        .await
        .is_err());
    // Renewed in place, by the right CA.
    let renewed = pki.leaf("renewed", "renewed", &[], Validity::Current);
    std::fs::copy(&renewed.key, &files.key).unwrap();
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    eventually("the renewed certificate is presented", || async {
        client
            .publish(coordinator.host(), &listing, false)
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn streams_are_served_over_tls_and_end_cleanly_at_shutdown() {
    let pki = Pki::new("streams");
    let a = tls_coordinator(&pki, &pki.server("a"), None, None).await;
    let addr = a.host().to_owned();
    let remote = remote(&trusting(&pki));
    let mut events = common::open_stream(&remote, &addr, "pay").await;
    assert!(events.next().await.unwrap().value.is_empty());
    remote
        .publish(&addr, &Listing::new("pay", "p1:80").unwrap(), false)
        .await
        .unwrap();
    let change = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("the change comes")
        .unwrap();
    assert_eq!(change.value[0].host(), "p1:80");
    tokio::time::timeout(PATIENCE, a.shutdown())
        .await
        .expect("shutdown is not held up by a stream over TLS")
        .unwrap();
    let end = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("the stream ends at shutdown");
    assert!(
        matches!(end, Err(RemoteError::Ended { .. })),
        "ended cleanly, not cut: {end:?}"
    );
}
