//! What dropscope does about an attack: the XDP blocklist and hook scripts.

pub(crate) mod blocklist;
pub(crate) mod hooks;
