use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::sync::permit::Admission;
use crate::{BoxError, CircuitOpen, Classifier};

type Acquire = Pin<Box<dyn Future<Output = Result<Admission, CircuitOpen>> + Send>>;

pin_project! {
    /// The response future of [`KeyedCircuitBreaker`](super::KeyedCircuitBreaker):
    /// asks for a half-open permit first when the key's breaker needs one, then
    /// runs as a [`ResponseFuture`].
    pub struct KeyedResponseFuture<F, S, Req, C> {
        #[pin]
        state: State<F, S, Req, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req, C> {
        Acquiring {
            acquire: Acquire,
            call: Option<(S, Req, Arc<Shared<C>>)>,
        },
        Running {
            #[pin]
            future: ResponseFuture<F, C>,
        },
    }
}

impl<F, S, Req, C> KeyedResponseFuture<F, S, Req, C> {
    pub(crate) fn running(future: ResponseFuture<F, C>) -> Self {
        Self {
            state: State::Running { future },
        }
    }

    pub(crate) fn acquiring(
        acquire: Acquire,
        inner: S,
        request: Req,
        shared: Arc<Shared<C>>,
    ) -> Self {
        Self {
            state: State::Acquiring {
                acquire,
                call: Some((inner, request, shared)),
            },
        }
    }
}

impl<F, S, Req, C, T, E> Future for KeyedResponseFuture<F, S, Req, C>
where
    S: Service<Req, Response = T, Error = E, Future = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classifier<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Running { future } => return future.poll(cx),
                StateProj::Acquiring { acquire, call } => {
                    let decision = ready!(acquire.as_mut().poll(cx));
                    let Some((mut inner, request, shared)) = call.take() else {
                        return Poll::Ready(Err(
                            "keyed breaker future polled after completion".into()
                        ));
                    };
                    match decision {
                        Ok(admission) => {
                            let future = inner.call(request);
                            ResponseFuture::called(future, shared, admission)
                        }
                        Err(open) => ResponseFuture::rejected(Box::new(open), &shared.replica),
                    }
                }
            };
            self.as_mut()
                .project()
                .state
                .set(State::Running { future: next });
        }
    }
}

impl<F, S, Req, C> fmt::Debug for KeyedResponseFuture<F, S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring a probe permit",
            State::Running { .. } => "running",
        };
        f.debug_struct("KeyedResponseFuture")
            .field("state", &state)
            .finish()
    }
}
