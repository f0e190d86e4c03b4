//! The operations against in-memory fakes.
