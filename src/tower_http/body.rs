use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_http::classify::ClassifyEos;

use crate::{Deferred, Outcome};

/// What the response head said of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A success, known from the head.
    Success,
    /// A failure, known from the head.
    Failure,
    /// Known only at the end of the stream.
    AtEndOfStream,
}

pin_project! {
    /// A response body that reports the call's outcome when the stream ends
    /// (for responses classified at end of stream), and otherwise just passes
    /// frames through.
    pub struct ClassifiedBody<B, E> {
        #[pin]
        inner: B,
        verdict: Verdict,
        eos: Option<E>,
        deferred: Option<Deferred>,
    }
}

impl<B, E> ClassifiedBody<B, E> {
    pub(crate) fn decided(inner: B, verdict: Verdict) -> Self {
        Self {
            inner,
            verdict,
            eos: None,
            deferred: None,
        }
    }

    pub(crate) fn at_end_of_stream(inner: B, eos: E) -> Self {
        Self {
            inner,
            verdict: Verdict::AtEndOfStream,
            eos: Some(eos),
            deferred: Some(Deferred::new()),
        }
    }

    /// What the head said.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub(crate) fn deferred(&self) -> Option<&Deferred> {
        self.deferred.as_ref()
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B, E> Body for ClassifiedBody<B, E>
where
    B: Body,
    B::Error: fmt::Display + 'static,
    E: ClassifyEos,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let outcome = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .and_then(|trailers| Some(this.eos.take()?.classify_eos(Some(trailers)))),
            Some(Err(error)) => this.eos.take().map(|eos| Err(eos.classify_error(error))),
            None => this.eos.take().map(|eos| eos.classify_eos(None)),
        };
        if let (Some(result), Some(deferred)) = (outcome, this.deferred.as_ref()) {
            deferred.finish(if result.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            });
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug, E> fmt::Debug for ClassifiedBody<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifiedBody")
            .field("inner", &self.inner)
            .field("verdict", &self.verdict)
            .finish()
    }
}
