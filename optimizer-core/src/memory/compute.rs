//! Compute buffers: the scheduler's per-device buffers for the worst-case graph
//! (llama-context.cpp:612-770). Not modelled yet: every device reports
//! [`ComputeEstimate::NotModelled`] until the calibrated compute model fills [`compute_buffer`].

use serde::Serialize;

use super::context::ResolvedContext;
use super::{Location, ResolvedPlacement};
use crate::model::ModelDescription;
use crate::settings::ServerSettings;
use crate::units::Bytes;

/// How a part of a compute estimate was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeBasis {
    /// Computed from llama.cpp's own rules, to the byte.
    Exact,
    /// Fitted to measurements.
    Calibrated,
}

/// One named term of a compute estimate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComputePart {
    /// What the term is (e.g. "flash-attention F16 K/V copies").
    pub what: String,
    /// Its size.
    pub bytes: Bytes,
    /// How it was obtained.
    pub basis: ComputeBasis,
}

/// A device's compute buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ComputeEstimate {
    /// No model yet: the size is unknown, not zero.
    NotModelled,
    /// An estimate made of named parts.
    Estimated {
        /// The parts; their sum is the estimate.
        parts: Vec<ComputePart>,
    },
}

impl ComputeEstimate {
    /// The estimate, or `None` when not modelled.
    pub fn bytes(&self) -> Option<Bytes> {
        match self {
            ComputeEstimate::NotModelled => None,
            ComputeEstimate::Estimated { parts } => Some(parts.iter().map(|p| p.bytes).sum()),
        }
    }
}

/// The compute buffer llama.cpp reserves on `device` for `model` with `settings`, given the resolved
/// context and placement. Not modelled yet.
pub fn compute_buffer(
    _model: &ModelDescription,
    _settings: &ServerSettings,
    _context: &ResolvedContext,
    _placement: &ResolvedPlacement,
    _device: Location,
) -> ComputeEstimate {
    ComputeEstimate::NotModelled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_sums_its_parts_and_unknown_is_not_zero() {
        assert_eq!(ComputeEstimate::NotModelled.bytes(), None);
        let part = |n| ComputePart { what: "x".into(), bytes: Bytes::new(n), basis: ComputeBasis::Exact };
        let e = ComputeEstimate::Estimated { parts: vec![part(3), part(4)] };
        assert_eq!(e.bytes(), Some(Bytes::new(7)));
    }
}
