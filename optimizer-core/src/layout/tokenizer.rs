//! Synthetic BPE tokenizer arrays for fixtures: `tokenizer.ggml.tokens`, `token_type` and `merges`.
//!
//! Real vocabularies are not ours to ship, and the memory model only needs their sizes. A synthetic
//! vocabulary keeps what llama.cpp checks when it loads one (llama-vocab.cpp): token strings are
//! unique (llama-vocab.cpp:2578 asserts it), the 256 byte-level tokens of GPT-2's `bytes_to_unicode`
//! come first so that `tokenize("\n")` finds the newline (llama-vocab.cpp:2610-2612), every merge is
//! two parts joined by one space (llama-vocab.cpp:2043-2058), and the special tokens sit at their real
//! ids. The other tokens are unique letter strings of about the real average length (8-9 bytes).

use std::collections::BTreeMap;

use crate::gguf::{MetadataArray, MetadataValue, ValueType};

/// How long the tokenizer arrays are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenizerMode {
    /// The 256 byte tokens, [`SHORT_EXTRA_TOKENS`] synthetic ones, then the special tokens in id order
    /// (so their ids in the file are not the real ones); [`SHORT_MERGES`] merges. Keeps committed
    /// header-only fixtures small. The token count is then not the model's vocabulary size: take
    /// that from `token_embd.weight` (`ne1`).
    #[default]
    Short,
    /// The real counts: every id up to the vocabulary size, special tokens at their real ids, and the
    /// real number of merges. What a file that llama.cpp loads needs.
    Full,
}

/// Synthetic tokens after the byte tokens in [`TokenizerMode::Short`].
pub const SHORT_EXTRA_TOKENS: usize = 256;
/// Merges in [`TokenizerMode::Short`].
pub const SHORT_MERGES: usize = 256;

/// `llama_token_type` values (llama.h): normal and control tokens.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;

/// The three arrays of one tokenizer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

impl Vocab {
    /// Builds the arrays. `special` maps real ids to token strings; in [`TokenizerMode::Full`] every id
    /// must be below `n_tokens` (the caller checks).
    pub fn build(
        mode: TokenizerMode,
        n_tokens: usize,
        n_merges: usize,
        special: &BTreeMap<u64, String>,
    ) -> Vocab {
        let bytes = byte_tokens();
        let (mut tokens, mut types): (Vec<String>, Vec<i32>) = match mode {
            TokenizerMode::Short => {
                let mut tokens = bytes;
                tokens.extend((256..256 + SHORT_EXTRA_TOKENS).map(synthetic_token));
                let mut types = vec![TOKEN_NORMAL; tokens.len()];
                for s in special.values() {
                    tokens.push(s.clone());
                    types.push(TOKEN_CONTROL);
                }
                (tokens, types)
            }
            TokenizerMode::Full => {
                let mut tokens = bytes;
                tokens.truncate(n_tokens);
                tokens.extend((tokens.len()..n_tokens).map(synthetic_token));
                let mut types = vec![TOKEN_NORMAL; tokens.len()];
                for (&id, s) in special {
                    if let Some(i) = usize::try_from(id).ok().filter(|&i| i < tokens.len()) {
                        tokens[i].clone_from(s);
                        types[i] = TOKEN_CONTROL;
                    }
                }
                (tokens, types)
            }
        };
        tokens.shrink_to_fit();
        types.shrink_to_fit();
        let n_merges = match mode {
            TokenizerMode::Short => SHORT_MERGES,
            TokenizerMode::Full => n_merges,
        };
        // Merges pair up synthetic token texts split at varying points, so that they read like real
        // merges; ids are taken from the synthetic range of the full vocabulary.
        let span = n_tokens.saturating_sub(256).max(1);
        let merges = (0..n_merges)
            .map(|k| {
                let text = synthetic_token(256 + k % span);
                let chars: Vec<char> = text.chars().collect();
                let at = 1 + (k / span) % (chars.len() - 1);
                let (a, b) = chars.split_at(at);
                format!("{} {}", a.iter().collect::<String>(), b.iter().collect::<String>())
            })
            .collect();
        Vocab { tokens, types, merges }
    }

    pub fn tokens_value(&self) -> MetadataValue {
        string_array(&self.tokens)
    }

    pub fn types_value(&self) -> MetadataValue {
        MetadataValue::Array(MetadataArray {
            element_type: ValueType::I32,
            len: self.types.len() as u64,
            values: Some(self.types.iter().map(|&t| MetadataValue::I32(t)).collect()),
        })
    }

    pub fn merges_value(&self) -> MetadataValue {
        string_array(&self.merges)
    }
}

fn string_array(items: &[String]) -> MetadataValue {
    MetadataValue::Array(MetadataArray {
        element_type: ValueType::String,
        len: items.len() as u64,
        values: Some(items.iter().map(|s| MetadataValue::String(s.clone())).collect()),
    })
}

/// The 256 byte-level tokens in the order GPT-2 BPE vocabularies list them (ids 0-255 of the Qwen2
/// and Llama-3 vocabularies): `bytes_to_unicode`'s printable bytes as themselves, then the other
/// bytes as U+0100 onwards.
fn byte_tokens() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut tokens: Vec<String> =
        (0..256u32).filter(|&b| printable(b)).filter_map(char::from_u32).map(String::from).collect();
    tokens.extend((256..256 + 68u32).filter_map(char::from_u32).map(String::from));
    tokens
}

/// A unique token text for id `i` (>= 256): four letters that spell `i` in base 26, filler letters
/// to 4-10 letters, and the byte-level space `Ġ` before every other one, like real vocabularies.
fn synthetic_token(i: usize) -> String {
    const FILLER: &[u8] = b"esantiroludcmhpgfybwkvxzjq";
    let mut s = String::with_capacity(14);
    if i % 2 == 0 {
        s.push('\u{120}');
    }
    let mut n = i;
    let mut code = [b'a'; 4];
    for c in code.iter_mut().rev() {
        *c = b'a' + u8::try_from(n % 26).unwrap_or(0);
        n /= 26;
    }
    s.extend(code.iter().map(|&c| char::from(c)));
    s.extend((0..i % 7).map(|k| char::from(FILLER[(i + k) % FILLER.len()])));
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn qwen_special() -> BTreeMap<u64, String> {
        [(151_643, "<|endoftext|>"), (151_645, "<|im_end|>")]
            .into_iter()
            .map(|(i, s)| (i, s.to_owned()))
            .collect()
    }

    #[test]
    fn byte_tokens_follow_gpt2_order() {
        let t = byte_tokens();
        assert_eq!(t.len(), 256);
        assert_eq!((t[0].as_str(), t[1].as_str(), t[187].as_str()), ("!", "\"", "ÿ"));
        // ids 250-255 of ggml-vocab-qwen2.gguf: U+013E .. U+0143
        assert_eq!(t[250..].concat(), "ľĿŀŁłŃ");
        assert!(t.contains(&"Ċ".to_owned()), "the byte-level newline");
    }

    #[test]
    fn full_vocab_has_real_counts_unique_tokens_and_special_ids() {
        let v = Vocab::build(TokenizerMode::Full, 151_936, 151_387, &qwen_special());
        assert_eq!((v.tokens.len(), v.types.len(), v.merges.len()), (151_936, 151_936, 151_387));
        assert_eq!(v.tokens.iter().collect::<BTreeSet<_>>().len(), v.tokens.len());
        assert_eq!(v.tokens[151_645], "<|im_end|>");
        assert_eq!((v.types[151_645], v.types[151_644]), (TOKEN_CONTROL, TOKEN_NORMAL));
        let avg = v.tokens.iter().map(String::len).sum::<usize>() as f64 / v.tokens.len() as f64;
        assert!((7.0..10.0).contains(&avg), "average token length {avg}");
        assert!(
            v.merges.iter().all(|m| m.matches(' ').count() == 1 && !m.starts_with(' ') && !m.ends_with(' '))
        );
        // Llama-3 has more merges than synthetic tokens: they must still be distinct
        let l = Vocab::build(TokenizerMode::Full, 128_256, 280_147, &BTreeMap::new());
        assert_eq!(l.merges.iter().collect::<BTreeSet<_>>().len(), 280_147);
    }

    #[test]
    fn short_vocab_appends_special_tokens() {
        let v = Vocab::build(TokenizerMode::Short, 151_936, 151_387, &qwen_special());
        assert_eq!(v.tokens.len(), 256 + SHORT_EXTRA_TOKENS + 2);
        assert_eq!(v.tokens.last().map(String::as_str), Some("<|im_end|>"));
        assert_eq!(v.merges.len(), SHORT_MERGES);
        assert_eq!(v.tokens.iter().collect::<BTreeSet<_>>().len(), v.tokens.len());
    }
}
