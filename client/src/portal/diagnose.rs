//! The Diagnose, result, history and preview handlers, and the encrypted inference a
//! diagnosis runs: on this node (`--network`) or at the inference server (`--site`,
//! `--server`), always through `client::infer`, so the image is encrypted under a key made
//! here for this one request.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::{info, warn};

use super::Portal;
use super::auth::SignedIn;
use super::diagnose_view as view;
use super::error::random_hex;
use super::history::{Diagnosis, UserFiles, valid_id};
use super::mode::{Mode, modes};
use super::pages;
use super::upload::{self, ImageKind, UploadError};
use crate::infer::InferOutcome;
use crate::infer::images::{ImageArg, LoadedImage};
use crate::infer::local::infer_local;
use crate::infer::remote::infer_remote;

/// How much of a request body is read: well past the upload limit, so an oversized file is
/// read to its end and answered with a page (a browser shows a reset connection, not our
/// message, when the server stops reading early).
pub fn hard_body_limit(upload_limit: usize) -> usize {
    upload_limit
        .saturating_mul(4)
        .max(upload_limit.saturating_add(1 << 20))
}

fn files_of(portal: &Portal, user: &SignedIn) -> UserFiles {
    UserFiles::new(&portal.config().dir, &user.name)
}

fn recent(portal: &Portal, user: &SignedIn) -> Vec<Diagnosis> {
    files_of(portal, user).read().unwrap_or_else(|e| {
        warn!(user = %user.name, error = %e, "history unreadable");
        Vec::new()
    })
}

/// GET /diagnose: the landing page.
pub async fn page(State(portal): State<Arc<Portal>>, user: SignedIn) -> Response {
    let history = recent(&portal, &user);
    view::diagnose(&portal, &user, None, &history).into_response()
}

fn refuse(portal: &Portal, user: &SignedIn, status: StatusCode, message: &str) -> Response {
    let history = recent(portal, user);
    (
        status,
        view::diagnose(portal, user, Some(message), &history),
    )
        .into_response()
}

fn upload_status(e: &UploadError) -> StatusCode {
    match e {
        UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        UploadError::NotAnImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    }
}

struct Upload {
    csrf: String,
    mode: Option<String>,
    file_name: Option<String>,
    bytes: Vec<u8>,
}

async fn read_form(portal: &Arc<Portal>, req: Request) -> Result<Upload, UploadError> {
    let limit = portal.config().upload_limit;
    let hard = hard_body_limit(limit);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > hard) {
        return Err(UploadError::TooLarge { got: n, limit });
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, hard)
        .await
        .map_err(|_| UploadError::TooLarge {
            got: declared.unwrap_or(hard + 1),
            limit,
        })?;
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut mp = Multipart::from_request(req, portal)
        .await
        .map_err(|e| UploadError::Undecodable(format!("the form could not be read ({e})")))?;
    let mut up = Upload {
        csrf: String::new(),
        mode: None,
        file_name: None,
        bytes: Vec::new(),
    };
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| UploadError::Undecodable(format!("the form could not be read ({e})")))?
    {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "csrf" => up.csrf = field.text().await.unwrap_or_default(),
            "mode" => up.mode = field.text().await.ok(),
            "image" => {
                up.file_name = field.file_name().map(str::to_string);
                let data = field.bytes().await.map_err(|e| {
                    UploadError::Undecodable(format!("the upload could not be read ({e})"))
                })?;
                if data.len() > limit {
                    return Err(UploadError::TooLarge {
                        got: data.len(),
                        limit,
                    });
                }
                up.bytes = data.to_vec();
            }
            _ => {}
        }
    }
    Ok(up)
}

/// POST /diagnose: validate, encrypt, evaluate, decrypt, store, then show the result
/// (post/redirect/get, so reloading the result page does not diagnose again).
pub async fn submit(State(portal): State<Arc<Portal>>, user: SignedIn, req: Request) -> Response {
    let up = match read_form(&portal, req).await {
        Ok(u) => u,
        Err(e) => {
            info!(user = %user.name, reason = %e, "upload refused");
            return refuse(&portal, &user, upload_status(&e), &e.to_string());
        }
    };
    if let Err(r) = user.check_csrf(&up.csrf) {
        return r;
    }
    let available = modes(&portal);
    let mode = match up.mode.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => available[0],
        Some(m) => match Mode::parse(m).filter(|m| available.contains(m)) {
            Some(m) => m,
            None => {
                return refuse(
                    &portal,
                    &user,
                    StatusCode::BAD_REQUEST,
                    "That way of diagnosing is not available on this node.",
                );
            }
        },
    };
    if up.bytes.is_empty() && up.file_name.as_deref().is_none_or(str::is_empty) {
        let e = UploadError::Missing;
        return refuse(&portal, &user, upload_status(&e), &e.to_string());
    }
    let (kind, hwc) = match upload::validate(
        &up.bytes,
        portal.config().upload_limit,
        &portal.upload_decoder(),
    ) {
        Ok(v) => v,
        Err(e) => {
            info!(user = %user.name, reason = %e, "upload refused");
            return refuse(&portal, &user, upload_status(&e), &e.to_string());
        }
    };
    let file_name = upload::clean_file_name(up.file_name.as_deref());
    let Ok(_permit) = portal.busy.acquire().await else {
        return refuse(
            &portal,
            &user,
            StatusCode::SERVICE_UNAVAILABLE,
            "The node is shutting down.",
        );
    };
    let id = match random_hex(16) {
        Ok(id) => id,
        Err(e) => {
            return refuse(
                &portal,
                &user,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            );
        }
    };
    let files = files_of(&portal, &user);
    let path = match files.save_upload(&id, kind, &up.bytes) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot store the upload");
            return refuse(
                &portal,
                &user,
                StatusCode::INTERNAL_SERVER_ERROR,
                "The image could not be stored on the node.",
            );
        }
    };
    if kind == ImageKind::Dicom {
        // the browser shows the network's input: windowed and resized
        let shown = upload::preview_png(&hwc, portal.upload_decoder().shape).and_then(|png| {
            files
                .save_upload(&id, ImageKind::Png, &png)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = shown {
            warn!(error = %e, "cannot store the preview of a DICOM upload");
        }
    }
    let outcome = run(&portal, mode, file_name.clone(), hwc, path.clone()).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(message) => {
            let _ = std::fs::remove_file(&path);
            if kind == ImageKind::Dicom {
                let _ = std::fs::remove_file(files.upload_path(&id, ImageKind::Png));
            }
            warn!(user = %user.name, mode = mode.as_str(), error = %message, "diagnosis failed");
            return refuse(
                &portal,
                &user,
                StatusCode::BAD_GATEWAY,
                &format!("The encrypted diagnosis failed: {message}"),
            );
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let Some(d) = Diagnosis::from_outcome(id.clone(), file_name, kind, &outcome, now) else {
        return refuse(
            &portal,
            &user,
            StatusCode::BAD_GATEWAY,
            "The diagnosis returned no result.",
        );
    };
    if let Err(e) = files.append(&d) {
        warn!(error = %e, "cannot store the diagnosis");
        return refuse(
            &portal,
            &user,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The diagnosis could not be stored on the node.",
        );
    }
    info!(user = %user.name, id = %id, mode = mode.as_str(), class = %d.class, total_s = d.timings.total_s, "diagnosis");
    Redirect::to(&format!("/diagnosis/{id}")).into_response()
}

async fn run(
    portal: &Arc<Portal>,
    mode: Mode,
    name: String,
    hwc: Vec<u8>,
    path: std::path::PathBuf,
) -> Result<InferOutcome, String> {
    match mode {
        Mode::Local => {
            let p = Arc::clone(portal);
            tokio::task::spawn_blocking(move || {
                let m = p.local().ok_or("no network on this node")?;
                let image = LoadedImage {
                    name,
                    hwc,
                    label: None,
                };
                infer_local(&m.network, &m.class_names, &m.name, &[image])
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("the evaluation stopped: {e}"))?
            .map_err(|e: String| e)
        }
        Mode::Remote => {
            let target = portal
                .config()
                .remote
                .as_ref()
                .ok_or_else(|| "no inference server configured".to_string())?;
            let prep = portal.local().map(|m| m.preparation).unwrap_or_default();
            infer_remote(target, &[ImageArg::File(path)], &prep, None)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// GET /diagnosis/{id}: one of this user's diagnoses.
pub async fn result(
    State(portal): State<Arc<Portal>>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match files_of(&portal, &user).find(&id) {
        Ok(Some(d)) => view::result(&user, &d).into_response(),
        Ok(None) => pages::error(
            StatusCode::NOT_FOUND,
            "Diagnosis not found",
            "There is no diagnosis with this address in your history.",
            Some(&user.viewer()),
        ),
        Err(e) => {
            warn!(error = %e, "history unreadable");
            pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "History unavailable",
                "Your history cannot be read on this node.",
                Some(&user.viewer()),
            )
        }
    }
}

/// GET /history.
pub async fn history_page(State(portal): State<Arc<Portal>>, user: SignedIn) -> Response {
    let h = recent(&portal, &user);
    view::history(&user, &h).into_response()
}

/// GET /upload/{id}.{ext}: an image this user uploaded (only from the user's own directory).
pub async fn upload_image(
    State(portal): State<Arc<Portal>>,
    user: SignedIn,
    Path(file): Path<String>,
) -> Response {
    let parsed = file
        .split_once('.')
        .and_then(|(id, ext)| Some((id, ImageKind::from_extension(ext)?)))
        .filter(|(id, _)| valid_id(id));
    let Some((id, kind)) = parsed else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = files_of(&portal, &user).upload_path(id, kind);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (CONTENT_TYPE, kind.content_type()),
                (CACHE_CONTROL, "private, no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
