//! Server-rendered HTML shared by every page: the layout (skip link, navigation, sign-out
//! form), escaping, the sign-in page and the error pages. No JavaScript anywhere.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The navigation's pages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Diagnose,
    History,
    Training,
    None,
}

/// Who is signed in, for the header.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub csrf: &'a str,
}

/// A whole page.
pub fn layout(title: &str, nav: Nav, viewer: Option<&Viewer<'_>>, body: &str) -> Html<String> {
    let mut header = String::from(r#"<header class="top"><span class="brand">HEAL portal</span>"#);
    if let Some(v) = viewer {
        let link = |href: &str, text: &str, me: Nav| {
            let cur = if me == nav {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<a href="{href}"{cur}>{text}</a>"#)
        };
        header.push_str(&format!(
            r#"<nav aria-label="Main">{}{}{}</nav><span>Signed in as <strong>{}</strong></span>
<form method="post" action="/signout"><input type="hidden" name="csrf" value="{}"><button type="submit" class="secondary">Sign out</button></form>"#,
            link("/diagnose", "Diagnose", Nav::Diagnose),
            link("/history", "History", Nav::History),
            link("/training", "Training", Nav::Training),
            esc(v.name),
            esc(v.csrf),
        ));
    }
    header.push_str("</header>");
    Html(format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} — HEAL portal</title><link rel="stylesheet" href="/assets/portal.css"></head>
<body><a class="skip" href="#main">Skip to content</a>{header}
<main id="main">{body}</main>
<footer>HEAL runs on this hospital's node. Images are encrypted here before anything is computed on them.</footer>
</body></html>"##,
        esc(title)
    ))
}

/// The sign-in page, with an optional message.
pub fn signin(csrf: &str, message: Option<&str>, name: &str) -> Html<String> {
    let msg = message
        .map(|m| {
            format!(
                r#"<div class="error" role="alert"><h2>Could not sign in</h2><p>{}</p></div>"#,
                esc(m)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1>{msg}
<form class="panel" method="post" action="/signin">
<input type="hidden" name="csrf" value="{}">
<label for="name">User name</label>
<input type="text" id="name" name="name" autocomplete="username" autocapitalize="none" required value="{}">
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<p><button type="submit" id="signin">Sign in</button></p>
</form>
<p class="hint">Accounts are local to this node; the node's administrator adds them with <code>client user add</code>.</p>"#,
        esc(csrf),
        esc(name)
    );
    layout("Sign in", Nav::None, None, &body)
}

/// An error page with a status, a title and a plain-language message.
pub fn error(
    status: StatusCode,
    title: &str,
    message: &str,
    viewer: Option<&Viewer<'_>>,
) -> Response {
    let body = format!(
        r#"<div class="error" role="alert"><h1>{}</h1><p>{}</p></div><p><a href="/diagnose">Back to Diagnose</a></p>"#,
        esc(title),
        esc(message)
    );
    (status, layout(title, Nav::None, viewer, &body)).into_response()
}

/// Bytes for people.
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{b:.0} bytes")
    }
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
