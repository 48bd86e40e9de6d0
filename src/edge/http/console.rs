//! The moderator console's files, embedded in the binary: one HTML page, its script and its
//! style sheet, written without a build step (no Node toolchain to build or run modbot) and
//! served from this origin only (no CDN; the Content-Security-Policy forbids any other).
//!
//! The page signs in with a token (`/console/login`), then calls the JSON API with its
//! session cookie and CSRF token; everything it shows comes from the API, rendered with
//! `textContent` and DOM nodes, never HTML strings, so chat text cannot become markup.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The embedded files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

const INDEX: &str = include_str!("assets/index.html");

/// `/`: the console page.
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `/assets/{file}`: the script and the style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            let mut response = ([(header::CONTENT_TYPE, *content_type)], *body).into_response();
            // Names carry no hash: revalidate, so an upgrade is seen at once.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_names_only_its_own_assets() {
        let page = INDEX.to_ascii_lowercase();
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("style="), "inline style");
        let handler = page.split(|c: char| c.is_whitespace()).any(|word| {
            word.starts_with("on")
                && word.contains('=')
                && word[2..].starts_with(char::is_alphabetic)
        });
        assert!(!handler, "inline event handler attribute");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "another origin"
        );
        for (name, _, _) in ASSETS {
            assert!(
                page.contains(&format!("/assets/{name}")),
                "{name} is linked"
            );
        }
        for (name, _, body) in ASSETS {
            assert!(
                !body.contains("innerHTML"),
                "{name} builds markup from strings"
            );
            assert!(
                !body.contains("outerHTML") && !body.contains("insertAdjacentHTML"),
                "{name}"
            );
            assert!(!body.contains("eval("), "{name} evaluates strings");
            // The SVG namespace is a name, not an address anything is fetched from.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{name} names another origin"
            );
        }
    }
}
