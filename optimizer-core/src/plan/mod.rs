//! Planning placements: the machine a plan is for (`devices`), and, as they land, the search for
//! the placements that fit and the objective that ranks them.

pub mod devices;

pub use devices::{
    CUDA_CONTEXT_OVERHEAD, DetectedGpu, DeviceError, DeviceOrder, Gpu, Hardware, KnownCard, known_card,
    parse_free_list, parse_gpu_list,
};
