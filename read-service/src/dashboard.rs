//! The dashboard: a static page at `/` that queries `/api/v1/metrics` and `/api/v1/query` from the
//! browser and charts the answers with uPlot (vendored in `read-service/assets/`, see its README).
//!
//! Everything is compiled into the binary (`include_str!` / `include_bytes!`); there is no build
//! step and nothing is read from disk at run time.
//!
//! Caching: the page is served with `cache-control: no-cache` and refers to every asset as
//! `/assets/NAME?v=HASH`, HASH being a hash of the asset's bytes, so an asset asked for with the
//! current hash is cached for a year (`immutable`): a new build changes the page and, with it, the
//! asset URLs. An asset asked for without `v` (or with another one) is `no-cache`. Every answer
//! carries an `ETag`, and a matching `If-None-Match` is answered `304`.
//!
//! The page needs no authentication (it holds no data); the API calls it makes do, and it asks for
//! an API key when they answer 401.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

const INDEX_HTML: &str = include_str!("../assets/index.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One file under `/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    hash: u64,
}

const fn asset(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
        hash: fnv1a(body),
    }
}

static ASSETS: [Asset; 6] = [
    asset("dashboard.js", JS, include_bytes!("../assets/dashboard.js")),
    asset(
        "dashboard.css",
        CSS,
        include_bytes!("../assets/dashboard.css"),
    ),
    asset(
        "uPlot.iife.min.js",
        JS,
        include_bytes!("../assets/uPlot.iife.min.js"),
    ),
    asset(
        "uPlot.min.css",
        CSS,
        include_bytes!("../assets/uPlot.min.css"),
    ),
    asset("favicon.svg", SVG, include_bytes!("../assets/favicon.svg")),
    asset(
        "uPlot.LICENSE",
        TEXT,
        include_bytes!("../assets/uPlot.LICENSE"),
    ),
];

/// 64-bit FNV-1a, computed at compile time: only used to tell versions of an asset apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// The page with every `/assets/NAME` reference turned into `/assets/NAME?v=HASH`, and its hash.
fn index() -> &'static (String, u64) {
    static PAGE: OnceLock<(String, u64)> = OnceLock::new();
    PAGE.get_or_init(|| {
        let mut html = INDEX_HTML.to_string();
        for a in &ASSETS {
            let plain = format!("\"/assets/{}\"", a.name);
            let versioned = format!("\"/assets/{}?v={:016x}\"", a.name, a.hash);
            html = html.replace(&plain, &versioned);
        }
        let hash = fnv1a(html.as_bytes());
        (html, hash)
    })
}

/// `/` and `/assets/{name}`; merged into the read service's router (see [`crate::api::router`]).
pub fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/{name}", get(asset_file))
}

/// The answer for `body`, or 304 when the client already has this `hash`.
fn respond(
    req: &HeaderMap,
    hash: u64,
    content_type: &'static str,
    cache_control: &'static str,
    body: &'static [u8],
) -> Response {
    let etag = format!("\"{hash:016x}\"");
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header value"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (headers, body).into_response()
}

async fn page(req: HeaderMap) -> Response {
    let (html, hash) = index();
    let mut resp = respond(
        &req,
        *hash,
        "text/html; charset=utf-8",
        "no-cache",
        html.as_bytes(),
    );
    // The page runs only its own files; uPlot sets element styles, hence 'unsafe-inline' for styles.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    resp
}

async fn asset_file(Path(name): Path<String>, uri: Uri, req: HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, TEXT)],
            "no such asset\n",
        )
            .into_response();
    };
    let current = format!("v={:016x}", a.hash);
    let versioned = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == current));
    let cache_control = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    respond(&req, a.hash, a.content_type, cache_control, a.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn header_of(h: &HeaderMap, name: header::HeaderName) -> &str {
        h.get(name).map_or("", |v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn page_is_html_with_the_uplot_script_tag() {
        let (status, h, body) = get("/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&h, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header_of(&h, header::CACHE_CONTROL), "no-cache");
        assert!(
            body.contains("<script src=\"/assets/uPlot.iife.min.js?v="),
            "{body}"
        );
        assert!(body.contains("<script src=\"/assets/dashboard.js?v="));
        assert!(body.contains("href=\"/assets/uPlot.min.css?v="));
        // Every asset the page refers to is versioned and served.
        for a in &ASSETS[..5] {
            assert!(
                body.contains(&format!("/assets/{}?v={:016x}", a.name, a.hash)),
                "{} not referenced",
                a.name
            );
        }
        // A revalidation with the current ETag is a 304.
        let etag = header_of(&h, header::ETAG).to_string();
        let (status, _, body) = get("/", &[("if-none-match", &etag)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_cache_headers() {
        let (status, h, body) = get("/assets/uPlot.iife.min.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&h, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(header_of(&h, header::CACHE_CONTROL), "no-cache");
        assert!(body.contains("uPlot"));

        let versioned = format!("/assets/uPlot.iife.min.js?v={:016x}", ASSETS[2].hash);
        let (status, h, _) = get(&versioned, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&h, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );

        let (status, h, body) = get("/assets/dashboard.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header_of(&h, header::CONTENT_TYPE), JS);
        assert!(body.contains("/api/v1/query"));

        let (_, h, _) = get("/assets/uPlot.min.css", &[]).await;
        assert_eq!(header_of(&h, header::CONTENT_TYPE), CSS);

        let (status, _, _) = get("/assets/nope.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
