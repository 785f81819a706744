//! Workload 10 (issue #16): TLS against plain HTTP in one run, for heartbeats (as
//! workload 1) and the 70 KB read (as workload 2). Three targets side by side,
//! measured in interleaved rounds like workloads 1–3: ours in plain HTTP, ours
//! serving TLS itself (rustls, `--tls-cert`/`--tls-key`), and ours in plain HTTP
//! behind nginx terminating TLS (upstream keep-alive). A throwaway CA and server
//! certificate are made with the `openssl` command line in bench/out/tls/ at run
//! time. Every server, nginx included, is pinned to core 0; wrk (which decrypts
//! with OpenSSL) runs on core 1.

use crate::util::*;
use crate::workloads::{hb_listing, listing, rounds, Row, ROUNDS};
use crate::{Check, Ctx, Section};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The files made by [`certificates`].
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Runs `openssl ARGS` in `dir`; fails with its stderr.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("run openssl (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 (ECDSA P-256, as
/// in the README's example), made afresh in `dir`.
fn certificates(dir: &Path) -> Result<Files> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    write(
        &dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-days", "2", "-subj", "/CN=hakken bench CA"]);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(dir, &csr)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    Ok(Files {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

/// nginx terminating TLS on `port` for ours on `upstream`: one worker, no master,
/// upstream keep-alive, and no cap on requests per connection on either side (nginx's
/// default of 1,000 would make wrk handshake again every 1,000 requests).
/// The proxy buffers hold a 70 KB answer in memory (the default 8 × 4 KiB would
/// spill it to a temporary file).
fn nginx_conf(dir: &Path, files: &Files, port: u16, upstream: u16) -> String {
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 upstream hakken {{\n    server 127.0.0.1:{upstream};\n    keepalive 32;\n\
         \x20   keepalive_requests 1000000;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n\
         \x20   ssl_certificate_key {key};\n    keepalive_requests 1000000;\n\
         \x20   location / {{\n      proxy_pass http://hakken;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         \x20     proxy_buffer_size 16k;\n      proxy_buffers 16 16k;\n    }}\n  }}\n}}\n",
        d = dir.display(),
        cert = files.cert.display(),
        key = files.key.display(),
    )
}

fn start_nginx(dir: &Path, files: &Files, upstream: u16) -> Result<Proc> {
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    write(&conf, &nginx_conf(dir, files, port, upstream))?;
    let child = Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log"))?)
        .spawn()
        .context("start nginx")?;
    Ok(Proc {
        name: "nginx".into(),
        child,
        port,
    })
}

/// Protocol and cipher suite a TLS target negotiates with OpenSSL's defaults (the
/// library wrk uses), as `openssl s_client` reports them.
fn negotiated(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-brief", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        return "?".into();
    };
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    format!("{}, {}", field("Protocol version:"), field("Ciphersuite:"))
}

fn label(target: Target) -> &'static str {
    match target {
        Target::Ours => "ours, plain HTTP",
        Target::OursTls => "ours, TLS (rustls)",
        Target::NginxTls => "nginx TLS → ours, plain HTTP",
        other => other.label(),
    }
}

fn table(rows: &[Row]) -> String {
    let plain = rows
        .iter()
        .find(|r| r.target == Target::Ours)
        .map(|r| r.wrk.rps())
        .unwrap_or(0.0);
    let mut md = String::from(
        "| target | req/s | of plain | p50 | p99 | max | errors | core 0 busy (servers) | core 1 busy (wrk) | server RSS after | note |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} % | {} | {} | {} | {} | {:.0} % | {:.0} % | {} | {} |",
            label(r.target),
            rps(r.wrk.rps()),
            if plain > 0.0 {
                r.wrk.rps() / plain * 100.0
            } else {
                0.0
            },
            ms(r.wrk.p50_us),
            ms(r.wrk.p99_us),
            ms(r.wrk.max_us),
            r.wrk.errors(),
            r.busy[0] * 100.0,
            r.busy[1] * 100.0,
            mib(r.rss_kb),
            r.note
        );
    }
    md
}

fn check(what: &str, rows: &[Row]) -> Check {
    let find = |t: Target| rows.iter().find(|r| r.target == t).map(|r| r.wrk.rps());
    match (
        find(Target::Ours),
        find(Target::OursTls),
        find(Target::NginxTls),
    ) {
        (Some(plain), Some(tls), nginx) if plain > 0.0 => {
            let ratio = tls / plain;
            let nginx = nginx
                .map(|n| format!("; nginx TLS → ours: {:.0} %", n / plain * 100.0))
                .unwrap_or_default();
            Check {
                what: what.into(),
                target: "TLS ≥ 80 % of plain HTTP (keep-alive)".into(),
                measured: format!(
                    "{:.0} % ({} vs {} req/s){nginx}",
                    ratio * 100.0,
                    rps(tls),
                    rps(plain)
                ),
                met: Some(ratio >= 0.8),
            }
        }
        _ => Check {
            what: what.into(),
            target: "TLS ≥ 80 % of plain HTTP (keep-alive)".into(),
            measured: "not measured".into(),
            met: None,
        },
    }
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    const N: usize = 62_500;
    const SERVICES: usize = 50;
    const LARGE: usize = 1_250;
    let dir = ctx.paths.out.join("tls");
    let files = certificates(&dir)?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.ca)?)?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()?;

    let plain = start_ours(&ctx.paths, "tls-plain", &CoordOpts::default()).await?;
    let tls_opts = CoordOpts {
        extra: vec![
            "--tls-cert".into(),
            files.cert.display().to_string(),
            "--tls-key".into(),
            files.key.display().to_string(),
        ],
        ..CoordOpts::default()
    };
    let tls = spawn_ours(&ctx.paths, "tls-tls", &tls_opts)?;
    wait_status_at(
        &client,
        &format!("https://{}", tls.addr()),
        Duration::from_secs(30),
    )
    .await?;
    let behind = start_ours(&ctx.paths, "tls-behind-nginx", &CoordOpts::default()).await?;
    let nginx = start_nginx(&dir, &files, behind.port)?;
    wait_status_at(
        &client,
        &format!("https://{}", nginx.addr()),
        Duration::from_secs(30),
    )
    .await?;
    let suites = format!(
        "ours: {}; nginx: {}",
        negotiated(tls.port),
        negotiated(nginx.port)
    );

    // Every target holds the 62,500 heartbeat listings and the 1,250 of `large`.
    let hb: Vec<String> = (0..N).map(|i| hb_listing(i, SERVICES)).collect();
    let large: Vec<String> = (0..LARGE).map(|i| listing("large", i)).collect();
    let mut notes = Vec::new();
    for (target, proc) in [
        (Target::Ours, &plain),
        (Target::OursTls, &tls),
        (Target::NginxTls, &nginx),
    ] {
        let base = format!("{}://{}", target.scheme(), proc.addr());
        let took = load_at(&client, &base, hb.clone(), 32).await?;
        load_at(&client, &base, large.clone(), 16).await?;
        notes.push(format!(
            "62,500 preloaded in {:.1} s over {}",
            took.as_secs_f64(),
            target.scheme()
        ));
    }
    let mut sizes = Vec::new();
    for (target, proc) in [
        (Target::Ours, &plain),
        (Target::OursTls, &tls),
        (Target::NginxTls, &nginx),
    ] {
        let url = format!("{}://{}/v1/listings/large", target.scheme(), proc.addr());
        let r = client.get(&url).send().await?;
        if !r.status().is_success() {
            bail!("GET {url} answered {}", r.status());
        }
        sizes.push(format!(
            "{}: {} bytes",
            label(target),
            r.bytes().await?.len()
        ));
    }

    let servers = vec![
        (Target::Ours, plain, String::new()),
        (Target::OursTls, tls, String::new()),
        (Target::NginxTls, nginx, String::new()),
    ];
    let env = vec![
        ("BENCH_LISTINGS".to_string(), N.to_string()),
        ("BENCH_SERVICES".to_string(), SERVICES.to_string()),
    ];
    let (mut hb_rows, hb_line) = rounds(
        ctx,
        &servers,
        "/v1/listings?heartbeat=true",
        "heartbeats.lua",
        env,
    )
    .await?;
    for (row, note) in hb_rows.iter_mut().zip(&notes) {
        row.note = format!("{note}; {}", row.note);
    }
    let (mut read_rows, read_line) =
        rounds(ctx, &servers, "/v1/listings/large", "get.lua", vec![]).await?;
    // nginx's row: its own memory and that of ours behind it.
    for row in hb_rows.iter_mut().chain(read_rows.iter_mut()) {
        if row.target == Target::NginxTls {
            row.rss_kb += behind.rss_kb();
            row.note = format!("RSS: nginx + ours; {}", row.note);
        }
    }

    let seconds = ROUNDS as u32 * (ctx.seconds / 2).max(3);
    let mut body = format!(
        "Ours in plain HTTP, ours serving TLS itself (`--tls-cert`/`--tls-key`: rustls with \
         the ring provider), and ours in plain HTTP behind nginx {nginx_version} terminating \
         TLS (one worker, `master_process off`, upstream `keepalive 32`, proxy buffers large \
         enough for the 70 KB answer), side by side in one run, measured in turn in \
         interleaved rounds ({ROUNDS} rounds, median shown; {seconds} s in all per target and \
         load). Every server — nginx too — is pinned to core 0, so each target has one core \
         for everything it does; wrk (one thread, 32 connections, OpenSSL {openssl}) runs on \
         core 1 and pays for decrypting. A throwaway CA and an ECDSA P-256 server certificate \
         are made by the `openssl` command line in bench/out/tls/ at each run (not in git). \
         Negotiated with OpenSSL's defaults ({suites}).\n\n\
         **Keep-alive.** wrk opens its 32 connections once per run and keeps them for the \
         whole run (nginx's `keepalive_requests` is raised from its default of 1,000 so that \
         it does not close them), so the TLS handshakes (32 per run) are excluded: these \
         numbers are the cost of encrypting and decrypting records, which is what the \
         issue's target is about. Clients that connect per request pay a handshake each \
         (ECDHE and an ECDSA signature) on top.\n\n\
         The same servers serve both loads: each holds the 62,500 heartbeat listings of \
         workload 1 and the 1,250 of `large` (preloaded over its own scheme). Core 0/1 busy \
         is the share of that core not idle during the median run (from /proc/stat; it \
         includes anything else the machine ran).\n\n\
         **Heartbeats.** As workload 1: `POST /v1/listings?heartbeat=true` rotating through \
         the 62,500 listings (bench/wrk/heartbeats.lua).\n\nCommand: `{hb_line}`\n\n",
        nginx_version = nginx_version(),
        openssl = openssl_version(),
    );
    body.push_str(&table(&hb_rows));
    let _ = write!(
        body,
        "\n**Large read.** As workload 2: `GET /v1/listings/large`, 1,250 listings. Body sizes: \
         {}.\n\nCommand: `{read_line}`\n\n",
        sizes.join(", ")
    );
    body.push_str(&table(&read_rows));
    body.push_str(include_str!("tls.md"));
    let checks = vec![
        check("10. TLS, heartbeats", &hb_rows),
        check("10. TLS, large read (70 KB)", &read_rows),
    ];
    drop(servers);
    drop(behind);
    Ok(Section {
        order: 10,
        title: "10. TLS".into(),
        measured_at: String::new(),
        body,
        checks,
    })
}

fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stderr);
            text.trim().rsplit('/').next().unwrap_or("?").to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

fn openssl_version() -> String {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}
