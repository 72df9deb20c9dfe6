//! Stacked bars of a GPU's memory, in plain characters so that they read without colour (and
//! survive copy and paste into markdown); with colour, each part is also painted.
//!
//! One character stands for an equal share of the bar's scale (the free memory llama.cpp reports
//! at load, or what the GPU would need when that is more); shares are rounded by largest
//! remainder so that the parts always add up to the bar's width, and a part that is not empty gets
//! at least one character.

use std::fmt::Write as _;

use crate::units::Bytes;

/// The characters of the parts, in the order they are stacked.
pub const LEGEND: &str = "# weights  = KV cache and recurrent state  + compute  ~ overhead  m margin  . free";

/// Characters of a bar between its brackets.
pub const WIDTH: usize = 50;

/// What one GPU holds, for its bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarParts {
    /// Weights.
    pub weights: Bytes,
    /// KV cache and recurrent state.
    pub context: Bytes,
    /// Compute buffer.
    pub compute: Bytes,
    /// Memory beyond llama.cpp's breakdown after the first long request.
    pub overhead: Bytes,
    /// The margin kept.
    pub margin: Bytes,
    /// The free memory llama.cpp reports at load.
    pub free_at_load: Bytes,
}

/// ANSI colours of the parts (weights, context, compute, overhead, margin, free).
const COLOURS: [&str; 6] = ["34", "35", "33", "31", "2", "32"];

/// The bar `[###==+~m....]`, `width` characters between the brackets. When the parts need more than
/// the free memory, the scale is what they need and the characters past the free memory are `!`.
pub fn bar(parts: &BarParts, width: usize, colour: bool) -> String {
    let used = [parts.weights, parts.context, parts.compute, parts.overhead, parts.margin];
    let need: u64 = used.iter().map(|b| b.get()).sum();
    let scale = need.max(parts.free_at_load.get()).max(1);
    let free = parts.free_at_load.get().saturating_sub(need);
    let sizes = [used[0].get(), used[1].get(), used[2].get(), used[3].get(), used[4].get(), free];
    let cells = shares(&sizes, scale, width);
    let chars = ['#', '=', '+', '~', 'm', '.'];
    // Characters past the free memory, when over.
    let over_from = if need > parts.free_at_load.get() {
        let f = u128::from(parts.free_at_load.get()) * width as u128 / u128::from(scale);
        usize::try_from(f).unwrap_or(width)
    } else {
        width
    };
    let mut out = String::with_capacity(width + 16);
    out.push('[');
    let mut at = 0usize;
    for (i, &n) in cells.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let mut run = String::with_capacity(n);
        for k in 0..n {
            run.push(if at + k >= over_from { '!' } else { chars[i] });
        }
        at += n;
        if colour {
            let _ = write!(out, "\x1b[{}m{run}\x1b[0m", COLOURS[i]);
        } else {
            out.push_str(&run);
        }
    }
    out.push(']');
    out
}

/// `width` characters shared among `sizes` in proportion to `scale`, by largest remainder; every
/// non-empty size gets at least one character when there are enough characters for that.
fn shares(sizes: &[u64], scale: u64, width: usize) -> Vec<usize> {
    let w = width as u128;
    let s = u128::from(scale);
    let mut cells: Vec<usize> =
        sizes.iter().map(|&b| usize::try_from(u128::from(b) * w / s).unwrap_or(width)).collect();
    if sizes.iter().filter(|&&b| b > 0).count() <= width {
        for (c, &b) in cells.iter_mut().zip(sizes) {
            if b > 0 && *c == 0 {
                *c = 1;
            }
        }
    }
    let mut total: usize = cells.iter().sum();
    // Too many (minimums taken): take from the largest parts.
    while total > width {
        let Some(i) =
            (0..cells.len()).filter(|&i| cells[i] > 1).max_by_key(|&i| (cells[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        cells[i] -= 1;
        total -= 1;
    }
    // Too few: give to the largest remainders.
    let mut order: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] > 0).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse((u128::from(sizes[i]) * w) % s), i));
    if order.is_empty() {
        // Nothing at all: the bar is all free.
        if let Some(last) = cells.last_mut() {
            *last = width;
        }
        return cells;
    }
    let mut k = 0;
    while total < width {
        cells[order[k % order.len()]] += 1;
        total += 1;
        k += 1;
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights, context, compute, overhead, margin and free at load, MiB.
    fn parts(mib: [u64; 6]) -> BarParts {
        let [weights, context, compute, overhead, margin, free_at_load] = mib.map(Bytes::from_mib);
        BarParts { weights, context, compute, overhead, margin, free_at_load }
    }

    #[test]
    fn parts_add_up_to_the_width() {
        let b = bar(&parts([18_995, 2_226, 824, 208, 128, 24_040]), 50, false);
        assert_eq!(b, "[#######################################====++~m...]");
        assert_eq!(b.chars().count(), 52);
        for w in [1, 7, 20, 50, 80] {
            for p in [parts([1, 1, 1, 1, 1, 100_000]), parts([0, 0, 0, 0, 0, 0]), parts([5, 0, 0, 0, 0, 5])] {
                assert_eq!(bar(&p, w, false).chars().count(), w + 2, "{p:?} at {w}");
            }
        }
    }

    #[test]
    fn small_parts_still_show() {
        let b = bar(&parts([10_000, 1, 1, 1, 1, 20_000]), 20, false);
        assert!(b.contains('=') && b.contains('+') && b.contains('~') && b.contains('m'), "{b}");
    }

    #[test]
    fn over_is_marked() {
        let b = bar(&parts([10_000, 0, 1_000, 0, 1_000, 10_000]), 20, false);
        assert_eq!(b, "[################!!!!]");
    }

    #[test]
    fn colour_paints_each_part() {
        let b = bar(&parts([1, 0, 0, 0, 0, 2]), 4, true);
        assert_eq!(b, "[\x1b[34m##\x1b[0m\x1b[32m..\x1b[0m]");
    }
}
