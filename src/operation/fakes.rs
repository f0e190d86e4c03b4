//! In-memory fakes of the traits an operation works with.
