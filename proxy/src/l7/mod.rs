//! HTTP (L7): the engine on hyper. [`listener`] serves the client connections the workers
//! accept (TLS, HTTP/1.1 and HTTP/2); [`proxy`] answers each request through listener
//! [`rules`] and target groups, over the per-target connection pools of [`crate::upstream`],
//! kept tidy by [`pools`]; [`body`] streams responses back; [`conn`] is what a client
//! connection's requests share; [`headers`] is what a request's head becomes on its way; [`upgrade`] hands WebSocket connections over to a byte tunnel;
//! [`grpc`] is what berth knows of gRPC calls; [`transforms`] rewrites a matched rule's
//! requests and [`response_headers`] applies a listener's response header policy; [`sticky`]
//! signs and checks stickiness cookies.

pub mod access;
pub mod body;
pub mod conn;
pub mod grpc;
pub mod headers;
pub mod listener;
pub mod pools;
pub mod proxy;
pub mod response_headers;
pub mod rules;
pub mod sticky;
pub mod trace;
pub mod transforms;
pub mod upgrade;
