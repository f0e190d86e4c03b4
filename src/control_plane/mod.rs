//! The control plane: the API between an installed instance and the vendor's control plane
//! (`api/control-plane.openapi.yaml`), its wire types ([`api`]), the [`ControlPlane`] trait the
//! installer's core talks to with its HTTP adapter ([`client`]), and the reference server that
//! implements the API for development, tests and demos.

pub mod api;
pub mod client;

pub use api::{
    Heartbeat, HeartbeatReceipt, InstanceCredentials, IssuedToken, LastOperation, LockStatus,
    OfferedRelease, OperationKind, OperationReport, Outcome, RegisterRequest, Registration,
    ReportReceipt, SecretToken, StackStatus, UpdateOffer, UpdateQuery,
};
pub use client::{ControlPlane, ControlPlaneClientSettings, ControlPlaneError, HttpControlPlane};
