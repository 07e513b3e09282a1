use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse, MakeClassifier};
use tower_layer::Layer;
use tower_service::Service;

use super::body::{ClassifiedBody, Verdict};
use crate::{
    Classifier, Deferred, DistributedCircuitBreaker, DistributedCircuitBreakerLayer, Outcome,
};

/// The breaker layer with a tower-http classifier; built by
/// [`DistributedCircuitBreakerLayer::classify_with`].
#[derive(Clone)]
pub struct ClassifyWithLayer<M> {
    breaker: DistributedCircuitBreakerLayer<TowerHttpClassifier>,
    make: M,
}

impl<M> ClassifyWithLayer<M> {
    pub(crate) fn new(
        breaker: DistributedCircuitBreakerLayer<TowerHttpClassifier>,
        make: M,
    ) -> Self {
        Self { breaker, make }
    }

    /// A handle to inspect and command the breaker.
    pub fn breaker(&self) -> crate::Breaker {
        self.breaker.breaker()
    }
}

impl<S, M: Clone> Layer<S> for ClassifyWithLayer<M> {
    type Service = DistributedCircuitBreaker<Classify<S, M>, TowerHttpClassifier>;

    fn layer(&self, inner: S) -> Self::Service {
        self.breaker.layer(Classify {
            inner,
            make: self.make.clone(),
        })
    }
}

/// Classifies each response with tower-http's classifier as it arrives and
/// wraps its body in a [`ClassifiedBody`]. The breaker sits outside it.
#[derive(Clone)]
pub struct Classify<S, M> {
    inner: S,
    make: M,
}

impl<S, M, ReqB, ResB> Service<Request<ReqB>> for Classify<S, M>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    M: MakeClassifier,
{
    type Response = Response<ClassifiedBody<ResB, M::ClassifyEos>>;
    type Error = S::Error;
    type Future = ClassifyFuture<S::Future, M::Classifier>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let classifier = self.make.make_classifier(&request);
        ClassifyFuture {
            inner: self.inner.call(request),
            classifier: Some(classifier),
        }
    }
}

pin_project! {
    /// The response future of [`Classify`].
    pub struct ClassifyFuture<F, C> {
        #[pin]
        inner: F,
        classifier: Option<C>,
    }
}

impl<F, C, B, E> Future for ClassifyFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: ClassifyResponse,
{
    type Output = Result<Response<ClassifiedBody<B, C::ClassifyEos>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some(classifier) = this.classifier.take() else {
            // Polled again after completion: the response went out already;
            // hand this one over without a judgement.
            return Poll::Ready(Ok(
                response.map(|b| ClassifiedBody::decided(b, Verdict::Success))
            ));
        };
        let classified = classifier.classify_response(&response);
        Poll::Ready(Ok(match classified {
            ClassifiedResponse::Ready(Ok(())) => {
                response.map(|b| ClassifiedBody::decided(b, Verdict::Success))
            }
            ClassifiedResponse::Ready(Err(_)) => {
                response.map(|b| ClassifiedBody::decided(b, Verdict::Failure))
            }
            ClassifiedResponse::RequiresEos(eos) => {
                response.map(|b| ClassifiedBody::at_end_of_stream(b, eos))
            }
        }))
    }
}

/// The breaker's side of a tower-http classification: reads the verdict
/// [`Classify`] left on the body; errors of the service are failures.
#[derive(Debug, Clone, Copy, Default)]
pub struct TowerHttpClassifier;

impl<B, E, Err> Classifier<Response<ClassifiedBody<B, E>>, Err> for TowerHttpClassifier {
    fn classify(
        &self,
        result: Result<&Response<ClassifiedBody<B, E>>, &Err>,
        _: Duration,
    ) -> Outcome {
        match result.map(|r| r.body().verdict()) {
            Ok(Verdict::Success) => Outcome::Success,
            Ok(Verdict::Failure) | Err(_) => Outcome::Failure,
            Ok(Verdict::AtEndOfStream) => Outcome::Ignore,
        }
    }

    fn uses_elapsed(&self) -> bool {
        false
    }

    fn defer(&self, result: Result<&Response<ClassifiedBody<B, E>>, &Err>) -> Option<Deferred> {
        result.ok()?.body().deferred().cloned()
    }
}

impl<M> fmt::Debug for ClassifyWithLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyWithLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Classify<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classify")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, C> fmt::Debug for ClassifyFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFuture").finish_non_exhaustive()
    }
}
