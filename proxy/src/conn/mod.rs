//! What every accepted connection goes through before its protocol takes over, shared by the
//! TCP ([`crate::l4`]), HTTP ([`crate::l7`]) and admin listeners: the listener's connection
//! limit ([`limit`]), and the PROXY protocol header, its wire format ([`proxy_protocol`]) and
//! whether to accept it ([`proxy_header`]).

pub mod limit;
pub mod proxy_header;
pub mod proxy_protocol;
