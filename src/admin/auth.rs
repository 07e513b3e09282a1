//! The bearer token check.

use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The digest tokens are compared by: fixed length, so the comparison
/// says nothing about the token's length either.
pub(super) fn digest(token: &[u8]) -> [u8; 20] {
    sha1_smol::Sha1::from(token).digest().bytes()
}

/// Whether `headers` carry `Authorization: Bearer <token>` for `expected`.
pub(super) fn authorized(headers: &HeaderMap, expected: &[u8; 20]) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(token) = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| &value[7..])
    else {
        return false;
    };
    digest(token).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let expected = digest(b"s3cret");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            authorized(&headers, &expected)
        };
        assert!(with("Bearer s3cret"));
        assert!(with("bearer s3cret"));
        assert!(!with("Bearer s3cre"));
        assert!(!with("Bearer s3crett"));
        assert!(!with("Basic s3cret"));
        assert!(!with("s3cret"));
        assert!(!authorized(&HeaderMap::new(), &expected));
    }
}
