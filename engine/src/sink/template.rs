//! Names with the time in them: an index name such as `logs-%Y.%m.%d`, an
//! object path such as `dt=%Y-%m-%d/hour=%H`. A template is checked once
//! when the file is read and then filled in per record or per batch from a
//! time in ms since the epoch, in UTC, without a date library (days to a
//! civil date is a dozen lines).

use std::fmt::Write as _;

/// The fields a template may use.
const FIELDS: &str = "%Y (year), %m (month), %d (day), %H (hour), %M (minute), %% (a `%`)";

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
}

impl Template {
    /// Parses `text`; an unknown `%x` is an error naming it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(ch) = chars.next() {
            if ch != '%' {
                literal.push(ch);
                continue;
            }
            let field = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('Y') => Part::Year,
                Some('m') => Part::Month,
                Some('d') => Part::Day,
                Some('H') => Part::Hour,
                Some('M') => Part::Minute,
                Some(other) => {
                    return Err(format!("`{text}`: unknown field `%{other}`; use {FIELDS}"));
                }
                None => return Err(format!("`{text}`: ends in a lone `%`; use {FIELDS}")),
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(field);
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template uses the time at all (else every record gets
    /// the same name, worked out once).
    pub fn uses_time(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Text(_)))
    }

    /// The name for time `ms` (since the epoch, UTC), appended to `out`.
    pub fn render_into(&self, ms: u64, out: &mut String) {
        let secs = ms / 1000;
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let hour = secs % 86_400 / 3600;
        let minute = secs % 3600 / 60;
        for part in &self.parts {
            let _ = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    Ok(())
                }
                Part::Year => write!(out, "{year:04}"),
                Part::Month => write!(out, "{month:02}"),
                Part::Day => write!(out, "{day:02}"),
                Part::Hour => write!(out, "{hour:02}"),
                Part::Minute => write!(out, "{minute:02}"),
            };
        }
    }

    /// The name for time `ms`.
    pub fn render(&self, ms: u64) -> String {
        let mut out = String::new();
        self.render_into(ms, &mut out);
        out
    }
}

/// Year, month (1–12) and day (1–31) of day `days` after 1970-01-01, in the
/// proleptic Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_utc_dates_across_month_year_and_leap_day_boundaries() {
        let t = Template::parse("logs-%Y.%m.%d/%H:%M-100%%").unwrap();
        // 2024-02-29T23:59:00Z and one minute later.
        assert_eq!(t.render(1_709_251_140_000), "logs-2024.02.29/23:59-100%");
        assert_eq!(t.render(1_709_251_200_000), "logs-2024.03.01/00:00-100%");
        assert_eq!(t.render(0), "logs-1970.01.01/00:00-100%");
        // 1999-12-31T23:00:00Z.
        assert_eq!(t.render(946_681_200_000), "logs-1999.12.31/23:00-100%");
        assert!(t.uses_time());
        assert!(!Template::parse("wordcount").unwrap().uses_time());
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Template::parse("logs-%Q").unwrap_err();
        assert!(err.contains("`%Q`"), "{err}");
        assert!(Template::parse("x%").unwrap_err().contains("lone `%`"));
    }
}
