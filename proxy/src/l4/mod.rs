//! L4: TCP and TLS listeners (the NLB / PrivateLink role). The PROXY header they read and
//! write lives in [`crate::conn`], shared with HTTP listeners.

pub mod flow_log;
pub mod tcp;
