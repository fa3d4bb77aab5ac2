//! `client portal`: the web portal served by the hospital node. Clinicians sign in, upload a
//! PNG/JPEG image and read a diagnosis computed on the encrypted image (mode (b): on this node
//! with `--network`, or by the consortium's inference server with `--site`/`--server`); they
//! see their own history and the federation's training progress from the node's outputs.
//!
//! - [`config`]: what the portal is started with;
//! - [`users`]: the users file and argon2id hashes (`client user add`);
//! - [`session`]: sessions, cookies and CSRF tokens; [`auth`]: sign-in, sign-out, the guard;
//! - [`upload`]: upload validation; [`history`]: per-user diagnoses on disk;
//! - [`diagnose`]: the upload and result pages and the inference they run;
//! - [`training`]: the training page; [`chart`]: its SVG chart;
//! - [`pages`]: layout and shared pages; [`assets`]: the stylesheet.
//!
//! Everything is server-rendered HTML with no JavaScript and no external assets.

pub mod assets;
pub mod auth;
pub mod chart;
pub mod config;
pub mod diagnose;
pub mod diagnose_view;
pub mod error;
pub mod history;
pub mod mode;
pub mod pages;
pub mod session;
pub mod signin_limit;
pub mod training;
pub mod upload;
pub mod users;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use datasets::ImageShape;
use he_agg::infer::Network;
use tracing::info;

pub use config::PortalConfig;
pub use error::PortalError;

use ::training::export::{input_shape, read_network};

/// The network evaluated on this node.
pub struct LocalModel {
    pub name: String,
    pub class_names: Vec<String>,
    pub network: Network,
    /// How uploads become its input (as its training data did).
    pub preparation: datasets::InputPreparation,
}

/// The portal's shared state.
pub struct Portal {
    config: PortalConfig,
    sessions: Mutex<session::Sessions>,
    local: Option<LocalModel>,
    /// One diagnosis at a time: an encrypted evaluation uses every core.
    busy: tokio::sync::Semaphore,
    /// failed sign-ins per name and address, and the password checks running
    signin_limit: signin_limit::SigninLimit,
}

impl Portal {
    /// Checks the configuration and loads the local network.
    pub fn new(config: PortalConfig) -> Result<Self, PortalError> {
        if config.network.is_none() && config.remote.is_none() {
            return Err(PortalError::Config(
                "the portal needs a model: --network NET.json (evaluated on this node) and/or \
                 --site SITE.toml with --server HOST:PORT (the inference server)"
                    .into(),
            ));
        }
        error::create_private_dir(&config.dir)?;
        let local = match &config.network {
            Some(p) => {
                let (file, preparation) = read_network(p)?;
                Some(LocalModel {
                    name: p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "network.json".into()),
                    class_names: file.class_names,
                    network: file.network,
                    preparation,
                })
            }
            None => None,
        };
        let users = users::Users::load(&config.dir)?;
        if users.is_empty() {
            tracing::warn!(
                dir = %config.dir.display(),
                "no users yet: add one with `client user add --portal-dir DIR --name NAME`"
            );
        }
        Ok(Self {
            sessions: Mutex::new(session::Sessions::new(
                config.session_idle,
                config.session_lifetime,
            )),
            config,
            local,
            busy: tokio::sync::Semaphore::new(1),
            signin_limit: signin_limit::SigninLimit::default(),
        })
    }

    pub fn config(&self) -> &PortalConfig {
        &self.config
    }

    pub fn signin_limit(&self) -> &signin_limit::SigninLimit {
        &self.signin_limit
    }

    pub fn local(&self) -> Option<&LocalModel> {
        self.local.as_ref()
    }

    /// The session table (a poisoned lock is recovered: the map stays consistent).
    pub fn sessions(&self) -> MutexGuard<'_, session::Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How uploads are checked and prepared: the local network's input and preparation, else
    /// MedMNIST's 28×28 grey (the server's own shape is applied when the request is made).
    pub fn upload_decoder(&self) -> datasets::ImageDecoder {
        match &self.local {
            Some(m) => m.preparation.decoder(input_shape(&m.network)),
            None => datasets::ImageDecoder::new(ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            }),
        }
    }
}

/// Headers on every response: no framing, no sniffing, no referrer, nothing but this origin.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        assets::CSS,
    )
        .into_response()
}

async fn not_found(
    axum::extract::State(portal): axum::extract::State<Arc<Portal>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let user = auth::signed_in(&headers, &portal);
    pages::error(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
        user.as_ref().map(auth::SignedIn::viewer).as_ref(),
    )
}

/// A sign-in form is a name, a password and a token: nothing near the upload limit.
const SIGNIN_BODY_LIMIT: usize = 16 << 10;

/// The portal's routes.
pub fn router(portal: Arc<Portal>) -> Router {
    // the body limit leaves room for the multipart framing around a file at the limit; the
    // upload handler itself reads a little further so it can answer with a page, not a reset
    let body_limit = diagnose::hard_body_limit(portal.config().upload_limit);
    Router::new()
        .route("/", get(|| async { Redirect::to("/diagnose") }))
        .route(
            "/signin",
            get(auth::signin_page)
                .post(auth::signin)
                .layer(DefaultBodyLimit::max(SIGNIN_BODY_LIMIT)),
        )
        .route("/signout", post(auth::signout))
        .route("/diagnose", get(diagnose::page).post(diagnose::submit))
        .route("/diagnosis/{id}", get(diagnose::result))
        .route("/upload/{file}", get(diagnose::upload_image))
        .route("/history", get(diagnose::history_page))
        .route("/training", get(training::page))
        .route("/assets/portal.css", get(stylesheet))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(security_headers))
        .with_state(portal)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    portal: Arc<Portal>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), PortalError> {
    let addr = listener
        .local_addr()
        .map_err(|e| PortalError::Config(format!("listener: {e}")))?;
    info!(%addr, dir = %portal.config().dir.display(), "portal listening: http://{addr}/");
    // the client's address is what sign-in failures are counted by
    let app = router(portal).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| PortalError::Config(format!("serving on {addr}: {e}")))
}

#[cfg(test)]
mod tests;
