//! The API's answers: jobs as JSON (with a Link to the next page), or an
//! error as JSON.
use axum::{
    Json,
    http::{HeaderValue, StatusCode, Uri, header::LINK},
    response::{IntoResponse, Response},
};

use super::paging::{Listed, next_page};

/// The jobs as JSON, with a Link to the next page when this one is full.
pub(super) fn answer(listed: Listed, uri: &Uri) -> Response {
    let mut response = Json(listed.jobs).into_response();
    if let Some(next) = listed.next {
        let link = format!("<{}>; rel=\"next\"", next_page(uri, &next));
        // Built from a URI and percent-encoded text: always a valid value.
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(LINK, value);
        }
    }
    response
}

pub(super) fn server_error(message: String) -> Response {
    log::warn!("{message}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

pub(super) fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
