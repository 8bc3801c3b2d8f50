//! L4: TCP and TLS listeners (the NLB / PrivateLink role) and PROXY protocol, in and out (HTTP
//! listeners read the PROXY header in [`crate::l7::gate`]).

pub mod proxy_protocol;
pub mod tcp;
