//! HTTP Basic authentication, on every route and websocket, against the one user and
//! password of the configuration: the controller sends them with every request.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use crate::app::App;
use crate::error::ApiError;

/// Whether `headers` carry `user`'s `password`.
pub fn check(headers: &HeaderMap, user: &str, password: &str) -> Result<(), ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::NoCredentials)?
        .to_str()
        .map_err(|_| ApiError::BadCredentials)?;
    let (scheme, encoded) = value.split_once(' ').ok_or(ApiError::BadCredentials)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::NoCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::BadCredentials)?;
    let expected = format!("{user}:{password}");
    if same(&decoded, expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::BadCredentials)
    }
}

/// Compares in a time that does not depend on where the first difference is, so that the
/// password cannot be guessed a byte at a time from how long a refusal takes.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware every route but the websockets' is behind (they answer a refusal the way
/// GNS3 does, on the socket: see `routes::notifications`).
pub async fn require(State(app): State<App>, request: Request, next: Next) -> Response {
    match check(request.headers(), &app.config.user, &app.config.password) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            // The body is read (up to the limit) before the refusal: a reply to a request
            // whose body is still coming makes the server close the connection under the
            // client, which then sees a reset instead of the 401.
            let _ = axum::body::to_bytes(request.into_body(), crate::routes::MAX_BODY).await;
            axum::response::IntoResponse::into_response(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_configured_user_and_password_pass() {
        // base64("gns3:pw") and base64("gns3:px")
        assert!(check(&headers("Basic Z25zMzpwdw=="), "gns3", "pw").is_ok());
        assert!(matches!(
            check(&headers("Basic Z25zMzpweA=="), "gns3", "pw"),
            Err(ApiError::BadCredentials)
        ));
        assert!(matches!(
            check(&HeaderMap::new(), "gns3", "pw"),
            Err(ApiError::NoCredentials)
        ));
        assert!(matches!(
            check(&headers("Bearer abc"), "gns3", "pw"),
            Err(ApiError::NoCredentials)
        ));
        assert!(matches!(
            check(&headers("Basic !!!"), "gns3", "pw"),
            Err(ApiError::BadCredentials)
        ));
    }
}
