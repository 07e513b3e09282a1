use std::time::Duration;

use http::{Response, StatusCode};

use super::{Classifier, Outcome};

/// Classifies `http::Response`s: transport errors and 5xx fail, other 4xx succeed
/// (a bad request is the caller's fault, not the dependency's), and
/// `429 Too Many Requests` fails unless configured otherwise.
///
/// ```
/// use std::time::Duration;
/// use distributed_circuit_breaker::{Classifier, HttpClassifier, Outcome};
/// use http::{Response, StatusCode};
///
/// let c = HttpClassifier::default().too_many_requests(Outcome::Ignore);
/// let res = |s: u16| Response::builder().status(s).body(()).unwrap();
/// let classify = |r: &Response<()>| Classifier::<_, ()>::classify(&c, Ok(r), Duration::ZERO);
/// assert_eq!(classify(&res(503)), Outcome::Failure);
/// assert_eq!(classify(&res(404)), Outcome::Success);
/// assert_eq!(classify(&res(429)), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    server_errors: Outcome,
    client_errors: Outcome,
    too_many_requests: Outcome,
    errors: Outcome,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self {
            server_errors: Outcome::Failure,
            client_errors: Outcome::Success,
            too_many_requests: Outcome::Failure,
            errors: Outcome::Failure,
        }
    }
}

impl HttpClassifier {
    /// The default classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// How 5xx responses count (default: failure).
    pub fn server_errors(mut self, outcome: Outcome) -> Self {
        self.server_errors = outcome;
        self
    }

    /// How 4xx responses other than 429 count (default: success).
    pub fn client_errors(mut self, outcome: Outcome) -> Self {
        self.client_errors = outcome;
        self
    }

    /// How `429 Too Many Requests` counts (default: failure: the dependency is
    /// overloaded and backing off helps it).
    pub fn too_many_requests(mut self, outcome: Outcome) -> Self {
        self.too_many_requests = outcome;
        self
    }

    /// How errors of the inner service (connection refused, reset, ...) count
    /// (default: failure).
    pub fn errors(mut self, outcome: Outcome) -> Self {
        self.errors = outcome;
        self
    }

    /// The outcome for an error of the inner service.
    pub fn classify_error(&self) -> Outcome {
        self.errors
    }

    /// The outcome for a status code.
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.too_many_requests
        } else if status.is_server_error() {
            self.server_errors
        } else if status.is_client_error() {
            self.client_errors
        } else {
            Outcome::Success
        }
    }
}

impl<B, E> Classifier<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>, _elapsed: Duration) -> Outcome {
        match result {
            Ok(response) => self.classify_status(response.status()),
            Err(_) => self.errors,
        }
    }

    fn uses_elapsed(&self) -> bool {
        false
    }
}
