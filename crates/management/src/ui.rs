//! The management web UI: a few static files built into the binary and served from the
//! management listener at `/`, as RabbitMQ serves its UI next to `/api`. The page is
//! plain HTML, CSS and JavaScript (no framework, no build step); it talks to the public
//! HTTP API only, so everything it shows is scriptable too.
//!
//! Nothing runs for the UI unless a browser asks: the files are `&'static` bytes, and the
//! numbers the page shows come from the same API handlers that rabbitmqadmin calls.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: &'static str,
}

/// FNV-1a over the file, at compile time: the validator for `If-None-Match`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"<16 hex digits>"`, a quoted entity tag, at compile time.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $file));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            path: $path,
            content_type: $type,
            body: BODY,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("an entity tag is ASCII"),
            },
        }
    }};
}

/// Every file of the UI. `/` is `index.html`.
static ASSETS: [Asset; 4] = [
    asset!("/index.html", "index.html", "text/html; charset=utf-8"),
    asset!("/js/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/css/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/img/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// The UI's total size in bytes (what a first visit downloads, uncompressed).
pub fn page_weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// Scripts and styles from this origin only, no inline script, no framing, and fetch()
/// only to this origin (the API).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new().route("/", get(|req: Request| serve("/index.html", req)));
    for asset in &ASSETS {
        router = router.route(asset.path, get(move |req: Request| serve(asset.path, req)));
    }
    router
}

async fn serve(path: &'static str, req: Request) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return crate::error::ApiError::not_found().into_response();
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    // Revalidate every time (a 304 is a few bytes): a new Warren binary never runs with
    // an old page from the cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Leaves `WWW-Authenticate` out of a 401 to a request marked `X-Requested-With:
/// XMLHttpRequest`, as the web UI's calls are (Spring Security does the same): the API's
/// 401 carries the header for curl and other clients, as RabbitMQ's does, and a browser
/// must never answer a page's own call with its Basic-auth dialog. Other requests pass
/// through unchanged.
pub async fn no_auth_prompt(req: Request, next: axum::middleware::Next) -> Response {
    let from_page = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let mut response = next.run(req).await;
    if from_page {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_a_distinct_tag() {
        for a in &ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert_eq!(a.etag.len(), 18);
        }
        assert_ne!(ASSETS[0].etag, ASSETS[1].etag);
        assert_eq!(etag_of(b""), *b"\"cbf29ce484222325\"");
        // Small: the docs state the page weight.
        assert!(page_weight() < 200_000, "UI is {} bytes", page_weight());
    }
}
