//! [`UpBody`]: the body of a request sent to a target, buffered (replayable) or streamed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use metrics::Counter;

/// The body of a request sent to a target.
#[derive(Debug)]
pub enum UpBody {
    /// No body (GET, HEAD, or a request whose body was empty).
    Empty,
    /// A body read whole before sending (replayable on retry).
    Full(Option<Bytes>),
    /// A body streamed from the client as it arrives, trailers included (not replayable);
    /// request body bytes are counted on the way.
    Stream(Incoming, Counter),
}

impl UpBody {
    /// A copy for a retry, when the body is replayable.
    pub fn replay(&self) -> Option<UpBody> {
        match self {
            UpBody::Empty => Some(UpBody::Empty),
            UpBody::Full(b) => Some(UpBody::Full(b.clone())),
            UpBody::Stream(..) => None,
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Stream(inner, bytes_in) => {
                let polled = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &polled {
                    if let Some(d) = f.data_ref() {
                        bytes_in.increment(d.len() as u64);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => b.is_none(),
            UpBody::Stream(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Stream(inner, _) => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_buffered_bodies_replay() {
        assert!(UpBody::Empty.replay().is_some());
        assert!(UpBody::Full(Some(Bytes::from_static(b"x")))
            .replay()
            .is_some());
    }
}
