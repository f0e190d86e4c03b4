//! The integration test binary: one binary, a shared context, modules by concern.

mod architecture;
mod common;
mod config;
mod control_plane;
mod init;
mod lint;
mod mirror;
mod network;
mod preflight;
mod properties;
mod provision;
mod release;
mod render;
mod replayed;
mod state;
mod transport;
mod upgrade;
