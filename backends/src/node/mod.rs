//! Node controllers.

mod bmc;
pub mod ipmi;
pub mod redfish;
pub mod simulated;
pub mod ssh_systemd;
pub mod wol;
