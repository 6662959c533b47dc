//! C2SP tlog-tiles paths: `tile/<L>/<N>[.p/<W>]` and
//! `tile/entries/<N>[.p/<W>]`, parsed strictly (one canonical spelling
//! per tile, so that caches never hold two copies). No I/O.

/// What a tile path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePath {
    /// `None` for an entry bundle, else the tile level (0..=63).
    pub level: Option<u8>,
    pub index: u64,
    /// 256 for a full tile, 1..=255 for a partial one.
    pub width: u16,
}

/// A path that is not a canonical tile path, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a tile path: {0}")]
pub struct BadPath(pub String);

fn bad(why: impl Into<String>) -> BadPath {
    BadPath(why.into())
}

fn decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

impl TilePath {
    /// Parses the part after `tile/`.
    pub fn parse(rest: &str) -> Result<TilePath, BadPath> {
        let (level_part, rest) = rest.split_once('/').ok_or_else(|| bad("no index"))?;
        let level = match level_part {
            "entries" => None,
            l => {
                let l = decimal(l).filter(|l| *l <= 63).ok_or_else(|| bad(format!("level {l:?} (0 to 63)")))?;
                Some(l as u8)
            }
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                let w = decimal(w)
                    .filter(|w| (1..=255).contains(w))
                    .ok_or_else(|| bad(format!("width {w:?} (1 to 255)")))?;
                (i, w as u16)
            }
            None => (rest, 256),
        };
        let groups: Vec<&str> = index_part.split('/').collect();
        let mut index: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            let digits = if last {
                *g
            } else {
                g.strip_prefix('x').ok_or_else(|| bad(format!("index element {g:?} needs an x")))?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("index element {g:?} is not three digits")));
            }
            if i == 0 && !last && digits == "000" {
                return Err(bad("index has a leading x000"));
            }
            let d: u64 = digits.parse().map_err(|_| bad("index"))?;
            index = index.checked_mul(1000).and_then(|v| v.checked_add(d)).ok_or_else(|| bad("index too large"))?;
        }
        Ok(TilePath { level, index, width })
    }

    /// The canonical path after `tile/`.
    pub fn encode(&self) -> String {
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let index: Vec<String> = groups
            .iter()
            .rev()
            .enumerate()
            .map(|(i, g)| if i + 1 == groups.len() { format!("{g:03}") } else { format!("x{g:03}") })
            .collect();
        let level = self.level.map_or_else(|| "entries".to_owned(), |l| l.to_string());
        let width = if self.width == 256 { String::new() } else { format!(".p/{}", self.width) };
        format!("{level}/{}{width}", index.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_examples_parse() {
        assert_eq!(TilePath::parse("0/x001/x234/067"), Ok(TilePath { level: Some(0), index: 1_234_067, width: 256 }));
        assert_eq!(TilePath::parse("entries/000.p/5"), Ok(TilePath { level: None, index: 0, width: 5 }));
        assert_eq!(TilePath::parse("2/999"), Ok(TilePath { level: Some(2), index: 999, width: 256 }));
        for bad in [
            "0/1",
            "0/0001",
            "0/x000/001",
            "0/001.p/0",
            "0/001.p/256",
            "0/001.p/05",
            "64/000",
            "00/000",
            "x/000",
            "0/",
            "0/x001",
            "0/001/002",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    proptest::proptest! {
        #[test]
        fn encode_and_parse_round_trip(level in proptest::option::of(0u8..=63), index in 0u64..u64::MAX, width in 1u16..=256) {
            let t = TilePath { level, index, width };
            proptest::prop_assert_eq!(TilePath::parse(&t.encode()), Ok(t));
        }

        #[test]
        fn any_string_parses_or_is_refused_never_a_panic(s in "\\PC{0,60}") {
            if let Ok(t) = TilePath::parse(&s) {
                proptest::prop_assert_eq!(t.encode(), s, "only canonical paths parse");
            }
        }
    }
}
