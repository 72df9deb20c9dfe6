//! The model architectures splitplan has specific rules for, by their GGUF `general.architecture`
//! names (`LLM_ARCH_NAMES`, llama-arch.cpp:8-164).

use std::fmt;

use serde::{Serialize, Serializer};

/// A llama.cpp model architecture.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Architecture {
    /// `qwen3next`: Qwen3-Next and Qwen3-Coder-Next (Gated DeltaNet hybrid MoE).
    Qwen3Next,
    /// `qwen35`: Qwen3.5 dense (Gated DeltaNet hybrid).
    Qwen35,
    /// `qwen35moe`: Qwen3.5 MoE (Gated DeltaNet hybrid).
    Qwen35Moe,
    /// `gpt-oss` (`LLM_ARCH_OPENAI_MOE`): sliding-window and full attention alternate.
    GptOss,
    /// `deepseek2`: DeepSeek-V2/V3 and GLM-4.7-Flash, MLA when the `*_mla` keys are present.
    Deepseek2,
    /// `llama`.
    Llama,
    /// `qwen3`.
    Qwen3,
    /// `qwen3moe`.
    Qwen3Moe,
    /// `gemma3`: five sliding-window layers, then one full-attention layer.
    Gemma3,
    /// Any other architecture: described with generic rules.
    Other(String),
}

const NAMED: [(Architecture, &str); 9] = [
    // llama-arch.cpp:10, 36-42, 58, 81, 128
    (Architecture::Qwen3Next, "qwen3next"),
    (Architecture::Qwen35, "qwen35"),
    (Architecture::Qwen35Moe, "qwen35moe"),
    (Architecture::GptOss, "gpt-oss"),
    (Architecture::Deepseek2, "deepseek2"),
    (Architecture::Llama, "llama"),
    (Architecture::Qwen3, "qwen3"),
    (Architecture::Qwen3Moe, "qwen3moe"),
    (Architecture::Gemma3, "gemma3"),
];

impl Architecture {
    /// The architecture a `general.architecture` value names; unknown names become [`Architecture::Other`].
    pub fn from_name(name: &str) -> Architecture {
        NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map_or_else(|| Architecture::Other(name.to_owned()), |(a, _)| a.clone())
    }

    /// The GGUF name, which is also the prefix of the architecture's metadata keys.
    pub fn name(&self) -> &str {
        match self {
            Architecture::Other(name) => name,
            known => NAMED.iter().find(|(a, _)| a == known).map_or("", |(_, n)| n),
        }
    }

    /// True for an architecture with rules of its own here.
    pub fn is_known(&self) -> bool {
        !matches!(self, Architecture::Other(_))
    }

    /// True for the Gated DeltaNet hybrids, whose memory is a KV cache over the attention layers plus
    /// a recurrent state over the others (`llm_arch_is_hybrid`, llama-arch.cpp:1124-1146).
    pub fn is_hybrid_recurrent(&self) -> bool {
        matches!(self, Architecture::Qwen3Next | Architecture::Qwen35 | Architecture::Qwen35Moe)
    }

    /// Whether the recurrent state keeps per-token rollback snapshots for speculative decoding
    /// (`llm_arch_supports_rs_rollback`, llama-arch.cpp:1162-1179): Qwen3.5 yes, Qwen3-Next no.
    pub fn supports_rs_rollback(&self) -> bool {
        matches!(self, Architecture::Qwen35 | Architecture::Qwen35Moe)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Architecture {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (arch, name) in &NAMED {
            assert_eq!(Architecture::from_name(name), *arch);
            assert_eq!(arch.name(), *name);
            assert!(arch.is_known());
        }
        let other = Architecture::from_name("mamba2");
        assert_eq!(other, Architecture::Other("mamba2".into()));
        assert_eq!(other.to_string(), "mamba2");
        assert!(!other.is_known());
    }

    #[test]
    fn rollback_is_qwen35_only() {
        assert!(!Architecture::Qwen3Next.supports_rs_rollback());
        assert!(Architecture::Qwen35Moe.supports_rs_rollback());
        assert!(Architecture::Qwen3Next.is_hybrid_recurrent());
        assert!(!Architecture::GptOss.is_hybrid_recurrent());
    }
}
