//! Stackwright installs, upgrades and tears down a self-hosted platform in a customer's AWS
//! account. The binary is a thin shell over this library.

pub mod aws;
pub mod cli;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod control_plane;
pub mod error;
pub mod init;
pub mod mirror;
pub mod network;
pub mod operation;
pub mod output;
pub mod preflight;
pub mod provision;
pub mod release;
pub mod render;
pub mod settings;
pub mod stacks;
pub mod state;
pub mod text;
pub mod tls;
pub mod upgrade;
