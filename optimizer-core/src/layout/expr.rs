//! Integer expressions over hyperparameters, as layout specs write shapes, layer conditions and
//! metadata values: `"n_embd"`, `"head_dim * n_head * 2"`, `"(i + 1) % full_attention_interval == 0"`.
//!
//! The grammar is small on purpose: integers, names, `+ - * / %` (integer division, as the converter
//! and llama.cpp compute these shapes), comparisons (`== != < <= > >=`, giving 1 or 0), `&& || !`
//! and parentheses. Everything is `i64`; overflow and division by zero are errors, not panics.

use std::fmt;

/// A parsed expression; evaluate it with [`Expr::eval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    source: String,
    node: Node,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Int(i64),
    Name(String),
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin(Op, Box<Node>, Box<Node>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Op {
    /// Binding power: higher binds tighter.
    fn precedence(self) -> u8 {
        match self {
            Op::Or => 1,
            Op::And => 2,
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => 3,
            Op::Add | Op::Sub => 4,
            Op::Mul | Op::Div | Op::Rem => 5,
        }
    }
}

/// Why an expression could not be parsed or evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The text is not an expression.
    #[error("cannot parse expression {expr:?} at byte {position}: {message}")]
    Syntax {
        /// The expression.
        expr: String,
        /// Where parsing stopped.
        position: usize,
        /// What was expected there.
        message: String,
    },
    /// A name that is neither a hyperparameter nor a derived value (nor `i` inside a layer).
    #[error("unknown name {name:?} in expression {expr:?}")]
    UnknownName {
        /// The expression.
        expr: String,
        /// The name.
        name: String,
    },
    /// Overflow or division by zero.
    #[error("expression {expr:?} overflows or divides by zero")]
    Arithmetic {
        /// The expression.
        expr: String,
    },
}

impl Expr {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        let mut parser = Parser { src: source, pos: 0 };
        let node = parser.expr(0)?;
        parser.skip_ws();
        if parser.pos != source.len() {
            return Err(parser.error("an operator or the end"));
        }
        Ok(Expr { source: source.to_owned(), node })
    }

    /// An expression that is just the integer `value`.
    pub fn literal(value: i64) -> Expr {
        Expr { source: value.to_string(), node: Node::Int(value) }
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every name the expression refers to, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a str>) {
            match node {
                Node::Int(_) => {}
                Node::Name(n) => out.push(n),
                Node::Not(a) | Node::Neg(a) => walk(a, out),
                Node::Bin(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.node, &mut out);
        out
    }

    /// Evaluates the expression; `lookup` gives the value of a name, or `Ok(None)` if it has none.
    /// The lookup's own errors pass through unchanged (derived values are expressions too).
    pub fn eval<E>(&self, lookup: &mut dyn FnMut(&str) -> Result<Option<i64>, E>) -> Result<i64, E>
    where
        E: From<ExprError>,
    {
        self.eval_node(&self.node, lookup)
    }

    fn eval_node<E>(
        &self,
        node: &Node,
        lookup: &mut dyn FnMut(&str) -> Result<Option<i64>, E>,
    ) -> Result<i64, E>
    where
        E: From<ExprError>,
    {
        let arithmetic = || ExprError::Arithmetic { expr: self.source.clone() };
        Ok(match node {
            Node::Int(v) => *v,
            Node::Name(name) => match lookup(name)? {
                Some(v) => v,
                None => {
                    return Err(
                        ExprError::UnknownName { expr: self.source.clone(), name: name.clone() }.into()
                    );
                }
            },
            Node::Not(a) => i64::from(self.eval_node(a, lookup)? == 0),
            Node::Neg(a) => self.eval_node(a, lookup)?.checked_neg().ok_or_else(arithmetic)?,
            Node::Bin(op, a, b) => {
                let x = self.eval_node(a, lookup)?;
                let y = self.eval_node(b, lookup)?;
                match op {
                    Op::Or => i64::from(x != 0 || y != 0),
                    Op::And => i64::from(x != 0 && y != 0),
                    Op::Eq => i64::from(x == y),
                    Op::Ne => i64::from(x != y),
                    Op::Lt => i64::from(x < y),
                    Op::Le => i64::from(x <= y),
                    Op::Gt => i64::from(x > y),
                    Op::Ge => i64::from(x >= y),
                    Op::Add => x.checked_add(y).ok_or_else(arithmetic)?,
                    Op::Sub => x.checked_sub(y).ok_or_else(arithmetic)?,
                    Op::Mul => x.checked_mul(y).ok_or_else(arithmetic)?,
                    // Python's // and % floor; C's truncate. Shapes are never negative, so the two agree
                    // where it matters; Euclidean keeps % non-negative like Python's for a positive divisor.
                    Op::Div => x.checked_div_euclid(y).ok_or_else(arithmetic)?,
                    Op::Rem => x.checked_rem_euclid(y).ok_or_else(arithmetic)?,
                }
            }
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &str) -> ExprError {
        let found =
            self.src[self.pos..].chars().next().map_or_else(|| "the end".to_owned(), |c| format!("{c:?}"));
        ExprError::Syntax {
            expr: self.src.to_owned(),
            position: self.pos,
            message: format!("expected {expected}, found {found}"),
        }
    }

    fn skip_ws(&mut self) {
        let rest = &self.src[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek_op(&mut self) -> Option<(Op, usize)> {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let two =
            [("||", Op::Or), ("&&", Op::And), ("==", Op::Eq), ("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge)];
        for (text, op) in two {
            if rest.starts_with(text) {
                return Some((op, 2));
            }
        }
        let op = match rest.chars().next()? {
            '<' => Op::Lt,
            '>' => Op::Gt,
            '+' => Op::Add,
            '-' => Op::Sub,
            '*' => Op::Mul,
            '/' => Op::Div,
            '%' => Op::Rem,
            _ => return None,
        };
        Some((op, 1))
    }

    /// Precedence climbing: parses operators that bind tighter than `min`.
    fn expr(&mut self, min: u8) -> Result<Node, ExprError> {
        let mut lhs = self.unary()?;
        while let Some((op, len)) = self.peek_op() {
            if op.precedence() <= min {
                break;
            }
            self.pos += len;
            let rhs = self.expr(op.precedence())?;
            lhs = Node::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Err(self.error("a number, a name or '('"));
        };
        match c {
            '!' => {
                self.pos += 1;
                Ok(Node::Not(Box::new(self.unary()?)))
            }
            '-' => {
                self.pos += 1;
                Ok(Node::Neg(Box::new(self.unary()?)))
            }
            '(' => {
                self.pos += 1;
                let inner = self.expr(0)?;
                self.skip_ws();
                if !self.src[self.pos..].starts_with(')') {
                    return Err(self.error("')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            c if c.is_ascii_digit() => {
                let len = rest.find(|c: char| !(c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
                let digits: String = rest[..len].chars().filter(|&c| c != '_').collect();
                let value = digits.parse::<i64>().map_err(|_| self.error("a number that fits in 64 bits"))?;
                self.pos += len;
                Ok(Node::Int(value))
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                self.pos += len;
                Ok(Node::Name(rest[..len].to_owned()))
            }
            _ => Err(self.error("a number, a name or '('")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, vars: &[(&str, i64)]) -> Result<i64, ExprError> {
        let e = Expr::parse(src)?;
        e.eval(&mut |n: &str| Ok::<_, ExprError>(vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)))
    }

    #[test]
    fn arithmetic_follows_precedence() {
        assert_eq!(eval("2 * a + 2 * b", &[("a", 2048), ("b", 4096)]), Ok(12288));
        assert_eq!(eval("head_dim * n_head * 2", &[("head_dim", 256), ("n_head", 16)]), Ok(8192));
        assert_eq!(eval("(1 + 2) * 3 - 8 / 3 % 2", &[]), Ok(9));
        assert_eq!(eval("128 / 2", &[]), Ok(64));
        assert_eq!(eval("-3 + 1_000", &[]), Ok(997));
    }

    #[test]
    fn conditions_give_one_or_zero() {
        let full = "(i + 1) % interval == 0";
        assert_eq!(eval(full, &[("i", 3), ("interval", 4)]), Ok(1));
        assert_eq!(eval(full, &[("i", 4), ("interval", 4)]), Ok(0));
        assert_eq!(eval("i < 1 || !(i >= 5) && i != 3", &[("i", 3)]), Ok(0));
        assert_eq!(eval("i < 1 || !(i >= 5) && i != 3", &[("i", 4)]), Ok(1));
        assert_eq!(eval("i <= 2 && i > 0", &[("i", 2)]), Ok(1));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = Expr::parse("n_embd *").unwrap_err();
        assert!(matches!(err, ExprError::Syntax { position: 8, .. }), "{err}");
        assert!(matches!(Expr::parse("(a + b"), Err(ExprError::Syntax { position: 6, .. })));
        assert!(matches!(Expr::parse("a b"), Err(ExprError::Syntax { position: 2, .. })));
        assert!(matches!(Expr::parse(""), Err(ExprError::Syntax { position: 0, .. })));
        assert!(matches!(Expr::parse("99999999999999999999"), Err(ExprError::Syntax { .. })));
        assert_eq!(
            Expr::parse("a $ b").unwrap_err().to_string(),
            "cannot parse expression \"a $ b\" at byte 2: expected an operator or the end, found '$'"
        );
    }

    #[test]
    fn evaluation_errors_are_typed() {
        assert_eq!(
            eval("n_embd * 2", &[]),
            Err(ExprError::UnknownName { expr: "n_embd * 2".into(), name: "n_embd".into() })
        );
        assert!(matches!(eval("1 / 0", &[]), Err(ExprError::Arithmetic { .. })));
        assert!(matches!(eval("9223372036854775807 + 1", &[]), Err(ExprError::Arithmetic { .. })));
    }

    #[test]
    fn names_are_listed() {
        assert_eq!(Expr::parse("2 * key_dim + value_dim").unwrap().names(), ["key_dim", "value_dim"]);
    }
}
