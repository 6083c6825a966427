//! The arithmetic ComfyMathExpression evaluates (PyPI `simpleeval` with ComfyUI's function
//! table, `comfy_extras/nodes_math.py`): Python expression syntax and Python's number rules
//! (ints stay ints, `/` gives floats, `//` and `%` floor, `and`/`or` give an operand, bools
//! count as ints), over named numbers and the list `values`. Errors carry the exception
//! class Python would raise.

use std::collections::BTreeMap;

/// A Python value the expressions handle.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Int(i128),
    Float(f64),
    Bool(bool),
    List(Vec<Val>),
}

/// A Python exception: its class name and message.
#[derive(Debug, PartialEq)]
pub struct EvalError {
    pub kind: &'static str,
    pub message: String,
}

type Res<T> = Result<T, EvalError>;

fn err<T>(kind: &'static str, message: impl Into<String>) -> Res<T> {
    Err(EvalError {
        kind,
        message: message.into(),
    })
}

/// simpleeval's limit on both sides of `**`.
const MAX_POWER: f64 = 4_000_000.0;
/// ComfyUI's limit on `pow()`'s exponent.
const MAX_EXPONENT: f64 = 4000.0;
/// simpleeval's limits on shifts.
const MAX_SHIFT: i128 = 10_000;

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Bool(_) => "bool",
            Val::List(_) => "list",
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Bool(b) => *b,
            Val::List(l) => !l.is_empty(),
        }
    }

    /// The number as Python's arithmetic sees it: bools are ints.
    fn number(&self) -> Res<Num> {
        match self {
            Val::Int(i) => Ok(Num::Int(*i)),
            Val::Bool(b) => Ok(Num::Int(i128::from(*b))),
            Val::Float(f) => Ok(Num::Float(*f)),
            Val::List(_) => err("TypeError", "unsupported operand type(s): 'list'"),
        }
    }

    pub fn as_f64(&self) -> Res<f64> {
        Ok(match self.number()? {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        })
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn int(i: Option<i128>) -> Res<Val> {
    i.map(Val::Int).ok_or_else(|| EvalError {
        kind: "OverflowError",
        message: "integer too large for this evaluator".into(),
    })
}

/// Python's int of a float (truncation), failing on inf and nan as Python does.
fn float_to_int(f: f64) -> Res<i128> {
    if f.is_nan() {
        return err("ValueError", "cannot convert float NaN to integer");
    }
    if f.is_infinite() {
        return err("OverflowError", "cannot convert float infinity to integer");
    }
    Ok(f.trunc() as i128)
}

fn binary(op: &str, a: &Val, b: &Val) -> Res<Val> {
    if let (Val::Bool(x), Val::Bool(y)) = (a, b) {
        match op {
            "&" => return Ok(Val::Bool(x & y)),
            "|" => return Ok(Val::Bool(x | y)),
            "^" => return Ok(Val::Bool(x ^ y)),
            _ => {}
        }
    }
    let (x, y) = (a.number()?, b.number()?);
    let zero = |what: &str| err("ZeroDivisionError", what.to_string());
    match (op, x, y) {
        ("+", Num::Int(p), Num::Int(q)) => int(p.checked_add(q)),
        ("-", Num::Int(p), Num::Int(q)) => int(p.checked_sub(q)),
        ("*", Num::Int(p), Num::Int(q)) => int(p.checked_mul(q)),
        ("+", ..) => Ok(Val::Float(x.f() + y.f())),
        ("-", ..) => Ok(Val::Float(x.f() - y.f())),
        ("*", ..) => Ok(Val::Float(x.f() * y.f())),
        ("/", ..) => {
            if y.f() == 0.0 {
                return zero("division by zero");
            }
            Ok(Val::Float(x.f() / y.f()))
        }
        ("//", Num::Int(p), Num::Int(q)) => {
            if q == 0 {
                return zero("integer division or modulo by zero");
            }
            int(Some(
                p.div_euclid(q) - i128::from(q < 0 && p.rem_euclid(q) != 0),
            ))
        }
        ("%", Num::Int(p), Num::Int(q)) => {
            if q == 0 {
                return zero("integer division or modulo by zero");
            }
            let r = p.rem_euclid(q);
            Ok(Val::Int(if q < 0 && r != 0 { r + q } else { r }))
        }
        ("//", ..) | ("%", ..) => {
            let (p, q) = (x.f(), y.f());
            if q == 0.0 {
                return zero(if op == "%" {
                    "float modulo"
                } else {
                    "float floor division by zero"
                });
            }
            let floor = (p / q).floor();
            Ok(Val::Float(if op == "//" { floor } else { p - q * floor }))
        }
        ("**", ..) => {
            if x.f().abs() > MAX_POWER || y.f().abs() > MAX_POWER {
                return err(
                    "NumberTooHigh",
                    format!("Sorry! I don't want to evaluate {} ** {}", show(a), show(b)),
                );
            }
            power(x, y)
        }
        ("<<" | ">>" | "&" | "|" | "^", Num::Int(p), Num::Int(q)) => match op {
            "&" => Ok(Val::Int(p & q)),
            "|" => Ok(Val::Int(p | q)),
            "^" => Ok(Val::Int(p ^ q)),
            _ => {
                if q.abs() > MAX_SHIFT {
                    return err(
                        "NumberTooHigh",
                        format!("Sorry! I don't want to evaluate {p} {op} {q}"),
                    );
                }
                if q < 0 {
                    return err("ValueError", "negative shift count");
                }
                if op == ">>" {
                    Ok(Val::Int(if q >= 127 { p.signum().min(0) } else { p >> q }))
                } else {
                    int(u32::try_from(q)
                        .ok()
                        .and_then(|s| p.checked_shl(s))
                        .filter(|r| r >> q == p))
                }
            }
        },
        _ => err(
            "TypeError",
            format!(
                "unsupported operand type(s) for {op}: '{}' and '{}'",
                a.type_name(),
                b.type_name()
            ),
        ),
    }
}

fn power(x: Num, y: Num) -> Res<Val> {
    match (x, y) {
        (Num::Int(p), Num::Int(q)) if q >= 0 => {
            int(u32::try_from(q).ok().and_then(|e| p.checked_pow(e)))
        }
        _ => {
            let (p, q) = (x.f(), y.f());
            if p == 0.0 && q < 0.0 {
                return err(
                    "ZeroDivisionError",
                    "0.0 cannot be raised to a negative power",
                );
            }
            if p < 0.0 && q.fract() != 0.0 {
                return err("ValueError", "complex results are not supported");
            }
            Ok(Val::Float(p.powf(q)))
        }
    }
}

fn compare(op: &str, a: &Val, b: &Val) -> Res<bool> {
    let (x, y) = (a.number()?, b.number()?);
    let ordering = match (x, y) {
        (Num::Int(p), Num::Int(q)) => p.partial_cmp(&q),
        _ => x.f().partial_cmp(&y.f()),
    };
    use std::cmp::Ordering::*;
    Ok(match op {
        "==" => ordering == Some(Equal),
        "!=" => ordering != Some(Equal),
        "<" => ordering == Some(Less),
        "<=" => matches!(ordering, Some(Less | Equal)),
        ">" => ordering == Some(Greater),
        ">=" => matches!(ordering, Some(Greater | Equal)),
        _ => unreachable!("the parser only makes these comparisons"),
    })
}

/// Python's `repr` of a number as error messages show it.
fn show(v: &Val) -> String {
    match v {
        Val::Int(i) => i.to_string(),
        Val::Bool(b) => if *b { "True" } else { "False" }.into(),
        Val::Float(f) => crate::pyjson::float_repr(*f),
        Val::List(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The arguments as one list: `f(values)` or `f(a, b, c)`.
fn spread(args: &[Val]) -> Vec<Val> {
    match args {
        [Val::List(items)] => items.clone(),
        _ => args.to_vec(),
    }
}

fn math_domain<T>() -> Res<T> {
    err("ValueError", "math domain error")
}

/// ComfyUI's `MATH_FUNCTIONS`.
fn call(name: &str, args: &[Val], expression: &str) -> Res<Val> {
    let one = || -> Res<&Val> {
        match args {
            [x] => Ok(x),
            _ => err(
                "TypeError",
                format!("{name}() takes exactly one argument ({} given)", args.len()),
            ),
        }
    };
    let real = |f: fn(f64) -> f64| -> Res<Val> { Ok(Val::Float(f(one()?.as_f64()?))) };
    match name {
        "sum" => spread(args)
            .iter()
            .try_fold(Val::Int(0), |acc, v| binary("+", &acc, v)),
        "min" | "max" => {
            let items = spread(args);
            let mut best = items.first().cloned().ok_or_else(|| EvalError {
                kind: "ValueError",
                message: format!("{name}() iterable argument is empty"),
            })?;
            for item in &items[1..] {
                let better = if name == "min" { "<" } else { ">" };
                if compare(better, item, &best)? {
                    best = item.clone();
                }
            }
            Ok(best)
        }
        "abs" => match one()?.number()? {
            Num::Int(i) => int(i.checked_abs()),
            Num::Float(f) => Ok(Val::Float(f.abs())),
        },
        "round" => match args {
            [x] => match x.number()? {
                Num::Int(i) => Ok(Val::Int(i)),
                Num::Float(f) => Ok(Val::Int(float_to_int(f.round_ties_even())?)),
            },
            [x, digits] => {
                let Num::Int(n) = digits.number()? else {
                    return err(
                        "TypeError",
                        "'float' object cannot be interpreted as an integer",
                    );
                };
                match x.number()? {
                    Num::Int(i) if n >= 0 => Ok(Val::Int(i)),
                    Num::Int(i) => {
                        let scale = 10f64.powi(-n as i32);
                        Ok(Val::Int(
                            ((i as f64 / scale).round_ties_even() * scale) as i128,
                        ))
                    }
                    Num::Float(f) => Ok(Val::Float(round_digits(f, n))),
                }
            }
            _ => err("TypeError", "round() takes at most 2 arguments"),
        },
        "pow" => match args {
            [base, exponent] => {
                if exponent.as_f64()?.abs() > MAX_EXPONENT {
                    return err(
                        "ValueError",
                        format!(
                            "Exponent {} exceeds maximum allowed ({})",
                            show(exponent),
                            MAX_EXPONENT as i64
                        ),
                    );
                }
                power(base.number()?, exponent.number()?)
            }
            _ => err("TypeError", "pow expected 2 arguments"),
        },
        "sqrt" => {
            let x = one()?.as_f64()?;
            if x < 0.0 {
                return math_domain();
            }
            Ok(Val::Float(x.sqrt()))
        }
        "ceil" | "floor" => match one()?.number()? {
            Num::Int(i) => Ok(Val::Int(i)),
            Num::Float(f) => {
                let r = if name == "ceil" { f.ceil() } else { f.floor() };
                Ok(Val::Int(float_to_int(r)?))
            }
        },
        "log" => {
            let (x, base) = match args {
                [x] => (x.as_f64()?, None),
                [x, b] => (x.as_f64()?, Some(b.as_f64()?)),
                _ => return err("TypeError", "log expected 1 or 2 arguments"),
            };
            if x <= 0.0 || base.is_some_and(|b| b <= 0.0) {
                return math_domain();
            }
            match base {
                None => Ok(Val::Float(x.ln())),
                Some(1.0) => err("ZeroDivisionError", "float division by zero"),
                Some(b) => Ok(Val::Float(x.ln() / b.ln())),
            }
        }
        "log2" | "log10" => {
            let x = one()?.as_f64()?;
            if x <= 0.0 {
                return math_domain();
            }
            Ok(Val::Float(if name == "log2" {
                x.log2()
            } else {
                x.log10()
            }))
        }
        "sin" => real(f64::sin),
        "cos" => real(f64::cos),
        "tan" => real(f64::tan),
        "int" => match one()?.number()? {
            Num::Int(i) => Ok(Val::Int(i)),
            Num::Float(f) => Ok(Val::Int(float_to_int(f)?)),
        },
        "float" => Ok(Val::Float(one()?.as_f64()?)),
        _ => err(
            "FunctionNotDefined",
            format!("Function '{name}' not defined, for expression '{expression}'."),
        ),
    }
}

/// `round(x, n)` for floats: the exact decimal value rounded to `n` digits (Rust's formatting
/// rounds the exact binary value, as Python's does).
fn round_digits(f: f64, n: i128) -> f64 {
    if !f.is_finite() || n > 300 {
        return f;
    }
    if n >= 0 {
        return format!("{f:.*}", n as usize).parse().unwrap_or(f);
    }
    let scale = 10f64.powi(n.unsigned_abs().min(330) as i32);
    (f / scale).round_ties_even() * scale
}

// ---- parsing -----------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(Val),
    Name(String),
    Op(&'static str),
}

const OPS: &[&str] = &[
    "**", "//", "<<", ">>", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "<", ">", "(", ")",
    "[", "]", ",", "&", "|", "^", "~",
];

fn syntax<T>() -> Res<T> {
    err("SyntaxError", "invalid syntax")
}

fn tokenize(text: &str) -> Res<Vec<Tok>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            let mut float = false;
            while i < chars.len() {
                let d = chars[i];
                if d.is_ascii_digit() || d == '_' {
                    i += 1;
                } else if d == '.' && !float {
                    float = true;
                    i += 1;
                } else if (d == 'e' || d == 'E')
                    && (chars.get(i + 1).is_some_and(char::is_ascii_digit)
                        || (matches!(chars.get(i + 1), Some('+' | '-'))
                            && chars.get(i + 2).is_some_and(char::is_ascii_digit)))
                {
                    float = true;
                    i += 2;
                } else {
                    break;
                }
            }
            let literal: String = chars[start..i].iter().filter(|&&d| d != '_').collect();
            let value = if float {
                Val::Float(literal.parse().or_else(|_| syntax())?)
            } else {
                if literal.len() > 1
                    && literal.starts_with('0')
                    && !literal.trim_start_matches('0').is_empty()
                {
                    return syntax();
                }
                int(literal.parse().ok())?
            };
            out.push(Tok::Num(value));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(chars[start..i].iter().collect()));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
            return syntax();
        };
        out.push(Tok::Op(op));
        i += op.chars().count();
    }
    Ok(out)
}

/// The parsed expression.
#[derive(Debug)]
enum Expr {
    Const(Val),
    Name(String),
    Unary(&'static str, Box<Expr>),
    Not(Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Vec<(&'static str, Expr)>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    If {
        test: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Call(String, Vec<Expr>),
    Index(Box<Expr>, Box<Expr>),
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.at += 1;
            return true;
        }
        false
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(n)) if n == word) {
            self.at += 1;
            return true;
        }
        false
    }

    fn expect_op(&mut self, op: &str) -> Res<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            syntax()
        }
    }

    fn expr(&mut self) -> Res<Expr> {
        let then = self.or()?;
        if !self.eat_word("if") {
            return Ok(then);
        }
        let test = self.or()?;
        if !self.eat_word("else") {
            return syntax();
        }
        let otherwise = self.expr()?;
        Ok(Expr::If {
            test: Box::new(test),
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        })
    }

    fn or(&mut self) -> Res<Expr> {
        self.chain("or", Self::and, Expr::Or)
    }

    fn and(&mut self) -> Res<Expr> {
        self.chain("and", Self::not, Expr::And)
    }

    /// `operand (word operand)*`: the lone operand, or all of them joined by `make`.
    fn chain(
        &mut self,
        word: &str,
        operand: fn(&mut Self) -> Res<Expr>,
        make: fn(Vec<Expr>) -> Expr,
    ) -> Res<Expr> {
        let mut items = vec![operand(self)?];
        while self.eat_word(word) {
            items.push(operand(self)?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            make(items)
        })
    }

    fn not(&mut self) -> Res<Expr> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Res<Expr> {
        let first = self.binary(0)?;
        let mut rest = Vec::new();
        while let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            if !matches!(op, "<" | ">" | "==" | ">=" | "<=" | "!=") {
                break;
            }
            self.at += 1;
            rest.push((op, self.binary(0)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Compare(Box::new(first), rest)
        })
    }

    /// Binary operators by Python's precedence levels, loosest first.
    fn binary(&mut self, level: usize) -> Res<Expr> {
        const LEVELS: &[&[&str]] = &[
            &["|"],
            &["^"],
            &["&"],
            &["<<", ">>"],
            &["+", "-"],
            &["*", "/", "//", "%"],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            if !LEVELS[level].contains(&op) {
                break;
            }
            self.at += 1;
            let right = self.binary(level + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Res<Expr> {
        for op in ["-", "+", "~"] {
            if self.eat_op(op) {
                return Ok(Expr::Unary(op, Box::new(self.unary()?)));
            }
        }
        let base = self.primary()?;
        if self.eat_op("**") {
            // Right-associative, and binds tighter than a unary minus on its left only.
            return Ok(Expr::Binary("**", Box::new(base), Box::new(self.unary()?)));
        }
        Ok(base)
    }

    fn primary(&mut self) -> Res<Expr> {
        let mut value = match self.toks.get(self.at).cloned() {
            Some(Tok::Num(v)) => {
                self.at += 1;
                Expr::Const(v)
            }
            Some(Tok::Name(name)) => {
                self.at += 1;
                match name.as_str() {
                    "True" => Expr::Const(Val::Bool(true)),
                    "False" => Expr::Const(Val::Bool(false)),
                    "if" | "else" | "and" | "or" | "not" => return syntax(),
                    _ if self.eat_op("(") => {
                        let mut args = Vec::new();
                        while !self.eat_op(")") {
                            args.push(self.expr()?);
                            if !self.eat_op(",") {
                                self.expect_op(")")?;
                                break;
                            }
                        }
                        Expr::Call(name, args)
                    }
                    _ => Expr::Name(name),
                }
            }
            Some(Tok::Op("(")) => {
                self.at += 1;
                let inner = self.expr()?;
                self.expect_op(")")?;
                inner
            }
            _ => return syntax(),
        };
        while self.eat_op("[") {
            let index = self.expr()?;
            self.expect_op("]")?;
            value = Expr::Index(Box::new(value), Box::new(index));
        }
        Ok(value)
    }
}

struct Eval<'a> {
    names: &'a BTreeMap<String, Val>,
    expression: &'a str,
}

impl Eval<'_> {
    fn eval(&self, e: &Expr) -> Res<Val> {
        match e {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Name(n) => self.names.get(n).cloned().ok_or_else(|| EvalError {
                kind: "NameNotDefined",
                message: format!("'{n}' is not defined for expression '{}'", self.expression),
            }),
            Expr::Unary(op, x) => {
                let v = self.eval(x)?;
                match (*op, v.number()?) {
                    ("-", Num::Int(i)) => int(i.checked_neg()),
                    ("-", Num::Float(f)) => Ok(Val::Float(-f)),
                    ("+", n) => Ok(match n {
                        Num::Int(i) => Val::Int(i),
                        Num::Float(f) => Val::Float(f),
                    }),
                    ("~", Num::Int(i)) => Ok(Val::Int(!i)),
                    _ => err("TypeError", "bad operand type for unary ~: 'float'"),
                }
            }
            Expr::Not(x) => Ok(Val::Bool(!self.eval(x)?.truthy())),
            Expr::Binary(op, a, b) => binary(op, &self.eval(a)?, &self.eval(b)?),
            Expr::Compare(first, rest) => {
                let mut left = self.eval(first)?;
                for (op, right) in rest {
                    let right = self.eval(right)?;
                    if !compare(op, &left, &right)? {
                        return Ok(Val::Bool(false));
                    }
                    left = right;
                }
                Ok(Val::Bool(true))
            }
            Expr::And(items) | Expr::Or(items) => {
                let stop_when = matches!(e, Expr::Or(_));
                let mut last = Val::Bool(false);
                for item in items {
                    last = self.eval(item)?;
                    if last.truthy() == stop_when {
                        break;
                    }
                }
                Ok(last)
            }
            Expr::If {
                test,
                then,
                otherwise,
            } => {
                if self.eval(test)?.truthy() {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
            Expr::Call(name, args) => {
                let args = args.iter().map(|a| self.eval(a)).collect::<Res<Vec<_>>>()?;
                call(name, &args, self.expression)
            }
            Expr::Index(list, index) => {
                let Val::List(items) = self.eval(list)? else {
                    return err("TypeError", "object is not subscriptable");
                };
                let i = match self.eval(index)?.number()? {
                    Num::Int(i) => i,
                    Num::Float(_) => {
                        return err(
                            "TypeError",
                            "list indices must be integers or slices, not float",
                        )
                    }
                };
                let at = if i < 0 { items.len() as i128 + i } else { i };
                usize::try_from(at)
                    .ok()
                    .and_then(|at| items.get(at).cloned())
                    .ok_or_else(|| EvalError {
                        kind: "IndexError",
                        message: "list index out of range".into(),
                    })
            }
        }
    }
}

/// ComfyMathExpression's outputs for an expression's result: `float(r)`, `int(r)` and
/// `bool(r)`, after its checks (a number, finite).
pub fn numeric_outputs(expression: &str, result: &Val) -> Result<(f64, i128, bool), EvalError> {
    let float = match result {
        Val::List(_) => {
            return err(
                "ValueError",
                format!(
                    "Math Expression '{expression}' must evaluate to a numeric result, got list"
                ),
            )
        }
        v => v.as_f64()?,
    };
    if !float.is_finite() {
        return err(
            "ValueError",
            format!(
                "Math Expression '{expression}' produced a non-finite result: {}",
                show(result)
            ),
        );
    }
    let int = match result {
        Val::Int(i) => *i,
        Val::Bool(b) => i128::from(*b),
        _ => float.trunc() as i128,
    };
    Ok((float, int, result.truthy()))
}

/// `simple_eval(expression, names=names, functions=MATH_FUNCTIONS)`.
pub fn evaluate(expression: &str, names: &BTreeMap<String, Val>) -> Result<Val, EvalError> {
    let toks = tokenize(expression.trim())?;
    let mut parser = Parser { toks, at: 0 };
    let tree = parser.expr()?;
    if parser.at != parser.toks.len() {
        return syntax();
    }
    Eval { names, expression }.eval(&tree)
}
