//! The PACS over DICOMweb (PS3.18) with ureq and rustls: QIDO-RS finds series, WADO-RS fetches a
//! series' instances (multipart/related, read by multer), STOW-RS stores a report. Every answer
//! is bounded in size, every UID checked, and passing failures retried with a growing pause.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::FutureExt as _;
use tracing::{debug, warn};
use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::Pacs;
use super::config::{Credentials, PacsConfig};
use super::error::PacsError;
use super::query::{self, SeriesRef};

/// Largest QIDO-RS or STOW-RS answer read (JSON).
const MAX_JSON_BYTES: u64 = 16 << 20;
/// Series asked for per QIDO-RS page.
const PAGE: u32 = 100;

/// A DICOMweb endpoint and how HEAL signs in to it.
pub struct DicomWeb {
    agent: ureq::Agent,
    root: String,
    credentials: Credentials,
    cfg: PacsConfig,
}

impl DicomWeb {
    /// The client of `cfg`'s endpoint; secret and CA files relative to `base`.
    pub fn new(cfg: &PacsConfig, base: &Path) -> Result<Self, PacsError> {
        cfg.check()?;
        let mut tls = TlsConfig::builder();
        if let Some(ca) = cfg.ca_path(base) {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(read_cas(&ca)?)));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(cfg.timeout_s)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Self {
            agent,
            root: cfg.root().to_string(),
            credentials: cfg.credentials(base)?,
            cfg: cfg.clone(),
        })
    }

    fn authorization(&self) -> Option<String> {
        match &self.credentials {
            Credentials::None => None,
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.as_str()))
            )),
            Credentials::Bearer(token) => Some(format!("Bearer {}", token.as_str())),
        }
    }

    /// Sends what `make` builds, again after a pause while the failure may pass (refused
    /// connections, timeouts, 5xx), at most `retries` times; any other status is an error.
    fn call(
        &self,
        what: &'static str,
        url: &str,
        make: &dyn Fn() -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, PacsError> {
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let outcome = match make() {
                Ok(resp) => check_status(what, url, resp),
                Err(e) => Err(PacsError::Unreachable {
                    what,
                    url: url.to_string(),
                    detail: e.to_string(),
                }),
            };
            match outcome {
                Err(e) if e.is_passing() && attempt < self.cfg.retries => {
                    warn!(attempt, "{e}; trying again in {} ms", pause.as_millis());
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn get(
        &self,
        what: &'static str,
        path: &str,
        accept: &str,
        params: &[(String, String)],
    ) -> Result<Response<ureq::Body>, PacsError> {
        let url = format!("{}{path}", self.root);
        let auth = self.authorization();
        self.call(what, &url, &|| {
            let mut req = self.agent.get(&url).header("Accept", accept);
            for (k, v) in params {
                req = req.query(k, v);
            }
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        })
    }

    fn qido(
        &self,
        what: &'static str,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Vec<u8>, PacsError> {
        let mut resp = self.get(what, path, "application/dicom+json", params)?;
        read_limited(&mut resp, what, MAX_JSON_BYTES, "(a JSON answer)")
    }
}

impl Pacs for DicomWeb {
    fn find_series(&mut self) -> Result<Vec<SeriesRef>, PacsError> {
        let cap = self.cfg.max_series_per_poll as usize;
        let mut found = Vec::new();
        for modality in self.cfg.modalities.clone() {
            let mut offset = 0;
            while found.len() < cap {
                let params = query::series_params(&self.cfg, &modality, offset, PAGE);
                let body = self.qido("a series query", "/series", &params)?;
                let page = query::parse_series(&body, &modality)?;
                let n = page.len() as u32;
                found.extend(page);
                if n < PAGE {
                    break;
                }
                offset += n;
            }
        }
        // a series listed twice (a PACS that keeps one study under two patient IDs) is one
        let mut seen = std::collections::HashSet::new();
        found.retain(|s| seen.insert(s.series.clone()));
        found.truncate(cap);
        debug!(series = found.len(), "QIDO-RS");
        Ok(found)
    }

    fn retrieve(&mut self, s: &SeriesRef) -> Result<Vec<Vec<u8>>, PacsError> {
        let what = "a series retrieval";
        let path = format!("/studies/{}/series/{}", s.study, s.series);
        let mut resp = self.get(
            what,
            &path,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            &[],
        )?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let limit = self.cfg.max_series_mb << 20;
        let body = read_limited(&mut resp, what, limit, "max_series_mb")?;
        parts(&content_type, body, self.cfg.max_instances as usize)
    }

    fn store(&mut self, dicom: &[u8]) -> Result<(), PacsError> {
        let what = "storing a report";
        let url = format!("{}/studies", self.root);
        let boundary = format!("heal-{}", random_hex(12));
        let mut body = Vec::with_capacity(dicom.len() + 200);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(dicom);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type =
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
        let auth = self.authorization();
        let mut resp = self.call(what, &url, &|| {
            let mut req = self
                .agent
                .post(&url)
                .header("Content-Type", &content_type)
                .header("Accept", "application/dicom+json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send(&body[..])
        })?;
        let answer = read_limited(&mut resp, what, MAX_JSON_BYTES, "(a JSON answer)")?;
        // PS3.18 10.5.3: Failed SOP Sequence lists what was not stored
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&answer)
            && let Some(failed) = json.get("00081198")
            && failed
                .get("Value")
                .and_then(|v| v.as_array())
                .is_some_and(|v| !v.is_empty())
        {
            return Err(PacsError::Http {
                what,
                url,
                status: resp.status().as_u16(),
                detail: format!("the PACS listed the report as failed: {failed}"),
            });
        }
        Ok(())
    }

    fn has_instance(&mut self, study: &str, sop: &str) -> Result<bool, PacsError> {
        let params = [
            ("StudyInstanceUID".to_string(), study.to_string()),
            ("SOPInstanceUID".to_string(), sop.to_string()),
        ];
        let body = self.qido("an instance query", "/instances", &params)?;
        Ok(query::parse_instances(&body)?.iter().any(|u| u == sop))
    }
}

fn check_status(
    what: &'static str,
    url: &str,
    mut resp: Response<ureq::Body>,
) -> Result<Response<ureq::Body>, PacsError> {
    let status = resp.status().as_u16();
    match status {
        200..=299 => Ok(resp),
        401 | 403 => Err(PacsError::Unauthorized {
            url: url.to_string(),
            status,
        }),
        _ => {
            let detail = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            Err(PacsError::Http {
                what,
                url: url.to_string(),
                status,
                detail: detail.chars().take(300).collect(),
            })
        }
    }
}

fn read_limited(
    resp: &mut Response<ureq::Body>,
    what: &'static str,
    limit: u64,
    key: &'static str,
) -> Result<Vec<u8>, PacsError> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => PacsError::TooLarge { what, limit, key },
            e => PacsError::Unreachable {
                what,
                url: String::new(),
                detail: e.to_string(),
            },
        })
}

/// The DICOM instances of a WADO-RS multipart/related answer, at most `max` of them.
pub fn parts(content_type: &str, body: Vec<u8>, max: usize) -> Result<Vec<Vec<u8>>, PacsError> {
    let what = "a series retrieval";
    let bad = |detail: String| PacsError::BadAnswer { what, detail };
    let mime: mime::Mime = content_type
        .parse()
        .map_err(|e| bad(format!("content type {content_type:?}: {e}")))?;
    if mime.type_() != mime::MULTIPART || mime.subtype().as_str() != "related" {
        return Err(bad(format!(
            "content type {content_type:?}, not multipart/related"
        )));
    }
    let boundary = mime
        .get_param(mime::BOUNDARY)
        .ok_or_else(|| bad("a multipart answer without a boundary".into()))?
        .as_str()
        .to_string();
    let stream =
        futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))]);
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    // the stream is in memory and always ready: every future completes on its first poll
    loop {
        let field = multipart
            .next_field()
            .now_or_never()
            .ok_or_else(|| bad("the multipart reader waited on a body in memory".into()))?
            .map_err(|e| bad(format!("multipart: {e}")))?;
        let Some(field) = field else { break };
        let part_type = field
            .content_type()
            .map(|m| m.essence_str().to_string())
            .unwrap_or_default();
        if part_type != "application/dicom" {
            return Err(bad(format!(
                "a part of type {part_type:?}, not application/dicom"
            )));
        }
        if out.len() == max {
            return Err(PacsError::TooLarge {
                what,
                limit: max as u64,
                key: "max_instances",
            });
        }
        let bytes = field
            .bytes()
            .now_or_never()
            .ok_or_else(|| bad("the multipart reader waited on a body in memory".into()))?
            .map_err(|e| bad(format!("multipart: {e}")))?;
        out.push(bytes.to_vec());
    }
    Ok(out)
}

fn read_cas(path: &Path) -> Result<Vec<Certificate<'static>>, PacsError> {
    let pem = std::fs::read(path)
        .map_err(|e| PacsError::Config(format!("[pacs] ca_file {}: {e}", path.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(PacsError::Config(format!(
                    "[pacs] ca_file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    if certs.is_empty() {
        return Err(PacsError::Config(format!(
            "[pacs] ca_file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // a boundary only has to be absent from the body; a fixed one would do but for a report
    // that happened to contain it
    if getrandom::fill(&mut b).is_err() {
        b.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = i as u8 ^ 0x5a);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multipart(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, body) in parts {
            b.extend_from_slice(format!("--{boundary}\r\nContent-Type: {t}\r\n\r\n").as_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        b
    }

    #[test]
    fn a_wado_answer_gives_its_instances_and_nothing_else() {
        let ct = "multipart/related; type=\"application/dicom\"; boundary=\"b-1\"";
        let body = multipart(
            "b-1",
            &[
                ("application/dicom", b"first\r\n--not"),
                ("application/dicom", b"second"),
            ],
        );
        let got = parts(ct, body.clone(), 10).unwrap();
        assert_eq!(got, [b"first\r\n--not".to_vec(), b"second".to_vec()]);
        let err = parts(ct, body.clone(), 1).unwrap_err();
        assert!(err.to_string().contains("max_instances"), "{err}");
        let err = parts("application/json", body, 10).unwrap_err();
        assert!(err.to_string().contains("not multipart/related"), "{err}");
        let html = multipart("b-1", &[("text/html", b"<p>")]);
        assert!(
            parts(ct, html, 10)
                .unwrap_err()
                .to_string()
                .contains("text/html")
        );
        // truncated: the closing boundary never comes
        assert!(
            parts(
                ct,
                b"--b-1\r\nContent-Type: application/dicom\r\n\r\nabc".to_vec(),
                10
            )
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_instances_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parts("multipart/related; boundary=x", body, 4);
        }
    }

    /// A one-thread HTTP server on 127.0.0.1 answering each request with the next of
    /// `answers` (status, body); what it was asked comes back when it is joined.
    fn scripted(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/dicom-web", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for (status, body) in answers {
                let (mut conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0 && req.len() < 65_536);
                    req.extend_from_slice(&buf[..n]);
                }
                asked.push(String::from_utf8_lossy(&req).into_owned());
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/dicom+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(answer.as_bytes()).unwrap();
            }
            asked
        });
        (url, handle)
    }

    #[test]
    fn bearer_and_basic_credentials_go_with_every_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok-123\n").unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let (url, server) = scripted(vec![(200, "[]")]);
        let mut cfg = PacsConfig::for_url(&url);
        cfg.auth = super::super::config::AuthKind::Bearer;
        cfg.token_file = Some("token".into());
        assert!(
            DicomWeb::new(&cfg, dir.path())
                .unwrap()
                .find_series()
                .unwrap()
                .is_empty()
        );
        let asked = server.join().unwrap();
        assert!(
            asked[0].starts_with("GET /dicom-web/series?Modality=CT"),
            "{}",
            asked[0]
        );
        assert!(
            asked[0]
                .to_lowercase()
                .contains("authorization: bearer tok-123"),
            "{}",
            asked[0]
        );
        let (url, server) = scripted(vec![(200, "[]")]);
        let mut cfg = PacsConfig::for_url(&url);
        cfg.auth = super::super::config::AuthKind::Basic;
        cfg.username = Some("heal".into());
        cfg.password_file = Some("pw".into());
        DicomWeb::new(&cfg, dir.path())
            .unwrap()
            .find_series()
            .unwrap();
        // base64("heal:s3cret")
        assert!(server.join().unwrap()[0].contains("aGVhbDpzM2NyZXQ="));
    }

    #[test]
    fn passing_failures_are_tried_again_and_refused_credentials_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (url, server) = scripted(vec![(503, "busy"), (502, ""), (200, "[]")]);
        let mut cfg = PacsConfig::for_url(&url);
        cfg.retries = 3;
        assert!(
            DicomWeb::new(&cfg, dir.path())
                .unwrap()
                .find_series()
                .unwrap()
                .is_empty()
        );
        assert_eq!(server.join().unwrap().len(), 3);
        let (url, server) = scripted(vec![(401, "")]);
        let err = DicomWeb::new(&PacsConfig::for_url(&url), dir.path())
            .unwrap()
            .find_series()
            .unwrap_err();
        assert!(
            err.is_fatal() && err.to_string().contains("HTTP 401"),
            "{err}"
        );
        assert_eq!(server.join().unwrap().len(), 1);
        let (url, server) = scripted(vec![(503, "busy"), (503, "still busy")]);
        let mut cfg = PacsConfig::for_url(&url);
        cfg.retries = 2;
        let err = DicomWeb::new(&cfg, dir.path())
            .unwrap()
            .find_series()
            .unwrap_err();
        assert!(
            err.is_passing() && err.to_string().contains("HTTP 503"),
            "{err}"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let mut cfg = PacsConfig::for_url("https://127.0.0.1:1/dicom-web");
        cfg.ca_file = Some("ca.pem".into());
        let err = DicomWeb::new(&cfg, dir.path()).err().unwrap();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
    }
}
