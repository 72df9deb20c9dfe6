//! The table of every llama-server option and the small text conventions of llama.cpp's argument
//! parser (common/arg.cpp): how a spelling is looked up, how many values it takes, which strings
//! count as true or false, and how `std::stoi`/`std::stof` read numbers.

use super::flag_table::FLAGS;

/// What an option's handler takes, from the handler's signature in common/arg.cpp (arg.h:34-38):
/// this decides how many command-line words the option consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handler {
    /// No value (`handler_void`); from the environment only a truthy value applies it.
    Void,
    /// A positive and a negative spelling (`handler_bool`); no value on the command line.
    Bool,
    /// One value read with `std::stoi` (`handler_int`).
    Int,
    /// One value taken as text (`handler_string`).
    Str,
    /// Two values (`handler_str_str`); llama-server registers none today, kept for the arity rule.
    #[allow(dead_code)]
    TwoStrings,
}

/// One llama-server option as common/arg.cpp registers it.
#[derive(Debug)]
pub(crate) struct FlagDef {
    /// The line of its `add_opt` in common/arg.cpp (build 11434).
    #[allow(dead_code)] // kept in the table to make it reviewable against arg.cpp
    pub line: u32,
    /// Every spelling; the first identifies the option in the parser.
    pub args: &'static [&'static str],
    /// The negative spellings of a [`Handler::Bool`] option.
    pub neg: &'static [&'static str],
    pub handler: Handler,
    /// The `LLAMA_ARG_*` environment variable, if any.
    pub env: Option<&'static str>,
    /// For an option that only reports its removal (`arg_removed`, arg.cpp:343-345): the hint.
    pub removed: Option<&'static str>,
}

impl FlagDef {
    /// The spelling that names the option in the parser (its first one).
    pub fn id(&self) -> &'static str {
        self.args.first().copied().unwrap_or_default()
    }

    /// How many command-line words follow the option.
    pub fn arity(&self) -> usize {
        match self.handler {
            Handler::Void | Handler::Bool => 0,
            Handler::Int | Handler::Str => 1,
            Handler::TwoStrings => 2,
        }
    }

    /// The negative environment variable: `LLAMA_ARG_X` becomes `LLAMA_ARG_NO_X` for options with
    /// negative spellings (arg.cpp:125-143).
    pub fn neg_env(&self) -> Option<String> {
        if self.neg.is_empty() {
            return None;
        }
        self.env.map(|e| e.replacen("LLAMA_ARG_", "LLAMA_ARG_NO_", 1))
    }
}

/// Every option llama-server registers, in registration order.
pub(crate) fn all() -> &'static [FlagDef] {
    FLAGS
}

/// The option for a command-line word as llama.cpp spells it, and whether the spelling is the
/// positive one. A word starting with `--` has its `_` turned into `-` first (arg.cpp:822-825).
pub(crate) fn lookup(word: &str) -> Option<(&'static FlagDef, bool)> {
    FLAGS.iter().find_map(|def| {
        if def.args.contains(&word) {
            Some((def, true))
        } else if def.neg.contains(&word) {
            Some((def, false))
        } else {
            None
        }
    })
}

/// The spelling llama.cpp looks up for a command-line word (arg.cpp:822-825).
pub(crate) fn normalize(word: &str) -> String {
    if word.starts_with("--") { word.replace('_', "-") } else { word.to_string() }
}

/// `common_arg_utils::is_truthy` (arg.cpp:1337-1339).
pub(crate) fn is_truthy(v: &str) -> bool {
    matches!(v, "on" | "enabled" | "true" | "1")
}

/// `common_arg_utils::is_falsey` (arg.cpp:1341-1343).
pub(crate) fn is_falsey(v: &str) -> bool {
    matches!(v, "off" | "disabled" | "false" | "0")
}

/// `common_arg_utils::is_autoy` (arg.cpp:1345-1347).
pub(crate) fn is_autoy(v: &str) -> bool {
    matches!(v, "auto" | "-1")
}

/// `isspace` in the C locale, which `strtol` and `strtod` skip first.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// `std::stoi(s)`: leading white space, an optional sign, decimal digits; whatever follows the
/// digits is ignored (`"12abc"` is 12). `None` where `stoi` throws: no digits, or out of `int`
/// range.
pub(crate) fn c_stoi(s: &str) -> Option<i32> {
    let (negative, digits) = c_integer_prefix(s)?;
    let mut v: i64 = 0;
    for d in digits.bytes() {
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
        if v > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    i32::try_from(if negative { -v } else { v }).ok()
}

/// `std::stoull(s)` for the values that make sense: a non-negative decimal number. A minus sign,
/// which `stoull` silently wraps around, is refused.
pub(crate) fn c_stoull(s: &str) -> Option<u64> {
    let (negative, digits) = c_integer_prefix(s)?;
    if negative {
        return None;
    }
    digits.bytes().try_fold(0u64, |v, d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// The sign and the run of digits `strtol` reads, or `None` when there are no digits.
fn c_integer_prefix(s: &str) -> Option<(bool, &str)> {
    let t = s.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = rest.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    if end == 0 { None } else { Some((negative, &rest[..end])) }
}

/// `std::stof(s)`: leading white space, then the longest decimal floating-point prefix
/// (`"0.5x"` is 0.5), or `inf`/`infinity`/`nan`. `None` where `stof` throws. Hexadecimal floats,
/// which `strtof` also reads, are not recognised.
pub(crate) fn c_stof(text: &str) -> Option<f32> {
    let rest = text.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    let bytes = rest.as_bytes();
    let digit_at = |pos: usize| bytes.get(pos).is_some_and(u8::is_ascii_digit);
    let mut pos = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let lower = rest[pos..].to_ascii_lowercase();
    for word in ["infinity", "inf", "nan"] {
        if lower.starts_with(word) {
            return rest[..pos + word.len()].parse().ok();
        }
    }
    let int_start = pos;
    while digit_at(pos) {
        pos += 1;
    }
    let mut digits = pos - int_start;
    if bytes.get(pos) == Some(&b'.') {
        let frac_start = pos + 1;
        pos = frac_start;
        while digit_at(pos) {
            pos += 1;
        }
        digits += pos - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if matches!(bytes.get(pos), Some(b'e' | b'E')) {
        let mut end = pos + 1;
        if matches!(bytes.get(end), Some(b'+' | b'-')) {
            end += 1;
        }
        let exp_start = end;
        while digit_at(end) {
            end += 1;
        }
        // An exponent without digits is not part of the number.
        if end > exp_start {
            pos = end;
        }
    }
    let value: f32 = rest[..pos].parse().ok()?;
    // stof throws out_of_range where strtof overflows.
    if value.is_infinite() { None } else { Some(value) }
}

/// `parse_csv_row` (arg.cpp:1349-1393): split on `,`, with `"` quoting and `""` escapes.
pub(crate) fn parse_csv_row(input: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = input.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if !in_quotes => {
                if field.is_empty() {
                    in_quotes = true;
                } else {
                    field.push('"');
                }
            }
            '"' => {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            }
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Splits on runs of `,` and `/` as `std::sregex_token_iterator` with `[,/]+` does for `-ts` and
/// `--fit-target` (arg.cpp:2837-2840, 2903-2906): a leading separator gives an empty first field,
/// a trailing one gives none, and an empty value gives one empty field (libstdc++'s iterator
/// yields the whole input as the suffix when nothing matches).
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut out: Vec<&str> = value.split([',', '/']).collect();
    // Runs of separators are one separator: drop the empty fields they leave, except a leading one.
    let leading_empty = out.first().is_some_and(|f| f.is_empty());
    out.retain(|f| !f.is_empty());
    if leading_empty {
        out.insert(0, "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stoi_reads_a_prefix_like_cpp() {
        assert_eq!(c_stoi("99"), Some(99));
        assert_eq!(c_stoi("  -3"), Some(-3));
        assert_eq!(c_stoi("+7"), Some(7));
        assert_eq!(c_stoi("12abc"), Some(12));
        assert_eq!(c_stoi("2147483647"), Some(i32::MAX));
        assert_eq!(c_stoi("-2147483648"), Some(i32::MIN));
        assert_eq!(c_stoi("2147483648"), None);
        assert_eq!(c_stoi("99999999999999999999999"), None);
        for bad in ["", "abc", "-", " ", "auto", "x1"] {
            assert_eq!(c_stoi(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stof_reads_a_prefix_like_cpp() {
        assert_eq!(c_stof("3"), Some(3.0));
        assert_eq!(c_stof(" 0.5x"), Some(0.5));
        assert_eq!(c_stof(".25"), Some(0.25));
        assert_eq!(c_stof("1e2"), Some(100.0));
        assert_eq!(c_stof("1e"), Some(1.0));
        assert_eq!(c_stof("-2.5"), Some(-2.5));
        assert!(c_stof("nan").is_some_and(f32::is_nan));
        assert_eq!(c_stof("inf"), Some(f32::INFINITY));
        assert_eq!(c_stof("1e99"), None);
        for bad in ["", ".", "abc", "-", "e5"] {
            assert_eq!(c_stof(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stoull_refuses_negative_numbers() {
        assert_eq!(c_stoull("1024"), Some(1024));
        assert_eq!(c_stoull("128MiB"), Some(128));
        assert_eq!(c_stoull("-1"), None);
        assert_eq!(c_stoull("x"), None);
    }

    #[test]
    fn lists_split_like_the_regex_token_iterator() {
        assert_eq!(split_list("3,1"), ["3", "1"]);
        assert_eq!(split_list("3/1"), ["3", "1"]);
        assert_eq!(split_list("3,,/1,"), ["3", "1"]);
        assert_eq!(split_list(",3"), ["", "3"]);
        assert_eq!(split_list(""), [""]);
        assert_eq!(split_list(","), [""]);
    }

    #[test]
    fn csv_rows_honour_quotes() {
        assert_eq!(parse_csv_row(r#"a,"b,c","d ""e""",f"#), ["a", "b,c", r#"d "e""#, "f"]);
        assert_eq!(parse_csv_row(""), [""]);
        assert_eq!(parse_csv_row(r#"x"y"#), [r#"x"y"#]);
    }

    #[test]
    fn the_table_has_every_spelling_once_and_the_known_arities() {
        let mut seen = std::collections::BTreeSet::new();
        for def in all() {
            for s in def.args.iter().chain(def.neg) {
                assert!(seen.insert(*s), "{s} twice");
            }
        }
        let arity = |w: &str| lookup(w).map(|(d, _)| d.arity());
        assert_eq!(arity("-ot"), Some(1));
        assert_eq!(arity("--jinja"), Some(0));
        assert_eq!(arity("--no-jinja"), Some(0));
        assert_eq!(arity("--no-context-shift"), Some(0));
        assert_eq!(arity("-lv"), Some(1));
        assert_eq!(arity("--metrics"), Some(0));
        assert_eq!(arity("--cpu-moe"), Some(0));
        assert_eq!(arity("--fit"), Some(1));
        assert_eq!(arity("-p"), None, "llama-server excludes --prompt (arg.cpp:1777)");
        assert_eq!(arity("--mmap"), None, "build 11434 has -lm/--load-mode instead");
        assert_eq!(lookup("-nkvo").map(|(d, pos)| (d.id(), pos)), Some(("-kvo", false)));
        assert_eq!(lookup("-np").and_then(|(d, _)| d.env), Some("LLAMA_ARG_N_PARALLEL"));
    }
}
