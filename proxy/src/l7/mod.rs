//! HTTP (L7): listener rules and the pingora `ProxyHttp` implementation.

pub mod gate;
pub mod proxy;
pub mod rules;
