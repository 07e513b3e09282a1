//! Redis errors as [`StoreError`]s.

use std::time::Duration;

use redis::RedisError;

use crate::store::{StoreError, StoreErrorKind};

pub(super) fn open_client(url: &str) -> Result<redis::Client, StoreError> {
    redis::Client::open(url)
        .map_err(|e| StoreError::new(StoreErrorKind::Config, format!("invalid Redis URL: {e}")))
}

pub(super) fn unavailable_after(timeout: Duration) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        format!("Redis did not answer within {timeout:?}"),
    )
}

/// Sorts a Redis error by its error code (the first word of the server's
/// reply), never by searching its text.
pub(super) fn map_error(error: RedisError) -> StoreError {
    let kind = match error.code() {
        Some("DCB_CORRUPT" | "DCB_SCHEMA" | "WRONGTYPE") => StoreErrorKind::Corrupt,
        Some("NOPERM" | "NOAUTH" | "WRONGPASS") => StoreErrorKind::Refused,
        _ if error.kind() == redis::ErrorKind::AuthenticationFailed => StoreErrorKind::Refused,
        _ if error.kind() == redis::ErrorKind::InvalidClientConfig => StoreErrorKind::Config,
        _ => StoreErrorKind::Unavailable,
    };
    if error.code() == Some("NOPERM") {
        return StoreError::new(
            kind,
            format!("this Redis user is not allowed that (ACL): {error}; grant it the command, keys (`~{{prefix}}:*`) and channel (`&{{prefix}}:events`) the store needs, or connect with `RedisStoreBuilder::read_only` to only read"),
        );
    }
    StoreError::new(kind, error.to_string())
}
