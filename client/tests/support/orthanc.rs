//! A real Orthanc with its DICOMweb plugin (Debian's `orthanc`, `orthanc-dicomweb`), started on
//! a free 127.0.0.1 port with its own storage folder and basic auth; for TLS, behind nginx
//! (Debian's `nginx-light`) as sites expose it: Debian 12's Orthanc 1.10.1 answers its own
//! `SslEnabled` port by crashing (SIGSEGV at the first handshake). Killed on drop. Absent: the
//! tests skip with the reason, unless HEAL_REQUIRE_ORTHANC=1. Shared by the client's PACS tests
//! and the coordinator's served ones (included by path: the two crates never depend on each
//! other).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub const USER: &str = "heal";
pub const PASSWORD: &str = "pacs-secret-7";
const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

pub struct Orthanc {
    child: Option<Child>,
    /// nginx terminating TLS in front of Orthanc
    proxy: Option<Child>,
    dir: PathBuf,
    /// Orthanc's own (plain HTTP) port
    orthanc_port: u16,
    /// The port clients use: Orthanc's, or nginx's with TLS.
    pub port: u16,
    /// PEM of the CA that signed its certificate, when it serves TLS.
    pub ca_pem: Option<String>,
}

/// Orthanc's binary, or why the test cannot run (a failure when HEAL_REQUIRE_ORTHANC=1).
pub fn binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/Orthanc", "/usr/bin/Orthanc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .filter(|_| Path::new(PLUGIN).exists());
    require(
        found,
        "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)",
    )
}

/// nginx, for TLS in front of Orthanc.
pub fn nginx() -> Option<PathBuf> {
    let found = Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists());
    require(
        found,
        "nginx is not installed (apt-get install nginx-light)",
    )
}

fn require(found: Option<PathBuf>, why: &str) -> Option<PathBuf> {
    if found.is_none() {
        assert!(
            std::env::var("HEAL_REQUIRE_ORTHANC").as_deref() != Ok("1"),
            "{why}, and HEAL_REQUIRE_ORTHANC=1"
        );
        eprintln!("skipped: {why}");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Orthanc {
    /// Starts Orthanc in `dir` (its storage and config), behind nginx with TLS when `tls` is
    /// nginx's path.
    pub fn start(bin: &Path, dir: &Path, tls: Option<&Path>) -> Self {
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let port = free_port();
        let config = serde_json::json!({
            "Name": "HEAL test PACS",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("storage"),
            "HttpPort": port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER: PASSWORD },
            "DicomServerEnabled": false,
            "HttpTimeout": 30,
            "Plugins": [PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        std::fs::write(dir.join("orthanc.json"), config.to_string()).unwrap();
        let mut o = Orthanc {
            child: None,
            proxy: None,
            dir: dir.to_path_buf(),
            orthanc_port: port,
            port,
            ca_pem: None,
        };
        if let Some(nginx) = tls {
            o.start_proxy(nginx);
        }
        o.spawn(bin);
        o
    }

    /// nginx on a free port, TLS with a certificate for 127.0.0.1 from a CA made here,
    /// forwarding to Orthanc.
    fn start_proxy(&mut self, nginx: &Path) {
        let ca = protocol::pki::Ca::new("HEAL test PACS CA").unwrap();
        let issued = ca.issue("127.0.0.1").unwrap();
        let d = &self.dir;
        std::fs::create_dir_all(d.join("nginx-tmp")).unwrap();
        std::fs::write(d.join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(d.join("key.pem"), &issued.key_pem).unwrap();
        self.port = free_port();
        let tmp = d.join("nginx-tmp").display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_max_body_size 0;\n\
             client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};\n\
             uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {d}/cert.pem;\n  ssl_certificate_key {d}/key.pem;\n\
             location / {{ proxy_pass http://127.0.0.1:{orthanc}; proxy_read_timeout 60s; }}\n }}\n}}\n",
            d = d.display(),
            port = self.port,
            orthanc = self.orthanc_port,
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        self.proxy = Some(
            Command::new(nginx)
                .arg("-p")
                .arg(d)
                .arg("-e")
                .arg(d.join("nginx-error.log"))
                .arg("-c")
                .arg(d.join("nginx.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        self.ca_pem = Some(ca.cert_pem().to_string());
    }

    fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("orthanc.log"))
            .unwrap();
        self.child = Some(
            Command::new(bin)
                .arg(self.dir.join("orthanc.json"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while let Err(e) = self.get("/system") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Orthanc did not answer within 60 s ({e}):\n{}\n{}",
                self.log(),
                std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
    }

    /// Orthanc stopped (nginx, if any, stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stopped and started again on the same port and storage.
    pub fn restart(&mut self, bin: &Path) {
        self.stop();
        self.spawn(bin);
    }

    pub fn scheme(&self) -> &str {
        if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn dicom_web(&self) -> String {
        format!("{}://127.0.0.1:{}/dicom-web", self.scheme(), self.port)
    }

    fn agent(&self) -> ureq::Agent {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(pem) = &self.ca_pem {
            let certs = ureq::tls::parse_pem(pem.as_bytes())
                .filter_map(|i| match i.unwrap() {
                    ureq::tls::PemItem::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)));
        }
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into()
    }

    fn auth() -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        format!("Basic {b}")
    }

    /// GET `path` (Orthanc's REST API or /dicom-web/…) with the credentials: status and body.
    pub fn get_with(&self, path: &str, accept: &str) -> Result<(u16, Vec<u8>, String), String> {
        let url = format!("{}://127.0.0.1:{}{path}", self.scheme(), self.port);
        let mut resp = self
            .agent()
            .get(&url)
            .header("Authorization", Self::auth())
            .header("Accept", accept)
            .call()
            .map_err(|e| e.to_string())?;
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok((resp.status().as_u16(), body, ct))
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        match self.get_with(path, "application/json")? {
            (200, body, _) => Ok(body),
            (s, _, _) => Err(format!("HTTP {s}")),
        }
    }

    /// Uploads a Part 10 file through Orthanc's own REST API (not the code under test).
    pub fn upload(&self, dicom: &[u8]) {
        let url = format!("{}://127.0.0.1:{}/instances", self.scheme(), self.port);
        let resp = self
            .agent()
            .post(&url)
            .header("Authorization", Self::auth())
            .header("Content-Type", "application/dicom")
            .send(dicom)
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "Orthanc refused an upload");
    }

    /// QIDO-RS through the plugin: the DICOM JSON objects at `path`.
    pub fn qido(&self, path: &str) -> Vec<serde_json::Value> {
        let (status, body, _) = self.get_with(path, "application/dicom+json").unwrap();
        assert!(status == 200 || status == 204, "QIDO {path}: HTTP {status}");
        if body.is_empty() {
            return Vec::new();
        }
        serde_json::from_slice(&body).unwrap()
    }

    /// Orthanc's own REST API: the files of every instance of `modality` (not through the
    /// code under test).
    pub fn files_of_modality(&self, modality: &str) -> Vec<Vec<u8>> {
        let url = format!("{}://127.0.0.1:{}/tools/find", self.scheme(), self.port);
        let query = serde_json::json!({"Level": "Instance", "Query": {"Modality": modality}});
        let mut resp = self
            .agent()
            .post(&url)
            .header("Authorization", Self::auth())
            .send(query.to_string().as_bytes())
            .unwrap();
        let ids: Vec<String> =
            serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        ids.iter()
            .map(
                |id| match self.get_with(&format!("/instances/{id}/file"), "application/dicom") {
                    Ok((200, body, _)) => body,
                    other => panic!("instance {id}: {other:?}"),
                },
            )
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut c) = self.proxy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
