//! What the admin API allows.

use std::fmt;

/// The admin API's configuration: who may change breakers.
///
/// Without a [`token`](Self::token) the API changes nothing (reads only);
/// [`read_only`](Self::read_only) says so even with one.
///
/// ```
/// use distributed_circuit_breaker::admin::AdminConfig;
///
/// let config = AdminConfig::new().token(std::env::var("DCB_ADMIN_TOKEN").unwrap_or_default());
/// ```
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// The SHA-1 of the token (compared digest to digest, in constant time).
    pub(super) token: Option<[u8; 20]>,
    pub(super) read_only: bool,
}

impl AdminConfig {
    /// Reads only, until a token is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bearer token mutations must present. An empty token allows no
    /// mutation.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        let token = token.as_ref();
        self.token = (!token.is_empty()).then(|| super::auth::digest(token));
        self
    }

    /// Refuse every mutation (403), whatever the token.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether mutations can be allowed at all.
    pub(super) fn mutable(&self) -> bool {
        self.token.is_some() && !self.read_only
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.map(|_| "<set>"))
            .field("read_only", &self.read_only)
            .finish()
    }
}
