//! Sets of layer numbers as compact regex alternations, in the style the user writes by hand:
//! `[0-9]|1[0-4]` for 0–14, `1[5-9]|2[0-1]` for 15–21, `[0-9]|[1-2][0-9]|3[0-2]` for 0–32.
//!
//! Each alternative matches exactly one decimal number of one length (no leading zeros), so inside
//! `blk\.(…)\.` the alternation selects exactly the set: the literal `\.` on both sides keeps
//! `blk\.1\.` from matching `blk.10.`.

/// The alternation matching exactly the numbers of `set` (any order, duplicates ignored), without
/// parentheses; empty for an empty set.
pub fn alternation(set: &[u32]) -> String {
    let mut sorted = set.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut alternatives: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end += 1;
        }
        alternatives.extend(range(start, end));
        i += 1;
    }
    alternatives.join("|")
}

/// `blk\.N\.` for one layer, `blk\.(…)\.` for several: the prefix that selects the tensors of the
/// layers in `set`.
pub fn block_prefix(set: &[u32]) -> String {
    let alt = alternation(set);
    if alt.bytes().all(|b| b.is_ascii_digit()) {
        format!(r"blk\.{alt}\.")
    } else {
        format!(r"blk\.({alt})\.")
    }
}

/// Alternatives for the run `lo..=hi`, split by number length.
fn range(lo: u32, hi: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = lo;
    loop {
        let len = digits(start);
        let top = 10u64.pow(len) - 1;
        let end = u64::from(hi).min(top);
        out.extend(same_length(&start.to_string(), &end.to_string()));
        if end >= u64::from(hi) {
            return out;
        }
        // end < hi <= u32::MAX, so end + 1 fits.
        start = u32::try_from(end + 1).unwrap_or(hi);
    }
}

fn digits(n: u32) -> u32 {
    n.checked_ilog10().unwrap_or(0) + 1
}

/// Alternatives for `lo..=hi`, two numbers of the same length.
fn same_length(lo: &str, hi: &str) -> Vec<String> {
    let (l, h) = (lo.as_bytes(), hi.as_bytes());
    if l.len() == 1 {
        return vec![class(l[0], h[0])];
    }
    let (lt, ht) = (&lo[1..], &hi[1..]);
    if l[0] == h[0] {
        let head = char::from(l[0]);
        return same_length(lt, ht).into_iter().map(|a| format!("{head}{a}")).collect();
    }
    let any = "[0-9]".repeat(lt.len());
    let lo_full = lt.bytes().all(|b| b == b'0');
    let hi_full = ht.bytes().all(|b| b == b'9');
    let mut out = Vec::new();
    let mut mid_lo = l[0];
    let mut mid_hi = h[0];
    if lo_full {
        // lo's whole decade is included: it joins the middle.
    } else {
        let head = char::from(l[0]);
        let nines = "9".repeat(lt.len());
        out.extend(same_length(lt, &nines).into_iter().map(|a| format!("{head}{a}")));
        mid_lo += 1;
    }
    if !hi_full {
        mid_hi -= 1;
    }
    if mid_lo <= mid_hi {
        out.push(format!("{}{any}", class(mid_lo, mid_hi)));
    }
    if !hi_full {
        let head = char::from(h[0]);
        let zeros = "0".repeat(ht.len());
        out.extend(same_length(&zeros, ht).into_iter().map(|a| format!("{head}{a}")));
    }
    out
}

/// One digit, or a class of digits.
fn class(lo: u8, hi: u8) -> String {
    if lo == hi { char::from(lo).to_string() } else { format!("[{}-{}]", char::from(lo), char::from(hi)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    #[test]
    fn the_users_ranges() {
        assert_eq!(alternation(&(0..=14).collect::<Vec<_>>()), "[0-9]|1[0-4]");
        assert_eq!(alternation(&(15..=21).collect::<Vec<_>>()), "1[5-9]|2[0-1]");
        assert_eq!(alternation(&(0..=32).collect::<Vec<_>>()), "[0-9]|[1-2][0-9]|3[0-2]");
        assert_eq!(alternation(&(33..=46).collect::<Vec<_>>()), "3[3-9]|4[0-6]");
        assert_eq!(alternation(&(0..=10).collect::<Vec<_>>()), "[0-9]|10");
        assert_eq!(alternation(&[25, 26, 27, 28, 29]), "2[5-9]");
        assert_eq!(alternation(&[3, 7, 11, 12]), "3|7|1[1-2]");
        assert_eq!(alternation(&(95..=123).collect::<Vec<_>>()), "9[5-9]|1[0-1][0-9]|12[0-3]");
        assert_eq!(alternation(&[]), "");
        assert_eq!(block_prefix(&[25]), r"blk\.25\.");
        assert_eq!(block_prefix(&[25, 26]), r"blk\.(2[5-6])\.");
    }

    proptest! {
        /// Inside `blk\.(…)\.`, the alternation selects exactly the set's layers.
        #[test]
        fn selects_exactly_the_set(set in prop::collection::btree_set(0u32..260, 0..40)) {
            let set: Vec<u32> = set.into_iter().collect();
            prop_assume!(!set.is_empty());
            let re = Regex::new(&block_prefix(&set)).unwrap();
            for il in 0..300u32 {
                let name = format!("blk.{il}.ffn_down_exps.weight");
                prop_assert_eq!(re.is_match(&name), set.contains(&il), "layer {} with {}", il, re.as_str());
            }
        }
    }
}
