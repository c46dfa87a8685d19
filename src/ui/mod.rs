//! The web UI: a hand-written single-page application (plain HTML, CSS and JavaScript in
//! `src/ui/assets/`, no framework and no build step) compiled into the binary, so `sigloop serve`
//! serves it with nothing else installed. It speaks only the JSON API of [`crate::api`] from the same
//! origin, so it can show and do nothing the API does not.
//!
//! `GET /` is the page (hash routing: `#/loops/{id}`, `#/journeys`, ...), `GET /ui/{file}` its assets.
//! The page names its assets with `?v={version}`, a digest of every asset computed once: a new
//! binary changes the links, so assets asked for with the current version are cached for good, while
//! the page itself is revalidated on every load (`no-cache`, with an ETag). The API's router merges
//! these routes inside its hardening layers, so the UI's answers carry the same security headers,
//! among them a Content-Security-Policy that allows scripts, styles and fetches from this origin
//! only: the UI could not load a font or a library from elsewhere even by mistake.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::ApiError;

/// One embedded file under `/ui/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("assets/index.html");

/// 16 hex digits of the SHA-256 of every asset and the page: changes with any of them.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    hasher.update(INDEX_TEMPLATE.as_bytes());
    for asset in ASSETS {
        hasher.update(asset.name.as_bytes());
        hasher.update([0]);
        hasher.update(asset.body);
    }
    hex::encode(&hasher.finalize()[..8])
});

/// The page with its asset links pointing at this build's version.
static INDEX: LazyLock<String> = LazyLock::new(|| INDEX_TEMPLATE.replace("{{version}}", &VERSION));

/// The UI's routes, to merge into the API's router (no state of their own).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
}

/// This build's asset version (the `v` query parameter of the page's links).
pub fn version() -> &'static str {
    &VERSION
}

async fn index(headers: HeaderMap) -> Response {
    respond(
        &headers,
        "text/html; charset=utf-8",
        INDEX.as_bytes(),
        // Always revalidated: the page names the current assets, so an old copy must not stay.
        "no-cache",
    )
}

#[derive(Debug, Deserialize)]
struct AssetQuery {
    v: Option<String>,
}

async fn asset(
    Path(file): Path<String>,
    Query(query): Query<AssetQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == file) else {
        return ApiError::NotFound(format!("no UI file {file}")).into_response();
    };
    // A link with this build's version names these exact bytes for good; any other (an old page, a
    // hand-typed URL) is revalidated, so it never keeps stale code.
    let cache = if query.v.as_deref() == Some(VERSION.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    respond(&headers, asset.content_type, asset.body, cache)
}

fn respond(
    request: &HeaderMap,
    content_type: &'static str,
    body: &'static [u8],
    cache_control: &'static str,
) -> Response {
    // Every file changes only with the build, so the build's version is a strong validator.
    let etag = format!("\"{}\"", *VERSION);
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|candidate| candidate.trim() == etag || candidate.trim() == "*")
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_every_asset_with_this_builds_version() {
        for name in ["app.js", "app.css", "favicon.svg"] {
            assert!(
                INDEX.contains(&format!("/ui/{name}?v={}", version())),
                "{name} is not linked with the version"
            );
        }
        assert!(!INDEX.contains("{{version}}"));
    }

    #[test]
    fn no_asset_loads_anything_from_another_origin() {
        // The page must work offline and leak nothing: no CDN, no web font, no foreign script.
        let texts = ASSETS
            .iter()
            .map(|asset| std::str::from_utf8(asset.body).expect("assets are UTF-8"))
            .chain([INDEX_TEMPLATE]);
        for text in texts {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "@import", "url("] {
                assert!(!text.contains(needle), "an asset contains `{needle}`");
            }
        }
    }
}
