//! Shared by the accuracy tests: the ground-truth measurements (`ground_truth`) and the models they
//! were measured on (`models`).

pub mod ground_truth;
pub mod models;
