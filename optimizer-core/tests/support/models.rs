//! The models of the ground truth, in one place: each row's `model` key names a fixture layout
//! (fixtures/layouts/) and quant. The GPU runs loaded single-file sparse GGUFs of these layouts
//! (fixtures/ground-truth/README.md), so the layouts are built unsplit: the `CPU_Mapped` span is per
//! file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use optimizer_core::gguf::ReadOptions;
use optimizer_core::layout::{BuildOptions, LayoutSpec};
use optimizer_core::model::ModelDescription;

/// Ground-truth model key → (layout spec, quant).
pub const MODELS: [(&str, &str, &str); 6] = [
    ("q5", "qwen3-coder-next", "UD-Q5_K_XL"),
    ("oss", "gpt-oss-120b", "F16"),
    ("glm8", "glm-4.7-flash", "Q8_0"),
    ("glm4", "glm-4.7-flash", "Q4_K_M"),
    ("q8b", "qwen3-8b", "Q4_K_M"),
    ("l8b", "llama-3.1-8b", "Q4_K_M"),
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build(spec_key: &str, quant: &str) -> ModelDescription {
    let path = repo_root().join("fixtures/layouts").join(format!("{spec_key}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = LayoutSpec::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut layout =
        spec.build(quant, &BuildOptions::default()).unwrap_or_else(|e| panic!("{spec_key} {quant}: {e}"));
    layout.split = None;
    let gguf = layout.to_model(&ReadOptions::default()).unwrap_or_else(|e| panic!("{spec_key} {quant}: {e}"));
    ModelDescription::from_gguf(&gguf).unwrap_or_else(|e| panic!("{spec_key} {quant}: {e}"))
}

/// The model of ground-truth key `key` (built once per test binary).
pub fn model(key: &str) -> &'static ModelDescription {
    static CACHE: OnceLock<BTreeMap<&'static str, ModelDescription>> = OnceLock::new();
    let all = CACHE.get_or_init(|| MODELS.iter().map(|&(k, spec, quant)| (k, build(spec, quant))).collect());
    all.get(key).unwrap_or_else(|| panic!("ground-truth model key {key:?} is not in support::models::MODELS"))
}
