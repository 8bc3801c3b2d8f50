//! L4: TCP and TLS listeners (the NLB / PrivateLink role) and PROXY protocol, in and out —
//! including PROXY protocol on HTTP listeners, whose client address then becomes the client
//! address everywhere (X-Forwarded-For, source-CIDR rules, stickiness, logs).

pub mod http_pp;
pub mod proxy_protocol;
pub mod tcp;
