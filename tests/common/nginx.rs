//! nginx in front of coordinators, running `deploy/nginx-hakken.conf` (with the
//! test's upstreams and listen address), in the foreground on a free port; killed
//! and its files removed when dropped. Needs nginx (`scripts/test` installs
//! Debian's nginx-light when it is missing).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const NGINX: &str = "/usr/sbin/nginx";

/// nginx in the foreground with `deploy/nginx-hakken.conf`, on a free port.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    listen: String,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The deploy file with the test's upstreams and listen address.
fn site_config(upstreams: &[String], listen: &str, port: u16) -> String {
    let deploy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx-hakken.conf"
    ))
    .expect("deploy/nginx-hakken.conf");
    let mut out = String::new();
    let mut servers_written = false;
    for line in deploy.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server coordinator-") {
            if !servers_written {
                for upstream in upstreams {
                    out.push_str(&format!(
                        "    server {upstream} max_fails=1 fail_timeout=2s;\n"
                    ));
                }
                servers_written = true;
            }
        } else if trimmed.starts_with("listen 8082;") {
            out.push_str(&format!("    listen {listen}:{port};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers_written, "the deploy file has upstream servers");
    out
}

impl Nginx {
    /// Starts nginx over `upstreams`; tries random ports until one is free.
    pub async fn start(upstreams: &[String], listen: &str) -> Nginx {
        assert!(
            std::path::Path::new(NGINX).exists(),
            "this test needs nginx at {NGINX}: run scripts/test, or apt-get install nginx-light"
        );
        for attempt in 0..20 {
            let port = fastrand::u16(20_000..60_000);
            let dir = std::env::temp_dir().join(format!(
                "hakken-nginx-{}-{port}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("site.conf"), site_config(upstreams, listen, port)).unwrap();
            let main = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                   include {d}/site.conf;\n}}\n",
                d = dir.display()
            );
            std::fs::write(dir.join("nginx.conf"), main).unwrap();
            let mut child = Command::new(NGINX)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-p")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("nginx starts");
            // nginx writes its pid file only once its sockets are bound; a port
            // someone else holds makes it exit instead.
            let pid_file = dir.join("nginx.pid");
            let pid = child.id().expect("running").to_string();
            let deadline = tokio::time::Instant::now() + super::PATIENCE;
            let up = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
                if written.trim() == pid {
                    break true;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nginx neither listens nor exits"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if up {
                return Nginx {
                    child,
                    dir,
                    listen: listen.to_owned(),
                    port,
                };
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("nginx did not start on any of 20 random ports");
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.listen, self.port)
    }
}
