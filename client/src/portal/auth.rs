//! Signing in and out, and the `SignedIn` extractor every protected page takes: without a live
//! signed-in session it answers with a redirect to `/signin`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Form, FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::Portal;
use super::pages;
use super::session::{Session, clear_cookie, session_id_from_cookies, set_cookie};
use super::users::{MAX_PASSWORD, Users};

/// A signed-in user's session.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub name: String,
    pub csrf: String,
}

impl SignedIn {
    pub fn viewer(&self) -> pages::Viewer<'_> {
        pages::Viewer {
            name: &self.name,
            csrf: &self.csrf,
        }
    }

    /// Refuses a POST whose CSRF token is not this session's.
    // the refusal is the page itself (axum's idiom); it is built once per refused POST
    #[allow(clippy::result_large_err)]
    pub fn check_csrf(&self, token: &str) -> Result<(), Response> {
        if super::session::constant_time_eq(self.csrf.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            warn!(user = %self.name, "POST refused: CSRF token does not match the session");
            Err(csrf_refused(Some(&self.viewer())))
        }
    }
}

/// The page for a form that did not carry the session's token.
pub fn csrf_refused(viewer: Option<&pages::Viewer<'_>>) -> Response {
    pages::error(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form was not issued in your current session (it may be from an older tab or \
         another site). Nothing was done. Open the page again and resubmit.",
        viewer,
    )
}

fn session_of(headers: &HeaderMap, portal: &Portal) -> Option<(String, Session)> {
    let id = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_id_from_cookies)?
        .to_string();
    let s = portal.sessions().get(&id, Instant::now())?;
    Some((id, s))
}

/// The signed-in user of a request, if any.
pub fn signed_in(headers: &HeaderMap, portal: &Portal) -> Option<SignedIn> {
    match session_of(headers, portal)? {
        (
            _,
            Session {
                user: Some(name),
                csrf,
                ..
            },
        ) => Some(SignedIn { name, csrf }),
        _ => None,
    }
}

impl FromRequestParts<Arc<Portal>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        portal: &Arc<Portal>,
    ) -> Result<Self, Self::Rejection> {
        signed_in(&parts.headers, portal).ok_or_else(|| Redirect::to("/signin").into_response())
    }
}

/// GET /signin: the form, in an anonymous session that carries its CSRF token.
pub async fn signin_page(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    match session_of(&headers, &portal) {
        Some((_, s)) if s.user.is_some() => Redirect::to("/diagnose").into_response(),
        Some((_, s)) => pages::signin(&s.csrf, None, "").into_response(),
        None => fresh_signin(&portal, None, ""),
    }
}

fn fresh_signin(portal: &Portal, message: Option<&str>, name: &str) -> Response {
    match portal.sessions().create(None, Instant::now()) {
        Ok((id, s)) => (
            [(
                SET_COOKIE,
                set_cookie(
                    &id,
                    portal.config().session_idle,
                    portal.config().secure_cookies,
                ),
            )],
            pages::signin(&s.csrf, message, name),
        )
            .into_response(),
        Err(e) => pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server error",
            &e.to_string(),
            None,
        ),
    }
}

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// POST /signin.
pub async fn signin(
    State(portal): State<Arc<Portal>>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    let address = client.map(|c| c.0.0.ip());
    let Some((anon_id, anon)) = session_of(&headers, &portal) else {
        return fresh_signin(
            &portal,
            Some("The sign-in form had expired. Please enter your name and password again."),
            &form.name,
        );
    };
    if !anon.csrf_matches(&form.csrf) {
        warn!("sign-in refused: CSRF token does not match the session");
        portal.sessions().remove(&anon_id);
        return fresh_signin(
            &portal,
            Some("The sign-in form had expired. Please enter your name and password again."),
            &form.name,
        );
    }
    let name = form.name.trim().to_ascii_lowercase();
    if let Err(wait) = portal.signin_limit().check(&name, address, Instant::now()) {
        warn!(user = %name, ?address, "sign-in refused: too many failures");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            pages::signin(
                &anon.csrf,
                Some(&format!(
                    "Too many failed sign-ins for this name or from this computer. Try again in {} minutes, or ask the node's administrator.",
                    wait.as_secs().div_ceil(60).max(1)
                )),
                &name,
            ),
        )
            .into_response();
    }
    // argon2 takes tens of milliseconds and 19 MiB on purpose: a few at a time, off the
    // async workers
    let Ok(Ok(_permit)) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        portal.signin_limit().argon2.acquire(),
    )
    .await
    else {
        return pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in busy",
            "Too many sign-ins at once; please try again in a moment.",
            None,
        );
    };
    let dir = portal.config().dir.clone();
    let password = form.password;
    let user = name.clone();
    let ok = tokio::task::spawn_blocking(move || {
        if password.len() > MAX_PASSWORD {
            return Ok(false);
        }
        Users::load(&dir).map(|u| u.verify(&user, &password))
    })
    .await;
    let ok = match ok {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            warn!(error = %e, "users file unreadable");
            return pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in unavailable",
                "The node's users file cannot be read; the node's administrator has the details in the log.",
                None,
            );
        }
        Err(_) => false,
    };
    if !ok {
        portal.signin_limit().failed(&name, address, Instant::now());
        warn!(user = %name, "sign-in failed");
        return (
            StatusCode::UNAUTHORIZED,
            pages::signin(
                &anon.csrf,
                Some("The user name or password is not right."),
                &name,
            ),
        )
            .into_response();
    }
    portal.signin_limit().succeeded(&name);
    portal.sessions().remove(&anon_id);
    match portal.sessions().create(Some(name.clone()), Instant::now()) {
        Ok((id, _)) => {
            info!(user = %name, "signed in");
            (
                [(
                    SET_COOKIE,
                    set_cookie(
                        &id,
                        portal.config().session_lifetime,
                        portal.config().secure_cookies,
                    ),
                )],
                Redirect::to("/diagnose"),
            )
                .into_response()
        }
        Err(e) => pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server error",
            &e.to_string(),
            None,
        ),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// POST /signout.
pub async fn signout(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    user: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = user.check_csrf(&form.csrf) {
        return r;
    }
    if let Some((id, _)) = session_of(&headers, &portal) {
        portal.sessions().remove(&id);
    }
    info!(user = %user.name, "signed out");
    (
        [(SET_COOKIE, clear_cookie(portal.config().secure_cookies))],
        Redirect::to("/signin"),
    )
        .into_response()
}
