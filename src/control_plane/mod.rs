//! The control plane: the API between an installed instance and the vendor's control plane
//! (`api/control-plane.openapi.yaml`), its wire types ([`api`]), the [`ControlPlane`] trait the
//! installer's core talks to with its HTTP adapter ([`client`]), and the reference server that
//! implements the API for development, tests and demos.

pub mod api;
pub mod catalog;
pub mod client;
pub mod identity;
pub mod listener;
pub mod operator;
pub mod server;
pub mod store;
pub mod tokens;
pub mod wave;

pub use api::{
    Heartbeat, HeartbeatReceipt, InstanceCredentials, IssuedToken, LastOperation, LockStatus,
    OfferedRelease, OperationKind, OperationReport, Outcome, RegisterRequest, Registration,
    ReportReceipt, SecretToken, StackStatus, UpdateOffer, UpdateQuery,
};
pub use client::{ControlPlane, ControlPlaneClientSettings, ControlPlaneError, HttpControlPlane};
pub use identity::{IdentityStore, StoredIdentity};
